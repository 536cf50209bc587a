"""Fixtures for the LlamaIndex adapter tests: routers on throwaway stores, recorded RouterBench
answers, instrumentation capture, and LlamaIndex ``Settings`` hygiene.

Every test here runs with sockets blocked (Unix sockets stay allowed for asyncio): the adapter,
its candidates, the embedding model and the pipelines must work offline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler
from llama_index.core.llms.mock import MockFunctionCallingLLM, MockLLM
from llamaindex_tooling import (
    RECORDED_ARMS,
    EventLog,
    RecordedAnswers,
    RecordedLLM,
    Trace,
    restored_settings,
)


# -- offline ----------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _no_network() -> Iterator[None]:
    import pytest_socket

    pytest_socket.disable_socket(allow_unix_socket=True)
    yield
    pytest_socket.enable_socket()


@pytest.fixture(scope="session")
def routerbench(shared_data) -> RecordedAnswers:
    """Twenty MBPP prompts and the two recorded models' real answers to them."""
    from metarouter.data import load_dataset

    frame = load_dataset("routerbench", shared_data).frame
    frame = frame[(frame["task"] == "mbpp") & frame["model"].isin(list(RECORDED_ARMS))]
    frame = frame[frame["response"].fillna("").str.strip() != ""]
    complete = frame.groupby("query_id")["model"].nunique()
    ids = sorted(complete[complete == len(RECORDED_ARMS)].index)[:20]
    rows = frame[frame["query_id"].isin(ids)]
    prompts = tuple(dict.fromkeys(rows.sort_values("query_id")["query"]))
    answers: dict[str, dict[str, str]] = {m: {} for m in RECORDED_ARMS}
    quality: dict[str, dict[str, float]] = {m: {} for m in RECORDED_ARMS}
    for row in rows.itertuples():
        answers[row.model][row.query] = row.response
        quality[row.model][row.query] = float(row.quality)
    return RecordedAnswers(prompts, answers, quality)


# -- routers ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def meta_router(router_embedder):
    """The bundled router, loaded once (with the session's embedder for it)."""
    from metarouter.router import MetaRouter

    return MetaRouter.default(embedder=router_embedder)


@pytest.fixture
def store(tmp_path):
    from metarouter.store.sql import SQLStore

    return SQLStore(tmp_path / "s.db")


@pytest.fixture
def recorded_candidates(routerbench) -> Callable[[], dict[str, Any]]:
    """``name -> Candidate`` for the two recorded RouterBench models (fresh LLMs per call)."""
    from llama_index_metarouter import Candidate

    def build() -> dict[str, Any]:
        return {
            name: Candidate(RecordedLLM(name, routerbench.answers[name]), **spec)
            for name, spec in RECORDED_ARMS.items()
        }

    return build


@pytest.fixture
def make_router(meta_router, store) -> Callable[..., Any]:
    """Build a ``MetaRouterLLM`` on the session router and this test's store."""
    from llama_index_metarouter import MetaRouterLLM

    def build(candidates: dict[str, Any], **kwargs: Any) -> MetaRouterLLM:
        kwargs.setdefault("user_id", "tester")
        if "service" not in kwargs:
            kwargs.setdefault("router", meta_router)
            kwargs.setdefault("store", store)
        return MetaRouterLLM(candidates, **kwargs)

    return build


@pytest.fixture
def mock_candidates() -> Callable[[], dict[str, Any]]:
    """LlamaIndex's own mocks as two catalog-named candidates (a completion model, a
    function-calling one)."""

    def build() -> dict[str, Any]:
        return {
            "gemma-2-9b-it": MockLLM(max_tokens=8),
            "qwen2.5-7b-instruct": MockFunctionCallingLLM(),
        }

    return build


# -- instrumentation --------------------------------------------------------------------------
@pytest.fixture
def trace() -> Iterator[Trace]:
    """Attach an event handler and a span handler to the root dispatcher for one test."""
    root = get_dispatcher()
    events, spans = EventLog(), SimpleSpanHandler()
    root.add_event_handler(events)
    root.add_span_handler(spans)
    yield Trace(events, spans)
    root.event_handlers = [h for h in root.event_handlers if h is not events]
    root.span_handlers = [h for h in root.span_handlers if h is not spans]


# -- LlamaIndex Settings ----------------------------------------------------------------------
@pytest.fixture
def settings() -> Iterator[Any]:
    """``llama_index.core.Settings``, restored after the test."""
    with restored_settings() as saved:
        yield saved
