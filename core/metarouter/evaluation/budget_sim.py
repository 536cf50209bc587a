"""``metarouter budget simulate``: a simulated month of traffic per user under a spend budget.

Setup (all on the bundled LLMRouter data and the bundled router; nothing is trained):

* **Users**: simulated users with a hidden linear taste (weight ``alpha`` on quality), whose
  preference the router infers from ten comparisons on training-split queries.
* **Traffic**: a 30-day month (June 2026, UTC). Calls arrive as a Poisson process whose rate
  follows office hours and weekdays, plus bursts (a batch job: a few hours to a day at eight
  times the rate, all from one task family). Each call is a test-split query (which the router
  never trained on) drawn at random; its quality and billed cost are the dataset's outcome for
  the model that answers.
* **Two months per user and seed**: "last month" (used only to tune the offline baselines and
  nothing else) and "this month" (scored). Both come from the same process with different
  random draws, so this month's volume and bursts differ from last month's, as in production.
* **Budget**: 25%, 50% and 75% of what MetaRouter without a budget spends this month.

Methods (all route with the same user preference; they differ only in how cost is weighted):

* ``no budget``: the user's preference alone (the reference for quality and spend).
* ``hard block``: the user's preference until the budget is spent, then every call is refused
  (a gateway's budget).
* ``fixed alpha, tuned offline``: a constant extra weight on cost, tuned on last month's
  traffic (never on the scored month) and refused once the budget is spent (so it never
  overspends by more than a call). Three variants: the constant with which last month would
  have spent exactly the budget, as a constant ``cost_penalty`` or a constant pacing multiplier
  (``mu / c_mean``, pacing's own scale); and the constant multiplier (from
  :data:`MULTIPLIER_GRID`) that gave last month the most quality under the budget.
* ``MetaRouter pacing``: :mod:`metarouter.budgets` (the dual-ascent multiplier, updated on
  every charge exactly as the store does, and the value cap of :func:`pacing_penalty`),
  ``on_exhausted="error"``. Like a budget's second period in the store, this month starts from
  the time-averaged multiplier of last month (run under the same budget): the same information
  the offline baselines are tuned on. ``MetaRouter pacing, no value cap`` is the same with
  ``Pacing(value_cap=False)``.
* ``fixed alpha, hindsight (upper reference)``: the grid's best constant for this very month
  (chosen with its outcomes): not something an operator can do, and not one of the
  :data:`BASELINES` the issue's bar compares pacing with.

Decisions use :meth:`metarouter.router.MetaRouter.utilities_embeddings`: the router's choice
under a cost penalty ``lam`` is ``argmax(utility - lam * cost)``, the same rule
``route_embeddings(..., cost_penalty=lam)`` applies (a test checks they agree).

Metrics, per (user, seed, budget level): total quality this month (a refused call scores 0),
in % of the no-budget total; overspend beyond the budget (USD, and in calls: overspend over the
cost of the call that overran); spend evenness: the largest gap between the share of the
budget spent and the share of the month elapsed (0 = perfectly even); the day the budget ran
out; refused calls.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from metarouter.budgets import (
    Pacing,
    carried_multiplier,
    decayed_multiplier,
    multiplier_area,
    pacing_penalty,
    updated_multiplier,
)

__all__ = [
    "BASELINES",
    "METHODS",
    "MULTIPLIER_GRID",
    "SimConfig",
    "Traffic",
    "bar_check",
    "make_traffic",
    "markdown_table",
    "run_simulation",
    "simulate_pacing",
]

logger = logging.getLogger(__name__)

MONTH_START = datetime(2026, 6, 1, tzinfo=timezone.utc).timestamp()
MONTH_DAYS = 30
HOUR = 3600.0


@dataclass(frozen=True)
class SimConfig:
    """What to simulate.

    Attributes:
        alphas: Hidden quality weights of the simulated users.
        seeds: Seeds (each gives every user a last month and a this month).
        levels: Budgets as shares of the unconstrained spend.
        calls_per_month: Expected calls per user per month before bursts.
        bursts: Expected bursts per month.
        burst_rate: Rate multiplier during a burst.
        comparisons: Comparisons the router learns each user's preference from.
        pacing: The pacing settings under test.
    """

    alphas: tuple[float, ...] = (0.5, 0.7, 0.9)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    levels: tuple[float, ...] = (0.25, 0.5, 0.75)
    calls_per_month: int = 1000
    bursts: float = 3.0
    burst_rate: float = 8.0
    comparisons: int = 10
    pacing: Pacing = field(default_factory=Pacing)


@dataclass(frozen=True)
class Traffic:
    """One month of calls: arrival times (sorted) and the query (row of the pool) of each."""

    times: np.ndarray
    rows: np.ndarray
    bursts: tuple[tuple[float, float, str], ...]


def make_traffic(
    tasks: np.ndarray, rng: np.random.Generator, cfg: SimConfig, start: float = MONTH_START
) -> Traffic:
    """Arrivals over a 30-day month: office hours, quiet weekends, and bursts of one task."""
    hours = np.arange(MONTH_DAYS * 24)
    stamps = [datetime.fromtimestamp(start + h * HOUR, tz=timezone.utc) for h in hours]
    office = np.asarray([1.0 if 8 <= s.hour < 18 else 0.25 for s in stamps])
    weekday = np.asarray([0.3 if s.weekday() >= 5 else 1.0 for s in stamps])
    shape = office * weekday
    rate = shape / shape.sum() * cfg.calls_per_month  # expected calls per hour
    counts = rng.poisson(rate)
    times = [start + (h + rng.random(n)) * HOUR for h, n in zip(hours, counts, strict=True)]
    rows = [rng.integers(0, len(tasks), n) for n in counts]
    families = sorted(set(tasks.tolist()))
    bursts = []
    for _ in range(rng.poisson(cfg.bursts)):
        begin = float(rng.uniform(0, MONTH_DAYS * 24 - 4))
        length = float(rng.uniform(4, 24))
        family = str(families[rng.integers(len(families))])
        pool = np.flatnonzero(tasks == family)
        first, last = int(begin), min(int(begin + length), MONTH_DAYS * 24 - 1)
        expected = float(rate[first : last + 1].sum()) * (cfg.burst_rate - 1)
        n = rng.poisson(expected)
        times.append(start + (begin + rng.random(n) * length) * HOUR)
        rows.append(rng.choice(pool, n))
        bursts.append((start + begin * HOUR, start + (begin + length) * HOUR, family))
    all_times = np.concatenate(times)
    order = np.argsort(all_times, kind="stable")
    return Traffic(all_times[order], np.concatenate(rows)[order], tuple(bursts))


@dataclass
class Run:
    """What one method did in one month."""

    quality: float
    spend: float
    refused: int
    overspend_usd: float
    overspend_calls: float
    unevenness: float
    ran_out_day: float | None
    curve: tuple[np.ndarray, np.ndarray] = field(repr=False, default=(np.zeros(0), np.zeros(0)))


def _run(
    times: np.ndarray,
    chosen: np.ndarray,
    served: np.ndarray,
    quality: np.ndarray,
    cost: np.ndarray,
    budget: float | None,
    start: float,
    end: float,
) -> Run:
    """Score one month: ``chosen[i]`` answers call ``i`` when ``served[i]``."""
    idx = np.arange(len(times))
    q = np.where(served, quality[idx, chosen], 0.0)
    c = np.where(served, cost[idx, chosen], 0.0)
    spend = float(c.sum())
    cum = np.cumsum(c)
    over_usd = over_calls = 0.0
    uneven = 0.0
    ran_out = None
    if budget is not None:
        over_usd = max(0.0, spend - budget)
        if over_usd > 0:
            crossing = int(np.argmax(cum > budget))
            over_calls = over_usd / max(float(c[crossing]), 1e-12)
        elapsed = (times - start) / (end - start)
        share = cum / budget
        uneven = float(np.max(np.abs(np.minimum(share, 1.0) - elapsed))) if len(times) else 0.0
        if (~served).any():
            ran_out = float((times[int(np.argmax(~served))] - start) / 86400.0)
    return Run(
        float(q.sum()),
        spend,
        int((~served).sum()),
        over_usd,
        over_calls,
        uneven,
        ran_out,
        ((times - start) / 86400.0, cum),
    )


def _blocked_run(
    chosen: np.ndarray,
    times: np.ndarray,
    quality: np.ndarray,
    cost: np.ndarray,
    budget: float,
    start: float,
    end: float,
) -> Run:
    """:func:`_run` of a month routed by ``chosen`` and refused once the budget is spent."""
    return _run(times, chosen, _blocked(chosen, cost, budget), quality, cost, budget, start, end)


def _choose(util: np.ndarray, norm: np.ndarray, penalty: np.ndarray | float) -> np.ndarray:
    return np.argmax(util - np.asarray(penalty, float).reshape(-1, 1) * norm, axis=1)


def _choose_multiplier(util: np.ndarray, norm: np.ndarray, multiplier: float) -> np.ndarray:
    """The choices under a constant pacing multiplier (``mu / c_mean``, pacing's scale)."""
    return _choose(util, norm, multiplier / norm.mean(axis=1))


def _blocked(chosen: np.ndarray, cost: np.ndarray, budget: float) -> np.ndarray:
    """Served mask of a hard block: calls are refused once the spend reached the budget."""
    c = cost[np.arange(len(chosen)), chosen]
    before = np.concatenate([[0.0], np.cumsum(c)[:-1]])
    return before < budget


def simulate_pacing(
    times: np.ndarray,
    util: np.ndarray,
    norm: np.ndarray,
    cost: np.ndarray,
    budget: float,
    start: float,
    end: float,
    pacing: Pacing,
    initial: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Route a month with the pacing multiplier, exactly as the service and store do.

    Args:
        times: Arrival times of the calls (sorted).
        util: (n, K) the router's expected utility of each model per call.
        norm: (n, K) normalised expected costs.
        cost: (n, K) billed costs (what a call is charged).
        budget: The budget (USD).
        start: Period start.
        end: Period end.
        pacing: The pacing settings.
        initial: The multiplier the period starts from (carried from the previous one).

    Returns:
        ``(chosen, served, multiplier before each call, the multiplier the next period
        inherits)``.
    """
    n = len(times)
    chosen = np.zeros(n, int)
    served = np.zeros(n, bool)
    mus = np.zeros(n)
    mu, paced_at, spent, area = float(initial), start, 0.0, 0.0
    for i in range(n):
        now = float(times[i])
        if spent >= budget:  # on_exhausted="error": refused
            continue
        current = decayed_multiplier(mu, paced_at, now, start, end, pacing)
        mus[i] = current
        penalty = pacing_penalty(current, norm[i].tolist(), util[i].tolist(), pacing)
        k = int(np.argmax(util[i] - penalty * norm[i]))
        chosen[i], served[i] = k, True
        charge = float(cost[i, k])
        area += multiplier_area(mu, paced_at, now, start, end, pacing)
        mu = updated_multiplier(mu, paced_at, now, charge, budget, start, end, pacing)
        paced_at = now
        spent += charge
    return chosen, served, mus, carried_multiplier(mu, paced_at, area, start, end, pacing)


def _blocked_quality(
    util: np.ndarray,
    norm: np.ndarray,
    quality: np.ndarray,
    cost: np.ndarray,
    multiplier: float,
    budget: float,
) -> float:
    """Total quality of a month routed with a constant multiplier, refused past the budget."""
    k = _choose_multiplier(util, norm, multiplier)
    served = _blocked(k, cost, budget)
    return float(np.where(served, quality[np.arange(len(k)), k], 0.0).sum())


def _tune(spend_at: Any, budget: float, high: float) -> float:
    """The smallest penalty whose spend (a decreasing function) is at most ``budget``."""
    lo, hi = 0.0, high
    if spend_at(0.0) <= budget:
        return 0.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if spend_at(mid) > budget:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass
class _User:
    alpha: float
    util: np.ndarray  # (pool, K) the router's expected utility per query and model
    norm: np.ndarray  # (pool, K) normalised expected cost


def _users(
    cfg: SimConfig, router: Any, pool: Any, train: Any, rng: np.random.Generator
) -> list[_User]:
    from metarouter.pricing import estimate_tokens
    from metarouter.profiles import LinearProfile, simulate_preferences
    from metarouter.types import Comparison

    tau = router.config.cost_scale_usd
    emb = router.embedder.encode(list(pool.queries))
    tokens = np.asarray([estimate_tokens(q) for q in pool.queries], float)
    pick = rng.choice(len(train), 400, replace=False)
    t_emb = router.embedder.encode(list(train.queries[pick]))
    t_tok = np.asarray([estimate_tokens(q) for q in train.queries[pick]], float)
    users = []
    for alpha in cfg.alphas:
        profile = LinearProfile(alpha)
        comps = []
        for r in rng.choice(len(pick), cfg.comparisons, replace=False):
            row = int(pick[r])
            a, b = rng.choice(len(train.models), 2, replace=False)
            u = profile.utility(train.quality[row], train.cost[row], tau)
            a_wins = bool(simulate_preferences(u[a], u[b], temperature=0.05, rng=rng))
            w, lo = (a, b) if a_wins else (b, a)
            comps.append(
                Comparison(
                    train.models[w],
                    train.models[lo],
                    float(train.cost[row, w]),
                    float(train.cost[row, lo]),
                    embedding=t_emb[r],
                    tokens=int(t_tok[r]),
                )
            )
        pref = router.adapt(comps)
        util, _, _, norm = router.utilities_embeddings(emb, tokens, pool.models, pref)
        users.append(_User(alpha, util, norm))
    return users


METHODS = (
    "no budget",
    "hard block",
    "fixed alpha, tuned offline (cost_penalty)",
    "fixed alpha, tuned offline (multiplier)",
    "fixed alpha, tuned offline (best quality)",
    "MetaRouter pacing",
    "MetaRouter pacing, no value cap",
    "fixed alpha, hindsight (upper reference)",
)
#: The methods the issue's bar compares pacing with (the hindsight one is a reference only).
BASELINES = METHODS[1:5]
#: The methods drawn in the plot (the others overlap them or are references).
_PLOTTED = (METHODS[0], METHODS[1], METHODS[3], METHODS[4], METHODS[5])
#: Constant multipliers the best-quality fixed alpha is chosen from (pacing's scale).
MULTIPLIER_GRID = (0.0, *np.geomspace(1e-3, 30.0, 50).tolist())


def _best_multiplier(
    util: np.ndarray, norm: np.ndarray, quality: np.ndarray, cost: np.ndarray, budget: float
) -> float:
    """The grid's constant multiplier with the highest quality in a month (smallest on ties)."""
    values = [_blocked_quality(util, norm, quality, cost, mu, budget) for mu in MULTIPLIER_GRID]
    return float(MULTIPLIER_GRID[int(np.argmax(values))])


def run_simulation(
    cfg: SimConfig | None = None, *, router: Any = None, out: str | Path | None = None
) -> dict[str, Any]:
    """Run the simulation; write ``budget_simulation.json``, ``.md`` and plots into ``out``.

    Returns:
        ``{"config", "rows": [per (level, method) means], "runs": [...], "seconds"}``.
    """
    from metarouter.data import load_dataset
    from metarouter.router import MetaRouter

    cfg = cfg or SimConfig()
    began = time.perf_counter()
    if router is None:
        from metarouter.embeddings import Embedder

        router = MetaRouter.default()
        router.embedder = Embedder(router.config.embedder, cache=True)
    matrix = load_dataset("llmrouter").to_matrix()
    pool, train = matrix.split("test"), matrix.split("train")
    start = MONTH_START
    end = start + MONTH_DAYS * 86400.0
    runs: list[dict[str, Any]] = []
    example: dict[str, Any] | None = None
    for seed in cfg.seeds:
        rng = np.random.default_rng(seed)
        users = _users(cfg, router, pool, train, rng)
        for u in users:
            last = make_traffic(pool.tasks, rng, cfg)
            this = make_traffic(pool.tasks, rng, cfg)
            months = {}
            for key, traffic in (("last", last), ("this", this)):
                months[key] = (
                    traffic.times,
                    u.util[traffic.rows],
                    u.norm[traffic.rows],
                    pool.quality[traffic.rows],
                    pool.cost[traffic.rows],
                )
            lt, lu, ln, lq, lc = months["last"]
            tt, tu, tn, tq, tc = months["this"]
            free = _choose(tu, tn, 0.0)
            free_spend = float(tc[np.arange(len(tt)), free].sum())

            def spend_penalty(
                lam: float, u_: np.ndarray = lu, n_: np.ndarray = ln, c_: np.ndarray = lc
            ) -> float:
                k = _choose(u_, n_, lam)
                return float(c_[np.arange(len(k)), k].sum())

            def spend_mu(
                mu: float, u_: np.ndarray = lu, n_: np.ndarray = ln, c_: np.ndarray = lc
            ) -> float:
                k = _choose_multiplier(u_, n_, mu)
                return float(c_[np.arange(len(k)), k].sum())

            for level in cfg.levels:
                budget = level * free_spend
                res: dict[str, Run] = {}
                res["no budget"] = _run(
                    tt, free, np.ones(len(tt), bool), tq, tc, budget, start, end
                )
                month = (tt, tq, tc, budget, start, end)
                res["hard block"] = _blocked_run(free, *month)
                lam = _tune(spend_penalty, budget, 1e4)
                res[METHODS[2]] = _blocked_run(_choose(tu, tn, lam), *month)
                mu = _tune(spend_mu, budget, 1e3)
                res[METHODS[3]] = _blocked_run(_choose_multiplier(tu, tn, mu), *month)
                # the operator's other offline choice: the constant that gave last month the
                # best quality under the budget (needs last month's quality, not only its cost)
                mu = _best_multiplier(lu, ln, lq, lc, budget)
                res[METHODS[4]] = _blocked_run(_choose_multiplier(tu, tn, mu), *month)
                for method, pacing in (
                    (METHODS[5], cfg.pacing),
                    (METHODS[6], replace(cfg.pacing, value_cap=False)),
                ):
                    # last month under the same budget (in USD) gives the multiplier this month
                    # starts from, as a budget's next period does in the store
                    *_, carried = simulate_pacing(lt, lu, ln, lc, budget, start, end, pacing)
                    k, served, mus_, _ = simulate_pacing(
                        tt, tu, tn, tc, budget, start, end, pacing, initial=carried
                    )
                    res[method] = _run(tt, k, served, tq, tc, budget, start, end)
                    if method == METHODS[5]:
                        mus = mus_
                # not something an operator can do: the best constant for this very month
                mu = _best_multiplier(tu, tn, tq, tc, budget)
                res[METHODS[7]] = _blocked_run(_choose_multiplier(tu, tn, mu), *month)
                base_q = res["no budget"].quality
                cheapest = float(tc.min(axis=1).sum())
                for method, r in res.items():
                    runs.append(
                        {
                            "seed": seed,
                            "alpha": u.alpha,
                            "level": level,
                            "method": method,
                            "calls": len(tt),
                            "calls_last_month": len(lt),
                            "budget_usd": budget,
                            "cheapest_pct_of_budget": 100.0 * cheapest / budget,
                            "quality_pct": 100.0 * r.quality / base_q,
                            **{k2: v for k2, v in asdict(r).items() if k2 != "curve"},
                        }
                    )
                if example is None and level == 0.75:
                    example = {
                        "alpha": u.alpha,
                        "seed": seed,
                        "budget": budget,
                        "bursts": this.bursts,
                        "curves": {m: res[m].curve for m in _PLOTTED},
                        "multiplier": ((tt - start) / 86400.0, mus),
                    }
        logger.info("seed %d done (%.0fs)", seed, time.perf_counter() - began)
    rows = _summarise(runs, cfg)
    result = {
        "config": {**asdict(cfg), "pacing": asdict(cfg.pacing)},
        "rows": rows,
        "runs": runs,
        "seconds": time.perf_counter() - began,
    }
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "budget_simulation.json").write_text(
            json.dumps(result, indent=1, default=float) + "\n", encoding="utf-8"
        )
        text = markdown_table(rows) + "\nThe bar (quality in % of no budget, mean of runs):\n\n"
        (folder / "budget_simulation.md").write_text(
            text + "\n".join(bar_check(rows, runs)) + "\n", encoding="utf-8"
        )
        if example is not None:
            result["plot"] = str(_plot(example, folder / "budget_simulation.png"))
    return result


def _summarise(runs: Sequence[dict[str, Any]], cfg: SimConfig) -> list[dict[str, Any]]:
    rows = []
    for level in cfg.levels:
        for method in METHODS:
            sel = [r for r in runs if r["level"] == level and r["method"] == method]
            if not sel:
                continue
            out_days = [r["ran_out_day"] for r in sel if r["ran_out_day"] is not None]
            rows.append(
                {
                    "level": level,
                    "method": method,
                    "runs": len(sel),
                    "cheapest_pct_of_budget": float(
                        np.mean([r["cheapest_pct_of_budget"] for r in sel])
                    ),
                    "quality_pct": float(np.mean([r["quality_pct"] for r in sel])),
                    "quality_pct_min": float(np.min([r["quality_pct"] for r in sel])),
                    "spend_pct_of_budget": float(
                        np.mean([100 * r["spend"] / r["budget_usd"] for r in sel])
                    ),
                    "max_overspend_calls": float(np.max([r["overspend_calls"] for r in sel])),
                    "max_overspend_usd": float(np.max([r["overspend_usd"] for r in sel])),
                    "unevenness": float(np.mean([r["unevenness"] for r in sel])),
                    "refused_pct": float(np.mean([100 * r["refused"] / r["calls"] for r in sel])),
                    "ran_out_day": float(np.mean(out_days)) if out_days else None,
                    "ran_out_runs": len(out_days),
                }
            )
    return rows


def bar_check(rows: Sequence[dict[str, Any]], runs: Sequence[dict[str, Any]]) -> list[str]:
    """Per budget level: pacing's quality against each baseline's, and runs won/tied/lost."""
    lines = []
    for level in sorted({r["level"] for r in rows}):
        at = {r["method"]: r for r in rows if r["level"] == level}
        if METHODS[5] not in at:
            continue
        pace = at[METHODS[5]]
        mine = {
            (r["seed"], r["alpha"]): r["quality_pct"]
            for r in runs
            if r["level"] == level and r["method"] == METHODS[5]
        }
        parts = []
        for method in BASELINES:
            if method not in at:
                continue
            diffs = [
                mine[(r["seed"], r["alpha"])] - r["quality_pct"]
                for r in runs
                if r["level"] == level and r["method"] == method
            ]
            won = sum(d > 1e-9 for d in diffs)
            lost = sum(d < -1e-9 for d in diffs)
            parts.append(
                f"{method}: {at[method]['quality_pct']:.2f} "
                f"({won} runs better, {len(diffs) - won - lost} equal, {lost} worse)"
            )
        higher = all(pace["quality_pct"] > at[m]["quality_pct"] for m in BASELINES if m in at)
        over = pace["max_overspend_calls"] <= 1.0
        lines.append(
            f"* {100 * level:.0f}%: pacing {pace['quality_pct']:.2f} against "
            + "; ".join(parts)
            + f". Higher than every baseline: {'yes' if higher else 'NO'}; overspend "
            f"<= 1 call: {'yes' if over else 'NO'} ({pace['max_overspend_calls']:.2f})."
        )
    return lines


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The evaluation table (Markdown)."""
    lines = [
        "| budget (all-cheapest routing would spend) | method | quality (% of no budget) | "
        "worst run | spend (% of budget) | max overspend (calls) | unevenness | refused calls | "
        "budget ran out (day, runs) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ran = (
            f"{r['ran_out_day']:.1f} ({r['ran_out_runs']}/{r['runs']})"
            if r["ran_out_day"] is not None
            else f"never (0/{r['runs']})"
        )
        over = r["max_overspend_calls"]
        lines.append(
            f"| {100 * r['level']:.0f}% ({r['cheapest_pct_of_budget']:.0f}%) | {r['method']} | "
            f"{r['quality_pct']:.1f} | "
            f"{r['quality_pct_min']:.1f} | {r['spend_pct_of_budget']:.1f} | "
            f"{'unbounded' if r['method'] == 'no budget' and over > 1 else f'{over:.2f}'} | "
            f"{r['unevenness']:.3f} | {r['refused_pct']:.1f}% | {ran} |"
        )
    return "\n".join(lines) + "\n"


def _plot(example: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(
        2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    budget = example["budget"]
    for i, (method, (days, cum)) in enumerate(example["curves"].items()):
        ax.step(days, cum / budget, where="post", color=f"C{i}", label=method)
    ax.plot([0, MONTH_DAYS], [0, 1], "--", color="0.5", label="even pace")
    ax.axhline(1.0, color="k", lw=0.8)
    for begin, finish, _family in example["bursts"]:
        for a in (ax, ax2):
            a.axvspan(
                (begin - MONTH_START) / 86400,
                (finish - MONTH_START) / 86400,
                color="0.85",
                zorder=0,
            )
    ax.set(
        ylabel="spend / budget",
        ylim=(0, 2.2),
        title=f"one simulated month (user alpha={example['alpha']}, seed {example['seed']}, "
        "budget 75% of unconstrained spend; grey: bursts)",
    )
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="upper left")
    days, mus = example["multiplier"]
    ax2.plot(days, mus, color="C4", lw=0.8)
    ax2.set(xlabel="day of the month", ylabel="pacing multiplier")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
