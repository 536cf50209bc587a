"""The methods compared by the evaluation: MetaRouter and the baselines of docs/method.md.

Every method routes the scored queries of one simulated user given that user's N comparisons
(the same comparisons for all). Methods marked ``uses_true_preference`` are told the user's
true alpha instead (upper references); they are not applicable to non-linear profiles.

References:
    Avengers-Pro: arXiv 2508.12631. BaRP: arXiv 2510.07429. RouteLLM: arXiv 2406.18665.
    PILOT (LinUCB with a preference prior): arXiv 2508.21141.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from metarouter.arms import ArmDescriptor
from metarouter.errors import ConfigError
from metarouter.evaluation.feedback import Feedback, outcomes
from metarouter.evaluation.settings import Setting
from metarouter.profiles import LinearProfile, Profile, normalised_cost
from metarouter.types import BilledCall

__all__ = [
    "AvengersPro",
    "BaRP",
    "BestSingleForUser",
    "FromScratch",
    "KNNRouter",
    "LinUCB",
    "MetaRouterMethod",
    "Method",
    "Oracle",
    "RandomRouter",
    "RouteLLM",
    "SingleModel",
    "fit_alpha",
]

logger = logging.getLogger(__name__)

ALPHA_GRID = np.linspace(0.0, 1.0, 101)
#: Temperature assumed by the plug-in Bradley-Terry fits of alpha (the simulated users' T).
FIT_TEMPERATURE = 0.05


def fit_alpha(score_diff: np.ndarray) -> float:
    """Maximum-likelihood alpha on a grid from per-comparison score differences.

    Args:
        score_diff: (G, N) winner-minus-loser score of each comparison under each grid alpha.

    Returns:
        The maximiser (mean of ties); 0.5 without comparisons.
    """
    if score_diff.shape[1] == 0:
        return 0.5
    z = score_diff / FIT_TEMPERATURE
    loglik = -np.logaddexp(0.0, -z).sum(axis=1)
    best = np.flatnonzero(loglik >= loglik.max() - 1e-9)
    return float(ALPHA_GRID[best].mean())


def _plugin_alpha(
    q_win: np.ndarray, q_lose: np.ndarray, c_win: np.ndarray, c_lose: np.ndarray
) -> float:
    """BT-MLE alpha with predicted qualities and observed normalised costs."""
    a = ALPHA_GRID[:, None]
    return fit_alpha(a * (q_win - q_lose)[None] - (1 - a) * (c_win - c_lose)[None])


@dataclass
class Context:
    """Per-setting caches shared by methods (predictions on test and training rows)."""

    setting: Setting
    data: dict[str, Any] = field(default_factory=dict)

    def train_outcomes(self) -> tuple[np.ndarray, np.ndarray]:
        """(n_train, K) quality and cost of the candidates on the training queries."""
        if "train_qc" not in self.data:
            self.data["train_qc"] = outcomes(self.setting, "train")
        return self.data["train_qc"]

    def knn(self, k: int = 25) -> dict[str, np.ndarray]:
        """KNN (cosine) predictions of quality and cost for test and training rows."""
        key = f"knn{k}"
        if key not in self.data:
            s = self.setting
            q_tr, c_tr = self.train_outcomes()
            out = {}
            for name, emb, self_excl in (("test", s.test_emb, False), ("train", s.train_emb, True)):
                sim = emb @ s.train_emb.T
                if self_excl:
                    np.fill_diagonal(sim, -np.inf)
                nn = np.argpartition(-sim, k, axis=1)[:, :k]
                out[f"{name}_q"] = q_tr[nn].mean(axis=1)
                out[f"{name}_c"] = c_tr[nn].mean(axis=1)
            self.data[key] = out
        return self.data[key]

    def feedback_arrays(
        self, fb: Feedback, pred: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Predicted qualities and observed normalised costs of each comparison's two answers."""
        q = pred[f"{fb.source}_q"][fb.rows]
        tau = self.setting.tau
        return (
            q[np.arange(len(fb)), fb.win],
            q[np.arange(len(fb)), fb.lose],
            normalised_cost(fb.win_cost, tau),
            normalised_cost(fb.lose_cost, tau),
        )


