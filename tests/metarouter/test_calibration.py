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


def test_binary_share_is_one_on_pass_fail_outcomes_and_measures_graded_ones():
    q, g, p = _table(4, 1.0, seed=3)
    assert fit_posterior_config(q, g, q, p, g).config.binary_share == 1.0
    # every answer scored its expectation: nothing of the spread is pass/fail
    assert fit_posterior_config(p, g, p, p, g).binary_share == 0.0
    # half the queries graded on a scale (their expectation), half pass/fail
    rng = np.random.default_rng(4)
    half = np.where((rng.random(len(p)) < 0.5)[:, None], q, p)
    fit = fit_posterior_config(half, g, half, p, g)
    assert fit.binary_share == pytest.approx(0.5, abs=0.05)
    assert fit.config.binary_share == round(fit.binary_share, 4)
