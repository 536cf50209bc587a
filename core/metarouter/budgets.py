"""Spend budgets that the router honours by routing: configuration, periods, pacing, policy.

A :class:`Budget` is an amount in USD per period (a calendar day, ISO week or month in UTC, or
a fixed window) on a scope: one user, a team (a named group of users, see
:meth:`Budgets.set_team`), or the whole app. The store keeps, per budget and period, what was
spent and a **pacing multiplier** ``mu``; every routed call of a user under a budget is charged
to it atomically (see :meth:`metarouter.store.sql.SQLStore.record_spend`).

Pacing (a Lagrange multiplier on cost, updated by online dual ascent on the spend rate): each
charge moves ``mu`` by ``step * (cost / usd - target * elapsed)``, where ``elapsed`` is the
share of the period since the last charge, and ``mu`` never leaves ``[0, max_multiplier]``.
Spending faster than the period elapses raises it; quiet time lowers it. A new period
starts from the previous period's time-averaged multiplier (the first one from 0). The router then
routes with ``cost_penalty = mu / c_mean`` on top of the user's own cost weight
(:meth:`metarouter.router.MetaRouter.score_embeddings`), where ``c_mean`` is the call's mean
normalised candidate cost: ``mu`` is in units of "utility per average candidate cost", so the
same setting works whatever the models cost. The penalty is capped at a share
(:attr:`Pacing.value_cap_factor`, 0.5) of the cheapest candidate's utility per cost
(:func:`pacing_penalty`, :attr:`Pacing.value_cap`): once the budget binds, a dearer candidate
is chosen only where its extra utility per extra cost beats that share, so the money goes to the
calls where it buys the most. While a scope spends at or below its pace, ``mu`` is 0 and the
user's learned preference routes alone.

When a budget is spent (``spent >= usd``), its :attr:`Budget.on_exhausted` policy applies:
``"error"`` refuses the call (:class:`~metarouter.errors.BudgetExceededError`), ``"cheapest"``
routes to the candidate with the lowest expected cost, ``"arm"`` to :attr:`Budget.arm`. Only
``"error"`` (or an arm that costs nothing) keeps spend within the budget: a call admitted while
the budget had money left can overrun it by its own cost, so with one call at a time per app
instance the overspend is at most one call per instance.

Nothing here touches the network or the store at import; the store side is in
:mod:`metarouter.store.spend`.
"""

from __future__ import annotations

import calendar
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal, get_args

from metarouter.errors import ConfigError
from metarouter.validation import excerpt

if TYPE_CHECKING:
    from pathlib import Path

    from metarouter.store.sql import SQLStore

__all__ = [
    "APP",
    "Budget",
    "BudgetCheck",
    "BudgetState",
    "Budgets",
    "OnExhausted",
    "Pacing",
    "Period",
    "Scope",
    "SpendRecord",
    "carried_multiplier",
    "decayed_multiplier",
    "multiplier_area",
    "pacing_penalty",
    "period_bounds",
    "updated_multiplier",
]

logger = logging.getLogger(__name__)

Scope = Literal["user", "team", "app"]
Period = Literal["day", "week", "month", "window"]
OnExhausted = Literal["error", "cheapest", "arm"]
#: The name of the one app-wide budget.
APP = "app"
#: Most specific first: the order budgets are reported and exhausted policies chosen in.
_SCOPE_ORDER = {"user": 0, "team": 1, "app": 2}
_MAX_NAME_CHARS = 128
#: Largest budget accepted (a typo guard: a cent-denominated number passed as dollars).
MAX_BUDGET_USD = 1e9


def _check_name(scope: str, name: object) -> str:
    if scope not in get_args(Scope):
        raise ConfigError(
            f"unknown budget scope {excerpt(scope)}: use one of {list(get_args(Scope))}."
        )
    if scope == "app":
        if name not in (None, APP):
            raise ConfigError(f"the app budget has no name (got {excerpt(name)}); omit it.")
        return APP
    if scope == "user":
        from metarouter.dispatch import check_user_id

        return check_user_id(name)
    if not isinstance(name, str) or not name.strip() or len(name) > _MAX_NAME_CHARS:
        raise ConfigError(
            f"a team name must be a non-empty string of at most {_MAX_NAME_CHARS} characters, "
            f"got {excerpt(name)}."
        )
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise ConfigError(f"team name {excerpt(name)} contains control characters.")
    return name


