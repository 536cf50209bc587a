"""Learning is real: after 6 comparisons the bundled router serves each user's own trade-off.

Everything is measured per user, on held-out queries (the LLMRouter test split, which the
bundled router never trained on) and held-out users: simulated users whose comparisons come
from their own traffic (an adaptation pool disjoint from the scored queries), as in
docs/method.md. Three seeds draw three different pool/scored splits and user sets.

Baselines, each scored on the same queries and users:

* **best single model**: the one model with the lowest regret for that user on the scored
  queries, chosen in hindsight with the user's true profile (a strong, unfair baseline: it
  knows the answer; a router that does not condition on the query can at best reach it);
* **query-blind alpha fit**: alpha fitted (Bradley-Terry, maximum likelihood) from the same 6
  comparisons using the models' mean training-split quality, then the single model best on
  average for that alpha: what the comparisons give without a query-aware model;
* **random**: a uniform choice among the candidates;
* **prior**: the router itself for a new user (no comparisons), which isolates what the
  comparisons add.

Thresholds are set from measured distributions with a margin; the measured figures are next
to each assert (bundled router, 2026-12).
"""

from __future__ import annotations

import numpy as np
import pytest
from metarouter.data import load_dataset
from metarouter.evaluation.baselines import ALPHA_GRID, fit_alpha
from metarouter.profiles import (
    BudgetCapProfile,
    LinearProfile,
    Profile,
    QualityFloorProfile,
    normalised_cost,
    simulate_preferences,
)
from metarouter.types import Comparison
from scipy.stats import spearmanr

K5 = [
    "gemma-2-9b-it",
    "llama-3.1-8b-instruct",
    "mistral-7b-instruct-v0.3",
    "llama-3.3-nemotron-super-49b-v1",
    "llama-3.1-nemotron-51b-instruct",
]
SEEDS = (0, 1, 2)
LINEAR_USERS = 60  # per seed
NONLINEAR_USERS = 20  # per family and seed
POOL = 125  # held-out queries a user's comparisons come from; the rest (375) are scored

# Thresholds. Measured (bundled router, 2026-12; 60 linear users per seed, 20 per non-linear
# family and seed, seeds 0/1/2), then loosened by a margin so that a retrained bundled router
# of the same quality passes and a router that does not adapt fails:
#: per-user Spearman(true alpha, inferred weight): measured 0.657 / 0.695 / 0.559
RHO_WEIGHT = 0.4
#: per-user Spearman(true alpha, mean cost of the chosen models): measured 0.576 / 0.654 / 0.516
RHO_COST = 0.35
#: mean regret of linear users / that of each baseline. Measured (pooled): MetaRouter 0.087,
#: best single model in hindsight 0.099 (0.88), query-blind alpha fit 0.112 (0.78), random
#: 0.208 (0.42); per seed at most 0.91, 0.81 and 0.48; every user below random.
SINGLE_RATIO, BLIND_RATIO, RANDOM_RATIO = 0.95, 0.9, 0.6
#: non-linear users, MetaRouter's mean regret / random's: measured 0.35 (budget cap; per seed
#: at most 0.45) and 0.49 (quality floor; at most 0.49).
NONLINEAR_RANDOM_RATIO = {"budget": 0.6, "floor": 0.7}
#: cost-savers (alpha < 0.2), mean regret after their 6 comparisons / with the prior (no
#: comparisons): measured 0.012 / 0.017 = 0.71. Over all linear users adaptation does not beat
#: the prior on average (0.087 vs 0.085: it helps cost-savers, costs mid-range users a little
#: and ties quality lovers), so only the group it helps is held to it.
SAVER_PRIOR_RATIO = 0.85
#: quality-floor users / best single model in hindsight: measured 0.83 (per seed at most 0.86).
#: Budget-cap users are not held to it: MetaRouter's regret 0.170 is 4.4 times the best single
#: model's 0.038 (a linear trade-off cannot express a hard cap): a known weakness, not pinned.
FLOOR_SINGLE_RATIO = 0.95


def _comparisons(rng, held, quality, cost, tau, profile: Profile, pool, n=6):
    """``n`` comparisons of random K5 pairs on the user's own traffic, labelled by the profile.

    Returns the comparisons and, per comparison, (winner, loser) indices into K5.
    """
    rows = rng.choice(pool, n)
    pairs = np.stack([rng.choice(len(K5), 2, replace=False) for _ in range(n)])
    util = profile.utility(quality, cost, tau)
    a_wins = simulate_preferences(
        util[rows, pairs[:, 0]], util[rows, pairs[:, 1]], temperature=0.05, rng=rng
    )
    out, idx = [], []
    for r, (a, b), w in zip(rows, pairs, a_wins, strict=True):
        win, lose = (a, b) if w else (b, a)
        idx.append((win, lose, r))
        out.append(
            Comparison(
                K5[win],
                K5[lose],
                cost[r, win],
                cost[r, lose],
                embedding=held.embeddings[r],
                tokens=int(held.tokens[r]),
            )
        )
    return out, np.asarray(idx)


def _query_blind_choice(idx, norm_cost, mean_quality, mean_cost) -> int:
    """The single model a query-blind alpha fit picks from the comparisons (K5 index)."""
    win, lose, rows = idx[:, 0], idx[:, 1], idx[:, 2]
    a = ALPHA_GRID[:, None]
    diff = (
        a * (mean_quality[win] - mean_quality[lose])[None]
        - (1 - a) * (norm_cost[rows, win] - norm_cost[rows, lose])[None]
    )
    alpha = fit_alpha(diff)
    return int(np.argmax(alpha * mean_quality - (1 - alpha) * mean_cost))


