"""Arm descriptors: how the router knows a candidate model without ever having trained on it.

A descriptor has two parts, both computable for a model the router has never seen:

* a **cost model**: expected USD per call as ``per_call_usd + per_input_token_usd * tokens``
  (from published prices, or fitted to logged costs);
* a **capability profile**: expected quality in each of P regions of query space. The regions
  are soft prototypes (k-means centroids of training-query embeddings, stored with the router);
  the profile is the arm's shrunken mean quality over probe queries with known outcomes,
  weighted by how much each query belongs to each region.

For a query x, the policy sees the arm's cost estimate and the profile read at x
(``softmax(h(x) . centroids / T) . profile``) plus learned projections of both. Limits: a model
described only by a price and a flat quality prior (no probe outcomes) is routed on cost and
that prior alone; a profile measured on few probe queries is shrunk towards its mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from metarouter.errors import ConfigError
from metarouter.pricing import DEFAULT_OUTPUT_TOKENS, Price, estimate_tokens

__all__ = [
    "ArmDescriptor",
    "CostModel",
    "Prototypes",
    "fit_cost_model",
]


@dataclass(frozen=True)
class CostModel:
    """Expected USD cost of a call: ``per_call_usd + per_input_token_usd * input_tokens``."""

    per_call_usd: float
    per_input_token_usd: float

    def __post_init__(self) -> None:
        for name in ("per_call_usd", "per_input_token_usd"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"CostModel.{name} must be finite and >= 0, got {value!r}.")

    @classmethod
    def from_price(cls, price: Price, output_tokens: int = DEFAULT_OUTPUT_TOKENS) -> CostModel:
        """Cost model of a priced API: input tokens at the input price, a fixed answer length."""
        return cls(
            per_call_usd=output_tokens * price.output_per_million / 1e6,
            per_input_token_usd=price.input_per_million / 1e6,
        )

    def estimate(self, input_tokens: np.ndarray | int) -> np.ndarray:
        """Expected cost in USD for the given prompt token counts."""
        return self.per_call_usd + self.per_input_token_usd * np.asarray(input_tokens, float)


def fit_cost_model(tokens: np.ndarray, cost_usd: np.ndarray) -> CostModel:
    """Least-squares fit of logged costs on prompt tokens, constrained to non-negative terms."""
    tokens = np.asarray(tokens, dtype=np.float64)
    cost = np.asarray(cost_usd, dtype=np.float64)
    if len(cost) == 0:
        raise ConfigError("fit_cost_model needs at least one logged call.")
    if np.ptp(tokens) > 0:
        slope, intercept = np.polyfit(tokens, cost, 1)
        if slope >= 0 and intercept >= 0:
            return CostModel(float(intercept), float(slope))
        if slope >= 0:  # through the origin
            return CostModel(0.0, float((tokens @ cost) / max(tokens @ tokens, 1e-12)))
    return CostModel(float(max(cost.mean(), 0.0)), 0.0)


@dataclass(frozen=True)
class Prototypes:
    """Soft regions of query space: unit-norm centroids and a softmax temperature.

    Attributes:
        centroids: (P, d) unit-norm vectors.
        temperature: Softmax temperature on cosine similarities.
    """

    centroids: np.ndarray = field(repr=False)
    temperature: float = 0.05

    @property
    def size(self) -> int:
        """Number of regions P."""
        return int(self.centroids.shape[0])

    @classmethod
    def fit(
        cls, embeddings: np.ndarray, n: int, *, seed: int = 0, temperature: float = 0.05
    ) -> Prototypes:
        """k-means (scikit-learn) on unit-norm embeddings; centroids re-normalised."""
        from sklearn.cluster import KMeans

        n = min(n, len(embeddings))
        km = KMeans(n_clusters=n, n_init=4, random_state=seed).fit(embeddings)
        c = km.cluster_centers_.astype(np.float32)
        c /= np.linalg.norm(c, axis=1, keepdims=True) + 1e-12
        return cls(c, temperature)

    def weights(self, embeddings: np.ndarray) -> np.ndarray:
        """Soft membership (n, P) of each embedding, rows summing to 1."""
        logits = np.asarray(embeddings, np.float32) @ self.centroids.T / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        w = np.exp(logits)
        return w / w.sum(axis=1, keepdims=True)

    def profile(
        self, embeddings: np.ndarray, quality: np.ndarray, shrinkage: float = 5.0
    ) -> np.ndarray:
        """Capability profile (P,) from probe outcomes, shrunk towards the overall mean.

        Args:
            embeddings: (n, d) probe-query embeddings.
            quality: (n,) the arm's quality on them.
            shrinkage: Pseudo-count of the overall mean added to each region.
        """
        quality = np.asarray(quality, dtype=np.float64)
        if len(quality) == 0:
            raise ConfigError("a capability profile needs at least one probe outcome.")
        w = self.weights(embeddings).astype(np.float64)
        mean = quality.mean()
        return ((w.T @ quality + shrinkage * mean) / (w.sum(0) + shrinkage)).astype(np.float32)


@dataclass(frozen=True)
class ArmDescriptor:
    """Everything the router needs to know about a candidate model.

    Build one from outcomes with :meth:`from_outcomes`, from a price and a known model's profile
    (``like=``) or a flat quality prior with :meth:`from_price`.

    Attributes:
        name: The model name used in decisions and feedback.
        cost: Its cost model.
        capability: Expected quality per prototype region, shape (P,), values in [0, 1].
        source: How the profile was obtained (``outcomes``, ``like:<model>``, ``prior``).
    """

    name: str
    cost: CostModel
    capability: np.ndarray = field(repr=False)
    source: str = "outcomes"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("an arm needs a non-empty name.")
        cap = np.asarray(self.capability, dtype=np.float32)
        if cap.ndim != 1 or not np.isfinite(cap).all() or (cap < 0).any() or (cap > 1).any():
            raise ConfigError(
                f"arm {self.name!r}: capability must be a 1-d array of qualities in [0, 1]."
            )
        object.__setattr__(self, "capability", cap)

    def expected_cost(self, text: str) -> float:
        """Expected cost in USD of sending ``text`` to this arm."""
        return float(self.cost.estimate(estimate_tokens(text)))

    @classmethod
    def from_outcomes(
        cls,
        name: str,
        prototypes: Prototypes,
        embeddings: np.ndarray,
        quality: np.ndarray,
        *,
        tokens: np.ndarray | None = None,
        cost_usd: np.ndarray | None = None,
        price: Price | None = None,
    ) -> ArmDescriptor:
        """Describe an arm from its logged outcomes on probe queries.

        Args:
            name: Model name.
            prototypes: The router's prototypes.
            embeddings: (n, d) embeddings of the probe queries.
            quality: (n,) its quality on them.
            tokens: (n,) prompt token counts, with ``cost_usd`` to fit the cost model.
            cost_usd: (n,) logged costs.
            price: Published prices, used instead of fitting when given.
        """
        if price is not None:
            cost = CostModel.from_price(price)
        elif tokens is not None and cost_usd is not None:
            cost = fit_cost_model(tokens, cost_usd)
        else:
            raise ConfigError(f"arm {name!r}: give a price, or logged tokens and costs.")
        return cls(name, cost, prototypes.profile(embeddings, quality), "outcomes")

    @classmethod
    def from_price(
        cls,
        name: str,
        price: Price,
        *,
        like: ArmDescriptor | None = None,
        quality: float | None = None,
        n_prototypes: int | None = None,
        output_tokens: int = DEFAULT_OUTPUT_TOKENS,
    ) -> ArmDescriptor:
        """Describe a model from its price and either a similar known arm or a quality prior.

        Args:
            name: Model name.
            price: USD per 1M tokens.
            like: A known arm whose capability profile this model is assumed to share.
            quality: A flat expected quality in [0, 1] (used when ``like`` is not given).
            n_prototypes: Profile length (required with ``quality``).
            output_tokens: Expected answer length for the cost model.
        """
        cost = CostModel.from_price(price, output_tokens)
        if like is not None:
            return cls(name, cost, like.capability.copy(), f"like:{like.name}")
        if quality is None or n_prototypes is None:
            raise ConfigError(
                f"arm {name!r}: describe its capability with like=<a known arm> or "
                "quality=<expected quality in [0, 1]> (and n_prototypes)."
            )
        if not 0.0 <= quality <= 1.0:
            raise ConfigError(f"arm {name!r}: quality prior must be in [0, 1], got {quality!r}.")
        return cls(name, cost, np.full(n_prototypes, quality, np.float32), "prior")


def stack_descriptors(arms: Sequence[ArmDescriptor]) -> Mapping[str, np.ndarray]:
    """Arrays for a list of arms: ``capability`` (K, P) and ``cost`` (K, 2)."""
    return {
        "capability": np.stack([a.capability for a in arms]).astype(np.float32),
        "cost": np.asarray(
            [[a.cost.per_call_usd, a.cost.per_input_token_usd] for a in arms], dtype=np.float64
        ),
    }
