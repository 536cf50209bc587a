"""The user posterior: inference, evidence, decisions, value of information, serialisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from metarouter.errors import ConfigError
from metarouter.posterior import (
    ComparisonData,
    PosteriorConfig,
    Regime,
    UserPosterior,
    comparison_value,
    infer_posterior,
    win_probability,
)

ARMS = ("cheap", "mid", "strong")
COSTS = np.array([0.05, 0.3, 0.6])


def _simulate(alpha, n, seed, offsets=(0.0, 0.0, 0.0), temperature=0.05, graded=False):
    """Comparisons of a simulated user whose answers are good with p = sigmoid(logit + offset)
    (pass/fail), or score p itself (``graded``)."""
    rng = np.random.default_rng(seed)
    rows = {k: [] for k in ("win", "lose", "wl", "ll", "wc", "lc")}
    for _ in range(n):
        a, b = rng.choice(3, 2, replace=False)
        la, lb = rng.normal(0.5, 1.0, 2)
        ga = 1 / (1 + np.exp(-(la + offsets[a])))
        gb = 1 / (1 + np.exp(-(lb + offsets[b])))
        if not graded:
            ga, gb = rng.random() < ga, rng.random() < gb
        ua = alpha * ga - (1 - alpha) * COSTS[a]
        ub = alpha * gb - (1 - alpha) * COSTS[b]
        a_wins = rng.random() < 1 / (1 + np.exp(-(ua - ub) / temperature))
        w, lo, lw, ll = (a, b, la, lb) if a_wins else (b, a, lb, la)
        for key, v in zip(rows, (w, lo, lw, ll, COSTS[w], COSTS[lo]), strict=True):
            rows[key].append(v)
    arr = {k: np.asarray(v) for k, v in rows.items()}
    return ComparisonData(
        ARMS,
        np.zeros(3),
        arr["win"].astype(int),
        arr["lose"].astype(int),
        arr["wl"],
        arr["ll"],
        arr["wc"],
        arr["lc"],
    )


def _one_regime(sd: float, **kw) -> PosteriorConfig:
    return PosteriorConfig(regimes=(Regime("only", 1.0, sd, sd),), **kw)


def _monte_carlo_alpha(data, cfg, samples=100_000, seed=0):
    """The exact alpha posterior by sampling offsets from their prior (one temperature)."""
    (regime,) = cfg.regimes
    rng = np.random.default_rng(seed)
    shift = rng.normal(0, regime.shared_sd, (samples, 1))
    own = rng.normal(0, regime.arm_sd, (samples, 3))
    delta = shift + own
    grid = cfg.alpha_grid
    log_ev = []
    dc = (data.win_cost - data.lose_cost)[None]
    for a in grid:
        pw = 1 / (1 + np.exp(-(data.win_logit[None] + delta[:, data.win])))
        pl = 1 / (1 + np.exp(-(data.lose_logit[None] + delta[:, data.lose])))
        ll = np.log(win_probability(pw, pl, dc, a, cfg.temperatures[0], cfg)).sum(1)
        log_ev.append(np.log(np.mean(np.exp(ll - ll.max()))) + ll.max())
    w = np.exp(np.array(log_ev) - max(log_ev))
    return w / w.sum()


@pytest.mark.parametrize(
    ("coupling", "binary_share", "sd", "tolerance"),
    [
        (0.0, 1.0, 1.5, 0.03),
        (0.4, 1.0, 1.5, 0.03),
        # graded comparisons are sharp in the offsets: the Laplace approximation holds at the
        # familiar regime's widths (at sd 1.5 its mean alpha is off by about 0.05)
        (0.4, 0.5, 0.5, 0.04),
    ],
)
def test_laplace_posterior_matches_monte_carlo_over_the_offsets(
    coupling, binary_share, sd, tolerance
):
    data = _simulate(0.5, 12, seed=3, offsets=(0.0, 1.5, -1.5))
    cfg = _one_regime(
        sd,
        alpha_points=11,
        temperatures=(0.05,),
        outcome_coupling=coupling,
        binary_share=binary_share,
    )
    laplace = infer_posterior(data, cfg).alpha_distribution(cfg.alpha_grid)
    exact = _monte_carlo_alpha(data, cfg)
    assert np.abs(laplace - exact).max() < tolerance
    assert abs(laplace @ cfg.alpha_grid - exact @ cfg.alpha_grid) < 0.02


def test_many_comparisons_recover_the_users_trade_off():
    cfg = _one_regime(0.3)
    estimates = {
        a: infer_posterior(_simulate(a, 150, seed=1), cfg).alpha_mean for a in (0.1, 0.5, 0.9)
    }
    assert estimates[0.1] < 0.25
    assert 0.35 < estimates[0.5] < 0.65
    assert estimates[0.9] > 0.7


def test_win_probability_mixes_pass_fail_and_graded_comparisons():
    pw, pl, dc = np.array(0.7), np.array(0.6), np.array(0.1)
    binary = win_probability(pw, pl, dc, 0.5, 0.05, PosteriorConfig())
    graded = win_probability(pw, pl, dc, 0.5, 0.05, PosteriorConfig(binary_share=0.0))
    # graded answers of expected quality 0.7 and 0.6: the dearer one brings its 0.1 quality edge
    # at half weight against a cost gap of 0.1 at half weight: a coin toss
    assert graded == pytest.approx(0.5)
    assert binary != pytest.approx(0.5, abs=0.02)
    mixed = win_probability(pw, pl, dc, 0.5, 0.05, PosteriorConfig(binary_share=0.3))
    assert mixed == pytest.approx(0.3 * binary + 0.7 * graded)


def test_graded_likelihood_recovers_the_trade_off_of_a_user_comparing_graded_answers():
    """A user comparing graded answers weighs small quality gaps; read as pass/fail outcomes,
    those gaps look like noise and the user looks to care less about quality than they do."""
    graded_cfg, binary_cfg = _one_regime(0.3, binary_share=0.0), _one_regime(0.3)
    for alpha in (0.2, 0.5, 0.8):
        fits = [_simulate(alpha, 30, seed=s, graded=True) for s in range(8)]
        graded = np.mean([infer_posterior(d, graded_cfg).alpha_mean for d in fits])
        binary = np.mean([infer_posterior(d, binary_cfg).alpha_mean for d in fits])
        assert abs(graded - alpha) < 0.06
        assert abs(graded - alpha) < abs(binary - alpha)


def test_novel_regime_reads_every_comparison_as_pass_fail():
    """Around an arm's query-blind ability even graded answers spread like pass/fail ones: the
    binary share changes only the regimes that trust per-query logits."""
    data = _simulate(0.5, 15, seed=5, graded=True)
    novel = (Regime("novel", 0.0, 1.0, 1.0),)
    half = (Regime("half", 0.5, 1.0, 1.0),)
    a = infer_posterior(data, PosteriorConfig(regimes=novel))
    b = infer_posterior(data, PosteriorConfig(regimes=novel, binary_share=0.2))
    np.testing.assert_allclose(a.weight, b.weight)
    np.testing.assert_allclose(a.offset_mean, b.offset_mean)
    c = infer_posterior(data, PosteriorConfig(regimes=half, binary_share=0.2))
    d = infer_posterior(data, PosteriorConfig(regimes=half))
    grid = PosteriorConfig().alpha_grid
    assert np.abs(c.alpha_distribution(grid) - d.alpha_distribution(grid)).max() > 0.01
    assert PosteriorConfig(binary_share=0.2).graded_share(np.array([0.0, 0.5, 1.0])) == (
        pytest.approx([0.0, 0.4, 0.8])
    )
    pw, pl, dc = np.array(0.7), np.array(0.6), np.array(0.1)
    cfg = PosteriorConfig(binary_share=0.0)
    assert win_probability(pw, pl, dc, 0.5, 0.05, cfg, 0.0) == pytest.approx(
        win_probability(pw, pl, dc, 0.5, 0.05, PosteriorConfig())
    )


def test_offsets_learn_which_arm_is_better_on_this_traffic():
    """The strong arm is much worse on this user's traffic than its logits say and the mid arm
    better: the posterior orders the arms' offsets as the truth does."""
    data = _simulate(0.9, 80, seed=2, offsets=(0.0, 2.0, -2.5))
    post = infer_posterior(data, _one_regime(2.0))
    mean, _ = post.offsets_for(list(ARMS))
    offset = post.weight @ mean
    assert offset[1] > offset[0] > offset[2]
    assert offset[1] - offset[2] > 2.0


