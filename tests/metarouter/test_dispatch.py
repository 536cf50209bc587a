"""The per-call policy (``metarouter.dispatch.CallFlow``) on its own, with plain functions as
candidates: order, fallback rules, timeouts, outcome and cost, tool-loop pins, user ids."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from metarouter.dispatch import CallFlow, CallRequest, FallbackPolicy, check_user_id
from metarouter.errors import (
    AttemptTimeoutError,
    ConfigError,
    DispatchError,
    FeedbackError,
    StoreError,
    UnknownArmError,
)
from metarouter.pricing import Price
from metarouter.service import ArmSpec, RoutingService
from metarouter.store.sql import SQLStore

ARMS = ("gemma-2-9b-it", "qwen2.5-7b-instruct", "llama-3.1-nemotron-51b-instruct")
PRICES = {ARMS[0]: Price(0.1, 0.1), ARMS[1]: Price(0.2, 0.2), ARMS[2]: Price(0.9, 0.9)}
QUERY = "Prove that the square root of 2 is irrational."


@pytest.fixture
def service(default_router, tmp_path):
    store = SQLStore(tmp_path / "s.db")
    yield RoutingService(
        [ArmSpec(n, price=p) for n, p in PRICES.items()], router=default_router, store=store
    )
    store.close()


@pytest.fixture
def flow(service) -> CallFlow:
    return CallFlow(service, ARMS, integration="test")


def test_the_chosen_model_answers_and_the_outcome_is_recorded_with_its_real_cost(flow, service):
    call = flow.start(CallRequest(QUERY, user_id="alice"))
    answer, model = flow.attempt(call, lambda name: f"answer of {name}")
    data = flow.finish(call, model, input_tokens=100, output_tokens=50)

    assert (answer, model) == (f"answer of {call.decision.model}", call.decision.model)
    assert call.order[0] == call.decision.model and set(call.order) == set(ARMS)
    assert data["cost_usd"] == pytest.approx(PRICES[model].cost(100, 50))
    assert data["cost_is_estimate"] is False and data["reason"] == "routed"
    stored = service.store.get_decision(data["decision_id"])
    assert stored.user_id == "alice" and stored.cost_usd == pytest.approx(data["cost_usd"])


def test_without_usage_the_cost_is_the_expected_one_marked_as_an_estimate(flow, service):
    call = flow.start(CallRequest(QUERY))
    _, model = flow.attempt(call, lambda name: name)
    data = flow.finish(call, model)
    assert data["cost_is_estimate"] is True
    assert data["cost_usd"] == pytest.approx(data["expected_costs_usd"][model])
    assert service.store.get_decision(data["decision_id"]).cost_usd is None  # not measured


def test_a_failing_candidate_falls_back_in_ranking_order_and_is_listed(flow):
    call = flow.start(CallRequest(QUERY))
    down = call.order[0]
    heard = []

    def candidate(name: str) -> str:
        if name == down:
            raise ConnectionError("HTTP 503")
        return name

    _, model = flow.attempt(call, candidate, on_failure=lambda *args: heard.append(args[::2]))
    assert model == call.order[1]
    assert call.data["fallbacks"] == [{"model": down, "error": "ConnectionError: HTTP 503"}]
    assert heard == [(down, model)]


def test_forced_and_compare_calls_never_fall_back_but_a_tool_loop_does(flow):
    def broken(name: str) -> str:
        raise ConnectionError("down")

    forced = flow.start(CallRequest(QUERY, model=ARMS[2]))
    assert (forced.order, forced.reason, forced.data["forced"]) == ((ARMS[2],), "override", True)
    with pytest.raises(DispatchError, match="a forced model never falls back") as caught:
        flow.attempt(forced, broken)
    assert isinstance(caught.value.__cause__, ConnectionError)

    side = flow.start(CallRequest(QUERY, model=ARMS[0], compare=True))
    assert (side.order, side.reason) == ((ARMS[0],), "compare")

    flow.remember_tool_calls(ARMS[2], ["call_1"])
    loop = flow.start(CallRequest(QUERY, pending_tool_calls=["call_1"]))
    assert (loop.order[0], loop.reason, loop.data["forced"]) == (ARMS[2], "tool_loop", False)
    assert len(loop.order) == 3, "a tool loop falls back"


def test_fallback_settings_limit_the_order(service):
    class Settings:  # an adapter's fields, read on every call
        fallback, fallback_on, max_fallbacks, timeout = True, (Exception,), 1, None

    settings = Settings()
    flow = CallFlow(service, ARMS, policy=settings, integration="test")
    assert len(flow.start(CallRequest(QUERY)).order) == 2
    settings.fallback = False
    call = flow.start(CallRequest(QUERY))
    assert len(call.order) == 1
    with pytest.raises(DispatchError, match="fallback is off"):
        flow.attempt(call, lambda name: (_ for _ in ()).throw(RuntimeError("x")))


def test_errors_outside_fallback_on_and_passthrough_errors_propagate_at_once(service):
    flow = CallFlow(service, ARMS, policy=FallbackPolicy(on=(ConnectionError,)), integration="t")
    tried = []

    def fails(error: Exception):
        def candidate(name: str) -> str:
            tried.append(name)
            raise error

        return candidate

    with pytest.raises(ValueError, match="bad request"):
        flow.attempt(flow.start(CallRequest(QUERY)), fails(ValueError("bad request")))
    with pytest.raises(KeyError):
        flow.attempt(
            flow.start(CallRequest(QUERY)), fails(KeyError("interrupt")), passthrough=(KeyError,)
        )
    assert len(tried) == 2, "each raised on the first candidate, no fallback"


def test_a_timeout_gives_up_on_a_slow_candidate_sync_and_async(service):
    flow = CallFlow(service, ARMS, policy=FallbackPolicy(timeout=0.2), integration="test")
    release = threading.Event()

    def candidate(name: str) -> str:
        if name == call.order[0]:
            release.wait(30)  # hangs until the test ends
        return name

    call = flow.start(CallRequest(QUERY))
    _, model = flow.attempt(call, candidate)
    assert model == call.order[1]
    assert isinstance(call.failures[0][1], AttemptTimeoutError)
    assert call.data["fallbacks"][0]["error"].startswith("AttemptTimeoutError")
    release.set()

    async def slow(name: str) -> str:
        if name == acall.order[0]:
            await asyncio.sleep(30)
        return name

    acall = flow.start(CallRequest(QUERY))
    _, amodel = asyncio.run(flow.aattempt(acall, slow))
    assert amodel == acall.order[1] and isinstance(acall.failures[0][1], TimeoutError)


def test_a_stream_failing_after_its_first_chunk_is_a_dispatch_error(flow):
    call = flow.start(CallRequest(QUERY))

    def chunks():
        yield "first"
        raise ConnectionError("peer closed connection")

    received = []
    with pytest.raises(DispatchError, match="failed mid-stream") as caught:
        for chunk in flow.relay(call, chunks()):
            received.append(chunk)
    assert received == ["first"] and isinstance(caught.value.__cause__, ConnectionError)


@pytest.mark.parametrize("error", [StoreError("database is locked"), FeedbackError("unknown id")])
def test_an_outcome_that_cannot_be_booked_is_logged_not_raised(
    flow, service, monkeypatch, caplog, error
):
    def refuse(*args, **kwargs):
        raise error

    monkeypatch.setattr(service, "complete", refuse)
    call = flow.start(CallRequest(QUERY))
    with caplog.at_level(logging.WARNING, logger="metarouter.dispatch"):
        data = flow.finish(call, call.decision.model, input_tokens=10, output_tokens=10)
    assert data["cost_usd"] > 0 and "could not store the outcome" in caplog.text


def test_capabilities_leave_candidates_out_and_forcing_one_that_lacks_them_is_refused(flow):
    lacking = {ARMS[0]: ["tool_calling"]}
    call = flow.start(CallRequest(QUERY, lacking=lacking, needs=["tool_calling"]))
    assert ARMS[0] not in call.order and ARMS[0] not in call.decision.routing.scores
    with pytest.raises(ConfigError, match=r"lacks \['tool_calling'\].*Fix: force one of"):
        flow.start(CallRequest(QUERY, model=ARMS[0], lacking=lacking))
    with pytest.raises(ConfigError, match="no candidate can take this call"):
        flow.start(CallRequest(QUERY, lacking={n: ["image_inputs"] for n in ARMS}))
    with pytest.raises(UnknownArmError, match="not a candidate"):
        flow.start(CallRequest(QUERY, model="gpt-17"))


def test_user_ids_any_text_is_a_user_and_a_bad_one_is_a_config_error():
    for ok in ("john.doe+news@example.com", "John Doe", "zoë", "org/42", "x" * 128):
        assert check_user_id(ok) == ok
    for bad in ("", "   ", "x" * 129, "a\nb", "nul\x00", 42, None):
        with pytest.raises(ConfigError, match="invalid user id") as caught:
            check_user_id(bad)
        assert not isinstance(caught.value, FeedbackError)


def test_the_compare_pair_is_the_routers_suggestion(flow, service):
    assert flow.pair(QUERY, "ann") == service.suggest_pair(QUERY, "ann")


def test_warm_up_records_nothing(flow, service):
    assert flow.warm_up("ann") > 0
    assert service.store.users() == []