@dataclass(frozen=True)
class Budget:
    """A spend budget on one scope.

    Attributes:
        scope: ``"user"``, ``"team"`` or ``"app"``.
        name: The user id, the team name, or ``"app"`` (the default for the app scope).
        usd: What the scope may spend per period, in USD (> 0).
        period: ``"day"``, ``"week"`` (ISO, from Monday), ``"month"`` (calendar months, UTC), or
            ``"window"`` (from ``starts_at`` to ``ends_at``; outside it the budget is inactive).
        starts_at: Window start (Unix seconds; ``window`` only).
        ends_at: Window end (Unix seconds; ``window`` only).
        on_exhausted: What a call does once the period's budget is spent: ``"error"``
            (refused), ``"cheapest"`` (the cheapest candidate answers) or ``"arm"`` (``arm``
            answers).
        arm: The candidate for ``on_exhausted="arm"``.
    """

    scope: Scope
    name: str = APP
    usd: float = 0.0
    period: Period = "month"
    starts_at: float | None = None
    ends_at: float | None = None
    on_exhausted: OnExhausted = "error"
    arm: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", _check_name(self.scope, self.name))
        usd = self.usd
        if (
            isinstance(usd, bool)
            or not isinstance(usd, (int, float))
            or not math.isfinite(usd)
            or not 0 < usd <= MAX_BUDGET_USD
        ):
            raise ConfigError(
                f"a budget must be a number of USD > 0 and <= {MAX_BUDGET_USD:g}, got "
                f"{excerpt(usd)} (e.g. Budget('user', 'alice', usd=50))."
            )
        object.__setattr__(self, "usd", float(usd))
        if self.period not in get_args(Period):
            raise ConfigError(
                f"unknown budget period {excerpt(self.period)}: use one of "
                f"{list(get_args(Period))}."
            )
        if self.period == "window":
            if self.starts_at is None or self.ends_at is None:
                raise ConfigError(
                    "a window budget needs starts_at and ends_at (Unix seconds, or --from/--to "
                    "dates on the command line)."
                )
            if not (math.isfinite(self.starts_at) and math.isfinite(self.ends_at)):
                raise ConfigError("a budget window's start and end must be finite times.")
            if not self.ends_at > self.starts_at:
                raise ConfigError(
                    f"a budget window must end after it starts (starts_at={self.starts_at}, "
                    f"ends_at={self.ends_at})."
                )
        elif self.starts_at is not None or self.ends_at is not None:
            raise ConfigError(
                f"starts_at/ends_at only apply to period='window', not {self.period!r}."
            )
        if self.on_exhausted not in get_args(OnExhausted):
            raise ConfigError(
                f"unknown on_exhausted policy {excerpt(self.on_exhausted)}: use one of "
                f"{list(get_args(OnExhausted))}."
            )
        if (self.on_exhausted == "arm") != (self.arm is not None):
            raise ConfigError(
                "on_exhausted='arm' needs arm=<candidate name>, and arm= is only used with "
                "on_exhausted='arm'."
            )

    @property
    def key(self) -> tuple[str, str]:
        """``(scope, name)``: a scope has at most one budget."""
        return (self.scope, self.name)

    def label(self) -> str:
        """``user alice``, ``team research`` or ``app``, for messages and tables."""
        return "app" if self.scope == "app" else f"{self.scope} {self.name}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def period_bounds(budget: Budget, now: float) -> tuple[float, float] | None:
    """The period of ``budget`` that contains ``now``: ``(start, end)`` Unix seconds, UTC.

    None for a window budget when ``now`` is outside its window (the budget is inactive).
    """
    if budget.period == "window":
        assert budget.starts_at is not None and budget.ends_at is not None
        if not budget.starts_at <= now < budget.ends_at:
            return None
        return budget.starts_at, budget.ends_at
    day = _utc(now).replace(hour=0, minute=0, second=0, microsecond=0)
    if budget.period == "day":
        start, end = day, day + timedelta(days=1)
    elif budget.period == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    else:
        start = day.replace(day=1)
        end = start + timedelta(days=calendar.monthrange(start.year, start.month)[1])
    return start.timestamp(), end.timestamp()


