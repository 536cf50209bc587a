"""The evaluation protocol of docs/method.md, runnable on any outcome table.

For each setting, seed, number of comparisons N and simulated user (profile): split the test
queries into an adaptation pool and scored queries (disjoint, fixed per seed), draw the user's
N comparisons from the pool (the same for every method), let every method route the scored
queries, and record mean cost, quality and utility. Fronts over the linear profiles give HV
and IGD (against the oracle's front); utility regret and share of the oracle-vs-best-single
gap recovered are reported for linear and non-linear profiles.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from metarouter.evaluation.baselines import Context, Method
from metarouter.evaluation.feedback import Feedback, draw_feedback
from metarouter.evaluation.metrics import hypervolume, igd, normalise_costs
from metarouter.evaluation.settings import Setting
from metarouter.novelty import RECENT_TRAFFIC
from metarouter.profiles import (
    BudgetCapProfile,
    LinearProfile,
    Profile,
    QualityFloorProfile,
)

__all__ = [
    "ALPHA_GRID",
    "N_SWEEP",
    "EvalRun",
    "FeedbackSource",
    "nonlinear_profiles",
    "run_setting",
]

logger = logging.getLogger(__name__)

#: ``(context, profile, n, adaptation pool, rng, temperature) -> Feedback``: who picks comparisons.
FeedbackSource = Callable[[Context, Profile, int, np.ndarray, np.random.Generator, float], Feedback]

#: Seed stream of the sample of a user's adaptation pool that stands for their recent traffic
#: (apart from the comparisons' draws).
RECENT_STREAM = 7
ALPHA_GRID = tuple(round(a, 2) for a in np.arange(0.0, 1.0001, 0.05))
N_SWEEP = (0, 1, 2, 4, 6, 8, 12, 20, 50)


def nonlinear_profiles() -> list[Profile]:
    """The non-linear family never seen in training: hard budget caps and quality floors."""
    return [
        BudgetCapProfile(0.1),
        BudgetCapProfile(0.3),
        QualityFloorProfile(0.5),
        QualityFloorProfile(1.0),
    ]


@dataclass
class EvalRun:
    """Raw per-user outcomes: arrays indexed [method][n][seed] -> (P, 3) cost/quality/utility."""

    setting: Setting
    profiles: list[Profile]
    methods: list[str]
    n_values: tuple[int, ...]
    seeds: tuple[int, ...]
    source: str
    points: dict[str, dict[int, dict[int, np.ndarray]]] = field(default_factory=dict)
    single_points: dict[int, np.ndarray] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Metrics per method and N: mean and std over seeds."""
        s = self.setting
        lo, hi = s.cost_bounds
        n_lin = sum(isinstance(p, LinearProfile) for p in self.profiles)
        out: dict[str, Any] = {}
        oracle = self.points["oracle"]
        for method in self.methods:
            per_n: dict[str, Any] = {}
            for n in self.n_values:
                rows: dict[str, list[float]] = {
                    k: []
                    for k in (
                        "hv",
                        "igd",
                        "regret",
                        "regret_nonlinear",
                        "gap_recovered",
                        "gap_recovered_nonlinear",
                        "mean_cost_usd",
                        "mean_quality",
                    )
                }
                for seed in self.seeds:
                    pts = self.points[method][n].get(seed)
                    if pts is None:
                        continue
                    orc = oracle[n][seed]
                    single = self.points["_best_single"][n][seed][:, 2]
                    lin = slice(0, n_lin)
                    nl = slice(n_lin, None)
                    if np.isfinite(pts[lin]).all():
                        front = np.c_[normalise_costs(pts[lin, 0], lo, hi), pts[lin, 1]]
                        ofront = np.c_[normalise_costs(orc[lin, 0], lo, hi), orc[lin, 1]]
                        rows["hv"].append(hypervolume(front))
                        rows["igd"].append(igd(front, ofront))
                        rows["regret"].append(float((orc[lin, 2] - pts[lin, 2]).mean()))
                        rows["gap_recovered"].append(_gap(pts[lin, 2], single[lin], orc[lin, 2]))
                        rows["mean_cost_usd"].append(float(pts[lin, 0].mean()))
                        rows["mean_quality"].append(float(pts[lin, 1].mean()))
                    if n_lin < len(self.profiles) and np.isfinite(pts[nl]).all():
                        rows["regret_nonlinear"].append(float((orc[nl, 2] - pts[nl, 2]).mean()))
                        rows["gap_recovered_nonlinear"].append(
                            _gap(pts[nl, 2], single[nl], orc[nl, 2])
                        )
                per_n[str(n)] = {
                    k: (
                        {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)}
                        if v
                        else None
                    )
                    for k, v in rows.items()
                }
            out[method] = per_n
        hv = [
            hypervolume(np.c_[normalise_costs(p[:, 0], lo, hi), p[:, 1]])
            for p in self.single_points.values()
        ]
        out["single-model front"] = {
            str(n): {"hv": {"mean": float(np.mean(hv)), "std": float(np.std(hv)), "n": len(hv)}}
            for n in self.n_values
        }
        return out

    def front(self, method: str, n: int) -> np.ndarray:
        """Seed-averaged normalised (cost, quality) points of the linear profiles."""
        lo, hi = self.setting.cost_bounds
        n_lin = sum(isinstance(p, LinearProfile) for p in self.profiles)
        stack = np.stack(
            [self.points[method][n][s][:n_lin] for s in self.seeds if s in self.points[method][n]]
        )
        mean = stack.mean(0)
        return np.c_[normalise_costs(mean[:, 0], lo, hi), mean[:, 1]]


