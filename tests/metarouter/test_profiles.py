import numpy as np
import pytest
from metarouter.errors import ConfigError
from metarouter.profiles import (
    BudgetCapProfile,
    LinearProfile,
    QualityFloorProfile,
    normalised_cost,
    simulate_preferences,
)


def test_linear_utility_trades_quality_against_capped_cost():
    p = LinearProfile(0.25)
    u = p.utility(np.array([1.0, 0.0]), np.array([0.5, 5.0]), tau=1.0)
    np.testing.assert_allclose(u, [0.25 - 0.75 * 0.5, -0.75])
    with pytest.raises(ConfigError):
        LinearProfile(1.5)
    with pytest.raises(ConfigError, match="tau"):
        normalised_cost(np.array([1.0]), 0.0)


def test_non_linear_profiles():
    cap = BudgetCapProfile(0.3)
    np.testing.assert_allclose(
        cap.utility(np.array([1.0, 1.0]), np.array([0.2, 0.4]), 1.0), [1.0 - 0.02, -1.0]
    )
    floor = QualityFloorProfile(0.5)
    np.testing.assert_allclose(
        floor.utility(np.array([0.6, 0.4]), np.array([0.1, 0.1]), 1.0), [0.9, -0.6]
    )


def test_bradley_terry_labels_follow_the_utility_gap():
    rng = np.random.default_rng(0)
    n = 20_000
    wins = simulate_preferences(np.full(n, 0.1), np.zeros(n), temperature=0.1, rng=rng)
    assert wins.mean() == pytest.approx(1 / (1 + np.exp(-1.0)), abs=0.01)
    flipped = simulate_preferences(
        np.full(n, 1.0), np.zeros(n), temperature=0.01, flip_rate=0.2, rng=rng
    )
    assert flipped.mean() == pytest.approx(0.8, abs=0.01)
    with pytest.raises(ConfigError):
        simulate_preferences(np.zeros(1), np.zeros(1), temperature=0.0, rng=rng)
