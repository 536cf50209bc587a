"""The budget simulation: its pacing is the store's, its traffic has bursts, a small run works."""

from __future__ import annotations

import numpy as np
import pytest
from metarouter.budgets import Budgets, Pacing, pacing_penalty
from metarouter.evaluation.budget_sim import (
    METHODS,
    MONTH_DAYS,
    MONTH_START,
    SimConfig,
    make_traffic,
    markdown_table,
    run_simulation,
    simulate_pacing,
)
from metarouter.store import SQLStore


class Clock:
    now = MONTH_START

    def __call__(self) -> float:
        return self.now


def test_simulated_pacing_matches_the_store_charge_by_charge():
    """The simulation's multiplier and choices are what the store path computes."""
    rng = np.random.default_rng(3)
    n, k = 150, 4
    times = np.sort(MONTH_START + rng.uniform(0, MONTH_DAYS * 86400, n))
    util = rng.uniform(0, 1, (n, k))
    norm = np.sort(rng.uniform(0.001, 0.05, (n, k)), axis=1)
    util = np.sort(util, axis=1)  # dearer models are better: a real trade-off
    cost = norm * 0.01
    budget = 0.5 * float(cost[np.arange(n), util.argmax(1)].sum())
    end = MONTH_START + MONTH_DAYS * 86400.0
    pacing = Pacing(step=3.0)
    chosen, served, mus, _ = simulate_pacing(
        times, util, norm, cost, budget, MONTH_START, end, pacing
    )
    assert served.sum() < n  # the budget ran out: the comparison covers the refusal too

    clock = Clock()
    budgets = Budgets(SQLStore(":memory:"), pacing, clock)
    budgets.set(budget, user="u", per="month")  # June 2026: the simulated month
    for i in range(n):
        clock.now = float(times[i])
        check = budgets.check("u")
        if check.exhausted is not None:
            assert not served[i]
            continue
        assert served[i]
        assert check.multiplier == pytest.approx(mus[i], abs=1e-9)
        # the service's penalty (tests/metarouter/test_service_budgets.py checks it is this)
        penalty = pacing_penalty(check.multiplier, norm[i].tolist(), util[i].tolist(), pacing)
        pick = int(np.argmax(util[i] - penalty * norm[i]))
        assert pick == chosen[i]
        budgets.charge(f"{i:032x}", "u", "m", float(cost[i, pick]), is_estimate=False)


def test_traffic_follows_office_hours_and_bursts_of_one_task():
    tasks = np.asarray(["a", "b", "c"] * 50)
    cfg = SimConfig(calls_per_month=2000, bursts=4.0)
    traffic = make_traffic(tasks, np.random.default_rng(1), cfg)
    assert np.all(np.diff(traffic.times) >= 0)
    assert traffic.times.min() >= MONTH_START
    hours = ((traffic.times - MONTH_START) // 3600 % 24).astype(int)
    assert np.mean((hours >= 8) & (hours < 18)) > 0.5  # most calls in office hours
    for begin, finish, family in traffic.bursts:
        inside = (traffic.times >= begin) & (traffic.times < finish)
        assert np.mean(tasks[traffic.rows[inside]] == family) > 0.5


@pytest.mark.slow
def test_a_small_simulation_keeps_every_budget(default_router, tmp_path):
    cfg = SimConfig(alphas=(0.9,), seeds=(7,), calls_per_month=300)
    result = run_simulation(cfg, router=default_router, out=tmp_path)
    budgeted = [r for r in result["runs"] if r["method"] != "no budget"]
    assert all(r["overspend_calls"] <= 1.0 for r in budgeted)
    free = [r for r in result["runs"] if r["method"] == "no budget"]
    assert all(r["spend"] == pytest.approx(r["budget_usd"] / r["level"]) for r in free)
    table = markdown_table(result["rows"])
    assert table.count("| MetaRouter pacing |") == len(cfg.levels)
    assert len(result["rows"]) == len(cfg.levels) * len(METHODS)
    # the hindsight constant is the best constant for the month: no offline constant beats it
    by = {(r["level"], r["method"]): r["quality_pct"] for r in result["rows"]}
    for level in cfg.levels:
        reference = by[(level, "fixed alpha, hindsight (upper reference)")]
        assert reference >= by[(level, "fixed alpha, tuned offline (best quality)")] - 1e-9
        assert reference >= by[(level, "hard block")] - 1e-9
    assert (tmp_path / "budget_simulation.png").stat().st_size > 10_000
    written = (tmp_path / "budget_simulation.md").read_text()
    assert written.startswith(table)
    assert written.count("Higher than every baseline: ") == len(cfg.levels)
