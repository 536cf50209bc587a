"""``MetaRouterFeedbackHandler``: the app's feedback events become comparisons."""

from __future__ import annotations

import asyncio
import logging

import pytest
from langchain_core.callbacks.manager import dispatch_custom_event
from langchain_core.runnables import RunnableLambda
from lc_setup import BIG, CHEAP
from metarouter.errors import FeedbackError

from langchain_metarouter import (
    FEEDBACK_EVENT,
    MetaRouterChat,
    MetaRouterFeedbackHandler,
    adispatch_feedback,
    dispatch_feedback,
)

PROOF = "Prove that the square root of 2 is irrational."


@pytest.fixture
def router(candidates, service) -> MetaRouterChat:
    return MetaRouterChat(candidates=candidates, service=service, user_id="ann")


def _answers(router):
    big = router.invoke(PROOF, model=BIG)
    cheap = router.invoke(PROOF, model=CHEAP)
    return big, cheap


def test_dispatched_feedback_events_are_recorded_as_comparisons(router, service):
    big, cheap = _answers(router)
    handler = MetaRouterFeedbackHandler(router)

    def rate(ids: dict) -> str:  # the app's own step that collects the user's choice
        dispatch_feedback(ids["winner"], ids["loser"])
        return "thanks"

    ids = {
        "winner": big.response_metadata["metarouter"]["decision_id"],
        "loser": cheap.response_metadata["metarouter"]["decision_id"],
    }
    assert RunnableLambda(rate).invoke(ids, config={"callbacks": [handler]}) == "thanks"

    (record,) = handler.records
    assert (record.winner, record.loser, record.source, record.user_id) == (
        BIG,
        CHEAP,
        "callback",
        "ann",
    )
    assert service.preference("ann").n_comparisons == 1


def test_the_raw_custom_event_shape_works_with_external_answers_and_run_metadata_user(
    router, service
):
    handler = MetaRouterFeedbackHandler(router.service)

    def rate(_: object) -> None:
        dispatch_custom_event(
            FEEDBACK_EVENT,
            {
                "winner": {"model": "gpt-4o", "cost_usd": 0.004, "text": "..."},
                "loser": {"model": "gpt-4o-mini", "cost_usd": 0.0002},
                "query": PROOF,
            },
        )

    RunnableLambda(rate).invoke(
        None, config={"callbacks": [handler], "metadata": {"user_id": "bob"}}
    )
    assert handler.records[0].user_id == "bob" and handler.records[0].source == "callback"
    assert service.preference("bob").n_comparisons == 1
    assert service.preference("ann").n_comparisons == 0


def test_async_dispatch_is_recorded_too(router):
    big, cheap = _answers(router)
    handler = MetaRouterFeedbackHandler(router)

    async def rate(_: object) -> None:
        await adispatch_feedback(big, cheap)

    asyncio.run(RunnableLambda(rate).ainvoke(None, config={"callbacks": [handler]}))
    assert handler.records[0].winner == BIG


def test_invalid_feedback_raises_in_the_dispatching_code_by_default(router, caplog):
    handler = MetaRouterFeedbackHandler(router)

    def bad(_: object) -> None:
        dispatch_custom_event(FEEDBACK_EVENT, {"winner": "deadbeef"})

    with pytest.raises(FeedbackError, match="needs data"):
        RunnableLambda(bad).invoke(None, config={"callbacks": [handler]})

    lenient = MetaRouterFeedbackHandler(router, raise_error=False)
    caplog.set_level(logging.ERROR, logger="langchain_metarouter")
    RunnableLambda(bad).invoke(None, config={"callbacks": [lenient]})
    assert "dropped invalid metarouter_feedback event" in caplog.text and lenient.records == []


def test_other_custom_events_are_ignored(router):
    handler = MetaRouterFeedbackHandler(router)
    RunnableLambda(lambda _: dispatch_custom_event("progress", {"pct": 50})).invoke(
        None, config={"callbacks": [handler]}
    )
    assert handler.records == []