def test_comparison_order_does_not_matter():
    data = _simulate(0.4, 10, seed=4)
    flip = np.arange(len(data))[::-1]
    rev = ComparisonData(
        data.arms,
        data.base,
        data.win[flip],
        data.lose[flip],
        data.win_logit[flip],
        data.lose_logit[flip],
        data.win_cost[flip],
        data.lose_cost[flip],
    )
    a, b = infer_posterior(data), infer_posterior(rev)
    np.testing.assert_allclose(a.weight, b.weight, atol=1e-8)
    np.testing.assert_allclose(a.offset_mean, b.offset_mean, atol=1e-6)


def test_no_comparisons_give_the_prior_with_novelty_setting_the_regime():
    cfg = PosteriorConfig()
    familiar = infer_posterior(_simulate(0.5, 0, seed=0), cfg, novelty=0.0)
    novel = infer_posterior(_simulate(0.5, 0, seed=0), cfg, novelty=1.0)
    assert familiar.alpha_mean == pytest.approx(0.5)
    assert familiar.regime_distribution(2)[1] == pytest.approx(0.02)
    assert novel.regime_distribution(2)[1] == pytest.approx(0.98)


def test_comparisons_against_the_quality_head_move_weight_to_the_novel_regime():
    """Expensive answers the per-query logits call bad keep beating cheap ones they call good:
    no trade-off explains that, so the traffic is not what the head knows."""
    n = 12
    data = ComparisonData(
        ARMS,
        np.zeros(3),
        np.full(n, 2),
        np.zeros(n, int),
        np.full(n, -3.0),  # the head says the (dear) winner's answers were bad...
        np.full(n, 3.0),  # ...and the (cheap) loser's good
        np.full(n, COSTS[2]),
        np.full(n, COSTS[0]),
    )
    post = infer_posterior(data, PosteriorConfig(), novelty=0.5)
    assert post.regime_distribution(2)[1] > 0.9


