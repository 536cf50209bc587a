"""Instrumentation: the router's spans and events, and the chosen candidate's nested inside them."""

from __future__ import annotations

import pytest
from llama_index.core.callbacks import CallbackManager, CBEventType
from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionStartEvent,
)
from llamaindex_tooling import IDS, VARIANTS, call

from llama_index_metarouter import (
    ROUTING_KEY,
    RoutingCompletedEvent,
    RoutingDecisionEvent,
)


@pytest.mark.parametrize(("api", "mode", "stream"), VARIANTS, ids=IDS)
async def test_candidate_span_and_events_nest_under_the_routers(
    api, mode, stream, make_router, recorded_candidates, routerbench, trace
):
    router = make_router(recorded_candidates())
    _, last, _ = await call(router, api, mode, stream, routerbench.prompts[2])
    info = last.additional_kwargs[ROUTING_KEY]
    method = ("a" if mode == "async" else "") + ("stream_" if stream else "") + api

    parents = trace.span_parents()
    router_spans = [s for s in parents if s.startswith(f"MetaRouterLLM.{method}-")]
    candidate_spans = [s for s in parents if s.startswith(f"RecordedLLM.{method}-")]
    assert len(router_spans) == 1 and len(candidate_spans) == 1
    (router_span,), (candidate_span,) = router_spans, candidate_spans
    assert parents[candidate_span] == router_span

    decisions = trace.events.of(RoutingDecisionEvent)
    assert len(decisions) == 1
    decision = decisions[0]
    assert decision.span_id == router_span
    assert decision.decision_id == info["decision_id"]
    assert (decision.model, decision.user_id, decision.reason) == (
        info["model"],
        "tester",
        "routed",
    )
    assert decision.scores == info["scores"]

    start, end = (
        (LLMChatStartEvent, LLMChatEndEvent)
        if api == "chat"
        else (LLMCompletionStartEvent, LLMCompletionEndEvent)
    )
    assert {e.span_id for e in trace.events.of(start)} == {router_span, candidate_span}
    assert {e.span_id for e in trace.events.of(end)} == {router_span, candidate_span}

    completed = trace.events.of(RoutingCompletedEvent)
    assert len(completed) == 1
    assert completed[0].span_id == router_span
    assert completed[0].model == info["model"]
    assert completed[0].cost_usd == pytest.approx(info["cost_usd"])
    # the router's end event carries the routed response (with routing data and real cost)
    routed_end = next(e for e in trace.events.of(end) if e.span_id == router_span)
    assert routed_end.response.additional_kwargs[ROUTING_KEY]["cost_usd"] == pytest.approx(
        info["cost_usd"]
    )


class _LLMEvents(BaseCallbackHandler):
    def __init__(self) -> None:
        super().__init__(event_starts_to_ignore=[], event_ends_to_ignore=[])
        self.ends: list[dict] = []

    def on_event_start(self, event_type, payload=None, event_id="", parent_id="", **kwargs):
        return event_id

    def on_event_end(self, event_type, payload=None, event_id="", **kwargs):
        if event_type == CBEventType.LLM:
            self.ends.append(payload or {})

    def start_trace(self, trace_id=None):
        pass

    def end_trace(self, trace_id=None, trace_map=None):
        pass


def test_legacy_callback_manager_sees_the_routed_response(make_router, recorded_candidates):
    handler = _LLMEvents()
    router = make_router(recorded_candidates(), callback_manager=CallbackManager([handler]))
    router.complete("Write a function that reverses a string.")
    assert len(handler.ends) == 1
    completion = handler.ends[0]["completion"]
    assert completion.additional_kwargs[ROUTING_KEY]["cost_usd"] > 0
    # token-counting handlers read usage from the response: it is passed through
    assert completion.additional_kwargs["prompt_tokens"] > 0