class Method(ABC):
    """A routing method under evaluation."""

    name: str = "method"
    uses_true_preference: bool = False

    def applicable(self, setting: Setting) -> bool:
        """Whether the method can route this setting's candidates."""
        return True

    def prepare(self, ctx: Context) -> None:  # noqa: B027 - optional hook
        """Fit whatever the method needs for a setting (called once per setting)."""

    @abstractmethod
    def choose(
        self, ctx: Context, fb: Feedback, scored: np.ndarray, profile: Profile
    ) -> np.ndarray | None:
        """Index of the chosen candidate for each scored test row (None: not applicable)."""


def _true_alpha(profile: Profile) -> float | None:
    return profile.alpha if isinstance(profile, LinearProfile) else None


def _true_utility(
    ctx: Context, scored: np.ndarray, profile: Profile
) -> tuple[np.ndarray, np.ndarray]:
    """The user's true utility and the real cost (USD) of each candidate on the scored queries."""
    s = ctx.setting
    q, c = s.test.quality[scored], s.test.cost[scored]
    return profile.utility(q, c, s.tau), c


class Oracle(Method):
    """Per-query best candidate under the user's true profile (ties go to the cheaper)."""

    name = "oracle"
    uses_true_preference = True

    def choose(
        self, ctx: Context, fb: Feedback, scored: np.ndarray, profile: Profile
    ) -> np.ndarray:
        """Argmax of the true utility."""
        u, c = _true_utility(ctx, scored, profile)
        return (u - 1e-9 * c / ctx.setting.tau).argmax(axis=1)


class BestSingleForUser(Method):
    """The single candidate with the most utility for this user on the scored queries.

    A hindsight reference, told the user's profile and the outcomes: how far a router that only
    had to find each user's one best model could go. Out of distribution, where per-query
    estimates carry little, it is what identifying the arms' quality on the user's traffic
    could reach at best. Ties go to the cheaper candidate.
    """

    name = "best single model per user (oracle)"
    uses_true_preference = True

    def choose(
        self, ctx: Context, fb: Feedback, scored: np.ndarray, profile: Profile
    ) -> np.ndarray:
        """The arm whose constant choice gives the most mean utility."""
        u, c = _true_utility(ctx, scored, profile)
        value, mean_cost = u.mean(axis=0), c.mean(axis=0)
        best = max(range(len(value)), key=lambda j: (value[j], -mean_cost[j]))
        return np.full(len(scored), best)


class SingleModel(Method):
    """Always the same candidate."""

    def __init__(self, index: int, label: str) -> None:
        self.index = index
        self.name = f"single:{label}"

    def choose(
        self, ctx: Context, fb: Feedback, scored: np.ndarray, profile: Profile
    ) -> np.ndarray:
        """The fixed candidate."""
        return np.full(len(scored), self.index)


