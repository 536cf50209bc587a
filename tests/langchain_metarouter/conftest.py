"""Fixtures for the LangChain adapter tests: one router per session, a fresh store per test.

Every test in this folder runs with the network blocked (pytest-recording's ``block_network``
mark). The only exception is recording new cassettes for test_openai_vcr.py
(``--record-mode=once`` or ``rewrite``), which talks to a server on loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lc_scripted_models import ScriptedChatModel, TextOnlyChatModel
from lc_setup import arm_specs, scripted_candidates, shared_router
from metarouter.router import MetaRouter
from metarouter.service import RoutingService
from metarouter.store.sql import SQLStore

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents and not item.get_closest_marker("block_network"):
            item.add_marker(pytest.mark.block_network)


def pytest_recording_configure(config: pytest.Config, vcr: Any) -> None:
    """Let cassettes use the serializer that keeps RouterBench text out of them."""
    from routerbench_cassettes import SERIALIZER, RouterBenchYAMLSerializer

    vcr.register_serializer(SERIALIZER, RouterBenchYAMLSerializer())


@pytest.fixture(scope="session")
def lc_router(router_embedder) -> MetaRouter:
    """The bundled router with the session's embedder."""
    router = shared_router()
    router._embedder = router._embedder or router_embedder
    return router


@pytest.fixture
def service(tmp_path: Path, lc_router: MetaRouter) -> Iterator[RoutingService]:
    """A routing service over the three candidates with a fresh SQLite store."""
    store = SQLStore(tmp_path / "s.db")
    yield RoutingService(arm_specs(), router=lc_router, store=store)
    store.close()


@pytest.fixture
def candidates() -> dict[str, ScriptedChatModel]:
    return scripted_candidates()


@pytest.fixture
def text_only() -> TextOnlyChatModel:
    return TextOnlyChatModel(model_name="text-only-v1")
