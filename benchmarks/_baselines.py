"""The evaluation harness's learned baselines, fitted as it fits them, routing one query at a time.

The harness (``metarouter.evaluation.baselines``) routes whole test sets and keeps precomputed
predictions, not the fitted models, so each baseline is refitted here with the harness's own
hyperparameters (and, where it keeps them, its own fitted objects: BaRP's network, the
Avengers-Pro tables), then given one user's comparisons. ``route(embedding)`` is the per-query
decision a deployed router makes after embedding the query; :func:`agreement` checks it picks
what the harness's ``choose`` picks on the same queries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from metarouter.evaluation.baselines import (
    ALPHA_GRID,
    AvengersPro,
    BaRP,
    Context,
    LinUCB,
    Method,
    RouteLLM,
    _plugin_alpha,
    fit_alpha,
)
from metarouter.evaluation.feedback import Feedback
from metarouter.profiles import Profile


@dataclass
class QueryRouter:
    """One baseline, ready for one user: ``route(embedding) -> candidate index``."""

    name: str
    method: Method
    route: Callable[[np.ndarray], int]


def avengers_pro(ctx: Context, fb: Feedback) -> QueryRouter:
    """Avengers-Pro (fitted alpha): nearest k-means cluster, per-cluster quality/cost score."""
    from sklearn.cluster import KMeans

    method = AvengersPro(alpha=None)
    method.prepare(ctx)
    s = ctx.setting
    km = KMeans(
        n_clusters=min(method.n_clusters, len(s.train_emb) // 5),
        n_init=2,
        random_state=method.seed,
    ).fit(s.train_emb)
    table = ctx.data["avengers"]
    if not np.array_equal(km.labels_, table["train_cluster"]):
        raise RuntimeError("k-means refit differs from the harness's fit")
    centers = km.cluster_centers_
    cl = table[f"{fb.source}_cluster"][fb.rows]
    p, q = table["p"][cl], table["q"][cl]
    i = np.arange(len(fb))
    a = ALPHA_GRID[:, None]
    alpha = fit_alpha(
        a * (p[i, fb.win] - p[i, fb.lose])[None] + (1 - a) * (q[i, fb.lose] - q[i, fb.win])[None]
    )
    score = alpha * table["p"] + (1 - alpha) * (1 - table["q"])  # (clusters, K), per user

    def route(embedding: np.ndarray) -> int:
        return int(score[int(np.argmax(centers @ embedding))].argmax())

    return QueryRouter(method.name, method, route)


def barp(ctx: Context, fb: Feedback) -> QueryRouter:
    """BaRP-style policy (fitted alpha): the harness's trained network, greedy action."""
    import torch

    method = BaRP(true_alpha=False)
    method.prepare(ctx)
    net, pref = ctx.data["barp"]
    alpha = _plugin_alpha(*ctx.feedback_arrays(fb, ctx.knn()))
    with torch.no_grad():
        w = torch.tanh(pref(torch.tensor([[alpha, 1 - alpha]], dtype=torch.float32)))

    def route(embedding: np.ndarray) -> int:
        with torch.no_grad():
            x = torch.tensor(embedding, dtype=torch.float32)[None, :]  # a copy: read-only input
            return int(net(torch.cat([x, w], 1)).argmax(1)[0])

    return QueryRouter(method.name, method, route)


def routellm(ctx: Context, fb: Feedback) -> QueryRouter:
    """RouteLLM-style threshold router (K = 2): win-rate classifier + the user's threshold."""
    from sklearn.linear_model import LogisticRegression

    method = RouteLLM()
    method.prepare(ctx)
    t = ctx.data["routellm"]
    s = ctx.setting
    q_tr, _ = ctx.train_outcomes()
    y = (q_tr[:, t["strong"]] > q_tr[:, t["weak"]]).astype(int)
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(s.train_emb, y)
    if not np.allclose(clf.predict_proba(s.train_emb)[:, 1], t["p_train"]):
        raise RuntimeError("win-rate classifier refit differs from the harness's fit")
    best_t = method.threshold(ctx, fb)
    strong, weak = int(t["strong"]), int(t["weak"])

    def route(embedding: np.ndarray) -> int:
        return strong if clf.predict_proba(embedding[None, :])[0, 1] > best_t else weak

    return QueryRouter(method.name, method, route)


def linucb(ctx: Context, fb: Feedback) -> QueryRouter:
    """PILOT-style LinUCB: PCA features, per-arm ridge models updated with the comparisons."""
    from sklearn.decomposition import PCA

    method = LinUCB()
    method.prepare(ctx)
    s = ctx.setting
    pca = PCA(method.dims, random_state=0).fit(s.train_emb)
    t = ctx.data["linucb"]
    phi_train = np.hstack([pca.transform(s.train_emb), np.ones((len(s.train_emb), 1))])
    if not np.allclose(phi_train, t["train"]):
        raise RuntimeError("PCA refit differs from the harness's fit")
    a, b = t["a"].copy(), t["b"].copy()
    x = t[fb.source][fb.rows]
    for i in range(len(fb)):
        for arm, reward in ((fb.win[i], 1.0), (fb.lose[i], 0.0)):
            a[arm] += np.outer(x[i], x[i])
            b[arm] += reward * x[i]
    inv = np.linalg.inv(a)
    theta = np.einsum("kij,kj->ki", inv, b)
    beta = method.beta

    def route(embedding: np.ndarray) -> int:
        phi = np.hstack([pca.transform(embedding[None, :]), np.ones((1, 1))])
        mean = phi @ theta.T
        bonus = np.sqrt(np.einsum("ni,kij,nj->nk", phi, inv, phi))
        return int((mean + beta * bonus).argmax(axis=1)[0])

    return QueryRouter(method.name, method, route)


def agreement(
    router: QueryRouter, ctx: Context, fb: Feedback, profile: Profile, rows: np.ndarray
) -> float:
    """Share of test rows where ``router.route`` picks what the harness's ``choose`` picks."""
    expected = router.method.choose(ctx, fb, rows, profile)
    if expected is None:
        return float("nan")
    got = np.asarray([router.route(ctx.setting.test_emb[r]) for r in rows])
    return float(np.mean(got == np.asarray(expected)))
