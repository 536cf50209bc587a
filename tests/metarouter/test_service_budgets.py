"""Budgets in the routed-call flow: pacing changes the choice, exhausted policies, charging."""

from __future__ import annotations

import numpy as np
import pytest
from metarouter.budgets import pacing_penalty
from metarouter.dispatch import CallFlow, CallRequest
from metarouter.errors import BudgetExceededError
from metarouter.pricing import Price, estimate_tokens
from metarouter.service import ArmSpec, RoutingService
from metarouter.store import SQLStore, new_id

START = 1_780_000_000.0  # 2026-05-28 20:26 UTC
QUERY = "Prove that the square root of two is irrational, step by step."
ARMS = [
    ArmSpec("weak", price=Price(0.002, 0.008), quality=0.05),
    ArmSpec("middling", price=Price(0.01, 0.04), quality=0.4),
    ArmSpec("strong", price=Price(0.06, 0.24), quality=0.95),
]


class Clock:
    now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def service(default_router):
    clock = Clock()
    svc = RoutingService(ARMS, router=default_router, store=SQLStore(":memory:"), clock=clock)
    svc.clock = clock  # type: ignore[attr-defined]
    return svc


def _ahead_of_pace(service, usd: float = 0.01, spent: float = 0.009) -> None:
    """Spend most of a monthly budget in its first minute: the multiplier rises."""
    service.budgets.set(usd, user="alice", per="month")
    service.budgets.charge(new_id(), "alice", "strong", spent, is_estimate=False)
    service.clock.now += 60


def test_without_a_budget_the_routing_data_says_so(service):
    decision = service.decide(QUERY, "alice")
    assert decision.budget is None
    assert decision.metadata()["budget"] is None
    assert service.complete(decision, model=decision.model, input_tokens=10, output_tokens=5)
    assert service.store.stats()["charged_calls"] == 0


def test_pacing_moves_the_call_to_a_cheaper_model_and_says_so(service):
    unbudgeted = service.decide(QUERY, "alice")
    assert unbudgeted.model == "strong", "precondition: the prior user picks the strong arm"
    _ahead_of_pace(service)
    decision = service.decide(QUERY, "alice")
    budget = decision.budget
    assert budget["policy"] == "paced" and budget["multiplier"] > 0 and budget["cost_penalty"] > 0
    assert budget["unbudgeted_model"] == "strong"
    assert decision.model != "strong" and budget["changed_choice"] is True
    costs = decision.routing.expected_costs_usd
    assert costs[decision.model] < costs["strong"]
    stored = service.store.get_decision(decision.decision_id)
    assert stored.metadata["budget"]["changed_choice"] is True


def test_a_paced_call_runs_the_quality_head_once_and_uses_the_capped_penalty(service, monkeypatch):
    _ahead_of_pace(service)
    router, passes = service.router, []
    original = router._logits
    monkeypatch.setattr(router, "_logits", lambda *a: passes.append(1) or original(*a))
    decision = service.decide(QUERY, "alice")
    assert len(passes) == 1 and decision.budget["policy"] == "paced"
    monkeypatch.undo()
    emb = router.embedder.encode_one(QUERY)[None, :]
    arms = [service.descriptors[n] for n in service.arm_names]
    tok = np.asarray([estimate_tokens(QUERY)], float)
    util, _, _, cost = router.utilities_embeddings(emb, tok, arms, service.preference("alice"))
    mu = decision.budget["multiplier"]
    expected = pacing_penalty(mu, cost[0].tolist(), util[0].tolist())
    assert decision.budget["cost_penalty"] == pytest.approx(expected)
    assert expected <= mu / cost[0].mean()
    assert expected <= util[0, cost[0].argmin()] / cost[0].min() + 1e-12
    assert decision.model == service.arm_names[int(np.argmax(util[0] - expected * cost[0]))]


def test_a_budget_on_pace_leaves_the_choice_to_the_preference(service):
    service.budgets.set(1000.0, user="alice", per="month")
    decision = service.decide(QUERY, "alice")
    assert decision.budget["multiplier"] == 0.0 and decision.budget["policy"] is None
    assert decision.model == decision.budget["unbudgeted_model"]
    assert decision.budget["changed_choice"] is False


def test_a_spent_budget_refuses_the_call_by_default(service):
    _ahead_of_pace(service, usd=0.01, spent=0.01)
    before = service.store.stats()["decisions"]
    with pytest.raises(BudgetExceededError, match="budget reset --user alice"):
        service.decide(QUERY, "alice")
    with pytest.raises(BudgetExceededError):
        service.decide(QUERY, "alice", forced="strong")
    assert service.store.stats()["decisions"] == before
    assert service.decide(QUERY, "bob").model == "strong"  # other users are not affected


