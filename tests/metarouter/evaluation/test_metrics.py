import numpy as np
import pytest
from metarouter.errors import ConfigError
from metarouter.evaluation.metrics import (
    gap_recovered,
    hypervolume,
    igd,
    normalise_costs,
    pareto_front,
)


def test_hypervolume_of_one_point_is_its_dominated_box():
    assert hypervolume(np.array([[0.2, 0.8]])) == pytest.approx(0.8 * 0.8)


def test_hypervolume_of_a_staircase():
    pts = np.array([[0.2, 0.5], [0.6, 0.8]])
    assert hypervolume(pts) == pytest.approx(0.4 * 0.5 + 0.4 * 0.8)


def test_dominated_points_do_not_change_hypervolume():
    pts = np.array([[0.2, 0.5], [0.6, 0.8]])
    more = np.vstack([pts, [[0.7, 0.6], [0.3, 0.4], [0.6, 0.8]]])
    assert hypervolume(more) == pytest.approx(hypervolume(pts))


def test_point_at_reference_cost_adds_nothing_and_order_does_not_matter():
    assert hypervolume(np.array([[1.0, 0.9], [0.0, 0.5]])) == pytest.approx(0.5)
    pts = np.array([[0.6, 0.8], [0.1, 0.3], [0.2, 0.5]])
    assert hypervolume(pts) == pytest.approx(hypervolume(pts[::-1]))


def test_points_are_clipped_to_the_unit_box():
    assert hypervolume(np.array([[-0.5, 1.2]])) == pytest.approx(1.0)
    assert hypervolume(np.array([[1.5, 0.9]])) == 0.0


def test_pareto_front_keeps_only_non_dominated_points_sorted_by_cost():
    front = pareto_front(np.array([[0.5, 0.5], [0.1, 0.2], [0.6, 0.4], [0.9, 0.9]]))
    np.testing.assert_allclose(front, [[0.1, 0.2], [0.5, 0.5], [0.9, 0.9]])


def test_igd_is_mean_distance_from_reference_points():
    ref = np.array([[0.0, 1.0], [1.0, 1.0]])
    assert igd(np.array([[0.0, 1.0]]), ref) == pytest.approx(0.5)
    assert igd(ref, ref) == 0.0
    assert igd(np.array([[0.0, 0.6]]), np.array([[0.0, 1.0], [0.3, 1.0]])) == pytest.approx(
        (0.4 + 0.5) / 2
    )


def test_gap_recovered_and_cost_normalisation():
    assert gap_recovered(0.5, 0.3, 0.7) == pytest.approx(0.5)
    assert gap_recovered(0.3, 0.3, 0.7) == 0.0
    assert np.isnan(gap_recovered(0.5, 0.5, 0.5))
    np.testing.assert_allclose(
        normalise_costs(np.array([1.0, 3.0, 2.0]), 1.0, 3.0), [0.0, 1.0, 0.5]
    )
    with pytest.raises(ConfigError, match="high > low"):
        normalise_costs(np.array([1.0]), 2.0, 2.0)
    with pytest.raises(ConfigError, match="finite"):
        hypervolume(np.array([[np.nan, 0.5]]))


def test_calibration_figures_are_reproduced(shared_data):
    """docs/method.md: oracle and single-model HV on the RouterBench subset, to about 0.005."""
    from metarouter.data import load_dataset
    from metarouter.profiles import LinearProfile

    m = load_dataset("routerbench", shared_data).to_matrix()
    k2 = ["gpt-4-1106-preview", "mistralai/mixtral-8x7b-chat"]
    k5 = [*k2, "gpt-3.5-turbo-1106", "zero-one-ai/Yi-34B-Chat", "mistralai/mistral-7b-chat"]
    expected = {
        ("ID", "K2"): (0.901, 0.748),
        ("ID", "K5"): (0.946, 0.772),
        ("OOD", "K2"): (0.707, 0.541),
        ("OOD", "K5"): (0.799, 0.647),
    }
    for (split, kset), (oracle_hv, single_hv) in expected.items():
        mm = m.select_models(k2 if kset == "K2" else k5)
        if split == "ID":
            tr, te = mm.splits == "train", mm.splits == "test"
        else:
            tr, te = (mm.splits == "train") & (mm.tasks != "mbpp"), mm.tasks == "mbpp"
        q, c = mm.quality[te], mm.cost[te]
        tau = np.percentile(mm.cost[tr].max(1), 95)
        lo, hi = c.mean(0).min(), c.mean(0).max()
        pts = []
        for a in np.arange(0, 1.0001, 0.05):
            u = LinearProfile(round(a, 2)).utility(q, c, tau) - 1e-9 * c
            pick = u.argmax(1)
            rows = np.arange(len(q))
            pts.append((normalise_costs(c[rows, pick].mean(), lo, hi), q[rows, pick].mean()))
        singles = np.c_[normalise_costs(c.mean(0), lo, hi), q.mean(0)]
        assert hypervolume(np.array(pts)) == pytest.approx(oracle_hv, abs=0.005), (split, kset)
        assert hypervolume(singles) == pytest.approx(single_hv, abs=0.005), (split, kset)