class RandomRouter(Method):
    """Uniformly random candidate per query."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def choose(
        self, ctx: Context, fb: Feedback, scored: np.ndarray, profile: Profile
    ) -> np.ndarray:
        """Random choices."""
        return self.rng.integers(0, len(ctx.setting.models), size=len(scored))


class KNNRouter(Method):
    """kNN (k = 25) quality and cost predictor + alpha (fitted by BT-MLE, or the true one)."""

    def __init__(self, true_alpha: bool = False, k: int = 25) -> None:
        self.true_alpha = true_alpha
        self.uses_true_preference = true_alpha
        self.k = k
        self.name = f"kNN ({'true' if true_alpha else 'fitted'} alpha)"

    def choose(
        self, ctx: Context, fb: Feedback, scored: np.ndarray, profile: Profile
    ) -> np.ndarray | None:
        """Argmax of alpha * q - (1 - alpha) * c~ with kNN predictions."""
        pred = ctx.knn(self.k)
        if self.true_alpha:
            alpha = _true_alpha(profile)
            if alpha is None:
                return None
        else:
            alpha = _plugin_alpha(*ctx.feedback_arrays(fb, pred))
        s = ctx.setting
        u = alpha * pred["test_q"][scored] - (1 - alpha) * normalised_cost(
            pred["test_c"][scored], s.tau
        )
        return u.argmax(axis=1)


class AvengersPro(Method):
    """Cluster router: k-means on embeddings, per-cluster normalised quality and cost.

    ``score = alpha * p~ + (1 - alpha) * (1 - q~)`` within the query's nearest cluster, alpha
    fixed at 0.5 or fitted from the comparisons by Bradley-Terry maximum likelihood in this
    score space.
    """

    def __init__(self, alpha: float | None = None, n_clusters: int = 60, seed: int = 0) -> None:
        self.alpha = alpha
        self.n_clusters = n_clusters
        self.seed = seed
        self.name = "Avengers-Pro (" + ("fitted alpha" if alpha is None else f"alpha={alpha}") + ")"

    def prepare(self, ctx: Context) -> None:
        """k-means and the per-cluster tables (cached per setting)."""
        if "avengers" in ctx.data:
            return
        from sklearn.cluster import KMeans

        s = ctx.setting
        q_tr, c_tr = ctx.train_outcomes()
        km = KMeans(
            n_clusters=min(self.n_clusters, len(s.train_emb) // 5), n_init=2, random_state=self.seed
        ).fit(s.train_emb)
        lab = km.labels_
        n_cl = km.cluster_centers_.shape[0]
        p = np.stack([q_tr[lab == j].mean(0) for j in range(n_cl)])
        q = np.stack([c_tr[lab == j].mean(0) for j in range(n_cl)])

        def norm(x: np.ndarray) -> np.ndarray:
            lo, hi = x.min(1, keepdims=True), x.max(1, keepdims=True)
            return (x - lo) / np.where(hi - lo > 0, hi - lo, 1.0)

        centers = km.cluster_centers_
        ctx.data["avengers"] = {
            "p": norm(p),
            "q": norm(q),
            "test_cluster": np.argmax(s.test_emb @ centers.T, axis=1),
            "train_cluster": lab,
        }

    def choose(
        self, ctx: Context, fb: Feedback, scored: np.ndarray, profile: Profile
    ) -> np.ndarray:
        """Argmax of the cluster score."""
        t = ctx.data["avengers"]
        alpha = self.alpha
        if alpha is None:
            cl = t[f"{fb.source}_cluster"][fb.rows]
            p, q = t["p"][cl], t["q"][cl]
            i = np.arange(len(fb))
            a = ALPHA_GRID[:, None]
            diff = (
                a * (p[i, fb.win] - p[i, fb.lose])[None]
                + (1 - a) * (q[i, fb.lose] - q[i, fb.win])[None]
            )
            alpha = fit_alpha(diff)
        cl = t["test_cluster"][scored]
        return (alpha * t["p"][cl] + (1 - alpha) * (1 - t["q"][cl])).argmax(axis=1)


class BaRP(Method):
    """BaRP-style preference-conditioned policy: softmax(g([h(x); phi(w)])) over fixed arms.

    Trained per candidate set with REINFORCE + entropy on the training queries, w = (alpha,
    1 - alpha) sampled uniformly. A fixed output head: not applicable when a candidate was not
    in training (swap test). Alpha is the true one (upper reference) or fitted by the same
    plug-in BT-MLE as the kNN router.
    """

    def __init__(self, true_alpha: bool = False, steps: int = 600, seed: int = 0) -> None:
        self.true_alpha = true_alpha
        self.uses_true_preference = true_alpha
        self.steps = steps
        self.seed = seed
        self.name = f"BaRP ({'true' if true_alpha else 'fitted'} alpha)"

    def applicable(self, setting: Setting) -> bool:
        """Needs every candidate in training."""
        return setting.held_out is None

    def prepare(self, ctx: Context) -> None:
        """Train the policy once per setting."""
        key = "barp"
        if key in ctx.data:
            return
        import torch
        from torch import nn

        s = ctx.setting
        q_tr, c_tr = ctx.train_outcomes()
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        k = len(s.models)
        net = nn.Sequential(nn.Linear(s.train_emb.shape[1] + 16, 128), nn.ReLU(), nn.Linear(128, k))
        pref = nn.Linear(2, 16)
        opt = torch.optim.Adam([*net.parameters(), *pref.parameters()], lr=1e-3)
        x_all = torch.as_tensor(s.train_emb, dtype=torch.float32)
        cn = torch.as_tensor(normalised_cost(c_tr, s.tau), dtype=torch.float32)
        qt = torch.as_tensor(q_tr, dtype=torch.float32)
        for _ in range(self.steps):
            idx = torch.as_tensor(rng.integers(0, len(x_all), 512))
            a = torch.as_tensor(rng.random(512), dtype=torch.float32)
            w = torch.stack([a, 1 - a], 1)
            logits = net(torch.cat([x_all[idx], torch.tanh(pref(w))], 1))
            dist = torch.distributions.Categorical(logits=logits)
            act = dist.sample()
            r = a * qt[idx, act] - (1 - a) * cn[idx, act]
            adv = (r - r.mean()) / (r.std() + 1e-6)
            loss = -(adv * dist.log_prob(act)).mean() - 0.01 * dist.entropy().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        ctx.data[key] = (net, pref)

    def choose(
        self, ctx: Context, fb: Feedback, scored: np.ndarray, profile: Profile
    ) -> np.ndarray | None:
        """Greedy action of the policy for the (true or fitted) alpha."""
        import torch

        if self.true_alpha:
            alpha = _true_alpha(profile)
            if alpha is None:
                return None
        else:
            alpha = _plugin_alpha(*ctx.feedback_arrays(fb, ctx.knn()))
        net, pref = ctx.data["barp"]
        x = torch.as_tensor(ctx.setting.test_emb[scored], dtype=torch.float32)
        w = torch.tensor([[alpha, 1 - alpha]], dtype=torch.float32).expand(len(scored), 2)
        with torch.no_grad():
            return net(torch.cat([x, torch.tanh(pref(w))], 1)).argmax(1).numpy()


class RouteLLM(Method):
    """RouteLLM-style strong/weak router (K = 2): a win-rate predictor and a threshold.

    The predictor is a logistic regression on embeddings of P(strong answer better than weak);
    the threshold is the one that maximises training-query utility under alpha fitted from the
    comparisons (plug-in BT-MLE), i.e. the threshold the user's comparisons imply.
    """

    name = "RouteLLM (threshold)"

    def applicable(self, setting: Setting) -> bool:
        """Only two candidates."""
        return len(setting.models) == 2

    def prepare(self, ctx: Context) -> None:
        """Fit the win-rate predictor."""
        if "routellm" in ctx.data:
            return
        from sklearn.linear_model import LogisticRegression

        s = ctx.setting
        q_tr, c_tr = ctx.train_outcomes()
        strong = int(np.argmax(c_tr.mean(0)))
        weak = 1 - strong
        y = (q_tr[:, strong] > q_tr[:, weak]).astype(int)
        if len(np.unique(y)) < 2:
            p_train = np.full(len(y), y.mean())
            p_test = np.full(len(s.test_emb), y.mean())
        else:
            clf = LogisticRegression(C=1.0, max_iter=2000).fit(s.train_emb, y)
            p_train = clf.predict_proba(s.train_emb)[:, 1]
            p_test = clf.predict_proba(s.test_emb)[:, 1]
        ctx.data["routellm"] = {
            "strong": strong,
            "weak": weak,
            "p_train": p_train,
            "p_test": p_test,
            "thresholds": np.unique(np.quantile(p_train, np.linspace(0, 1, 51))),
        }

    def choose(
        self, ctx: Context, fb: Feedback, scored: np.ndarray, profile: Profile
    ) -> np.ndarray:
        """Strong where the predicted win rate exceeds the fitted threshold."""
        t = ctx.data["routellm"]
        return np.where(t["p_test"][scored] > self.threshold(ctx, fb), t["strong"], t["weak"])

    def threshold(self, ctx: Context, fb: Feedback) -> float:
        """The win-rate threshold with the best training utility under the fitted alpha."""
        t = ctx.data["routellm"]
        alpha = _plugin_alpha(*ctx.feedback_arrays(fb, ctx.knn()))
        q_tr, c_tr = ctx.train_outcomes()
        u = alpha * q_tr - (1 - alpha) * normalised_cost(c_tr, ctx.setting.tau)
        best_t, best_u = np.inf, -np.inf
        for th in (*t["thresholds"], np.inf):
            pick = np.where(t["p_train"] > th, t["strong"], t["weak"])
            val = u[np.arange(len(u)), pick].mean()
            if val > best_u:
                best_t, best_u = th, val
        return float(best_t)


class LinUCB(Method):
    """PILOT-style LinUCB: per-arm linear utility models with an offline preference prior.

    Features: 16 PCA components of the embedding and a bias. Each arm's ridge model is
    warm-started on the training queries at the neutral preference (alpha = 0.5, utility mapped
    to [0, 1], weight ``prior_weight``), then updated with the user's comparisons as bandit
    rewards (winner 1, loser 0). Routes by the upper confidence bound.
    """

    name = "LinUCB"

    def __init__(self, dims: int = 16, prior_weight: float = 0.05, beta: float = 0.1) -> None:
        self.dims = dims
        self.prior_weight = prior_weight
        self.beta = beta

    def prepare(self, ctx: Context) -> None:
        """PCA and the offline prior."""
        if "linucb" in ctx.data:
            return
        from sklearn.decomposition import PCA

        s = ctx.setting
        q_tr, c_tr = ctx.train_outcomes()
        pca = PCA(self.dims, random_state=0).fit(s.train_emb)

        def feats(x: np.ndarray) -> np.ndarray:
            return np.hstack([pca.transform(x), np.ones((len(x), 1))])

        phi = feats(s.train_emb)
        r = 0.5 * q_tr - 0.5 * normalised_cost(c_tr, s.tau) + 0.5
        d = phi.shape[1]
        a0 = np.stack([np.eye(d) + self.prior_weight * phi.T @ phi for _ in s.models])
        b0 = np.stack([self.prior_weight * phi.T @ r[:, k] for k in range(len(s.models))])
        ctx.data["linucb"] = {"a": a0, "b": b0, "test": feats(s.test_emb), "train": phi}

    def choose(
        self, ctx: Context, fb: Feedback, scored: np.ndarray, profile: Profile
    ) -> np.ndarray:
        """UCB argmax after the comparisons' updates."""
        t = ctx.data["linucb"]
        a, b = t["a"].copy(), t["b"].copy()
        x = t[fb.source][fb.rows]
        for i in range(len(fb)):
            for arm, reward in ((fb.win[i], 1.0), (fb.lose[i], 0.0)):
                a[arm] += np.outer(x[i], x[i])
                b[arm] += reward * x[i]
        phi = t["test"][scored]
        inv = np.linalg.inv(a)
        theta = np.einsum("kij,kj->ki", inv, b)
        mean = phi @ theta.T
        bonus = np.sqrt(np.einsum("ni,kij,nj->nk", phi, inv, phi))
        return (mean + self.beta * bonus).argmax(axis=1)