def test_a_spent_budget_can_fall_back_to_the_cheapest_or_a_named_arm(service):
    service.budgets.set(1.0, user="alice", on_exhausted="cheapest")
    service.budgets.charge(new_id(), "alice", "strong", 1.5, is_estimate=False)
    cheapest = service.decide(QUERY, "alice")
    assert cheapest.model == "weak" and cheapest.budget["policy"] == "cheapest"
    assert cheapest.budget["exhausted"] is True and cheapest.budget["changed_choice"] is True
    service.budgets.set(1.0, user="alice", on_exhausted="arm", arm="middling")
    named = service.decide(QUERY, "alice")
    assert named.model == "middling" and named.budget["policy"] == "arm"
    forced = service.decide(QUERY, "alice", forced="strong")
    assert forced.model == "strong" and forced.budget["changed_choice"] is False


def test_finished_calls_are_charged_billed_or_estimated(service):
    service.budgets.set(10.0, user="alice")
    decision = service.decide(QUERY, "alice")
    billed = service.complete(decision, model="weak", input_tokens=1000, output_tokens=500)
    assert billed == pytest.approx(ARMS[0].price.cost(1000, 500))
    second = service.decide(QUERY, "alice")
    service.complete(second.decision_id, model=second.model)  # no usage: the estimate
    state = service.budgets.check("alice").states[0]
    assert state.calls == 2 and state.estimated_calls == 1
    estimate = second.routing.expected_costs_usd[second.model]
    assert state.spent_usd == pytest.approx(billed + estimate)


def test_the_call_flow_reports_the_budget_and_charges_the_answer(service):
    service.budgets.set(10.0, user="alice")
    flow = CallFlow(service, ["weak", "middling", "strong"], integration="test")
    call = flow.start(CallRequest(QUERY, user_id="alice"))
    assert call.data["budget"]["scope"] == "user"
    answer, model = flow.attempt(call, lambda name: f"answer of {name}")
    data = flow.finish(call, model, input_tokens=200, output_tokens=100)
    assert answer == f"answer of {model}"
    state = service.budgets.check("alice").states[0]
    assert state.calls == 1 and state.spent_usd == pytest.approx(data["cost_usd"])


def test_a_charge_that_cannot_be_written_raises_after_the_outcome_is_recorded(service, monkeypatch):
    import sqlalchemy as sa
    from metarouter.errors import ChargeError
    from metarouter.store import spend, sql

    service.budgets.set(10.0, user="alice")
    decision = service.decide(QUERY, "alice")

    def broken(conn, tables, record, pacing):
        raise sa.exc.OperationalError("INSERT ...", {}, Exception("disk I/O error"))

    monkeypatch.setattr(sql, "CHARGE_BACKOFF_SECONDS", 0.0)
    monkeypatch.setattr(spend, "record_spend", broken)
    with pytest.raises(ChargeError, match=decision.decision_id):
        service.complete(decision, model="weak", input_tokens=100, output_tokens=50)
    assert service.store.get_decision(decision.decision_id).cost_usd == pytest.approx(
        ARMS[0].price.cost(100, 50)
    )
    assert service.store_health().failures == 1
    assert service.budgets.check("alice").states[0].calls == 0


def test_the_call_flow_returns_the_answer_when_its_charge_fails(service, monkeypatch):
    import sqlalchemy as sa
    from metarouter.store import spend, sql

    service.budgets.set(10.0, user="alice")
    monkeypatch.setattr(sql, "CHARGE_BACKOFF_SECONDS", 0.0)
    monkeypatch.setattr(
        spend,
        "record_spend",
        lambda *a: (_ for _ in ()).throw(sa.exc.OperationalError("X", {}, Exception("down"))),
    )
    flow = CallFlow(service, ["weak", "middling", "strong"], integration="test")
    call = flow.start(CallRequest(QUERY, user_id="alice"))
    answer, model = flow.attempt(call, lambda name: f"answer of {name}")
    data = flow.finish(call, model, input_tokens=200, output_tokens=100)
    assert answer == f"answer of {model}" and data["model"] == model


def test_budgets_can_be_ignored(default_router):
    store = SQLStore(":memory:")
    service = RoutingService(ARMS, router=default_router, store=store, enforce_budgets=False)
    service.budgets.set(0.001, user="alice")
    service.budgets.charge(new_id(), "alice", "strong", 1.0, is_estimate=False)
    decision = service.decide(QUERY, "alice")
    assert decision.budget is None and decision.model == "strong"


def test_the_router_decides_under_a_penalty_as_argmax_of_utility_minus_penalised_cost(
    default_router,
):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, default_router.config.embedding_dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    tokens = rng.integers(20, 2000, 40).astype(float)
    arms = ["gemma-2-9b-it", "qwen2.5-7b-instruct", "llama-3.1-nemotron-51b-instruct"]
    util, _, _, cost = default_router.utilities_embeddings(emb, tokens, arms)
    for penalty in (0.0, 0.5, 5.0, 50.0):
        routed = default_router.route_embeddings(emb, tokens, arms, cost_penalty=penalty)
        expected = np.argmax(util - penalty * cost, axis=1)
        assert [d.model for d in routed] == [arms[k] for k in expected]