@pytest.fixture(scope="module")
def users(default_router, llmrouter_heldout):
    """Per user: true profile, inferred weight, chosen cost and the regrets of each method."""
    held = llmrouter_heldout
    m = held.matrix.select_models(K5)
    quality, cost = m.quality, m.cost
    tau = default_router.config.cost_scale_usd
    norm_cost = normalised_cost(cost, tau)
    train = load_dataset("llmrouter").to_matrix().split("train").select_models(K5)
    mean_quality = train.quality.mean(0)
    mean_cost = normalised_cost(train.cost, tau).mean(0)
    out: dict[str, list] = {"linear": [], "budget": [], "floor": []}
    for seed in SEEDS:
        rng = np.random.default_rng(100 + seed)
        perm = rng.permutation(len(quality))
        pool, scored = perm[:POOL], perm[POOL:]
        rows = np.arange(len(scored))
        # a new user (no comparisons): the router's prior, each query at its own novelty
        prior_probs, _, _ = default_router.score_embeddings(
            held.embeddings[scored], held.tokens[scored], K5
        )
        prior_choice = prior_probs.argmax(axis=1)
        profiles: list[tuple[str, Profile]] = [
            ("linear", LinearProfile(float(a))) for a in rng.uniform(0, 1, LINEAR_USERS)
        ]
        profiles += [
            ("budget", BudgetCapProfile(float(c)))
            for c in rng.choice([0.02, 0.05, 0.1, 0.2], NONLINEAR_USERS)
        ]
        profiles += [
            ("floor", QualityFloorProfile(float(f)))
            for f in rng.choice([0.3, 0.5, 0.7], NONLINEAR_USERS)
        ]
        for family, profile in profiles:
            comps, idx = _comparisons(rng, held, quality, cost, tau, profile, pool)
            pref = default_router.adapt(comps)
            probs, _, _ = default_router.score_embeddings(
                held.embeddings[scored], held.tokens[scored], K5, pref
            )
            choice = probs.argmax(axis=1)
            util = profile.utility(quality[scored], cost[scored], tau)
            best = util.max(axis=1)
            blind = _query_blind_choice(idx, norm_cost, mean_quality, mean_cost)
            out[family].append(
                {
                    "seed": seed,
                    "alpha": getattr(profile, "alpha", None),
                    "weight": pref.quality_weight,
                    "cost": cost[scored][rows, choice].mean(),
                    "metarouter": (best - util[rows, choice]).mean(),
                    "single": (best[:, None] - util).mean(axis=0).min(),
                    "blind": (best - util[:, blind]).mean(),
                    "random": (best - util.mean(axis=1)).mean(),
                    "prior": (best - util[rows, prior_choice]).mean(),
                }
            )
    return out


def test_each_users_inferred_quality_weight_follows_their_true_one(users):
    for seed in SEEDS:
        group = [u for u in users["linear"] if u["seed"] == seed]
        alpha = [u["alpha"] for u in group]
        rho_w = spearmanr(alpha, [u["weight"] for u in group])[0]
        rho_c = spearmanr(alpha, [u["cost"] for u in group])[0]
        assert rho_w >= RHO_WEIGHT, f"seed {seed}: per-user Spearman(alpha, weight) = {rho_w:.3f}"
        assert rho_c >= RHO_COST, f"seed {seed}: per-user Spearman(alpha, cost) = {rho_c:.3f}"


def test_linear_users_regret_beats_the_query_blind_fit_and_random(users):
    lin = users["linear"]
    mr = np.array([u["metarouter"] for u in lin])
    blind = np.array([u["blind"] for u in lin])
    single = np.array([u["single"] for u in lin])
    rand = np.array([u["random"] for u in lin])
    assert mr.mean() < BLIND_RATIO * blind.mean(), (mr.mean(), blind.mean())
    assert mr.mean() < RANDOM_RATIO * rand.mean(), (mr.mean(), rand.mean())
    assert mr.mean() < SINGLE_RATIO * single.mean(), (mr.mean(), single.mean())
    assert (mr < rand).mean() >= 0.9  # nearly every user, not only on average


def test_cost_savers_are_served_better_after_their_comparisons_than_before(users):
    savers = [u for u in users["linear"] if u["alpha"] < 0.2]
    assert len(savers) >= 20
    adapted = np.mean([u["metarouter"] for u in savers])
    prior = np.mean([u["prior"] for u in savers])
    assert adapted < SAVER_PRIOR_RATIO * prior, (adapted, prior)


@pytest.mark.parametrize("family", ["budget", "floor"])
def test_nonlinear_users_are_served_better_than_random(users, family):
    """Budget caps and quality floors: profiles never seen in training."""
    group = users[family]
    mr = np.array([u["metarouter"] for u in group])
    rand = np.array([u["random"] for u in group])
    assert mr.mean() < NONLINEAR_RANDOM_RATIO[family] * rand.mean(), (mr.mean(), rand.mean())
    if family == "floor":
        single = np.array([u["single"] for u in group])
        assert mr.mean() < FLOOR_SINGLE_RATIO * single.mean(), (mr.mean(), single.mean())
