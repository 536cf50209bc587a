"""Evaluation methods: MetaRouter's read-outs (posterior, encoder ablation, true-alpha reference)."""

from __future__ import annotations

import numpy as np
import pytest
from metarouter.data import load_dataset
from metarouter.errors import ConfigError
from metarouter.evaluation.baselines import Context, MetaRouterMethod
from metarouter.evaluation.feedback import draw_feedback
from metarouter.evaluation.settings import build_settings, default_plans
from metarouter.profiles import LinearProfile, QualityFloorProfile, normalised_cost
from metarouter.router import MetaRouter


@pytest.fixture(scope="module")
def setting(default_router):
    """A small LLMRouter K = 5 setting (random unit embeddings: the decision rule is tested)."""
    matrix = load_dataset("llmrouter").to_matrix()
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(matrix), default_router.config.embedding_dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    plan = default_plans()["llmrouter"]
    (s,) = build_settings(
        matrix, emb, plan, splits=("ID",), ksets=("K5",), max_train=200, max_test=60
    )
    return s


@pytest.fixture(scope="module")
def router():
    return MetaRouter.default()


def test_true_alpha_reference_plugs_the_alpha_into_the_routers_own_estimates(setting, router):
    method = MetaRouterMethod({setting.train_key: router}, readout="true alpha")
    assert method.uses_true_preference and method.name == "MetaRouter (true alpha)"
    ctx = Context(setting)
    method.prepare(ctx)
    arms = ctx.data["meta_arms"]
    _, quality, cost = router.score_embeddings(setting.test_emb, setting.test_tok, arms)
    cost = normalised_cost(cost, setting.tau)
    scored = np.arange(10, 60)
    fb = draw_feedback(setting, LinearProfile(0.5), 6, np.arange(10), rng=np.random.default_rng(0))
    # quality only: the best predicted quality; cost only: the cheapest expected cost
    quality_first = method.choose(ctx, fb, scored, LinearProfile(1.0))
    np.testing.assert_array_equal(quality_first, quality[scored].argmax(axis=1))
    cost_first = method.choose(ctx, fb, scored, LinearProfile(0.0))
    np.testing.assert_array_equal(cost_first, cost[scored].argmin(axis=1))
    assert not np.array_equal(quality_first, cost_first)
    # not told a non-linear user's preference: not applicable, not guessed
    assert method.choose(ctx, fb, scored, QualityFloorProfile(0.5)) is None


def test_true_alpha_reference_ignores_the_comparisons(setting, router):
    method = MetaRouterMethod({setting.train_key: router}, readout="true alpha")
    ctx = Context(setting)
    method.prepare(ctx)
    scored = np.arange(10, 60)
    pool = np.arange(10)
    choices = [
        method.choose(
            ctx,
            draw_feedback(setting, LinearProfile(a), n, pool, rng=np.random.default_rng(n)),
            scored,
            LinearProfile(0.7),
        )
        for a, n in ((0.0, 6), (1.0, 12))
    ]
    np.testing.assert_array_equal(*choices)


def test_metarouter_routes_by_the_posterior_it_infers_from_the_comparisons(setting, router):
    method = MetaRouterMethod({setting.train_key: router})
    assert not method.uses_true_preference and method.name == "MetaRouter"
    ctx = Context(setting)
    method.prepare(ctx)
    arms = ctx.data["meta_arms"]
    scored = np.arange(10, 60)
    for alpha in (0.05, 0.95):
        fb = draw_feedback(
            setting, LinearProfile(alpha), 8, np.arange(10), rng=np.random.default_rng(1)
        )
        pref = router.adapt(fb.comparisons(setting), arms=arms)
        scores, _, _ = router.score_embeddings(
            setting.test_emb[scored], setting.test_tok[scored], arms, pref
        )
        np.testing.assert_array_equal(
            method.choose(ctx, fb, scored, LinearProfile(alpha)), scores.argmax(axis=1)
        )


def test_encoder_read_out_ablation_routes_with_the_neural_encoder(setting, router):
    """The ablation uses the network's own read-out: it differs from the posterior's choices
    somewhere, and it reacts to the comparisons."""
    method = MetaRouterMethod({setting.train_key: router}, readout="encoder")
    assert method.name == "MetaRouter (encoder read-out)"
    ctx = Context(setting)
    method.prepare(ctx)
    scored = np.arange(10, 60)
    pool = np.arange(10)
    fbs = [
        draw_feedback(setting, LinearProfile(a), 12, pool, rng=np.random.default_rng(2))
        for a in (0.0, 1.0)
    ]
    cheap, dear = (method.choose(ctx, fb, scored, LinearProfile(0.5)) for fb in fbs)
    assert cheap.shape == (len(scored),) and set(np.unique(cheap)) <= set(range(5))
    costs = setting.test.cost[scored]
    assert costs[np.arange(len(scored)), cheap].mean() <= costs[np.arange(len(scored)), dear].mean()


def test_unknown_read_out_is_refused_with_the_choices(router):
    with pytest.raises(ConfigError, match="posterior"):
        MetaRouterMethod({}, readout="greedy")


