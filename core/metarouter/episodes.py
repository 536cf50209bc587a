"""Meta-training episodes: a simulated user, a candidate set, their comparisons, a query batch.

One episode = (hidden linear profile alpha ~ U(0,1); a random subset of 2-5 arms; a support set
of 0-12 Bradley-Terry comparisons between those arms on the user's traffic, with a random
temperature and label-flip rate; a batch of the user's queries to route). The user's traffic is
either the whole training pool or, for a share of episodes, one task family or query cluster,
so the encoder learns that comparisons also reveal how the arms do on *this* traffic.

Arm profiles are cross-fitted: the training queries are split into two folds and an episode
drawn from one fold sees profiles measured on the other, so no query's own outcome leaks into
the features the policy is trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from metarouter.config import TrainingConfig
from metarouter.encoder import SupportBatch
from metarouter.model import CandidateBatch
from metarouter.profiles import simulate_preferences

__all__ = ["Episode", "EpisodeData", "EpisodeSampler"]


@dataclass
class EpisodeData:
    """Arrays the sampler draws from (queries of one pool, e.g. the training part).

    Attributes:
        embeddings: (n, D) float32 unit-norm query embeddings.
        weights: (n, P) float32 region weights of the queries.
        tokens: (n,) prompt token counts.
        quality: (n, A) quality of every arm.
        cost: (n, A) cost in USD of every arm.
        profiles: (F, A, P) capability profiles per fold (F = 1 or 2).
        fold: (n,) fold of each query (episodes use profiles of another fold).
        cost_terms: (A, 2) cost-model terms per arm.
        groups: (G, n) int group labels per grouping (task family, clusters); -1 = none.
        tau: Cost scale in USD.
    """

    embeddings: np.ndarray
    weights: np.ndarray
    tokens: np.ndarray
    quality: np.ndarray
    cost: np.ndarray
    profiles: np.ndarray
    fold: np.ndarray
    cost_terms: np.ndarray
    groups: np.ndarray
    tau: float

    @property
    def n_arms(self) -> int:
        """Number of arms A."""
        return int(self.quality.shape[1])


@dataclass
class Episode:
    """A batch of episodes as tensors plus what the loss needs."""

    queries: torch.Tensor  # (B,M,D)
    weights: torch.Tensor  # (B,M,P)
    tokens: torch.Tensor  # (B,M)
    arms: CandidateBatch
    support: SupportBatch
    utility: torch.Tensor  # (B,M,K) true utility of each candidate (padded arms: -inf)
    quality: torch.Tensor  # (B,M,K) true quality
    alpha: torch.Tensor  # (B,)


class EpisodeSampler:
    """Draws batches of episodes from :class:`EpisodeData` (see module docstring)."""

    def __init__(
        self,
        data: EpisodeData,
        config: TrainingConfig,
        rng: np.random.Generator,
        arms: np.ndarray | None = None,
    ) -> None:
        self.data = data
        self.config = config
        self.rng = rng
        self.arm_pool = np.arange(data.n_arms) if arms is None else np.asarray(arms)
        if len(self.arm_pool) < 2:
            raise ValueError("meta-training needs at least two arms")
        self.max_arms = min(config.max_arms, len(self.arm_pool))
        self.min_arms = min(config.min_arms, self.max_arms)
        folds = np.unique(data.fold)
        self._fold_members = {int(f): np.flatnonzero(data.fold == f) for f in folds}
        self._group_members: list[dict[int, np.ndarray]] = []
        for labels in data.groups:
            members = {}
            for g in np.unique(labels[labels >= 0]):
                idx = np.flatnonzero(labels == g)
                if len(idx) >= 2 * config.max_comparisons:
                    members[int(g)] = idx
            if len(members) > 1:
                self._group_members.append(members)

    def _pool(self) -> tuple[np.ndarray, int]:
        """Indices of one episode's traffic and the fold whose profiles it must not use."""
        rng = self.rng
        fold = int(rng.choice(list(self._fold_members)))
        pool = self._fold_members[fold]
        if self._group_members and rng.random() < self.config.task_episode_share:
            grouping = self._group_members[rng.integers(len(self._group_members))]
            group = grouping[int(rng.choice(list(grouping)))]
            inside = np.intersect1d(pool, group, assume_unique=True)
            if len(inside) >= self.config.max_comparisons + 8:
                pool = inside
        return pool, fold

    def sample(
        self,
        n_episodes: int | None = None,
        *,
        n_comparisons: int | None = None,
        alphas: np.ndarray | None = None,
    ) -> Episode:
        """A batch of episodes.

        Args:
            n_episodes: Batch size (default ``episodes_per_step``).
            n_comparisons: Fixed support size (default: uniform in 0..max_comparisons).
            alphas: Fixed profiles, one per episode (default: U(0, 1)).
        """
        cfg, d, rng = self.config, self.data, self.rng
        b = n_episodes or cfg.episodes_per_step
        m, kmax, nmax = cfg.queries_per_episode, self.max_arms, cfg.max_comparisons
        p = d.weights.shape[1]
        n_folds = d.profiles.shape[0]
        q_idx = np.zeros((b, m), np.int64)
        arm_idx = np.zeros((b, kmax), np.int64)
        arm_mask = np.zeros((b, kmax), bool)
        cap = np.zeros((b, kmax, p), np.float32)
        s_idx = np.zeros((b, nmax), np.int64)
        s_mask = np.zeros((b, nmax), bool)
        s_win = np.zeros((b, nmax), np.int64)
        s_lose = np.zeros((b, nmax), np.int64)
        alpha = rng.random(b) if alphas is None else np.asarray(alphas, np.float64)
        # per-episode cost shift: the arms' real costs on this user's traffic deviate from what
        # their cost models expect (verbosity, price changes); comparisons reveal it
        shift = np.exp(
            rng.normal(0.0, cfg.cost_shift, size=(b, d.n_arms))
            + rng.normal(0.0, cfg.traffic_cost_shift, size=(b, 1))
        )
        for e in range(b):
            pool, fold = self._pool()
            prof = d.profiles[(fold + 1) % n_folds]
            k = int(rng.integers(self.min_arms, self.max_arms + 1))
            arms = rng.choice(self.arm_pool, size=k, replace=False)
            arm_idx[e, :k] = arms
            arm_mask[e, :k] = True
            cap[e, :k] = prof[arms]
            n = int(rng.integers(0, nmax + 1)) if n_comparisons is None else n_comparisons
            chosen = rng.choice(pool, size=min(len(pool), n + m), replace=len(pool) < n + m)
            s_q, b_q = chosen[:n], chosen[n:]
            if len(b_q) < m:
                b_q = rng.choice(pool, size=m, replace=True)
            q_idx[e] = b_q[:m]
            if n:
                pairs = np.stack([rng.choice(k, size=2, replace=False) for _ in range(n)])
                ai, bi = arms[pairs[:, 0]], arms[pairs[:, 1]]
                ua = self._utility(alpha[e], s_q, ai, shift[e])
                ub = self._utility(alpha[e], s_q, bi, shift[e])
                temp = rng.uniform(*cfg.temperature_range)
                flip = rng.uniform(0, cfg.max_flip_rate)
                a_wins = simulate_preferences(ua, ub, temperature=temp, flip_rate=flip, rng=rng)
                s_idx[e, :n] = s_q
                s_mask[e, :n] = True
                s_win[e, :n] = np.where(a_wins, ai, bi)
                s_lose[e, :n] = np.where(a_wins, bi, ai)
        util = np.full((b, m, kmax), -np.inf, np.float32)
        qual = np.zeros((b, m, kmax), np.float32)
        for e in range(b):
            k = int(arm_mask[e].sum())
            util[e, :, :k] = self._utility(
                alpha[e], q_idx[e][:, None], arm_idx[e, :k][None, :], shift[e]
            )
            qual[e, :, :k] = d.quality[q_idx[e][:, None], arm_idx[e, :k][None, :]]
        s_cost = d.cost[s_idx] * shift[:, None, :]  # (b, nmax, A) observed USD
        terms = d.cost_terms  # (A, 2)
        s_est = terms[None, None, :, 0] + terms[None, None, :, 1] * d.tokens[s_idx][..., None]
        fold_of_support = d.fold[s_idx]
        prof_sup = d.profiles[(fold_of_support + 1) % n_folds]  # (b, nmax, A, P)
        t = torch.as_tensor
        support = SupportBatch(
            q=t(d.embeddings[s_idx]),
            w=t(d.weights[s_idx]),
            mask=t(s_mask),
            win_cap=t(np.take_along_axis(prof_sup, s_win[..., None, None], 2)[:, :, 0]),
            lose_cap=t(np.take_along_axis(prof_sup, s_lose[..., None, None], 2)[:, :, 0]),
            win_cost=t(np.take_along_axis(s_cost, s_win[..., None], 2)[..., 0]).float(),
            lose_cost=t(np.take_along_axis(s_cost, s_lose[..., None], 2)[..., 0]).float(),
            win_est=t(np.take_along_axis(s_est, s_win[..., None], 2)[..., 0]).float(),
            lose_est=t(np.take_along_axis(s_est, s_lose[..., None], 2)[..., 0]).float(),
            win_id=t(s_win),
            lose_id=t(s_lose),
        )
        arms_b = CandidateBatch(
            cap=t(cap), cost=t(d.cost_terms[arm_idx]), ids=t(arm_idx), mask=t(arm_mask)
        )
        return Episode(
            queries=t(d.embeddings[q_idx]),
            weights=t(d.weights[q_idx]),
            tokens=t(d.tokens[q_idx]).float(),
            arms=arms_b,
            support=support,
            utility=t(util),
            quality=t(qual),
            alpha=t(alpha).float(),
        )

    def _utility(
        self, alpha: float, q: np.ndarray, arms: np.ndarray, shift: np.ndarray
    ) -> np.ndarray:
        d = self.data
        c = np.minimum(d.cost[q, arms] * shift[arms] / d.tau, 1.0)
        return alpha * d.quality[q, arms] - (1 - alpha) * c
