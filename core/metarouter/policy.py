"""The policy: scores each candidate arm from (query, latent preference, arm evidence, descriptor).

Arms are scored one at a time by the same network, so the candidate set can have any size and
order, and an arm never seen in training is scored from its descriptor alone.

The score has an explicit expected-utility part plus a learned residual::

    score_k = beta * ( a(z) * q_k - (1 - a(z)) * c_k  +  r(x, z, e_k, d_k) )

* ``q_k``: the quality head's estimate for arm k on query x, given the arm's descriptor and
  the user's evidence about it (trained on the chosen arm's observed quality only: bandit
  feedback);
* ``a(z)``: the alpha head, the inferred weight on quality (trained to regress the simulated
  profile's alpha, i.e. its posterior mean given the comparisons);
* ``c_k``: normalised expected cost;
* ``r``: a bounded residual, ``residual_scale * tanh(MLP(...))`` (starts at zero), and
  ``beta`` a learned inverse temperature.

Because the utility is linear in alpha, plugging in the posterior mean of alpha and calibrated
quality estimates is already the Bayes decision; policy-gradient training (bandit feedback,
entropy bonus) then tunes every part end to end. ``policy="mlp"`` in the config drops the
explicit part (an ablation).

References:
    Williams (1992), REINFORCE. BaRP (arXiv 2510.07429): preference-conditioned bandit router.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from metarouter.config import MetaRouterConfig

__all__ = ["PolicyNetwork"]


def _mlp(d_in: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, hidden),
        nn.GELU(),
        nn.Linear(hidden, hidden),
        nn.GELU(),
        nn.Linear(hidden, 1),
    )


class PolicyNetwork(nn.Module):
    """Per-arm scorer with a quality head, an alpha head and a residual (see module docstring)."""

    def __init__(self, config: MetaRouterConfig, feature_dim: int) -> None:
        super().__init__()
        h = config.hidden_dim
        self.structured = config.policy == "structured"
        q_in = config.query_dim + config.evidence_dim + feature_dim
        self.quality_head = _mlp(q_in, h)
        self.scorer = _mlp(q_in + config.latent_dim + 1, h)
        if self.structured:
            last = self.scorer[-1]
            assert isinstance(last, nn.Linear)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.log_beta = nn.Parameter(torch.tensor(math.log(20.0)))
        self.residual_scale = config.residual_scale
        self.alpha_head = nn.Sequential(nn.Linear(config.latent_dim, h), nn.GELU(), nn.Linear(h, 1))

    def forward(
        self, query: torch.Tensor, z: torch.Tensor, evidence: torch.Tensor, feats: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and quality logits, both (B, M, K).

        Args:
            query: (B, M, query_dim) projected queries.
            z: (B, latent_dim) latent preferences.
            evidence: (B, K, evidence_dim) per-arm evidence.
            feats: (B, M, K, F) arm-query features; ``feats[..., 0]`` is the normalised cost.
        """
        b, m, k, _ = feats.shape
        qx = query.unsqueeze(2).expand(b, m, k, query.shape[-1])
        ev = evidence.unsqueeze(1).expand(b, m, k, evidence.shape[-1])
        base = torch.cat([qx, ev, feats], dim=-1)
        q_logit = self.quality_head(base).squeeze(-1)
        q = torch.sigmoid(q_logit)
        zz = z.view(b, 1, 1, -1).expand(b, m, k, z.shape[-1])
        residual = self.scorer(torch.cat([base, zz, q.unsqueeze(-1)], dim=-1)).squeeze(-1)
        if self.structured:
            a = self.alpha(z).view(b, 1, 1)
            bounded = self.residual_scale * torch.tanh(residual)
            score = torch.exp(self.log_beta) * (a * q - (1 - a) * feats[..., 0] + bounded)
        else:
            score = residual
        return score, q_logit

    def alpha(self, z: torch.Tensor) -> torch.Tensor:
        """Estimated weight on quality in [0, 1], shape (B,)."""
        return torch.sigmoid(self.alpha_head(z).squeeze(-1))