def _gap(method: np.ndarray, single: np.ndarray, oracle: np.ndarray) -> float:
    denom = float((oracle - single).sum())
    return float((method - single).sum() / denom) if abs(denom) > 1e-12 else float("nan")


def run_setting(
    setting: Setting,
    methods: Sequence[Method],
    *,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    n_values: Sequence[int] = N_SWEEP,
    profiles: Sequence[Profile] | None = None,
    source: str = "test",
    pool_share: float = 0.25,
    temperature: float = 0.05,
    progress: bool = True,
    feedback: FeedbackSource | None = None,
) -> EvalRun:
    """Evaluate methods on one setting.

    Args:
        setting: The setting.
        methods: Methods (inapplicable ones are skipped for this setting).
        seeds: Seeds (adaptation/scored split and comparison draws).
        n_values: Numbers of comparisons.
        profiles: Simulated users (default: the alpha grid plus :func:`nonlinear_profiles`).
        source: ``test`` (comparisons from the user's own traffic) or ``train``.
        pool_share: Share of test queries in the adaptation pool.
        temperature: Bradley-Terry temperature of the simulated users.
        progress: Show a progress bar.
        feedback: Who picks the comparisons (default: random queries of the adaptation pool
            and random pairs, :func:`draw_feedback`); e.g. :class:`ActiveFeedback`, where the
            router picks them. Every method gets the same comparisons.
    """
    from tqdm.auto import tqdm

    from metarouter.evaluation.baselines import Oracle

    profiles = (
        list(profiles)
        if profiles is not None
        else ([LinearProfile(a) for a in ALPHA_GRID] + nonlinear_profiles())
    )
    ctx = Context(setting)
    usable = [m for m in methods if m.applicable(setting)]
    if not any(isinstance(m, Oracle) for m in usable):
        usable.insert(0, Oracle())
    for m in usable:
        m.prepare(ctx)
    run = EvalRun(
        setting, profiles, [m.name for m in usable], tuple(n_values), tuple(seeds), source
    )
    for name in [*run.methods, "_best_single"]:
        run.points[name] = {n: {} for n in n_values}
    q_all, c_all = setting.test.quality, setting.test.cost
    n_test = len(q_all)
    total = len(seeds) * len(n_values) * len(profiles)
    bar = tqdm(total=total, desc=f"eval {setting.name}", disable=not progress, leave=False)
    for seed in seeds:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(n_test)
        n_pool = max(1, int(pool_share * n_test))
        pool, scored = perm[:n_pool], np.sort(perm[n_pool:])
        if source == "train":
            pool = np.arange(len(setting.train))
        # the user's recent traffic as a router sees it (unlabelled): a sample of the test pool,
        # drawn from its own generator so the comparisons are the same as without it
        recent_rng = np.random.default_rng([seed, RECENT_STREAM])
        recent = recent_rng.choice(perm[:n_pool], size=min(RECENT_TRAFFIC, n_pool), replace=False)
        q, c = q_all[scored], c_all[scored]
        rows = np.arange(len(scored))
        run.single_points[seed] = np.c_[c.mean(0), q.mean(0)]
        for n in n_values:
            arrays = {name: np.full((len(profiles), 3), np.nan) for name in run.points}
            for p_i, profile in enumerate(profiles):
                fb_rng = np.random.default_rng([seed, n, p_i])
                if feedback is None:
                    fb = draw_feedback(
                        setting,
                        profile,
                        n,
                        pool,
                        rng=fb_rng,
                        temperature=temperature,
                        source=source,
                    )
                else:
                    fb = feedback(ctx, profile, n, pool, fb_rng, temperature)
                fb = replace(fb, recent=recent)
                util = profile.utility(q, c, setting.tau)
                arrays["_best_single"][p_i] = (np.nan, np.nan, util.mean(0).max())
                for method in usable:
                    choice = method.choose(ctx, fb, scored, profile)
                    if choice is None:
                        continue
                    arrays[method.name][p_i] = (
                        c[rows, choice].mean(),
                        q[rows, choice].mean(),
                        util[rows, choice].mean(),
                    )
                bar.update(1)
            for name, arr in arrays.items():
                if name == "_best_single" or not np.isnan(arr).all():
                    run.points[name][n][seed] = arr
    bar.close()
    return run
