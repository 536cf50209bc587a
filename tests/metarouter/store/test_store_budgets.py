"""Budgets in the store (SQLite and PostgreSQL): scopes, periods, atomic charges, many processes."""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from datetime import datetime, timezone

import pytest
from _budget_helpers import team_worker
from metarouter.budgets import Budgets, Pacing, SpendRecord
from metarouter.errors import ConfigError
from metarouter.store import SQLStore, new_id


def _ts(*args: int) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(_ts(2026, 6, 10, 12))


@pytest.fixture
def budgets(store, clock) -> Budgets:
    return Budgets(store, Pacing(), clock)


def test_a_budget_is_set_read_listed_and_deleted(budgets):
    budgets.set(50, user="alice", per="month")
    budgets.set(5, team="research", per="day", on_exhausted="arm", arm="gemma-2-9b-it")
    budgets.set(500, app=True, per="week", on_exhausted="cheapest")
    alice = budgets.get(user="alice")
    assert (alice.usd, alice.period, alice.on_exhausted) == (50.0, "month", "error")
    assert budgets.get(team="research").arm == "gemma-2-9b-it"
    assert [b.scope for b in budgets.list_budgets()] == ["user", "team", "app"]
    budgets.set(60, user="alice", per="week")  # replaces
    assert budgets.get(user="alice").usd == 60.0
    assert budgets.delete(user="alice") is True
    assert budgets.delete(user="alice") is False
    assert budgets.get(user="alice") is None
    with pytest.raises(ConfigError, match="exactly one scope"):
        budgets.set(5, user="alice", team="research")


def test_a_call_is_charged_to_every_budget_of_its_user_at_once(budgets, store, clock):
    budgets.set_team("research", ["alice", "bob"])
    budgets.set(1.0, user="alice")
    budgets.set(2.0, team="research")
    budgets.set(3.0, app=True)
    states = budgets.charge(new_id(), "alice", "m", 0.25, is_estimate=False)
    assert {(s.budget.scope, s.spent_usd, s.calls) for s in states} == {
        ("user", 0.25, 1),
        ("team", 0.25, 1),
        ("app", 0.25, 1),
    }
    clock.now += 1
    budgets.charge(new_id(), "bob", "m", 0.5, is_estimate=True)
    budgets.charge(new_id(), "carol", "m", 0.125, is_estimate=False)  # app only
    by_scope = {s.budget.key: s for s in budgets.states()}
    assert by_scope[("user", "alice")].spent_usd == pytest.approx(0.25)
    assert by_scope[("team", "research")].spent_usd == pytest.approx(0.75)
    assert by_scope[("team", "research")].estimated_calls == 1
    assert by_scope[("app", "app")].spent_usd == pytest.approx(0.875)
    assert [r.user_id for r in budgets.history(team="research")] == ["alice", "bob"]
    assert {s.budget.scope for s in budgets.states("carol")} == {"app"}


def test_a_user_without_a_budget_is_not_charged(budgets, store):
    budgets.set(1.0, user="alice")
    assert budgets.charge(new_id(), "bob", "m", 0.5, is_estimate=False) == []
    assert store.stats()["charged_calls"] == 0


def test_spending_ahead_of_pace_raises_the_multiplier_and_the_check_reports_it(budgets, clock):
    budgets.set(1.0, user="alice", per="month")
    assert budgets.check("alice").multiplier == 0.0
    for _ in range(5):  # half the month's budget in five minutes
        budgets.charge(new_id(), "alice", "m", 0.1, is_estimate=False)
        clock.now += 60
    check = budgets.check("alice")
    assert check.multiplier > 0 and check.binding.budget.name == "alice"
    assert check.exhausted is None
    budgets.charge(new_id(), "alice", "m", 0.6, is_estimate=False)
    assert budgets.check("alice").exhausted is not None


def test_a_new_period_starts_at_zero_spend_and_inherits_the_average_multiplier(budgets, clock):
    budgets.set(1.0, user="alice", per="day")
    for _ in range(4):
        budgets.charge(new_id(), "alice", "m", 0.2, is_estimate=False)
        clock.now += 600
    today = budgets.check("alice").states[0]
    clock.now += 86400  # the next day
    tomorrow = budgets.check("alice").states[0]
    assert tomorrow.period_start == today.period_end
    assert (tomorrow.spent_usd, tomorrow.calls) == (0.0, 0)
    assert 0 < tomorrow.multiplier < today.multiplier
    states = budgets.charge(new_id(), "alice", "m", 0.1, is_estimate=False)
    assert states[0].spent_usd == pytest.approx(0.1)
    assert len(budgets.history(user="alice")) == 5


