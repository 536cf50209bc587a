"""The adaptation prior fitted from a training table's task groups."""

from __future__ import annotations

import numpy as np
import pytest
from metarouter.calibration import MAX_NOVEL_SD, MIN_NOVEL_SD, fit_posterior_config


def _table(n_groups: int, spread: float, seed: int = 0, per_group: int = 400, arms: int = 4):
    """Outcomes whose arms' logits move by N(0, spread) per task group, and a head's guesses."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), per_group)
    base = rng.normal(0.0, 1.0, arms)
    moves = rng.normal(0.0, spread, (n_groups, arms))
    logits = base[None, :] + moves[groups]
    prob = 1 / (1 + np.exp(-logits))
    quality = (rng.random(prob.shape) < prob).astype(float)
    return quality, groups, prob


def _novel(fit):
    regime = fit.config.regimes[-1]
    return regime.shared_sd, regime.arm_sd


def test_few_families_widen_the_novel_prior_many_keep_the_measured_spread():
    q, g, p = _table(12, 2.0)
    many = fit_posterior_config(q, g, q, p, g)
    measured = many.novel["measured_arm_sd"]
    # twelve families: the 90% upper bound is 1.40 times what was measured
    assert many.novel["arm_sd"] == pytest.approx(1.404 * measured, rel=0.01)
    # the same groups, declared as query clusters of two task families: as wide as allowed
    few = fit_posterior_config(q, g, q, p, g, families=2)
    assert _novel(few) == (MAX_NOVEL_SD, MAX_NOVEL_SD)


def test_novel_prior_stays_within_its_floor_and_cap():
    q, g, p = _table(3, 0.0, seed=1)
    quiet = fit_posterior_config(q, g, q, p, g)
    assert all(MIN_NOVEL_SD <= sd <= MAX_NOVEL_SD for sd in _novel(quiet))
    assert _novel(quiet) == (MIN_NOVEL_SD, MIN_NOVEL_SD)  # nothing measured beyond noise
    q, g, p = _table(4, 4.0, seed=2)
    loud = fit_posterior_config(q, g, q, p, g)
    assert max(_novel(loud)) == pytest.approx(MAX_NOVEL_SD)


def _ranked_table(slopes, seed: int = 0, per_family: int = 600, arms: int = 6):
    """Task families whose arms' centred logits are ``slope`` times one shared ranking."""
    rng = np.random.default_rng(seed)
    ranking = np.linspace(-1.5, 1.5, arms)
    families = np.repeat(np.arange(len(slopes)), per_family)
    logits = np.asarray(slopes)[families, None] * ranking[None, :]
    quality = (rng.random(logits.shape) < 1 / (1 + np.exp(-logits))).astype(float)
    return quality, families


def test_many_families_that_agree_keep_the_arms_ranking_for_novel_traffic():
    q, f = _ranked_table([1.0] * 10)
    fit = fit_posterior_config(q, f, q, np.full(q.shape, 0.5), f)
    assert fit.config.base_weight > 0.8
    assert fit.novel["ranking_families"] == 10
    # the centre is the table's mean arm logit (here about 0)
    assert abs(fit.config.base_center) < 0.2


def test_families_that_disagree_or_are_few_start_novel_traffic_with_arms_alike():
    # ten families, half keep the ranking and half reverse it: it does not carry over
    q, f = _ranked_table([1.0, -1.0] * 5, seed=1)
    assert fit_posterior_config(q, f, q, np.full(q.shape, 0.5), f).config.base_weight == 0.0
    # two families that agree cannot show that a third keeps the ranking either
    q, f = _ranked_table([1.0, 0.6], seed=2)
    few = fit_posterior_config(q, f, q, np.full(q.shape, 0.5), f, train_families=f)
    assert few.config.base_weight == 0.0
    # one family: nothing to measure
    one = fit_posterior_config(
        q, np.zeros(len(q), int), q, np.full(q.shape, 0.5), f, train_families=np.zeros(len(q))
    )
    assert one.config.base_weight == 0.0 and one.novel["ranking_families"] == 0
