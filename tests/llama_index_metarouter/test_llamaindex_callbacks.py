"""Feedback through instrumentation: ``dispatch_feedback`` anywhere, ``MetaRouterFeedbackHandler``
on the root dispatcher records it (the LlamaIndex twin of the LangChain feedback callbacks)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.dispatcher import instrument_tags
from llamaindex_tooling import CHEAP, STRONG
from metarouter.errors import FeedbackError
from metarouter.service import Response

from llama_index_metarouter import (
    ROUTING_KEY,
    FeedbackRecordedEvent,
    MetaRouterFeedbackHandler,
    PreferenceGivenEvent,
    adispatch_feedback,
    dispatch_feedback,
)


@pytest.fixture
def attach() -> Iterator[Callable[[MetaRouterFeedbackHandler], MetaRouterFeedbackHandler]]:
    """Add handlers to the root dispatcher for one test."""
    root = get_dispatcher()
    added: list[MetaRouterFeedbackHandler] = []

    def add(handler: MetaRouterFeedbackHandler) -> MetaRouterFeedbackHandler:
        root.add_event_handler(handler)
        added.append(handler)
        return handler

    yield add
    root.event_handlers = [h for h in root.event_handlers if all(h is not a for a in added)]


def _pair(router, prompt: str):
    return [router.complete(prompt, model=m) for m in (STRONG, CHEAP)]


def test_dispatched_feedback_is_recorded_by_the_handler(
    make_router, recorded_candidates, routerbench, attach, trace
):
    router = make_router(recorded_candidates())
    handler = attach(MetaRouterFeedbackHandler(router))
    strong, cheap = _pair(router, routerbench.prompts[0])

    dispatch_feedback(cheap, strong)

    (record,) = handler.records
    assert (record.winner, record.loser, record.source) == (CHEAP, STRONG, "callback")
    assert record.winner_decision_id == cheap.additional_kwargs[ROUTING_KEY]["decision_id"]
    assert router.preference().n_comparisons == 1
    # the request and the resulting preference update are both visible to instrumentation
    (given,) = trace.events.of(PreferenceGivenEvent)
    (stored,) = trace.events.of(FeedbackRecordedEvent)
    assert given.winner is cheap and stored.comparison_id == record.comparison_id


def test_the_user_comes_from_instrument_tags_when_the_event_names_none(
    make_router, recorded_candidates, attach
):
    router = make_router(recorded_candidates())
    handler = attach(MetaRouterFeedbackHandler(router))
    external = (
        {"model": STRONG, "cost_usd": 0.01, "text": "def f(): ..."},
        {"model": CHEAP, "cost_usd": 0.0002, "text": "no idea"},
    )
    with instrument_tags({"user_id": "gina"}):
        dispatch_feedback(*external, query="Write a function that sums a list.")
    dispatch_feedback(*external, user_id="hank", query="Write a function that sums a list.")

    assert [r.user_id for r in handler.records] == ["gina", "hank"]
    assert router.preference("gina").n_comparisons == 1
    assert router.preference("tester").n_comparisons == 0


def test_refused_feedback_is_logged_and_kept_not_raised(
    make_router, recorded_candidates, routerbench, attach, caplog
):
    router = make_router(recorded_candidates())
    handler = attach(MetaRouterFeedbackHandler(router))
    strong, _ = _pair(router, routerbench.prompts[1])

    dispatch_feedback(strong, strong)  # the dispatcher would drop an exception unseen

    assert handler.records == []
    ((event, error),) = handler.errors
    assert isinstance(event, PreferenceGivenEvent) and isinstance(error, FeedbackError)
    assert "same decision" in str(error)
    assert "refused feedback event" in caplog.text
    assert router.preference().n_comparisons == 0


async def test_async_dispatch_records_through_a_shared_service(
    make_router, recorded_candidates, routerbench, attach
):
    router = make_router(recorded_candidates())
    handler = attach(MetaRouterFeedbackHandler(router.service))
    prompt = routerbench.prompts[2]
    strong, cheap = [await router.acomplete(prompt, model=m) for m in (STRONG, CHEAP)]

    await adispatch_feedback(strong, cheap)

    (record,) = handler.records
    assert (record.winner, record.source, record.user_id) == (STRONG, "callback", "tester")
    assert router.service.preference("tester").n_comparisons == 1


def test_other_events_are_ignored_and_bad_arguments_refused(
    make_router, recorded_candidates, attach, trace
):
    router = make_router(recorded_candidates())
    handler = attach(MetaRouterFeedbackHandler(router))
    router.complete("Hi")  # routing events reach every handler; only feedback is recorded
    assert len(trace.events.events) > 2
    assert handler.handle(FeedbackRecordedEvent.model_construct()) is None
    assert handler.records == [] and handler.errors == []
    with pytest.raises(TypeError, match="takes a MetaRouterLLM or a RoutingService"):
        MetaRouterFeedbackHandler(Response(STRONG, 0.1))