def test_a_budget_set_mid_period_counts_the_spend_already_charged(budgets):
    budgets.set(1.0, app=True)
    budgets.charge(new_id(), "alice", "m", 0.3, is_estimate=False)
    budgets.set(1.0, user="alice")
    assert budgets.check("alice").states[0].spent_usd == pytest.approx(0.3)


def test_reset_starts_the_period_afresh_and_keeps_the_ledger(budgets):
    budgets.set(1.0, user="alice")
    budgets.charge(new_id(), "alice", "m", 0.7, is_estimate=False)
    assert budgets.reset(user="alice") == pytest.approx(0.7)
    state = budgets.check("alice").states[0]
    assert (state.spent_usd, state.calls, state.multiplier) == (0.0, 0, 0.0)
    assert len(budgets.history(user="alice")) == 1
    with pytest.raises(ConfigError, match="no user budget"):
        budgets.reset(user="bob")


def test_a_window_budget_applies_only_inside_its_window(budgets, clock):
    budgets.set(
        1.0, user="alice", per="window", starts_at=clock.now + 3600, ends_at=clock.now + 7200
    )
    assert budgets.check("alice") is None
    assert budgets.charge(new_id(), "alice", "m", 0.5, is_estimate=False) == []
    clock.now += 4000
    assert budgets.charge(new_id(), "alice", "m", 0.5, is_estimate=False)[0].spent_usd == 0.5


def test_a_charge_id_is_charged_once(budgets, store):
    from metarouter.errors import StoreError

    budgets.set(1.0, user="alice")
    spend_id = new_id()
    budgets.charge(spend_id, "alice", "m", 0.1, is_estimate=False)
    with pytest.raises(StoreError, match="Nothing was written"):
        budgets.charge(spend_id, "alice", "m", 0.1, is_estimate=False)
    assert budgets.check("alice").states[0].calls == 1


def _failing_statements(monkeypatch, fails: int) -> list[int]:
    """The next ``fails`` charges write their rows, then the database fails (rolled back)."""
    import sqlalchemy as sa
    from metarouter.store import spend, sql

    original, calls = spend.record_spend, []
    monkeypatch.setattr(sql, "CHARGE_BACKOFF_SECONDS", 0.0)

    def flaky(conn, tables, record, pacing):
        calls.append(1)
        states = original(conn, tables, record, pacing)  # rows written inside the transaction
        if len(calls) <= fails:
            raise sa.exc.OperationalError("UPDATE ...", {}, Exception("connection lost"))
        return states

    monkeypatch.setattr(spend, "record_spend", flaky)
    return calls


def test_a_charge_that_fails_is_retried_and_recorded_once(budgets, monkeypatch):
    budgets.set(1.0, user="alice")
    calls = _failing_statements(monkeypatch, fails=2)
    spend_id = new_id()
    states = budgets.charge(spend_id, "alice", "m", 0.25, is_estimate=False)
    assert len(calls) == 3 and states[0].spent_usd == pytest.approx(0.25)
    state = budgets.check("alice").states[0]
    assert state.calls == 1 and state.spent_usd == pytest.approx(0.25)
    assert [r.spend_id for r in budgets.history(user="alice")] == [spend_id]


def test_a_charge_that_keeps_failing_raises_and_leaves_no_partial_rows(budgets, store, monkeypatch):
    from metarouter.errors import ChargeError, StoreError

    budgets.set(1.0, user="alice")
    budgets.set_team("research", ["alice"])
    budgets.set(5.0, team="research")
    calls = _failing_statements(monkeypatch, fails=99)
    spend_id = new_id()
    with pytest.raises(ChargeError, match="after 3 attempt") as caught:
        budgets.charge(spend_id, "alice", "m", 0.25, is_estimate=False)
    assert isinstance(caught.value, StoreError)
    message = str(caught.value)
    assert spend_id in message and "connection lost" in message and "Budgets.charge(" in message
    assert len(calls) == 3
    # every attempt wrote a ledger row, two charge rows and two period updates, then failed:
    # none of it is left
    assert store.stats()["charged_calls"] == 0
    assert budgets.history(user="alice") == [] and budgets.history(team="research") == []
    assert all(s.calls == 0 and s.spent_usd == 0 for s in budgets.check("alice").states)