def test_metarouter_reads_the_users_recent_traffic_the_protocol_passes(setting, router):
    """Every method gets the same comparisons plus a sample of the user's adaptation pool
    (``Feedback.recent``); MetaRouter adapts with those queries as the user's traffic."""
    from dataclasses import replace

    from metarouter.evaluation.baselines import Method
    from metarouter.evaluation.protocol import run_setting
    from metarouter.novelty import RECENT_TRAFFIC

    seen = []

    class Recorder(Method):
        name = "recorder"

        def choose(self, ctx, fb, scored, profile):
            seen.append((fb.recent.copy(), fb.rows.copy(), scored.copy()))
            return np.zeros(len(scored), np.int64)

    run_setting(
        setting,
        [Recorder()],
        seeds=(0,),
        n_values=(6,),
        profiles=[LinearProfile(0.2), LinearProfile(0.8)],
        progress=False,
    )
    (recent_a, rows_a, scored), (recent_b, rows_b, _) = seen
    np.testing.assert_array_equal(recent_a, recent_b)  # one sample per seed, for every user
    assert len(recent_a) == min(RECENT_TRAFFIC, len(setting.test) - len(scored))
    assert not set(recent_a) & set(scored)  # from the adaptation pool, not the scored queries
    assert set(rows_a) | set(rows_b) <= set(range(len(setting.test))) - set(scored)

    method = MetaRouterMethod({setting.train_key: router})
    ctx = Context(setting)
    method.prepare(ctx)
    arms = ctx.data["meta_arms"]
    fb = draw_feedback(setting, LinearProfile(0.6), 6, np.arange(10), rng=np.random.default_rng(2))
    fb = replace(fb, recent=np.arange(10, 50))
    pref = router.adapt(fb.comparisons(setting), arms=arms, traffic=setting.test_emb[10:50])
    scores, _, _ = router.score_embeddings(
        setting.test_emb[scored], setting.test_tok[scored], arms, pref
    )
    np.testing.assert_array_equal(
        method.choose(ctx, fb, scored, LinearProfile(0.6)), scores.argmax(axis=1)
    )


def test_best_single_model_per_user_is_the_constant_choice_worth_most_to_that_user(setting):
    from metarouter.evaluation.baselines import BestSingleForUser, SingleModel

    method = BestSingleForUser()
    assert method.uses_true_preference and "oracle" in method.name  # a reference, not a rival
    ctx = Context(setting)
    scored = np.arange(10, 60)
    fb = draw_feedback(setting, LinearProfile(0.5), 6, np.arange(10), rng=np.random.default_rng(0))
    q, c = setting.test.quality[scored], setting.test.cost[scored]
    assert method.choose(ctx, fb, scored, LinearProfile(1.0))[0] == q.mean(0).argmax()
    assert method.choose(ctx, fb, scored, LinearProfile(0.0))[0] == c.mean(0).argmin()
    rows = np.arange(len(scored))
    for profile in (LinearProfile(0.3), LinearProfile(0.8), QualityFloorProfile(0.5)):
        choice = method.choose(ctx, fb, scored, profile)
        assert len(set(choice)) == 1
        u = profile.utility(q, c, setting.tau)
        mine = u[rows, choice].mean()
        singles = [
            u[rows, SingleModel(j, str(j)).choose(ctx, fb, scored, profile)].mean()
            for j in range(q.shape[1])
        ]
        assert mine == pytest.approx(max(singles))


def test_the_users_recent_traffic_is_billed_as_the_prior_routes_it(setting, router):
    from dataclasses import replace

    from metarouter.evaluation.baselines import billed_history

    method = MetaRouterMethod({setting.train_key: router})
    ctx = Context(setting)
    method.prepare(ctx)
    arms = ctx.data["meta_arms"]
    recent = np.arange(20, 30)
    billed = billed_history(ctx, router, arms, recent)
    scores, _, _ = router.score_embeddings(
        setting.test_emb[recent], setting.test_tok[recent], arms, router.prior()
    )
    chosen = scores.argmax(axis=1)
    assert [b.model for b in billed] == [arms[k].name for k in chosen]
    assert [b.cost_usd for b in billed] == pytest.approx(setting.test.cost[recent, chosen])
    assert [b.prompt_tokens for b in billed] == [int(t) for t in setting.test_tok[recent]]
    assert billed_history(ctx, router, arms, None) == []
    # MetaRouter with no comparisons routes by the prior with costs calibrated on those bills
    fb = draw_feedback(setting, LinearProfile(0.5), 0, np.arange(10), rng=np.random.default_rng(0))
    scored = np.arange(30, 60)
    got = method.choose(ctx, replace(fb, recent=recent), scored, LinearProfile(0.5))
    pref = router.adapt([], arms=arms, billed=billed)
    want = router.score_embeddings(setting.test_emb[scored], setting.test_tok[scored], arms, pref)[
        0
    ].argmax(axis=1)
    np.testing.assert_array_equal(got, want)
