"""Budgets without a store: configuration, periods, the pacing multiplier, exhausted policies."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest
from metarouter.budgets import (
    Budget,
    BudgetState,
    Pacing,
    carried_multiplier,
    check_states,
    decayed_multiplier,
    multiplier_area,
    pacing_penalty,
    period_bounds,
    policy_choice,
    updated_multiplier,
)
from metarouter.errors import ConfigError


def _ts(*args: int) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"scope": "user", "name": "alice", "usd": 0}, "USD > 0"),
        ({"scope": "user", "name": "alice", "usd": float("nan")}, "USD > 0"),
        ({"scope": "user", "name": "alice", "usd": True}, "USD > 0"),
        ({"scope": "user", "name": "alice", "usd": 5, "period": "year"}, "unknown budget period"),
        ({"scope": "org", "name": "x", "usd": 5}, "unknown budget scope"),
        ({"scope": "team", "name": "", "usd": 5}, "team name"),
        ({"scope": "user", "name": "a\nb", "usd": 5}, "control"),
        ({"scope": "app", "name": "other", "usd": 5}, "no name"),
        ({"scope": "app", "usd": 5, "period": "window"}, "starts_at and ends_at"),
        (
            {"scope": "app", "usd": 5, "period": "window", "starts_at": 10, "ends_at": 5},
            "end after",
        ),
        ({"scope": "app", "usd": 5, "starts_at": 10}, "only apply"),
        ({"scope": "app", "usd": 5, "on_exhausted": "arm"}, "arm=<candidate"),
        ({"scope": "app", "usd": 5, "arm": "x"}, "only used"),
        ({"scope": "app", "usd": 5, "on_exhausted": "block"}, "unknown on_exhausted"),
    ],
)
def test_a_bad_budget_says_what_to_fix(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        Budget(**kwargs)


def test_periods_are_utc_calendar_days_weeks_and_months():
    now = _ts(2026, 2, 18, 15, 30)  # a Wednesday
    day = Budget("app", usd=1, period="day")
    week = Budget("app", usd=1, period="week")
    month = Budget("app", usd=1, period="month")
    assert period_bounds(day, now) == (_ts(2026, 2, 18), _ts(2026, 2, 19))
    assert period_bounds(week, now) == (_ts(2026, 2, 16), _ts(2026, 2, 23))
    assert period_bounds(month, now) == (_ts(2026, 2, 1), _ts(2026, 3, 1))
    assert period_bounds(month, _ts(2026, 12, 31, 23)) == (_ts(2026, 12, 1), _ts(2027, 1, 1))


def test_a_window_budget_is_inactive_outside_its_window():
    window = Budget("app", usd=1, period="window", starts_at=100.0, ends_at=200.0)
    assert period_bounds(window, 150.0) == (100.0, 200.0)
    assert period_bounds(window, 99.0) is None
    assert period_bounds(window, 200.0) is None


def test_spending_ahead_of_the_period_raises_the_multiplier_and_quiet_time_lowers_it():
    pacing = Pacing(step=3.0, target=1.0, max_multiplier=10.0)
    start, end = 0.0, 100.0
    # a tenth of the budget every 1% of the period (ahead of pace) vs every 20% (behind it)

    def run(every: float) -> float:
        mu, at = 0.0, 0.0
        for k in range(1, 5):
            mu = updated_multiplier(mu, at, k * every, 10.0, 100.0, start, end, pacing)
            at = k * every
        return mu

    ahead, behind = run(1.0), run(20.0)
    assert ahead > 3 * behind > 0
    assert behind == pytest.approx(pacing.step * 0.1)  # each charge alone; quiet time in between
    later = decayed_multiplier(ahead, 4.0, 8.0, start, end, pacing)
    assert 0 <= later < ahead
    assert decayed_multiplier(ahead, 4.0, 99.0, start, end, pacing) == 0.0
    huge = updated_multiplier(0.0, 0.0, 1.0, 1e6, 100.0, start, end, pacing)
    assert huge == pacing.max_multiplier
    assert updated_multiplier(5.0, 0.0, 1.0, 10.0, 100.0, start, end, Pacing(enabled=False)) == 0


def test_the_multiplier_area_is_the_integral_of_the_decaying_multiplier():
    pacing = Pacing(step=2.0, target=0.9)
    start, end = 0.0, 1000.0
    for mu, until in ((1.0, 300.0), (0.2, 900.0), (3.0, 1000.0)):
        ts = np.linspace(100.0, until, 20001)
        values = [decayed_multiplier(mu, 100.0, t, start, end, pacing) for t in ts]
        numeric = float(np.trapezoid(values, ts))
        assert multiplier_area(mu, 100.0, until, start, end, pacing) == pytest.approx(
            numeric, rel=1e-3
        )
    # a new period starts from the previous one's time average
    carried = carried_multiplier(1.0, 0.0, 0.0, start, end, pacing)
    assert carried == pytest.approx(multiplier_area(1.0, 0.0, end, start, end, pacing) / 1000)


def test_the_penalty_does_not_depend_on_the_price_level():
    costs = np.asarray([0.001, 0.004, 0.03])
    util = np.asarray([0.40, 0.45, 0.55])
    for mu in (0.05, 0.3, 2.0):
        cheap = np.argmax(util - pacing_penalty(mu, list(costs)) * costs)
        dear = np.argmax(util - pacing_penalty(mu, list(costs * 20)) * costs * 20)
        assert cheap == dear
    assert pacing_penalty(0.0, [0.1]) == 0.0
    assert pacing_penalty(1.0, [0.0, 0.0]) == 0.0


def test_the_tightest_budget_binds_and_the_most_specific_exhausted_one_applies():
    pacing = Pacing()
    team = BudgetState(Budget("team", "t", 10.0), 0.0, 100.0, 2.0, 4, 0, 0.5, 10.0)
    app = BudgetState(Budget("app", usd=10.0, on_exhausted="cheapest"), 0.0, 100.0, 3.0, 9, 0, 2)
    app_spent = BudgetState(
        Budget("app", usd=1.0, on_exhausted="cheapest"), 0.0, 100.0, 1.5, 9, 0, 2, 10.0
    )
    user_spent = BudgetState(Budget("user", "u", 1.0), 0.0, 100.0, 1.0, 3, 0, 0.0, 10.0)
    check = check_states([app, team], 10.0, pacing)
    assert check.binding is app and check.exhausted is None
    assert check.multiplier == pytest.approx(decayed_multiplier(2, 0.0, 10.0, 0, 100, pacing))
    check = check_states([app_spent, user_spent, team], 10.0, pacing)
    assert check.exhausted is user_spent
    assert check.states[0] is user_spent


def test_exhausted_policies_pick_the_cheapest_or_the_named_arm():
    names = ["big", "small", "mid"]
    costs = {"big": 3.0, "small": 1.0, "mid": 2.0}
    cheapest = Budget("app", usd=1, on_exhausted="cheapest")
    assert policy_choice(cheapest, names, costs) == ("small", "cheapest")
    named = Budget("app", usd=1, on_exhausted="arm", arm="mid")
    assert policy_choice(named, names, costs) == ("mid", "arm")
    assert policy_choice(named, ["big", "small"], costs) == ("small", "cheapest")


def test_the_penalty_is_capped_at_the_cheapest_candidates_utility_per_cost():
    costs, utils = [0.01, 0.02, 0.2], [0.3, 0.5, 0.9]
    full = Pacing(value_cap_factor=1.0)
    assert pacing_penalty(0.5, costs, utils) == pytest.approx(0.5 / (0.23 / 3))  # below the cap
    assert pacing_penalty(10.0, costs, utils, full) == pytest.approx(30.0)  # u0 / c0
    assert pacing_penalty(10.0, costs, utils) == pytest.approx(15.0)  # the default: 0.5 u0 / c0
    assert pacing_penalty(10.0, costs, utils, Pacing(value_cap=False)) == pytest.approx(
        10.0 / (0.23 / 3)
    )
    # at the full cap the choice is the candidate with the most utility per cost
    u, c = np.asarray(utils), np.asarray(costs)
    assert np.argmax(u - 30.0 * c) == np.argmax(u / c) == 0
    # at half of it, a dearer candidate whose extra utility per extra cost (0.2 / 0.01 = 20)
    # is at least half the cheapest one's ratio (15) wins
    assert np.argmax(u - pacing_penalty(10.0, costs, utils) * c) == 1
    utils_b = [0.1, 0.5, 0.9]  # the middle one now buys more utility per cost
    cap = pacing_penalty(10.0, costs, utils_b, full)
    assert cap == pytest.approx(10.0) and np.argmax(np.asarray(utils_b) - cap * c) == 1
    # a worthless or free cheapest candidate sets no cap
    assert pacing_penalty(10.0, costs, [-0.1, 0.5, 0.9]) == pytest.approx(10.0 / (0.23 / 3))
    assert pacing_penalty(10.0, [0.0, 0.02], [0.3, 0.5]) == pytest.approx(10.0 / 0.01)
    with pytest.raises(ConfigError, match="2 utilities for 3 candidates"):
        pacing_penalty(1.0, costs, [0.1, 0.2])
    with pytest.raises(ConfigError, match="value_cap"):
        Pacing(value_cap="yes")  # type: ignore[arg-type]
    for bad in (0, 1.5, True, "half"):
        with pytest.raises(ConfigError, match=r"value_cap_factor must be in \(0, 1\]"):
            Pacing(value_cap_factor=bad)  # type: ignore[arg-type]
