"""Learning is real: after 6 comparisons the bundled router serves each user's trade-off.

All checks run on held-out queries (the LLMRouter test split) the router never trained on, with
simulated users whose comparisons come from their own traffic (an adaptation pool disjoint from
the scored queries), as in docs/method.md.
"""

from __future__ import annotations

import numpy as np
import pytest
from metarouter.profiles import LinearProfile, simulate_preferences
from metarouter.types import Comparison
from scipy.stats import spearmanr

K5 = [
    "gemma-2-9b-it",
    "llama-3.1-8b-instruct",
    "mistral-7b-instruct-v0.3",
    "llama-3.3-nemotron-super-49b-v1",
    "llama-3.1-nemotron-51b-instruct",
]
ALPHAS = np.round(np.linspace(0.0, 1.0, 21), 2)
USERS_PER_ALPHA = 20


def _comparisons(rng, held, cands, quality, cost, tau, alpha, pool, n=6):
    rows = rng.choice(pool, n)
    pairs = np.stack([rng.choice(len(cands), 2, replace=False) for _ in range(n)])
    util = LinearProfile(alpha).utility(quality, cost, tau)
    a_wins = simulate_preferences(
        util[rows, pairs[:, 0]], util[rows, pairs[:, 1]], temperature=0.05, rng=rng
    )
    out = []
    for r, (a, b), w in zip(rows, pairs, a_wins, strict=True):
        win, lose = (a, b) if w else (b, a)
        out.append(
            Comparison(
                cands[win],
                cands[lose],
                cost[r, win],
                cost[r, lose],
                embedding=held.embeddings[r],
                tokens=int(held.tokens[r]),
            )
        )
    return out


@pytest.fixture(scope="module")
def user_grid(default_router, llmrouter_heldout):
    """Route the scored held-out queries for a grid of simulated users (6 comparisons each)."""
    held = llmrouter_heldout
    m = held.matrix.select_models(K5)
    quality, cost = m.quality, m.cost
    tau = default_router.config.cost_scale_usd
    rng = np.random.default_rng(7)
    perm = rng.permutation(len(quality))
    pool, scored = perm[:125], perm[125:]
    rows = np.arange(len(scored))
    mean_cost, mean_util = [], []
    for alpha in ALPHAS:
        util = LinearProfile(alpha).utility(quality[scored], cost[scored], tau)
        costs, utils = [], []
        for _ in range(USERS_PER_ALPHA):
            pref = default_router.adapt(
                _comparisons(rng, held, K5, quality, cost, tau, alpha, pool)
            )
            probs, _, _ = default_router.score_embeddings(
                held.embeddings[scored], held.tokens[scored], K5, pref
            )
            choice = probs.argmax(axis=1)
            costs.append(cost[scored][rows, choice].mean())
            utils.append(util[rows, choice].mean())
        mean_cost.append(np.mean(costs))
        mean_util.append(np.mean(utils))
    singles = np.stack(
        [LinearProfile(a).utility(quality[scored], cost[scored], tau).mean(0) for a in ALPHAS]
    )
    return {
        "cost": np.array(mean_cost),
        "util": np.array(mean_util),
        "singles": singles,
        "cheap": int(np.argmin(cost.mean(0))),
        "strong": int(np.argmax(quality.mean(0))),
    }


def test_quality_lovers_route_to_dearer_models_than_cost_savers(user_grid):
    rho = spearmanr(ALPHAS, user_grid["cost"])[0]
    assert rho >= 0.9, f"Spearman(alpha, mean chosen cost) = {rho:.3f}: {user_grid['cost']}"
    low, high = user_grid["cost"][:5].mean(), user_grid["cost"][-5:].mean()
    assert high > 1.3 * low


def test_mid_range_users_beat_both_single_model_baselines(user_grid):
    mid = (ALPHAS >= 0.3) & (ALPHAS <= 0.7)
    singles = user_grid["singles"]
    always_cheap = singles[:, user_grid["cheap"]]
    always_strong = singles[:, user_grid["strong"]]
    util = user_grid["util"]
    assert (util[mid] > always_cheap[mid]).all(), util[mid] - always_cheap[mid]
    assert (util[mid] > always_strong[mid]).all(), util[mid] - always_strong[mid]


def test_inferred_quality_weight_rises_with_the_true_one(default_router, llmrouter_heldout):
    held = llmrouter_heldout
    m = held.matrix.select_models(K5)
    tau = default_router.config.cost_scale_usd
    rng = np.random.default_rng(3)
    pool = np.arange(len(m.quality))
    means = []
    for alpha in (0.0, 0.5, 1.0):
        est = [
            default_router.adapt(
                _comparisons(rng, held, K5, m.quality, m.cost, tau, alpha, pool)
            ).quality_weight
            for _ in range(12)
        ]
        means.append(np.mean(est))
    assert means[0] < means[1] < means[2]
    assert means[2] - means[0] > 0.2