class FromScratch(Method):
    """A non-meta model trained on the user's N comparisons only.

    A Bradley-Terry logistic model of the user's utility with one bias per arm and a weight on
    the normalised expected cost (from the arms' cost models), L2-regularised; no offline data.
    """

    name = "from scratch (N comparisons)"

    def choose(
        self, ctx: Context, fb: Feedback, scored: np.ndarray, profile: Profile
    ) -> np.ndarray:
        """Argmax of the fitted utility; the cheapest arm when nothing was learned."""
        s = ctx.setting
        k = len(s.models)
        c_hat = ctx.data.get("scratch_cost")
        if c_hat is None:
            from metarouter.arms import fit_cost_model

            _, c_tr = ctx.train_outcomes()
            models = [fit_cost_model(s.train_tok, c_tr[:, j]) for j in range(k)]
            c_hat = np.stack([m.estimate(s.test_tok) for m in models], 1)
            ctx.data["scratch_cost"] = c_hat
        cn = normalised_cost(c_hat[scored], s.tau)
        if len(fb) == 0:
            return cn.argmin(axis=1)
        from sklearn.linear_model import LogisticRegression

        def feats(arm: np.ndarray, cost: np.ndarray) -> np.ndarray:
            onehot = np.eye(k)[arm]
            return np.hstack([onehot, normalised_cost(cost, s.tau)[:, None]])

        diff = feats(fb.win, fb.win_cost) - feats(fb.lose, fb.lose_cost)
        x = np.vstack([diff, -diff])
        y = np.r_[np.ones(len(diff)), np.zeros(len(diff))]
        clf = LogisticRegression(C=1.0, fit_intercept=False, max_iter=1000).fit(x, y)
        w = clf.coef_[0]
        return (w[:k][None, :] + w[k] * cn).argmax(axis=1)


