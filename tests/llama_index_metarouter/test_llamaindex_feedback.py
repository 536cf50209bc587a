"""Pairwise feedback through the adapter: delegated to the core, visible to listeners and
instrumentation, and changing the next routing decision for that user only."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse
from llama_index.core.llms.callbacks import llm_chat_callback
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llamaindex_tooling import CHEAP, STRONG
from metarouter.errors import ConfigError, FeedbackError
from metarouter.service import Response

from llama_index_metarouter import ROUTING_KEY, FeedbackRecordedEvent, RoutedCall


def _answers(router, prompt: str):
    """The same prompt answered by both recorded models (forced), as routed responses."""
    return [router.complete(prompt, model=m) for m in (STRONG, CHEAP)]


def test_record_preference_takes_routed_responses_and_notifies(
    make_router, recorded_candidates, routerbench, trace
):
    router = make_router(recorded_candidates())
    heard = []
    router.add_feedback_listener(heard.append)
    strong, cheap = _answers(router, routerbench.prompts[0])

    record = router.record_preference(strong, cheap)

    assert (record.winner, record.loser, record.user_id) == (STRONG, CHEAP, "tester")
    assert record.source == "decisions"
    assert record.winner_decision_id == strong.additional_kwargs[ROUTING_KEY]["decision_id"]
    assert record.winner_cost_usd == pytest.approx(
        strong.additional_kwargs[ROUTING_KEY]["cost_usd"]
    )
    assert [e.kind for e in heard] == ["comparison_recorded", "preference_updated"]
    (event,) = trace.events.of(FeedbackRecordedEvent)
    assert (event.winner, event.n_comparisons) == (STRONG, 1)
    router.remove_feedback_listener(heard.append)


def test_record_preference_takes_decision_ids_and_routed_calls(
    make_router, recorded_candidates, routerbench
):
    router = make_router(recorded_candidates())
    strong, cheap = _answers(router, routerbench.prompts[1])
    by_id = router.record_preference(
        cheap.additional_kwargs[ROUTING_KEY]["decision_id"], RoutedCall.from_response(strong)
    )
    assert (by_id.winner, by_id.loser) == (CHEAP, STRONG)


def test_answers_the_router_did_not_produce_can_be_compared(make_router, recorded_candidates):
    router = make_router(recorded_candidates(), user_id="carol")
    record = router.record_preference(
        Response(model=STRONG, cost_usd=0.004, text="def f(): ..."),
        Response(model=CHEAP, cost_usd=0.0001, text="I do not know"),
        query="Write a Python function that reverses a list.",
    )
    assert (record.user_id, record.source) == ("carol", "external")
    assert router.service.preference("carol").n_comparisons == 1


def test_dicts_name_routed_and_external_answers(make_router, recorded_candidates, routerbench):
    router = make_router(recorded_candidates())
    prompt = routerbench.prompts[6]
    cheap = router.complete(prompt, model=CHEAP)
    routed = {"decision_id": cheap.additional_kwargs[ROUTING_KEY]["decision_id"]}
    # an answer from outside the router (e.g. the user's own GPT-4 call), as a plain dict
    outside = {"model": STRONG, "cost_usd": 0.02, "text": routerbench.answers[STRONG][prompt]}

    record = router.record_preference(outside, routed)

    assert (record.winner, record.loser, record.user_id) == (STRONG, CHEAP, "tester")
    assert record.winner_cost_usd == pytest.approx(0.02) and record.winner_decision_id is None
    assert record.loser_decision_id == routed["decision_id"]


async def test_arecord_preference_stores_and_updates_the_preference(
    make_router, recorded_candidates, routerbench
):
    router = make_router(recorded_candidates())
    prompt = routerbench.prompts[7]
    strong, cheap = [await router.acomplete(prompt, model=m) for m in (STRONG, CHEAP)]
    assert router.preference().n_comparisons == 0

    record = await router.arecord_preference(strong, cheap)

    assert (record.winner, record.user_id) == (STRONG, "tester")
    assert router.preference().n_comparisons == 1
    assert router.preference("someone-else").n_comparisons == 0


def test_preference_defaults_to_the_scope_then_the_instance_user(make_router, recorded_candidates):
    router = make_router(recorded_candidates(), user_id="erin")
    router.record_preference(
        Response(STRONG, 0.01, "a"), Response(CHEAP, 0.001, "b"), query="Explain recursion."
    )
    assert router.preference().n_comparisons == 1
    with router.scope(user_id="frank"):
        assert router.preference().n_comparisons == 0
        assert router.preference("erin").n_comparisons == 1


def test_feedback_errors_say_how_to_fix(make_router, recorded_candidates, routerbench):
    router = make_router(recorded_candidates())
    foreign = ChatResponse(message=ChatMessage(role="assistant", content="hi"))
    strong, _ = _answers(router, routerbench.prompts[2])
    with pytest.raises(FeedbackError, match=r"did not come through MetaRouterLLM.*Response\("):
        router.record_preference(strong, foreign)
    with pytest.raises(FeedbackError, match=r"cannot compare a int: pass a response .*RoutedCall"):
        router.record_preference(strong, 42)
    with pytest.raises(FeedbackError, match=r"cannot read an answer from \{'model': 'x'\}"):
        router.record_preference(strong, {"model": "x"})
    with pytest.raises(FeedbackError, match="same decision"):
        router.record_preference(strong, strong)
    with pytest.raises(FeedbackError, match="query text is needed"):
        router.record_preference(Response(STRONG, 0.01), Response(CHEAP, 0.001))


def test_compare_runs_the_suggested_pair_on_the_same_query(
    make_router, recorded_candidates, routerbench
):
    router = make_router(recorded_candidates())
    prompt = routerbench.prompts[3]
    pair = router.compare(prompt)

    assert {a.model for a in pair.answers} == {STRONG, CHEAP}
    for answer in pair.answers:
        assert answer.text == routerbench.answers[answer.model][prompt]
        assert answer.reason == "compare" and answer.cost_usd > 0
    assert set(pair.models) == {STRONG, CHEAP}
    assert pair.decision_ids == tuple(a.decision_id for a in pair.answers)
    record = pair.prefer(STRONG)
    assert (record.winner, record.loser, record.source) == (STRONG, CHEAP, "compare")
    assert {record.winner_decision_id, record.loser_decision_id} == set(pair.decision_ids)


async def test_acompare_runs_both_candidates_concurrently(
    make_router, recorded_candidates, routerbench
):
    candidates = recorded_candidates()
    router = make_router(candidates)
    messages = [ChatMessage(role="user", content=routerbench.prompts[4])]
    pair = await router.acompare(messages, user_id="dave")
    assert pair.user_id == "dave"
    assert {a.model for a in pair.answers} == {STRONG, CHEAP}
    assert all(c.llm.calls == ["achat"] for c in candidates.values())
    record = pair.prefer(0)
    assert record.winner == pair.answers[0].model and record.user_id == "dave"


class _Rendezvous(MockFunctionCallingLLM):
    """Answers only once both compared candidates have started answering: run one after the
    other, the first waits for the second in vain (and times out)."""

    label: str = ""

    @llm_chat_callback()
    async def achat(self, messages, **kwargs):
        _MEETING["started"].add(self.label)
        if len(_MEETING["started"]) == 2:
            _MEETING["both"].set()
        await asyncio.wait_for(_MEETING["both"].wait(), 30)  # raises when run sequentially
        return ChatResponse(message=ChatMessage(role="assistant", content=f"from {self.label}"))


_MEETING: dict = {}


async def test_acompare_really_overlaps_the_two_calls(make_router):
    names = ("gemma-2-9b-it", "qwen2.5-7b-instruct")
    router = make_router({n: _Rendezvous(label=n) for n in names})
    _MEETING.update(started=set(), both=asyncio.Event())
    pair = await router.acompare([ChatMessage(role="user", content="Hi")], user_id="erin")
    assert _MEETING["started"] == set(names) == set(pair.models)
    assert {a.text for a in pair.answers} == {f"from {n}" for n in names}


def test_prefer_rejects_anything_but_one_of_the_two(make_router, recorded_candidates, routerbench):
    pair = make_router(recorded_candidates()).compare(routerbench.prompts[5])
    # one rule in both adapters (metarouter.feedback.Pair): True and 1.0 are not positions
    for bad in (2, True, False, 1.0, "claude-v2", None):
        with pytest.raises(
            FeedbackError, match=r"prefer\(\) takes the position of the better answer"
        ):
            pair.prefer(bad)
    assert pair.prefer(pair.decision_ids[1]).winner == pair.models[1]


def test_compare_refuses_a_model_override(make_router, recorded_candidates):
    with pytest.raises(ConfigError, match="picks the two models itself"):
        make_router(recorded_candidates()).compare("Hi", model=STRONG)


def test_feedback_changes_that_users_routing_and_no_one_elses(
    make_router, recorded_candidates, routerbench
):
    router = make_router(recorded_candidates())
    probe = routerbench.prompts[:6]

    def routed(user: str) -> list[str]:
        return [
            router.complete(p, user_id=user).additional_kwargs[ROUTING_KEY]["model"] for p in probe
        ]

    before = routed("picky")
    assert before == routed("bystander")
    # "picky" finds GPT-4's answers worth their price, six times
    for prompt in routerbench.prompts[10:16]:
        pair = router.compare(prompt, user_id="picky")
        pair.prefer(STRONG)
    after = routed("picky")
    assert after.count(STRONG) > before.count(STRONG)
    assert after == [STRONG] * len(probe)
    assert routed("bystander") == before, "another user's routing is untouched"
