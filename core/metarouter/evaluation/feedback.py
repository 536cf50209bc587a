"""Simulated users' comparisons for the evaluation, shared by every method."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metarouter.evaluation.settings import Setting
from metarouter.profiles import Profile, simulate_preferences
from metarouter.types import Comparison

__all__ = ["Feedback", "draw_feedback"]


@dataclass(frozen=True)
class Feedback:
    """N comparisons of one simulated user.

    Attributes:
        source: ``test`` (the user's own traffic: the adaptation pool) or ``train``.
        rows: Query rows (into ``setting.test`` or ``setting.train``), shape (N,).
        win: Index into ``setting.models`` of the preferred answer's model.
        lose: Index of the other.
        win_cost: Its cost (USD).
        lose_cost: The other's cost (USD).
        recent: Rows of ``setting.test`` standing for the user's recent traffic (a sample of
            their adaptation pool), which a router may read without labels; ``None`` if
            unknown.
    """

    source: str
    rows: np.ndarray
    win: np.ndarray
    lose: np.ndarray
    win_cost: np.ndarray
    lose_cost: np.ndarray
    recent: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def comparisons(self, setting: Setting) -> list[Comparison]:
        """The comparisons as a router takes them: model names, costs, query embedding, tokens."""
        test = self.source == "test"
        emb = setting.test_emb if test else setting.train_emb
        tok = setting.test_tok if test else setting.train_tok
        names = setting.models
        return [
            Comparison(
                names[w], names[lo], float(cw), float(cl), embedding=emb[r], tokens=int(tok[r])
            )
            for r, w, lo, cw, cl in zip(
                self.rows, self.win, self.lose, self.win_cost, self.lose_cost, strict=True
            )
        ]


def outcomes(setting: Setting, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Quality and cost (n, K) of the setting's candidates on the test or training queries."""
    if source == "test":
        return setting.test.quality, setting.test.cost
    cols = [setting.train_outcomes(m) for m in setting.models]
    return np.stack([c[0] for c in cols], 1), np.stack([c[1] for c in cols], 1)


def draw_feedback(
    setting: Setting,
    profile: Profile,
    n: int,
    pool: np.ndarray,
    *,
    rng: np.random.Generator,
    temperature: float = 0.05,
    source: str = "test",
) -> Feedback:
    """N Bradley-Terry comparisons on random queries of ``pool`` between random candidate pairs.

    Args:
        setting: The setting (candidates, tau).
        profile: The user's hidden profile.
        n: Number of comparisons.
        pool: Rows the queries are drawn from (with replacement only if ``n > len(pool)``).
        rng: Random generator.
        temperature: Bradley-Terry temperature T.
        source: ``test`` or ``train`` (which outcome table ``pool`` indexes).
    """
    quality, cost = outcomes(setting, source)
    k = len(setting.models)
    rows = rng.choice(pool, size=n, replace=n > len(pool)) if n else np.zeros(0, np.int64)
    pairs = (
        np.stack([rng.choice(k, 2, replace=False) for _ in range(n)])
        if n
        else np.zeros((0, 2), np.int64)
    )
    a, b = pairs[:, 0], pairs[:, 1]
    ua = profile.utility(quality[rows, a], cost[rows, a], setting.tau)
    ub = profile.utility(quality[rows, b], cost[rows, b], setting.tau)
    a_wins = (
        simulate_preferences(ua, ub, temperature=temperature, rng=rng) if n else np.zeros(0, bool)
    )
    win = np.where(a_wins, a, b)
    lose = np.where(a_wins, b, a)
    return Feedback(source, rows.astype(np.int64), win, lose, cost[rows, win], cost[rows, lose])
