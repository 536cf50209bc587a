"""The MetaRouter network: shared features + context encoder + policy, with its data buffers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from metarouter.arms import Prototypes
from metarouter.config import MetaRouterConfig
from metarouter.encoder import ContextEncoder, SupportBatch, cost_log_factors
from metarouter.features import ArmQueryFeatures, QueryProjection
from metarouter.policy import PolicyNetwork

__all__ = ["CandidateBatch", "MetaRouterModel", "ModelOutput"]


class CandidateBatch(dict[str, torch.Tensor]):
    """Named tensors for B sets of K (padded) candidate arms.

    Keys: ``cap`` (B,K,P) profiles, ``cost`` (B,K,2) cost-model terms (USD per call, USD per
    input token), ``ids`` (B,K) long identities, ``mask`` (B,K) bool, and optionally
    ``cost_factor`` (B,K): the user's cost calibration multiplying the cost models.
    """


@dataclass
class ModelOutput:
    """Scores (B,M,K), quality logits (B,M,K), latent z (B,L) and alpha estimate (B,)."""

    scores: torch.Tensor
    quality_logits: torch.Tensor
    z: torch.Tensor
    alpha: torch.Tensor


class MetaRouterModel(nn.Module):
    """Encoder + policy over shared feature modules; see docs/model.md for the diagram."""

    prototypes: torch.Tensor
    catalog_capability: torch.Tensor
    catalog_cost: torch.Tensor
    reference: torch.Tensor

    def __init__(self, config: MetaRouterConfig) -> None:
        super().__init__()
        self.config = config
        self.query_proj = QueryProjection(config)
        self.features = ArmQueryFeatures(config)
        self.encoder = ContextEncoder(config, self.features, self.query_proj)
        self.policy = PolicyNetwork(config, self.features.out_dim)
        p, d = config.n_prototypes, config.embedding_dim
        self.register_buffer("prototypes", torch.zeros(p, d))
        n = len(config.catalog)
        self.register_buffer("catalog_capability", torch.zeros(n, p))
        self.register_buffer("catalog_cost", torch.zeros(n, 2, dtype=torch.float64))
        # a sample of training-query embeddings: how familiar a user's traffic is
        self.register_buffer(
            "reference", torch.zeros(config.reference_size, d, dtype=torch.float16)
        )

    # -- data buffers ---------------------------------------------------------------------------
    def set_prototypes(self, prototypes: Prototypes) -> None:
        """Install the prototype centroids (P, D)."""
        self.prototypes.copy_(torch.as_tensor(prototypes.centroids, dtype=torch.float32))

    def get_prototypes(self) -> Prototypes:
        """The installed prototypes."""
        return Prototypes(
            self.prototypes.detach().cpu().numpy().copy(), self.config.prototype_temperature
        )

    def region_weights(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Soft region membership (..., P) of query embeddings (..., D)."""
        logits = embeddings @ self.prototypes.T / self.config.prototype_temperature
        return torch.softmax(logits, dim=-1)

    # -- forward pieces -------------------------------------------------------------------------
    def encode(self, support: SupportBatch) -> torch.Tensor:
        """Latent preference z (B, L) of each support set."""
        return self.encoder(support, self.item_quality(support))

    def alpha_posterior(self, support: SupportBatch) -> torch.Tensor:
        """The encoder's explicit Bradley-Terry posterior over the alpha grid (B, G)."""
        return self.encoder.posterior(support, self.item_quality(support))

    def item_quality(
        self,
        support: SupportBatch,
        items: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The quality head's belief (B, N, 2) that each compared answer was good.

        Args:
            support: The support sets.
            items: ``encoder.item_features(support)``, when the caller has them already.
        """
        qx, fw, fl = self.encoder.item_features(support) if items is None else items
        prior_ev = self.encoder.prior_evidence()
        probs = []
        for feats in (fw, fl):
            ev = prior_ev.expand(*feats.shape[:-1], prior_ev.shape[-1])
            logit = self.policy.quality_head(torch.cat([qx, ev, feats], dim=-1)).squeeze(-1)
            probs.append(torch.sigmoid(logit))
        return torch.stack(probs, dim=-1)

    def evidence(
        self,
        support: SupportBatch,
        arm_ids: torch.Tensor,
        z: torch.Tensor,
        items: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Per-arm evidence (B, K, E) given the support sets' latent preferences z (B, L)."""
        return self.encoder.evidence(support, arm_ids, z, items)

    def score(
        self,
        queries: torch.Tensor,
        tokens: torch.Tensor,
        arms: CandidateBatch,
        z: torch.Tensor,
        evidence: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and quality logits (B, M, K); padded arms get -inf scores.

        Args:
            queries: (B, M, D) embeddings.
            tokens: (B, M) prompt token counts.
            arms: The candidate sets.
            z: (B, L) latent preferences.
            evidence: (B, K, E) per-arm evidence.
            weights: (B, M, P) region weights, computed when not given.
        """
        w = self.region_weights(queries) if weights is None else weights
        cost = arms["cost"].unsqueeze(1)  # (B,1,K,2)
        usd = (cost[..., 0] + cost[..., 1] * tokens.unsqueeze(-1).to(cost.dtype)).to(w.dtype)
        if "cost_factor" in arms:
            usd = usd * arms["cost_factor"].unsqueeze(1).to(usd.dtype)
        feats = self.features(w.unsqueeze(2), arms["cap"].unsqueeze(1), usd)  # (B,M,K,F)
        scores, q_logit = self.policy(self.query_proj(queries), z, evidence, feats)
        scores = scores.masked_fill(~arms["mask"].unsqueeze(1), float("-inf"))
        return scores, q_logit

    def forward(
        self,
        queries: torch.Tensor,
        tokens: torch.Tensor,
        arms: CandidateBatch,
        support: SupportBatch,
        *,
        latent_noise: float = 0.0,
        weights: torch.Tensor | None = None,
    ) -> ModelOutput:
        """Full pass: encode the support sets, then score the candidates for every query."""
        z = self.encode(support)
        alpha = self.policy.alpha(z)
        ev = self.evidence(support, arms["ids"], z)
        arms = CandidateBatch(arms)
        arms["cost_factor"] = torch.exp(cost_log_factors(support, arms["ids"]))
        if latent_noise > 0:
            z = z + latent_noise * torch.randn_like(z)
        scores, q_logit = self.score(queries, tokens, arms, z, ev, weights)
        return ModelOutput(scores, q_logit, z, alpha)

    def quality_logits(
        self, queries: torch.Tensor, cost_usd: torch.Tensor, capability: torch.Tensor
    ) -> torch.Tensor:
        """The quality head's logits (B, M, K) for a user with no comparisons yet.

        This is the router's per-query quality estimate that the user posterior
        (:mod:`metarouter.posterior`) corrects with the user's comparisons.

        Args:
            queries: (B, M, D) embeddings.
            cost_usd: (B, M, K) the arms' cost for each query, in USD.
            capability: (B, K, P) the arms' capability profiles.
        """
        w = self.region_weights(queries)
        feats = self.features(w.unsqueeze(2), capability.unsqueeze(1), cost_usd.to(w.dtype))
        qx = self.query_proj(queries).unsqueeze(2).expand(*feats.shape[:3], -1)
        ev = self.encoder.prior_evidence().expand(*feats.shape[:3], -1)
        logits: torch.Tensor = self.policy.quality_head(torch.cat([qx, ev, feats], -1)).squeeze(-1)
        return logits

    def catalog_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The catalog's profiles (n, P) and cost terms (n, 2) as numpy arrays."""
        return (
            self.catalog_capability.detach().cpu().numpy().copy(),
            self.catalog_cost.detach().cpu().numpy().copy(),
        )