@dataclass(frozen=True)
class Pacing:
    """How a budget's multiplier tracks its spend rate (see the module docstring).

    Attributes:
        enabled: Pace at all (False: route by preference until the budget is spent, then
            apply ``on_exhausted``, like a gateway's hard block).
        step: Change of the multiplier per share of the budget spent ahead of (or behind) the
            period's elapsed share. The defaults were chosen on simulated months (seeds 100 to
            102) other than those docs/budgets.md reports on (seeds 0 to 4).
        target: Share of the budget to plan to spend by the end of the period (a margin for
            the calls that overrun it).
        max_multiplier: Upper bound of the multiplier (at the bound, cost outweighs any
            quality difference the router predicts).
        value_cap: Cap each call's cost penalty at ``value_cap_factor`` times the cheapest
            candidate's utility per cost (see :func:`pacing_penalty`): a budget that binds buys
            the most utility per dollar instead of only the cheapest calls. Chosen on simulated
            months (seeds 100 to 102); see docs/budgets.md.
        value_cap_factor: The share of the cheapest candidate's utility per cost the penalty
            is capped at, in (0, 1]. Below 1, a dearer candidate wins when its extra utility
            per extra cost is at least this share of the cheapest one's ratio: the router's
            expected qualities are shrunk towards each other, so the realised gain of a dearer
            answer is larger than the expected one. 0.5 was chosen on simulated months (seeds
            100 to 109; docs/budgets.md), not on the months reported there.
    """

    enabled: bool = True
    step: float = 3.0
    target: float = 0.97
    max_multiplier: float = 10.0
    value_cap: bool = True
    value_cap_factor: float = 0.5

    def __post_init__(self) -> None:
        for name in ("step", "max_multiplier"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and value > 0):
                raise ConfigError(f"Pacing.{name} must be a number > 0, got {excerpt(value)}.")
            if not math.isfinite(value):
                raise ConfigError(f"Pacing.{name} must be finite, got {value}.")
        if not isinstance(self.value_cap, bool):
            raise ConfigError(
                f"Pacing.value_cap must be True or False, got {excerpt(self.value_cap)}."
            )
        factor = self.value_cap_factor
        if isinstance(factor, bool) or not (isinstance(factor, (int, float)) and 0 < factor <= 1):
            raise ConfigError(f"Pacing.value_cap_factor must be in (0, 1], got {excerpt(factor)}.")
        if isinstance(self.target, bool) or not (
            isinstance(self.target, (int, float)) and 0 < self.target <= 1
        ):
            raise ConfigError(f"Pacing.target must be in (0, 1], got {excerpt(self.target)}.")


def decayed_multiplier(
    multiplier: float, paced_at: float, now: float, start: float, end: float, pacing: Pacing
) -> float:
    """The multiplier at ``now``: the stored one, lowered for the time passed since ``paced_at``."""
    if not pacing.enabled:
        return 0.0
    since = min(max(paced_at, start), end)
    elapsed = max(0.0, min(now, end) - since) / (end - start)
    return min(max(multiplier - pacing.step * pacing.target * elapsed, 0.0), pacing.max_multiplier)


def updated_multiplier(
    multiplier: float,
    paced_at: float,
    now: float,
    cost_usd: float,
    usd: float,
    start: float,
    end: float,
    pacing: Pacing,
) -> float:
    """One dual-ascent step: the multiplier after a charge of ``cost_usd`` at ``now``."""
    if not pacing.enabled:
        return 0.0
    value = decayed_multiplier(multiplier, paced_at, now, start, end, pacing)
    return min(max(value + pacing.step * cost_usd / usd, 0.0), pacing.max_multiplier)


def multiplier_area(
    multiplier: float, paced_at: float, until: float, start: float, end: float, pacing: Pacing
) -> float:
    """The integral of the (decaying) multiplier from ``paced_at`` to ``until`` (seconds)."""
    if not pacing.enabled or multiplier <= 0:
        return 0.0
    t0 = min(max(paced_at, start), end)
    span = max(0.0, min(until, end) - t0)
    rate = pacing.step * pacing.target / (end - start)  # decay per second
    if multiplier - rate * span >= 0:
        return span * (multiplier - rate * span / 2)
    return multiplier * multiplier / (2 * rate)


def carried_multiplier(
    multiplier: float, paced_at: float, area: float, start: float, end: float, pacing: Pacing
) -> float:
    """The multiplier a new period starts from: the previous period's time-averaged one.

    ``area`` is the previous period's integral of the multiplier up to ``paced_at``; the decay
    from there to the period's end is added. A budget's first period starts from 0.
    """
    if not pacing.enabled:
        return 0.0
    total = area + multiplier_area(multiplier, paced_at, end, start, end, pacing)
    return min(max(total / (end - start), 0.0), pacing.max_multiplier)