class MetaRouterMethod(Method):
    """The meta-trained router: the user posterior from the comparisons, then the Bayes decision.

    ``readout`` selects how a decision is made:

    * ``"posterior"``: the method as shipped (:meth:`MetaRouter.adapt` then
      :meth:`MetaRouter.score_embeddings`);
    * ``"encoder"``: an ablation, the meta-trained neural context encoder and policy network
      (latent preference z, per-arm evidence, learned read-out) instead of the posterior;
    * ``"true alpha"``: an upper reference that isolates preference inference: the router's
      estimates with no comparisons and the user's true alpha plugged in.
    """

    READOUTS: ClassVar[dict[str, str]] = {
        "posterior": "MetaRouter",
        "encoder": "MetaRouter (encoder read-out)",
        "true alpha": "MetaRouter (true alpha)",
    }

    def __init__(self, routers: dict[str, Any], readout: str = "posterior") -> None:
        if readout not in self.READOUTS:
            raise ConfigError(f"unknown read-out {readout!r}; use one of {sorted(self.READOUTS)}.")
        self.routers = routers  # train_key -> MetaRouter
        self.readout = readout
        self.uses_true_preference = readout == "true alpha"
        self.name = self.READOUTS[readout]

    def prepare(self, ctx: Context) -> None:
        """Candidate descriptors (the held-out model from its outcomes on training queries)."""
        s = ctx.setting
        router = self.routers[s.train_key]
        if "meta_arms" not in ctx.data:
            arms = []
            for m in s.models:
                if m in router.catalog:
                    arms.append(router.catalog[m])
                else:
                    q, c = s.train_outcomes(m)
                    arms.append(
                        ArmDescriptor.from_outcomes(
                            m,
                            router.model.get_prototypes(),
                            s.train_emb,
                            q,
                            tokens=s.train_tok,
                            cost_usd=c,
                        )
                    )
            ctx.data["meta_arms"] = arms
        if self.uses_true_preference and "meta_prior_estimates" not in ctx.data:
            _, quality, cost = router.score_embeddings(
                s.test_emb, s.test_tok, ctx.data["meta_arms"]
            )
            ctx.data["meta_prior_estimates"] = (quality, normalised_cost(cost, s.tau))

    def choose(
        self, ctx: Context, fb: Feedback, scored: np.ndarray, profile: Profile
    ) -> np.ndarray | None:
        """Adapt on the comparisons, then route by the chosen read-out."""
        if self.uses_true_preference:
            alpha = _true_alpha(profile)
            if alpha is None:
                return None
            quality, cost = ctx.data["meta_prior_estimates"]
            return (alpha * quality[scored] - (1 - alpha) * cost[scored]).argmax(axis=1)
        s = ctx.setting
        router = self.routers[s.train_key]
        arms = ctx.data["meta_arms"]
        if self.readout == "encoder":
            from metarouter.evaluation.encoder_readout import encoder_scores

            return encoder_scores(
                router, fb.comparisons(s), arms, s.test_emb[scored], s.test_tok[scored]
            ).argmax(axis=1)
        traffic = s.test_emb[fb.recent] if fb.recent is not None else None
        billed = billed_history(ctx, router, arms, fb.recent)
        pref = router.adapt(fb.comparisons(s), arms=arms, traffic=traffic, billed=billed)
        scores, _, _ = router.score_embeddings(s.test_emb[scored], s.test_tok[scored], arms, pref)
        return scores.argmax(axis=1)


def billed_history(
    ctx: Context, router: Any, arms: list[ArmDescriptor], recent: np.ndarray | None
) -> list[BilledCall]:
    """The user's recent traffic as the service stores it: routed calls with their bills.

    Each recent query is routed as a new user's call is (the router's prior) and billed at
    the table's cost of the chosen model on it; the service keeps the same record for every
    routed call whose provider reports usage. The same for every user of a seed (their recent
    traffic is), so it is computed once per setting and sample.
    """
    if recent is None or not len(recent):
        return []
    s = ctx.setting
    memo = ctx.data.setdefault("meta_billed", {})
    key = (id(router), np.asarray(recent).tobytes())
    hit = memo.get(key)
    if hit is None:
        scores, _, _ = router.score_embeddings(
            s.test_emb[recent], s.test_tok[recent], arms, router.prior()
        )
        chosen = scores.argmax(axis=1)
        hit = [
            BilledCall(arms[k].name, int(s.test_tok[r]), float(s.test.cost[r, k]))
            for r, k in zip(recent.tolist(), chosen.tolist(), strict=True)
        ]
        memo[key] = hit
    return list(hit)
