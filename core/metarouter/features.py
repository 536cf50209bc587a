"""Shared per-(query, arm) features used by both the context encoder and the policy."""

from __future__ import annotations

import torch
from torch import nn

from metarouter.config import MetaRouterConfig

__all__ = ["ArmQueryFeatures", "QueryProjection"]

_LOG_FLOOR = 1e-3
_LOG_SCALE = 5.0


class QueryProjection(nn.Module):
    """Learned projection of the frozen 384-d query embedding to ``query_dim``."""

    def __init__(self, config: MetaRouterConfig) -> None:
        super().__init__()
        self.linear = nn.Linear(config.embedding_dim, config.query_dim)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(..., 384) -> (..., query_dim)."""
        return self.dropout(torch.tanh(self.linear(embeddings)))


class ArmQueryFeatures(nn.Module):
    """What the networks know about arm k at query x.

    Features: normalised cost ``min(c/tau, 1)``, log cost, the capability profile read at x
    (``w(x) . profile``), the profile's mean, and a learned projection of the centred profile.
    """

    def __init__(self, config: MetaRouterConfig) -> None:
        super().__init__()
        self.tau = float(config.cost_scale_usd)
        self.profile_proj = nn.Linear(config.n_prototypes, config.arm_dim)
        self.out_dim = 4 + config.arm_dim

    def forward(
        self, weights: torch.Tensor, capability: torch.Tensor, cost_usd: torch.Tensor
    ) -> torch.Tensor:
        """Features of shape (..., out_dim).

        Args:
            weights: (..., P) region membership of the query.
            capability: (..., P) the arm's profile (broadcast against ``weights``).
            cost_usd: (...) the arm's expected or observed cost for the query, in USD.
        """
        c = cost_usd / self.tau
        read = (weights * capability).sum(-1)
        mean = capability.mean(-1)
        proj = torch.tanh(self.profile_proj(capability - mean.unsqueeze(-1)))
        proj = proj.expand(*read.shape, proj.shape[-1])
        scalars = torch.stack(
            [c.clamp(max=1.0), torch.log(c + _LOG_FLOOR) / _LOG_SCALE, read, mean.expand_as(read)],
            dim=-1,
        )
        return torch.cat([scalars, proj], dim=-1)