def test_a_charge_committed_before_its_connection_failed_is_not_doubled(
    budgets, store, monkeypatch
):
    import sqlalchemy as sa
    from metarouter.errors import StoreError
    from metarouter.store import sql

    budgets.set(1.0, user="alice")
    monkeypatch.setattr(sql, "CHARGE_BACKOFF_SECONDS", 0.0)
    original, calls = sql.SQLStore._write, []

    def lost_answer(self, action, fn):
        result = original(self, action, fn)
        calls.append(action)
        if len(calls) == 1:  # committed, but the client never heard back
            raise StoreError("connection lost") from sa.exc.OperationalError(
                "COMMIT", {}, Exception("connection lost")
            )
        return result

    monkeypatch.setattr(sql.SQLStore, "_write", lost_answer)
    states = budgets.charge(new_id(), "alice", "m", 0.25, is_estimate=False)
    assert len(calls) == 1  # the retry found the charge (a duplicate) and did not write again
    assert states[0].calls == 1 and states[0].spent_usd == pytest.approx(0.25)
    assert store.stats()["charged_calls"] == 1


def test_bad_charges_are_refused(store):
    with pytest.raises(Exception, match="cost"):
        store.record_spend(SpendRecord(new_id(), "alice", "m", -1.0, False, 1.0), pacing=Pacing())


def test_deleting_a_user_removes_their_spend_and_export_includes_it(budgets, store, clock):
    budgets.set_team("research", ["alice", "bob"])
    budgets.set(1.0, user="alice")
    budgets.set(1.0, team="research")
    budgets.charge(new_id(), "alice", "m", 0.1, is_estimate=False)
    clock.now += 1
    budgets.charge(new_id(), "bob", "m", 0.2, is_estimate=False)
    kinds = [row["type"] for row in store.export_user("alice")]
    assert kinds.count("spend") == 1 and kinds.count("team_membership") == 1
    store.delete_user("alice")
    assert [r.user_id for r in budgets.history(team="research")] == ["bob"]
    assert budgets.get(user="alice") is None
    assert budgets.teams() == {"research": ["bob"]}


def test_a_spend_report_has_days_models_and_a_plot(budgets, clock, tmp_path):
    budgets.set(1.0, user="alice")
    for model, cost in (("a", 0.1), ("b", 0.3), ("a", 0.2)):
        budgets.charge(new_id(), "alice", model, cost, is_estimate=model == "b")
        clock.now += 86400
    report = budgets.report(user="alice", plot=tmp_path / "spend.png")
    assert report["total_usd"] == pytest.approx(0.6)
    assert [d[2] for d in report["days"]] == [1, 1, 1]
    assert report["models"] == pytest.approx({"b": 0.3, "a": 0.3})
    assert report["estimated_calls"] == 1
    assert (tmp_path / "spend.png").stat().st_size > 10_000


@pytest.mark.slow
def test_eight_processes_routing_for_one_team_honour_its_budget_and_lose_nothing(
    store_url, tmp_path
):
    """Eight app instances route real calls (the bundled router, RoutingService) for one team."""
    workers, budget = 8, 0.005  # about 100 calls of the cheapest candidate
    members = ["alice", "bob", "carol", "dave"]
    with SQLStore(store_url) as store:
        setup = Budgets(store)
        setup.set_team("research", members)
        setup.set(budget, team="research", per="month")
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    outs = [tmp_path / f"worker-{w}.json" for w in range(workers)]
    procs = [
        ctx.Process(target=team_worker, args=(store_url, w, members, str(outs[w]), start, 1000))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    start.set()  # the workers load the router first, then race from this point
    began = time.monotonic()
    for p in procs:
        p.join(max(1.0, 900 - (time.monotonic() - began)))
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0] * workers
    logs = [json.loads(out.read_text()) for out in outs]
    assert all(log["refused"] == 1 for log in logs), "every worker ran until the budget was spent"
    charged = {sid: cost for log in logs for sid, cost in log["charged"]}
    assert len(charged) == sum(len(log["charged"]) for log in logs)
    # routed for real: spending ahead of the month's pace made the router pace some calls
    policies = [p for log in logs for p in log["policies"]]
    assert "paced" in policies

    with SQLStore(store_url) as store:
        check = Budgets(store)
        ledger = check.history(team="research")
        state = check.states()[0]
        decisions = {did: store.get_decision(did) for did in charged}
    # no lost (or doubled) spend record: the ledger, the counters and the workers agree
    assert {r.spend_id: r.cost_usd for r in ledger} == pytest.approx(charged)
    assert state.calls == len(charged)
    assert state.spent_usd == pytest.approx(sum(charged.values()))
    assert state.estimated_calls == 0  # every call reported its token usage
    # each charge is the routed call's: its decision is stored, answered by the charged model
    assert {r.spend_id: r.model for r in ledger} == {d: rec.chosen for d, rec in decisions.items()}
    assert all("budget" in rec.metadata for rec in decisions.values())
    # honoured: spent, and overrun by at most the call each instance had in flight
    last_calls = [log["charged"][-1][1] for log in logs if log["charged"]]
    assert budget <= state.spent_usd <= budget + sum(last_calls)
    assert state.spent_usd - budget <= workers * max(charged.values())
