"""The active track: MetaRouter picks which comparisons to ask its users for.

In use, a MetaRouter user is asked about comparisons the router chooses (the adapters'
``compare()``): which of their recent queries and which two answers to show. Here the simulated
user's recent traffic is the adaptation pool; before each comparison the router adapts to the
answers so far and picks, among a random sample of pool queries and every pair of candidates,
the comparison with the highest expected value of information for the user's routing
(:meth:`MetaRouter.comparison_values`), valued on a sample of the pool. The user answers as in
the standard track (Bradley-Terry on their hidden utility).

The same comparisons then go to every method, so the report can show both what a MetaRouter user
gets (active comparisons) against what users of the other systems get (random comparisons), and
how the other methods do when given MetaRouter's comparisons.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from metarouter.evaluation.baselines import Context, MetaRouterMethod, billed_history
from metarouter.evaluation.feedback import Feedback
from metarouter.profiles import Profile, simulate_preferences

__all__ = ["ActiveFeedback"]


class ActiveFeedback:
    """Comparisons chosen by a trained MetaRouter (a :data:`~.protocol.FeedbackSource`).

    Args:
        routers: Trained routers by training key (as for :class:`MetaRouterMethod`).
        candidates: Pool queries sampled as candidates before each comparison.
        traffic: Pool queries the value of a comparison is measured on.
        particles: Posterior particles of the value-of-information estimate.
    """

    def __init__(
        self,
        routers: dict[str, Any],
        *,
        candidates: int = 16,
        traffic: int = 40,
        particles: int = 192,
    ) -> None:
        self.routers = routers
        self.candidates = candidates
        self.traffic = traffic
        self.particles = particles

    def __call__(
        self,
        ctx: Context,
        profile: Profile,
        n: int,
        pool: np.ndarray,
        rng: np.random.Generator,
        temperature: float,
    ) -> Feedback:
        """The ``n`` comparisons the router asks this user for, with the user's answers."""
        s = ctx.setting
        router = self.routers[s.train_key]
        MetaRouterMethod(self.routers).prepare(ctx)
        arms = ctx.data["meta_arms"]
        quality, cost = s.test.quality, s.test.cost
        emb, tok = s.test_emb, s.test_tok
        traffic = rng.choice(pool, size=min(self.traffic, len(pool)), replace=False)
        t_emb, t_tok = emb[traffic], tok[traffic]
        billed = billed_history(ctx, router, arms, traffic)
        costs = router.adapt([], arms=arms, billed=billed)  # the prior, costs calibrated
        pref = replace(
            router.prior(router.novelty(t_emb)),
            cost_factors=costs.cost_factors,
            default_cost_factor=costs.default_cost_factor,
        )
        rows: list[int] = []
        win: list[int] = []
        lose: list[int] = []
        for step in range(n):
            left = np.setdiff1d(pool, rows) if len(rows) < len(pool) else pool
            cand = rng.choice(left, size=min(self.candidates, len(left)), replace=False)
            values, pairs = router.comparison_values(
                emb[cand],
                tok[cand],
                arms,
                pref,
                traffic=(t_emb, t_tok),
                n_particles=self.particles,
                seed=step,
            )
            q_i, p_i = np.unravel_index(int(np.argmax(values)), values.shape)
            r = int(cand[q_i])
            a, b = pairs[int(p_i)]
            ua = profile.utility(quality[r, a], cost[r, a], s.tau)
            ub = profile.utility(quality[r, b], cost[r, b], s.tau)
            a_wins = bool(
                simulate_preferences(
                    np.atleast_1d(ua), np.atleast_1d(ub), temperature=temperature, rng=rng
                )[0]
            )
            rows.append(r)
            win.append(a if a_wins else b)
            lose.append(b if a_wins else a)
            fb = _feedback(rows, win, lose, cost)
            pref = router.adapt(fb.comparisons(s), arms=arms, traffic=t_emb, billed=billed)
        return _feedback(rows, win, lose, cost)


def _feedback(rows: list[int], win: list[int], lose: list[int], cost: np.ndarray) -> Feedback:
    r = np.asarray(rows, np.int64)
    w = np.asarray(win, np.int64)
    lo = np.asarray(lose, np.int64)
    if not len(r):
        return Feedback("test", r, w, lo, np.zeros(0), np.zeros(0))
    return Feedback("test", r, w, lo, cost[r, w], cost[r, lo])
