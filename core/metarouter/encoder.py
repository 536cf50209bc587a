"""The context encoder: a set of pairwise comparisons -> latent preference z + per-arm evidence.

Each comparison is (query embedding, winner's descriptor and cost, loser's descriptor and
cost): the winner is the answer the user said was worth it. The encoder is a Deep Set
(permutation invariant; any number of comparisons, including zero):

* ``z = rho(mean_s phi(item_s), log(1 + n), BT posterior summary)``: the user's trade-off (and
  traffic). Beside the learned summary, the encoder computes an explicit Bradley-Terry
  posterior over a grid of trade-offs alpha (and user temperatures T), using the policy's
  quality head for the unobserved qualities of both answers; its mean, spread and shape enter
  ``rho``. This keeps z close to the Bayes posterior even for decisive users;
* for a candidate arm k, ``e_k = rho_e(mean_{s with k} psi(item_s seen from k), log(1 + n_k))``:
  what the user's comparisons say about this arm on this user's traffic.

With no comparisons both fall back to learned priors.

References:
    Zaheer et al. (2017), Deep Sets. Garnelo et al. (2018), Conditional Neural Processes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from metarouter.config import MetaRouterConfig
from metarouter.features import ArmQueryFeatures, QueryProjection

__all__ = ["ContextEncoder", "SupportBatch"]

_COUNT_NORM = math.log1p(64.0)
_ALPHA_GRID = torch.linspace(0.0, 1.0, 21)
_TEMPERATURES = torch.tensor([0.02, 0.05, 0.1])
_FLIP = 0.025


def bradley_terry_posterior(
    q_win: torch.Tensor,
    q_lose: torch.Tensor,
    c_win: torch.Tensor,
    c_lose: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """Posterior over the alpha grid (B, G) given B sets of N comparisons (uniform prior).

    Each comparison's likelihood marginalises the unobserved 0/1 qualities of both answers
    (independent, with probabilities ``q_win``/``q_lose``) and a small label-flip rate; the
    user's temperature T is shared by their comparisons and marginalised over a small grid.

    Args:
        q_win: (B,N) probability that the preferred answer was good.
        q_lose: (B,N) same for the other answer.
        c_win: (B,N) normalised cost of the preferred answer.
        c_lose: (B,N) normalised cost of the other.
        mask: (B,N) which comparisons exist.
    """
    a = _ALPHA_GRID.to(q_win.dtype).view(1, 1, -1, 1)  # (1,1,G,1)
    t = _TEMPERATURES.to(q_win.dtype).view(1, 1, 1, -1)  # (1,1,1,T)
    dc = (c_win - c_lose).view(*c_win.shape, 1, 1)
    qw = q_win.view(*q_win.shape, 1, 1)
    ql = q_lose.view(*q_lose.shape, 1, 1)
    like = torch.zeros(*q_win.shape, a.shape[2], t.shape[3], dtype=q_win.dtype, device=q_win.device)
    for gw in (0.0, 1.0):
        for gl in (0.0, 1.0):
            prob = (qw if gw else 1 - qw) * (ql if gl else 1 - ql)
            like = like + prob * torch.sigmoid((a * (gw - gl) - (1 - a) * dc) / t)
    like = (1 - _FLIP) * like + _FLIP * (1 - like)
    logl = torch.log(like.clamp(min=1e-9)) * mask.view(*mask.shape, 1, 1).to(like.dtype)
    joint = logl.sum(1)  # (B,G,T)
    post = torch.softmax(joint.flatten(1), dim=-1).view_as(joint).sum(-1)
    return post


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, hidden),
        nn.GELU(),
        nn.Linear(hidden, hidden),
        nn.GELU(),
        nn.Linear(hidden, d_out),
    )


def _log_ratio(observed: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """log(observed / expected) cost, clamped to [-3, 3]; 0 when either is unknown (zero)."""
    ok = (observed > 0) & (expected > 0)
    ratio = torch.log(observed.clamp(min=1e-12) / expected.clamp(min=1e-12)).clamp(-3.0, 3.0)
    return torch.where(ok, ratio, torch.zeros_like(ratio))


def cost_log_factors(
    s: SupportBatch, arm_ids: torch.Tensor, arm_prior: float = 1.0, traffic_prior: float = 1.0
) -> torch.Tensor:
    """Per-user cost calibration: log(observed / expected cost) per candidate, shape (B, K).

    Cost models are generic; on one user's traffic an arm may cost several times its estimate
    (longer answers, other prompts). The comparisons carry the real cost of both answers, so
    the correction is estimated from them: a traffic-wide log ratio (shrunk to 0 with
    ``traffic_prior`` pseudo-observations), and per arm its own ratios shrunk towards that
    traffic-wide value with ``arm_prior`` pseudo-observations. No comparisons: no correction.
    """
    out = []
    for side in ("win", "lose"):
        ok = s["mask"] & (s[f"{side}_cost"] > 0) & (s[f"{side}_est"] > 0)
        out.append((_log_ratio(s[f"{side}_cost"], s[f"{side}_est"]), ok))
    (rw, okw), (rl, okl) = out
    okw_f, okl_f = okw.to(rw.dtype), okl.to(rl.dtype)
    total = (rw * okw_f).sum(1) + (rl * okl_f).sum(1)
    count = okw_f.sum(1) + okl_f.sum(1)
    traffic = total / (count + traffic_prior)  # (B,)
    ids = arm_ids.unsqueeze(-1)  # (B,K,1)
    hit_w = (s["win_id"].unsqueeze(1) == ids).to(rw.dtype) * okw_f.unsqueeze(1)
    hit_l = (s["lose_id"].unsqueeze(1) == ids).to(rl.dtype) * okl_f.unsqueeze(1)
    arm_sum = (hit_w * rw.unsqueeze(1)).sum(-1) + (hit_l * rl.unsqueeze(1)).sum(-1)
    arm_n = hit_w.sum(-1) + hit_l.sum(-1)
    return (arm_sum + arm_prior * traffic.unsqueeze(-1)) / (arm_n + arm_prior)


def pair_information(
    posterior: np.ndarray, q_a: float, q_b: float, c_a: float, c_b: float
) -> float:
    """Expected information (nats) about alpha from a user's answer to "a or b?".

    Args:
        posterior: (G,) current belief over the alpha grid.
        q_a: Probability that answer a is good.
        q_b: Same for b.
        c_a: Normalised expected cost of a.
        c_b: Same for b.
    """
    grid = _ALPHA_GRID.numpy().astype(np.float64)[:, None]
    temps = _TEMPERATURES.numpy().astype(np.float64)[None, :]
    p = np.zeros((len(grid), temps.shape[1]))
    for ga in (0.0, 1.0):
        for gb in (0.0, 1.0):
            w = (q_a if ga else 1 - q_a) * (q_b if gb else 1 - q_b)
            z = (grid * (ga - gb) - (1 - grid) * (c_a - c_b)) / temps
            p += w / (1 + np.exp(-np.clip(z, -50, 50)))
    p = ((1 - _FLIP) * p + _FLIP * (1 - p)).mean(axis=1)  # (G,)

    def entropy(x: np.ndarray) -> np.ndarray:
        x = np.clip(x, 1e-12, 1 - 1e-12)
        return -(x * np.log(x) + (1 - x) * np.log(1 - x))

    belief = np.asarray(posterior, np.float64)
    belief = belief / belief.sum()
    return float(entropy(np.array(belief @ p)) - belief @ entropy(p))


class SupportBatch(dict[str, "torch.Tensor"]):
    """Named tensors describing B support sets of N (padded) comparisons each.

    Keys: ``q`` (B,N,D) query embeddings, ``w`` (B,N,P) their region weights, ``mask`` (B,N)
    bool, ``win_cap``/``lose_cap`` (B,N,P) profiles, ``win_cost``/``lose_cost`` (B,N) observed
    USD, ``win_est``/``lose_est`` (B,N) the USD the arms' cost models expected for that query
    (equal to the observed cost when unknown), ``win_id``/``lose_id`` (B,N) long identities
    matched against candidate ids.
    """


class ContextEncoder(nn.Module):
    """Permutation-invariant encoder of pairwise feedback (see module docstring)."""

    features: ArmQueryFeatures
    query_proj: QueryProjection

    def __init__(
        self, config: MetaRouterConfig, features: ArmQueryFeatures, query_proj: QueryProjection
    ) -> None:
        super().__init__()
        # shared with the policy and owned by the parent model: kept out of this module's
        # registry so the weights are stored once
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "query_proj", query_proj)
        f, h = features.out_dim, config.hidden_dim
        self.phi = _mlp(config.query_dim + 2 * f + 2, h, h)
        self.rho = _mlp(h + 1 + 2 + len(_ALPHA_GRID), h, config.latent_dim)
        self.tau = float(config.cost_scale_usd)
        self.psi = _mlp(config.query_dim + config.latent_dim + 2 * f + 5, h, h)
        self.rho_evidence = _mlp(h + 1, h, config.evidence_dim)

    def item_features(self, s: SupportBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Projected queries and the winner's and loser's features of every comparison."""
        qx = self.query_proj(s["q"])
        fw = self.features(s["w"], s["win_cap"], s["win_cost"])
        fl = self.features(s["w"], s["lose_cap"], s["lose_cost"])
        return qx, fw, fl

    def forward(
        self,
        s: SupportBatch,
        item_quality: torch.Tensor,
        posterior: torch.Tensor | None = None,
        items: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Latent preference z, shape (B, latent_dim).

        Args:
            s: The support sets.
            item_quality: (B, N, 2) the quality head's probability that the preferred and the
                other answer were good (unobserved qualities, for the Bradley-Terry posterior).
            posterior: :meth:`posterior` of the same inputs, when the caller has it already.
            items: :meth:`item_features` of ``s``, when the caller has them already.
        """
        qx, fw, fl = self.item_features(s) if items is None else items
        diffs = torch.stack([fw[..., 0] - fl[..., 0], fw[..., 2] - fl[..., 2]], dim=-1)
        h = self.phi(torch.cat([qx, fw, fl, diffs], dim=-1))
        mask = s["mask"].unsqueeze(-1).to(h.dtype)
        n = mask.sum(1)
        pooled = (h * mask).sum(1) / n.clamp(min=1.0)
        post = self.posterior(s, item_quality) if posterior is None else posterior
        grid = _ALPHA_GRID.to(post.dtype)
        mean = (post * grid).sum(-1, keepdim=True)
        std = ((post * (grid - mean) ** 2).sum(-1, keepdim=True)).clamp(min=0).sqrt()
        return self.rho(torch.cat([pooled, torch.log1p(n) / _COUNT_NORM, mean, std, post], -1))

    def posterior(self, s: SupportBatch, item_quality: torch.Tensor) -> torch.Tensor:
        """The explicit Bradley-Terry posterior over the alpha grid, shape (B, G)."""
        return bradley_terry_posterior(
            item_quality[..., 0],
            item_quality[..., 1],
            (s["win_cost"] / self.tau).clamp(max=1.0),
            (s["lose_cost"] / self.tau).clamp(max=1.0),
            s["mask"],
        )

    def prior_evidence(self) -> torch.Tensor:
        """The evidence vector of an arm with no comparisons, shape (evidence_dim,)."""
        first = self.rho_evidence[0]
        assert isinstance(first, nn.Linear)
        return self.rho_evidence(torch.zeros(1, first.in_features, device=first.weight.device))[0]

    def evidence(
        self,
        s: SupportBatch,
        arm_ids: torch.Tensor,
        z: torch.Tensor,
        items: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Per-candidate evidence, shape (B, K, evidence_dim), for arms identified by ``arm_ids``.

        Each comparison is seen from the candidate's side: did it win or lose, its cost and
        profile read against the other arm's, how its observed cost compares with what its cost
        model expected (a per-user cost correction), in the light of the user's z.

        Args:
            s: The support sets.
            arm_ids: (B, K) identities of the candidates (same id space as ``win_id``).
            z: (B, L) the latent preference of each support set.
            items: :meth:`item_features` of ``s``, when the caller has them already.
        """
        qx, fw, fl = self.item_features(s) if items is None else items
        ids = arm_ids.unsqueeze(-1)  # (B,K,1)
        won = (s["win_id"].unsqueeze(1) == ids) & s["mask"].unsqueeze(1)  # (B,K,N)
        lost = (s["lose_id"].unsqueeze(1) == ids) & s["mask"].unsqueeze(1)
        role = won.to(qx.dtype) - lost.to(qx.dtype)  # +1 won, -1 lost, 0 absent
        sel = role.unsqueeze(-1) > 0
        own = torch.where(sel, fw.unsqueeze(1), fl.unsqueeze(1))  # (B,K,N,F)
        opp = torch.where(sel, fl.unsqueeze(1), fw.unsqueeze(1))
        r = role.unsqueeze(-1)
        ratio_w = _log_ratio(s["win_cost"], s["win_est"]).unsqueeze(1).unsqueeze(-1)
        ratio_l = _log_ratio(s["lose_cost"], s["lose_est"]).unsqueeze(1).unsqueeze(-1)
        own_ratio = torch.where(sel, ratio_w, ratio_l)
        opp_ratio = torch.where(sel, ratio_l, ratio_w)
        extra = torch.cat(
            [
                r,
                r * (own[..., :1] - opp[..., :1]),
                r * (own[..., 2:3] - opp[..., 2:3]),
                own_ratio,
                opp_ratio,
            ],
            dim=-1,
        )
        k, n = arm_ids.shape[1], qx.shape[1]
        qk = qx.unsqueeze(1).expand(-1, k, -1, -1)
        zk = z.view(z.shape[0], 1, 1, -1).expand(-1, k, n, -1)
        h = self.psi(torch.cat([qk, zk, own, opp, extra], dim=-1))
        involved = (won | lost).unsqueeze(-1).to(h.dtype)
        count = involved.sum(2)
        pooled = (h * involved).sum(2) / count.clamp(min=1.0)
        return self.rho_evidence(torch.cat([pooled, torch.log1p(count) / _COUNT_NORM], dim=-1))