def pacing_penalty(
    multiplier: float,
    normalised_costs: Sequence[float],
    utilities: Sequence[float] = (),
    pacing: Pacing | None = None,
) -> float:
    """The router's ``cost_penalty`` for a multiplier, on one call's candidates.

    ``multiplier / c_mean``, with ``c_mean`` the candidates' mean normalised expected cost. With
    the router's expected ``utilities`` of the candidates and ``pacing.value_cap`` (the
    default), the penalty is at most ``f * u_0 / c_0``, with ``u_0 / c_0`` the utility per
    normalised cost of the cheapest candidate and ``f`` ``pacing.value_cap_factor`` (0.5;
    ``pacing=None`` means the default :class:`Pacing`). At ``f = 1`` the router picks the
    candidate with the most utility per cost, which is what the money buys most of once the
    budget binds; a larger penalty only trades quality for savings the ratio says are worth
    less. ``f < 1`` lets a dearer candidate win where its extra utility per extra cost is at
    least ``f`` times that ratio, because the expected qualities understate how much better a
    dearer answer turns out (chosen on simulated months, docs/budgets.md). A cheapest
    candidate that costs nothing, or is worth nothing, sets no cap.
    """
    pacing = pacing if pacing is not None else Pacing()
    if multiplier <= 0 or not normalised_costs:
        return 0.0
    mean = sum(normalised_costs) / len(normalised_costs)
    penalty = float(multiplier / mean) if mean > 0 else 0.0
    if len(utilities) and pacing.value_cap:
        if len(utilities) != len(normalised_costs):
            raise ConfigError(
                f"pacing_penalty got {len(utilities)} utilities for {len(normalised_costs)} "
                "candidates: pass one of each per candidate, in the same order."
            )
        cheapest = min(range(len(normalised_costs)), key=normalised_costs.__getitem__)
        cost, value = normalised_costs[cheapest], utilities[cheapest]
        if cost > 0 and value > 0:
            penalty = min(penalty, float(pacing.value_cap_factor * value / cost))
    return penalty


@dataclass(frozen=True)
class BudgetState:
    """A budget with its current period as stored.

    Attributes:
        budget: The budget.
        period_start: Start of the current period (Unix seconds).
        period_end: End of the current period.
        spent_usd: Charged in this period.
        calls: Calls charged in this period.
        estimated_calls: Of those, calls charged at the router's estimate (no usage reported).
        multiplier: The pacing multiplier as of ``paced_at``.
        paced_at: When the multiplier was last updated.
        multiplier_area: Integral of the multiplier over the period up to ``paced_at``.
    """

    budget: Budget
    period_start: float
    period_end: float
    spent_usd: float = 0.0
    calls: int = 0
    estimated_calls: int = 0
    multiplier: float = 0.0
    paced_at: float = 0.0
    multiplier_area: float = 0.0

    @property
    def exhausted(self) -> bool:
        """Whether the period's budget is spent."""
        return self.spent_usd >= self.budget.usd

    @property
    def remaining_usd(self) -> float:
        """What is left this period (negative after an overrun)."""
        return self.budget.usd - self.spent_usd

    def elapsed(self, now: float) -> float:
        """Share of the period elapsed at ``now``."""
        return min(max((now - self.period_start) / (self.period_end - self.period_start), 0), 1)

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        """JSON-ready summary."""
        out = {
            "scope": self.budget.scope,
            "name": self.budget.name,
            "usd": self.budget.usd,
            "period": self.budget.period,
            "period_start": self.period_start,
            "period_end": self.period_end,
            "spent_usd": self.spent_usd,
            "calls": self.calls,
            "estimated_calls": self.estimated_calls,
            "multiplier": self.multiplier,
            "on_exhausted": self.budget.on_exhausted,
            "arm": self.budget.arm,
        }
        if now is not None:
            out["elapsed"] = self.elapsed(now)
        return out


