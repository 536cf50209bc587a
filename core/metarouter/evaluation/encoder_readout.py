"""Ablation: route with the meta-trained neural context encoder and policy network.

Meta-training (:mod:`metarouter.training`) trains a Deep-Set context encoder (comparisons ->
latent preference z and per-arm evidence) and a policy network that scores each arm from z. The
router ships the user posterior (:mod:`metarouter.posterior`) instead, because it routes better
(docs/evaluation.md). This module keeps the network's own read-out measurable: the evaluation
reports it as ``MetaRouter (encoder read-out)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from metarouter.arms import ArmDescriptor
from metarouter.encoder import SupportBatch, cost_log_factors
from metarouter.model import CandidateBatch

if TYPE_CHECKING:
    from metarouter.router import MetaRouter
    from metarouter.types import Comparison

__all__ = ["encoder_scores"]


def _support(
    router: MetaRouter,
    comparisons: Sequence[Comparison],
    known: dict[str, ArmDescriptor],
    ids: dict[str, int],
) -> SupportBatch:
    """The comparisons as the encoder's support set (embeddings must be given)."""
    n, p = len(comparisons), router.config.n_prototypes
    size = max(n, 1)
    emb = np.zeros((size, router.config.embedding_dim), np.float32)
    caps = np.zeros((2, size, p), np.float32)
    costs = np.zeros((4, size), np.float32)
    neutral = np.mean([a.capability for a in router.catalog.values()], axis=0)
    win_id = np.full(size, -1, np.int64)
    lose_id = np.full(size, -1, np.int64)
    for i, c in enumerate(comparisons):
        emb[i] = c.embedding
        for side, name in enumerate((c.winner, c.loser)):
            arm = known.get(name) or router.catalog.get(name)
            caps[side, i] = arm.capability if arm is not None else neutral
            observed = c.winner_cost_usd if side == 0 else c.loser_cost_usd
            costs[side, i] = observed
            costs[2 + side, i] = arm.cost.estimate(c.tokens or 0) if arm is not None else observed
        win_id[i], lose_id[i] = ids[c.winner], ids[c.loser]
    mask = np.zeros(size, bool)
    mask[:n] = True
    q = torch.as_tensor(emb).unsqueeze(0)
    t = torch.as_tensor
    return SupportBatch(
        q=q,
        w=router.model.region_weights(q),
        mask=t(mask).unsqueeze(0),
        win_cap=t(caps[0]).unsqueeze(0),
        lose_cap=t(caps[1]).unsqueeze(0),
        win_cost=t(costs[0]).unsqueeze(0),
        lose_cost=t(costs[1]).unsqueeze(0),
        win_est=t(costs[2]).unsqueeze(0),
        lose_est=t(costs[3]).unsqueeze(0),
        win_id=t(win_id).unsqueeze(0),
        lose_id=t(lose_id).unsqueeze(0),
    )


def encoder_scores(
    router: MetaRouter,
    comparisons: Sequence[Comparison],
    arms: Sequence[ArmDescriptor],
    embeddings: np.ndarray,
    tokens: np.ndarray,
) -> np.ndarray:
    """The policy network's scores (M, K) after one encoder pass over the comparisons.

    Args:
        router: A trained router.
        comparisons: The user's comparisons, with query embeddings.
        arms: The candidates.
        embeddings: (M, D) query embeddings to route.
        tokens: (M,) their prompt token counts.
    """
    known = {a.name: a for a in arms}
    names = [a.name for a in arms]
    ids = {n: i for i, n in enumerate(names)}
    for c in comparisons:
        for name in (c.winner, c.loser):
            ids.setdefault(name, len(ids))
    model = router.model
    with torch.inference_mode():
        support = _support(router, comparisons, known, ids)
        z = model.encode(support)
        arm_ids = torch.arange(len(names)).unsqueeze(0)
        evidence = model.evidence(support, arm_ids, z)
        cost = torch.as_tensor(
            [[a.cost.per_call_usd, a.cost.per_input_token_usd] for a in arms], dtype=torch.float64
        ).unsqueeze(0)
        batch = CandidateBatch(
            cap=torch.as_tensor(np.stack([a.capability for a in arms])).unsqueeze(0),
            cost=cost,
            ids=arm_ids,
            mask=torch.ones(1, len(arms), dtype=torch.bool),
            cost_factor=torch.exp(cost_log_factors(support, arm_ids)),
        )
        scores, _ = model.score(
            torch.as_tensor(np.asarray(embeddings, np.float32)).unsqueeze(0),
            torch.as_tensor(np.asarray(tokens, np.float32)).unsqueeze(0),
            batch,
            z,
            evidence,
        )
    return scores[0].numpy()