def test_expected_utility_is_the_bayes_decision_for_a_certain_user():
    one = np.ones(1)
    sure = UserPosterior(
        arms=(),
        weight=one,
        alpha=one,  # only quality counts
        temperature=0.05 * one,
        query_weight=one,
        arm_sd=1e-3 * one,
        regime=np.zeros(1, int),
        shift_mean=np.zeros(1),
        shift_var=1e-6 * one,
        offset_mean=np.zeros((1, 0)),
        offset_var=np.zeros((1, 0)),
    )
    logits = np.array([[0.0, 2.0, -1.0]])
    util, quality = sure.expected_utility(logits, np.zeros(3), np.array([[0.1, 0.9, 0.0]]), ARMS)
    assert np.argmax(util[0]) == 1
    np.testing.assert_allclose(quality, 1 / (1 + np.exp(-logits)), atol=1e-3)
    np.testing.assert_allclose(util, quality, atol=1e-9)  # alpha = 1: cost has no weight


def test_posterior_round_trips_as_json_and_rejects_tampering():
    post = infer_posterior(_simulate(0.3, 8, seed=5))
    again = UserPosterior.from_dict(json.loads(json.dumps(post.to_dict())))
    logits = np.random.default_rng(0).normal(size=(4, 3))
    cost = np.tile(COSTS, (4, 1))
    a, _ = post.expected_utility(logits, np.zeros(3), cost, ARMS)
    b, _ = again.expected_utility(logits, np.zeros(3), cost, ARMS)
    np.testing.assert_allclose(a, b, atol=1e-5)
    bad = post.to_dict()
    bad["offset_mean"] = bad["offset_mean"][:-1]
    with pytest.raises(ConfigError, match="malformed user posterior"):
        UserPosterior.from_dict(bad)
    bad = post.to_dict()
    bad["weight"][0] = float("nan")
    with pytest.raises(ConfigError, match="non-finite"):
        UserPosterior.from_dict(bad)


def test_config_round_trips_and_rejects_unknown_keys():
    cfg = PosteriorConfig(
        outcome_coupling=0.3, binary_share=0.6, regimes=(Regime("a", 1.0, 0.2, 0.4),)
    )
    assert PosteriorConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    # a router saved before the binary share existed reads as pass/fail
    older = {k: v for k, v in cfg.to_dict().items() if k != "binary_share"}
    assert PosteriorConfig.from_dict(older).binary_share == 1.0
    with pytest.raises(ConfigError, match="binary_share"):
        PosteriorConfig(binary_share=1.5)
    with pytest.raises(ConfigError, match="unknown PosteriorConfig keys"):
        PosteriorConfig.from_dict({"surprise": 1})
    with pytest.raises(ConfigError, match="query_weight"):
        Regime("x", 1.5, 1.0, 1.0)


def test_win_probability_is_a_probability_and_prefers_the_better_cheaper_answer():
    p = win_probability(np.array(0.9), np.array(0.2), np.array(-0.2), 0.5, 0.05, PosteriorConfig())
    q = win_probability(np.array(0.2), np.array(0.9), np.array(0.2), 0.5, 0.05, PosteriorConfig())
    assert 0.5 < p <= 1 and 0 <= q < 0.5


def test_value_of_information_is_zero_when_no_answer_can_change_the_decision():
    """A user certain to care only about cost: whatever they answer, the cheapest arm wins."""
    cfg = _one_regime(0.01, extreme_mass=0.0)
    post = infer_posterior(_simulate(0.0, 60, seed=7), cfg)
    assert post.alpha_mean < 0.1
    logits = np.zeros((5, 3))
    cost = np.tile(COSTS, (5, 1))
    values = comparison_value(post, ARMS, logits, cost, logits, cost, np.zeros(3), cfg)
    assert values.shape == (5, 3)
    assert np.abs(values).max() < 2e-3


def test_value_of_information_prefers_comparisons_that_can_change_the_decision():
    """An undecided user: a comparison between the two arms the decision hinges on is worth
    far more than one between two equally priced arms the user would never be routed to (its
    answer says nothing about the trade-off and little that matters about the arms)."""
    cfg = _one_regime(0.3)
    post = infer_posterior(_simulate(0.5, 0, seed=0), cfg)
    names = ("a", "b", "c", "d")
    logits = np.tile([0.0, 3.0, -4.0, -4.0], (8, 1))  # a, b contend; c, d are bad
    cost = np.tile([0.05, 0.5, 0.9, 0.9], (8, 1))
    values = comparison_value(post, names, logits, cost, logits, cost, np.zeros(4), cfg)
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    assert values[:, pairs.index((0, 1))].mean() > 10 * values[:, pairs.index((2, 3))].mean()
    assert (values > -1e-9).all()