@dataclass(frozen=True)
class SpendRecord:
    """One charged call (a row of the spend ledger).

    Attributes:
        spend_id: Unique id (the decision id of the call).
        user_id: Whose call.
        model: The model that answered.
        cost_usd: What it cost: billed from reported usage, else the router's estimate.
        is_estimate: ``cost_usd`` is the router's estimate (the provider reported no usage).
        created_at: When it was charged.
        charged_to: ``(scope, name)`` of the budgets it was charged to.
    """

    spend_id: str
    user_id: str
    model: str
    cost_usd: float
    is_estimate: bool
    created_at: float
    charged_to: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class BudgetCheck:
    """What the budgets of a user say about their next call.

    Attributes:
        states: The active budgets of the user, most specific first.
        multiplier: The largest current pacing multiplier among them.
        binding: The budget that sets the multiplier, or the first exhausted one.
        exhausted: The first exhausted budget, if any (its policy applies).
    """

    states: tuple[BudgetState, ...]
    multiplier: float = 0.0
    binding: BudgetState | None = None
    exhausted: BudgetState | None = None

    def summary(self) -> dict[str, Any]:
        """The ``budget`` entry of a decision's routing data (before routing adds its part)."""
        state = self.exhausted or self.binding or self.states[0]
        return {
            "scope": state.budget.scope,
            "name": state.budget.name,
            "usd": state.budget.usd,
            "spent_usd": state.spent_usd,
            "period_end": state.period_end,
            "multiplier": self.multiplier,
            "exhausted": self.exhausted is not None,
            "budgets": len(self.states),
        }


def check_states(states: Sequence[BudgetState], now: float, pacing: Pacing) -> BudgetCheck:
    """Combine a user's budget states: the tightest multiplier, the first exhausted budget."""
    ordered = tuple(sorted(states, key=lambda s: _SCOPE_ORDER[s.budget.scope]))
    exhausted = next((s for s in ordered if s.exhausted), None)
    best, binding = 0.0, None
    for s in ordered:
        m = decayed_multiplier(s.multiplier, s.paced_at, now, s.period_start, s.period_end, pacing)
        if m > best:
            best, binding = m, s
    return BudgetCheck(ordered, best, binding, exhausted)


