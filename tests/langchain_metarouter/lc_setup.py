"""Candidates, prices and shared router/service for the LangChain adapter tests.

Kept out of ``conftest.py`` so test modules can import them by a unique module name
(``from lc_setup import ...``); importing from ``conftest`` breaks when pytest loads
several folders' conftest files at once.
"""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path

from lc_scripted_models import ScriptedChatModel
from metarouter.pricing import Price
from metarouter.router import MetaRouter
from metarouter.service import ArmSpec, RoutingService
from metarouter.store.sql import SQLStore

#: Catalog models used as candidate names (no descriptor needed), cheap to expensive.
CHEAP, MID, BIG = "gemma-2-9b-it", "qwen2.5-7b-instruct", "llama-3.1-nemotron-51b-instruct"
PRICES = {CHEAP: Price(0.1, 0.1), MID: Price(0.2, 0.2), BIG: Price(0.9, 0.9)}


@cache
def shared_router() -> MetaRouter:
    """The bundled router, loaded once per process (its embedder too)."""
    return MetaRouter.default()


@cache
def shared_service() -> RoutingService:
    """A service over scripted candidates for the standard suites (store in a temp dir)."""
    folder = Path(tempfile.mkdtemp(prefix="metarouter-lc-"))
    return RoutingService(arm_specs(), router=shared_router(), store=SQLStore(folder / "s.db"))


def arm_specs() -> list[ArmSpec]:
    return [ArmSpec(name, price=price) for name, price in PRICES.items()]


def scripted_candidates(**overrides: ScriptedChatModel) -> dict[str, ScriptedChatModel]:
    models = {name: ScriptedChatModel(model_name=f"{name}-v1") for name in PRICES}
    models.update(overrides)
    return models
