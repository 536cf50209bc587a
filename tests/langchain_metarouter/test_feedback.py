"""Pairwise feedback through ``MetaRouterChat``: ids, run ids, external answers, ``compare()``,
listeners, and per-user learning (one user's comparisons change only that user's routing)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from langchain_core.messages import AIMessage
from lc_scripted_models import ScriptedChatModel
from lc_setup import BIG, CHEAP, MID
from metarouter.errors import FeedbackError

from langchain_metarouter import MetaRouterChat, Response

PROOF = "Prove that the square root of 2 is irrational."
QUERIES = [
    PROOF,
    "Write a Python function that merges two sorted lists.",
    "What is the capital of France?",
    "Explain quantum entanglement to a physicist.",
]
#: Never taught: routing it checks that what a user taught carries to new queries.
UNSEEN = "Summarise the causes of the First World War in three sentences."


@pytest.fixture
def router(candidates, service) -> MetaRouterChat:
    return MetaRouterChat(candidates=candidates, service=service)


def meta(message: AIMessage) -> dict:
    return message.response_metadata["metarouter"]


def test_record_preference_takes_the_routed_answers_themselves(router, service):
    cheap = router.invoke(PROOF, model=CHEAP, config={"configurable": {"user_id": "ann"}})
    big = router.invoke(PROOF, model=BIG, config={"configurable": {"user_id": "ann"}})

    record = router.record_preference(big, cheap)

    assert (record.user_id, record.winner, record.loser) == ("ann", BIG, CHEAP)
    assert record.winner_decision_id == meta(big)["decision_id"]
    assert record.winner_cost_usd == pytest.approx(meta(big)["cost_usd"])
    assert service.preference("ann").n_comparisons == 1


def test_record_preference_takes_decision_ids_and_run_ids(router):
    run_a, run_b = uuid.uuid4(), uuid.uuid4()
    a = router.invoke(PROOF, model=MID, config={"run_id": run_a})
    router.invoke(PROOF, model=CHEAP, config={"run_id": run_b})

    by_id = router.record_preference(meta(a)["decision_id"], str(run_b))
    by_run = router.record_preference(run_b, run_a)

    assert (by_id.winner, by_id.loser) == (MID, CHEAP)
    assert (by_run.winner, by_run.loser) == (CHEAP, MID)


def test_record_preference_takes_answers_the_router_did_not_produce(router, service):
    record = router.record_preference(
        Response(model="gpt-4o", cost_usd=0.004, text="A full proof ..."),
        {"model": "gpt-4o-mini", "cost_usd": 0.0003, "text": "It is."},
        user_id="ann",
        query=PROOF,
    )
    assert (record.source, record.winner, record.user_id) == ("external", "gpt-4o", "ann")

    routed = router.invoke(PROOF, model=CHEAP, config={"configurable": {"user_id": "ann"}})
    mixed = router.record_preference(routed, Response(model="gpt-4o", cost_usd=0.004))
    assert mixed.winner == CHEAP and mixed.query_hash == record.query_hash
    assert service.preference("ann").n_comparisons == 2


def test_feedback_errors_say_what_to_pass(router):
    with pytest.raises(FeedbackError, match="not produced by MetaRouterChat"):
        router.record_preference(AIMessage("hi"), AIMessage("ho"))
    with pytest.raises(FeedbackError, match="cost_usd"):
        router.record_preference({"model": "x"}, {"model": "y", "cost_usd": 0.1}, query=PROOF)
    with pytest.raises(FeedbackError, match="no decision was recorded for run id"):
        router.record_preference(uuid.uuid4(), uuid.uuid4())


def test_compare_answers_with_two_candidates_and_records_the_choice(router, service):
    # the pair the service suggests for ann's traffic now (compare() then adds its two answers
    # to her traffic)
    suggested = service.suggest_pair(PROOF, "ann")
    pair = router.compare(PROOF, config={"configurable": {"user_id": "ann"}})

    assert pair.user_id == "ann" and pair.models[0] != pair.models[1]
    assert [a.response_metadata["model_name"] for a in pair.answers] == list(pair.models)
    assert all(meta(a)["forced"] for a in pair.answers)
    assert pair.models == suggested
    record = pair.prefer(1)
    assert (record.winner, record.loser, record.source) == (
        pair.models[1],
        pair.models[0],
        "compare",
    )
    # one rule in both adapters (metarouter.feedback.Pair): True and 1.0 are not positions
    for bad in ("gpt-17", 2, True, False, 1.0, None):
        with pytest.raises(
            FeedbackError, match=r"prefer\(\) takes the position of the better answer"
        ):
            pair.prefer(bad)
    assert pair.prefer(pair.answers[0]).winner == pair.models[0]


class _Rendezvous(ScriptedChatModel):
    """Answers only once both compared candidates have started answering (a two-party
    rendezvous): run one after the other, the first waits for the second in vain."""

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):
        _MEETING["started"].add(self.model_name)
        if len(_MEETING["started"]) == 2:
            _MEETING["both"].set()
        await asyncio.wait_for(_MEETING["both"].wait(), 30)  # raises when run sequentially
        return await super()._agenerate(messages, stop, run_manager, **kwargs)


_MEETING: dict = {}


def test_acompare_runs_both_candidates_concurrently(service):
    router = MetaRouterChat(
        candidates={n: _Rendezvous(model_name=f"{n}-v1") for n in (CHEAP, MID, BIG)},
        service=service,
    )

    async def run():
        _MEETING.update(started=set(), both=asyncio.Event())
        return await router.acompare(PROOF, user_id="ann")

    pair = asyncio.run(run())
    assert _MEETING["started"] == {f"{m}-v1" for m in pair.models}
    assert pair.prefer(pair.models[0]).winner == pair.models[0]


def test_feedback_listeners_hear_comparisons_and_preference_updates(router):
    events = []
    listener = router.add_feedback_listener(events.append)
    pair = router.compare(PROOF, user_id="ann")
    pair.prefer(0)

    assert [e.kind for e in events] == ["comparison_recorded", "preference_updated"]
    assert {e.user_id for e in events} == {"ann"} and events[1].n_comparisons == 1

    router.remove_feedback_listener(listener)
    router.compare(PROOF, user_id="ann").prefer(0)
    assert len(events) == 2


def _teach(router: MetaRouterChat, user: str, winner: str, loser: str) -> None:
    for query in QUERIES:
        config = {"configurable": {"user_id": user}}
        w = router.invoke(query, model=winner, config=config)
        lose = router.invoke(query, model=loser, config=config)
        router.record_preference(w, lose)


def test_a_users_comparisons_change_that_users_routing_and_no_one_elses(router):
    users = ("ann", "bob", "cy", "dee")  # cy and dee: the same calls, no comparisons
    before = {u: meta(router.invoke(UNSEEN, config={"metadata": {"user_id": u}})) for u in users}
    assert len({b["chosen_model"] for b in before.values()}) == 1  # same prior for everyone

    _teach(router, "ann", winner=BIG, loser=CHEAP)  # ann finds the big model worth its cost
    _teach(router, "bob", winner=CHEAP, loser=BIG)  # bob does not

    after = {u: meta(router.invoke(UNSEEN, config={"metadata": {"user_id": u}})) for u in users}
    assert after["ann"]["chosen_model"] == BIG != before["ann"]["chosen_model"]
    assert after["ann"]["scores"][BIG] > before["ann"]["scores"][BIG] + 0.5
    assert after["bob"]["chosen_model"] != BIG
    assert after["bob"]["scores"] != pytest.approx(before["bob"]["scores"])
    assert (
        after["bob"]["quality_weight"]
        < before["bob"]["quality_weight"]
        < after["ann"]["quality_weight"]
    )
    # untouched by the others' comparisons: cy routes as dee, whose history is the same (their
    # own first call's bill calibrates each one's costs alike), with the prior's trade-off
    assert after["cy"]["scores"] == pytest.approx(after["dee"]["scores"])
    assert after["cy"]["quality_weight"] == pytest.approx(before["cy"]["quality_weight"])