@dataclass
class Budgets:
    """Set, read, reset and report budgets; used by :class:`~metarouter.service.RoutingService`.

    Args:
        store: The SQL store holding budgets and spend.
        pacing: The pacing settings.
        clock: Current Unix time (tests and simulations pass their own).
    """

    store: SQLStore
    pacing: Pacing = field(default_factory=Pacing)
    clock: Callable[[], float] = time.time

    # -- configuration --------------------------------------------------------------------------
    def set(
        self,
        usd: float,
        *,
        user: str | None = None,
        team: str | None = None,
        app: bool = False,
        per: Period = "month",
        starts_at: float | None = None,
        ends_at: float | None = None,
        on_exhausted: OnExhausted = "error",
        arm: str | None = None,
    ) -> Budget:
        """Create or replace the budget of one scope (exactly one of user, team, app).

        Spend already charged to the scope in the current period keeps counting.
        """
        scope, name = self._scope(user, team, app)
        budget = Budget(scope, name, usd, per, starts_at, ends_at, on_exhausted, arm)
        self.store.set_budget(budget, now=self.clock())
        logger.info("budget %s: %.4f USD per %s", budget.label(), budget.usd, budget.period)
        return budget

    @staticmethod
    def _scope(user: str | None, team: str | None, app: bool) -> tuple[Scope, str]:
        """The one scope named, with its checked name."""
        given = [x for x in (user is not None, team is not None, bool(app)) if x]
        if len(given) != 1:
            raise ConfigError(
                "name exactly one scope: user='alice', team='research' or app=True "
                "(--user, --team or --app on the command line)."
            )
        if user is not None:
            return "user", _check_name("user", user)
        if team is not None:
            return "team", _check_name("team", team)
        return "app", APP

    def get(
        self, *, user: str | None = None, team: str | None = None, app: bool = False
    ) -> Budget | None:
        """The budget of one scope, if set."""
        scope, name = self._scope(user, team, app)
        return self.store.get_budget(scope, name)

    def list_budgets(self) -> list[Budget]:
        """Every budget, most specific scope first."""
        return sorted(self.store.budgets(), key=lambda b: (_SCOPE_ORDER[b.scope], b.name))

    def delete(
        self, *, user: str | None = None, team: str | None = None, app: bool = False
    ) -> bool:
        """Remove the budget of one scope (its spend history stays); whether there was one."""
        scope, name = self._scope(user, team, app)
        return self.store.delete_budget(scope, name)

    def reset(
        self, *, user: str | None = None, team: str | None = None, app: bool = False
    ) -> float:
        """Start the current period afresh (spend and multiplier to 0); returns what was spent.

        The ledger keeps the charged calls, so reports still show them.
        """
        scope, name = self._scope(user, team, app)
        return self.store.reset_budget(scope, name, now=self.clock())

    def set_team(self, team: str, members: Sequence[str]) -> None:
        """Make ``members`` the users of ``team`` (replacing its members)."""
        from metarouter.dispatch import check_user_id

        name = _check_name("team", team)
        if isinstance(members, str):
            raise ConfigError("members must be a list of user ids, not one string.")
        self.store.set_team(name, sorted({check_user_id(m) for m in members}))

    def teams(self) -> dict[str, list[str]]:
        """Every team with its members."""
        return self.store.teams()

    # -- state ----------------------------------------------------------------------------------
    def states(self, user_id: str | None = None) -> list[BudgetState]:
        """This period's state of every active budget (``user_id``: those applying to them)."""
        return self.store.budget_states(user_id, now=self.clock(), pacing=self.pacing)

    def check(self, user_id: str) -> BudgetCheck | None:
        """What the budgets of ``user_id`` say about their next call (None: no budget applies)."""
        now = self.clock()
        states = self.store.budget_states(user_id, now=now, pacing=self.pacing)
        if not states:
            return None
        return check_states(states, now, self.pacing)

    def charge(
        self, spend_id: str, user_id: str, model: str, cost_usd: float, *, is_estimate: bool
    ) -> list[BudgetState]:
        """Charge one call to every active budget of ``user_id`` (atomically); their new states."""
        return self.store.record_spend(
            SpendRecord(spend_id, user_id, model, float(cost_usd), is_estimate, self.clock()),
            pacing=self.pacing,
        )

    # -- reports --------------------------------------------------------------------------------
    def history(
        self,
        *,
        user: str | None = None,
        team: str | None = None,
        app: bool = False,
        since: float | None = None,
        until: float | None = None,
    ) -> list[SpendRecord]:
        """The calls charged to one scope's budget, oldest first."""
        scope, name = self._scope(user, team, app)
        return self.store.spend_history(scope, name, since=since, until=until)

    def report(
        self,
        *,
        user: str | None = None,
        team: str | None = None,
        app: bool = False,
        since: float | None = None,
        until: float | None = None,
        plot: str | Path | None = None,
    ) -> dict[str, Any]:
        """Spend of one scope per UTC day and per model, and optionally a plot over time.

        Returns:
            ``{"scope", "name", "budget", "total_usd", "calls", "estimated_calls", "days":
            [(date, usd, calls)], "models": {model: usd}, "plot": path or None}``.
        """
        from metarouter.spend_report import spend_report

        scope, name = self._scope(user, team, app)
        rows = self.store.spend_history(scope, name, since=since, until=until)
        budget = self.store.get_budget(scope, name)
        return spend_report(scope, name, budget, rows, plot=plot, now=self.clock())


def policy_choice(
    budget: Budget, names: Sequence[str], expected_costs: Mapping[str, float]
) -> tuple[str, str]:
    """The candidate an exhausted budget's policy picks, and why (for the routing data).

    ``"error"`` is handled by the caller (it refuses the call before routing).
    """
    cheapest = min(names, key=lambda n: (expected_costs[n], names.index(n)))
    if budget.on_exhausted == "arm":
        if budget.arm in names:
            return str(budget.arm), "arm"
        logger.warning(
            "budget %s: its arm %r is not a candidate of this call; the cheapest candidate %r "
            "answers instead",
            budget.label(),
            budget.arm,
            cheapest,
        )
    return cheapest, "cheapest"


def exhausted_message(state: BudgetState) -> str:
    """The :class:`BudgetExceededError` message for a spent budget."""
    end = _utc(state.period_end).strftime("%Y-%m-%d %H:%M UTC")
    b = state.budget
    scope_opt = "--app" if b.scope == "app" else f"--{b.scope} {b.name}"
    return (
        f"the {b.label()} budget of {b.usd:.4f} USD per {b.period} is spent "
        f"({state.spent_usd:.4f} USD in {state.calls} calls); its period ends {end}. "
        f"Fix: raise it (metarouter budget set {scope_opt} --usd N), reset it (metarouter "
        f"budget reset {scope_opt}), or set on_exhausted='cheapest' or 'arm' to keep answering "
        "with a cheap model."
    )
