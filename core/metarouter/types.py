"""Plain value types exchanged with the router: comparisons, preferences, routing decisions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from metarouter.errors import ConfigError, FeedbackError
from metarouter.validation import MAX_CALL_COST_USD, MAX_TOKENS, check_fields, excerpt

if TYPE_CHECKING:
    from metarouter.posterior import UserPosterior

__all__ = ["BilledCall", "Comparison", "Preference", "RoutingDecision"]


@dataclass(frozen=True)
class Comparison:
    """One piece of pairwise feedback: ``winner``'s answer was worth it over ``loser``'s.

    The judgement is for one query, given what each answer cost. Give the query text, or its
    embedding (as stored by the preference store).

    Attributes:
        winner: Model name of the preferred answer.
        loser: Model name of the other answer.
        winner_cost_usd: What the preferred answer cost (USD).
        loser_cost_usd: What the other answer cost (USD).
        query: The query text.
        embedding: The query's (384,) embedding, instead of or beside the text.
        tokens: The prompt's token count (estimated from the text when not given).
    """

    winner: str
    loser: str
    winner_cost_usd: float
    loser_cost_usd: float
    query: str | None = None
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)
    tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("winner", "loser"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise FeedbackError(f"Comparison.{name} must be a non-empty model name.")
        if self.winner == self.loser:
            raise FeedbackError(
                f"a comparison needs two different models, got {self.winner!r} twice. "
                "Fix: compare answers of two different candidates."
            )
        check_fields(
            self,
            ("winner_cost_usd", "loser_cost_usd"),
            error=FeedbackError,
            maximum=MAX_CALL_COST_USD,
            fix="Fix: give what the answer cost in US dollars (e.g. 0.0004).",
        )
        check_fields(
            self,
            ("tokens",),
            error=FeedbackError,
            maximum=MAX_TOKENS,
            integer=True,
            optional=True,
            fix="Fix: pass the prompt's token count, or leave it out to estimate it.",
        )
        if self.query is None and self.embedding is None:
            raise FeedbackError("a comparison needs the query text or its embedding.")
        if self.embedding is not None:
            try:
                emb = np.asarray(self.embedding, dtype=np.float32)
            except (TypeError, ValueError) as exc:
                raise FeedbackError(
                    f"Comparison.embedding is not a numeric vector ({exc})."
                ) from exc
            if emb.ndim != 1 or emb.size == 0 or not np.isfinite(emb).all():
                raise FeedbackError(
                    "Comparison.embedding must be a finite 1-d vector. Fix: pass the router's "
                    "embedder.encode_one(query), or the query text instead."
                )
            object.__setattr__(self, "embedding", emb)


@dataclass(frozen=True)
class BilledCall:
    """A routed call of the user with what it was billed: evidence about costs on their traffic.

    The arms' cost models expect a typical answer length; a user whose answers run long (code,
    reports) pays several times that. The comparisons' two billed answers calibrate this per
    user; billed routed calls do it from a user's first calls, before any comparison
    (:meth:`metarouter.MetaRouter.adapt`).

    Attributes:
        model: The model that answered.
        prompt_tokens: The prompt's (estimated) token count.
        cost_usd: What the call was billed (USD).
    """

    model: str
    prompt_tokens: int
    cost_usd: float

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise FeedbackError("BilledCall.model must be a non-empty model name.")
        check_fields(
            self,
            ("cost_usd",),
            error=FeedbackError,
            maximum=MAX_CALL_COST_USD,
            fix="Fix: give what the call was billed in US dollars (e.g. 0.0004).",
        )
        check_fields(
            self,
            ("prompt_tokens",),
            error=FeedbackError,
            maximum=MAX_TOKENS,
            integer=True,
            fix="Fix: pass the prompt's token count (metarouter.pricing.estimate_tokens).",
        )


@dataclass(frozen=True)
class Preference:
    """A user's inferred preference: what their comparisons say (see docs/model.md).

    Attributes:
        posterior: The joint posterior over the user's trade-off and how the arms do on their
            traffic (:class:`~metarouter.posterior.UserPosterior`); routing uses it.
        n_comparisons: How many comparisons it was computed from.
        quality_weight: Posterior mean of the weight the user puts on quality vs cost, in
            [0, 1] (0 = only cost matters, 1 = only quality). For display.
        cost_factors: Per-model calibration of expected costs on this user's traffic
            (observed / expected cost, from the comparisons).
        default_cost_factor: Calibration for models not compared yet (traffic-wide).
        alpha_posterior: Posterior probability of each quality weight on the grid
            0, 1/(G-1), ..., 1 (G = ``len(alpha_posterior)``).
        novelty: Prior probability that the user's traffic is unlike the router's training
            queries (from the compared queries; 0 without comparisons).
        novel_share: Posterior probability of the novel-traffic regime (the router then trusts
            each arm's overall ability, corrected by the comparisons, over its per-query
            estimates).
    """

    posterior: UserPosterior = field(repr=False)
    n_comparisons: int
    quality_weight: float
    cost_factors: Mapping[str, float] = field(default_factory=dict)
    default_cost_factor: float = 1.0
    alpha_posterior: tuple[float, ...] = ()
    novelty: float = 0.0
    novel_share: float = 0.0

    def cost_factor_for(self, model: str) -> float:
        """Cost calibration of ``model`` on this user's traffic."""
        return float(self.cost_factors.get(model, self.default_cost_factor))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the preference store's cache)."""
        return {
            "posterior": self.posterior.to_dict(),
            "n_comparisons": int(self.n_comparisons),
            "quality_weight": float(self.quality_weight),
            "cost_factors": {k: float(v) for k, v in self.cost_factors.items()},
            "default_cost_factor": float(self.default_cost_factor),
            "alpha_posterior": [float(v) for v in self.alpha_posterior],
            "novelty": float(self.novelty),
            "novel_share": float(self.novel_share),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, like: Preference | None = None) -> Preference:
        """Inverse of :meth:`to_dict`.

        Args:
            data: What :meth:`to_dict` returned (e.g. read back from the store's cache).
            like: A preference of the same router (e.g. its prior): the result must have the
                same alpha grid, else it is refused.

        Raises:
            ConfigError: Missing or malformed fields, values that are not finite, or a grid
                that differs from ``like``'s (a state of another router or version): recompute
                it from the comparisons.
        """
        from metarouter.posterior import UserPosterior

        if not isinstance(data, Mapping):
            raise ConfigError(
                f"malformed preference state: expected a mapping, got {excerpt(data)}."
            )
        try:
            pref = cls(
                posterior=UserPosterior.from_dict(data["posterior"]),
                n_comparisons=int(data["n_comparisons"]),
                quality_weight=float(data["quality_weight"]),
                cost_factors={k: float(v) for k, v in data.get("cost_factors", {}).items()},
                default_cost_factor=float(data.get("default_cost_factor", 1.0)),
                alpha_posterior=tuple(float(v) for v in data.get("alpha_posterior", ())),
                novelty=float(data.get("novelty", 0.0)),
                novel_share=float(data.get("novel_share", 0.0)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"malformed preference state: {excerpt(exc, 200)}") from exc
        pref.check(like)
        return pref

    def check(self, like: Preference | None = None) -> None:
        """Refuse a preference with non-finite values, or a grid unlike ``like``'s.

        Raises:
            ConfigError: Saying which field is wrong.
        """
        numbers = [
            self.quality_weight,
            self.default_cost_factor,
            self.novelty,
            self.novel_share,
            *self.cost_factors.values(),
        ]
        if not all(np.isfinite(numbers)) or not all(np.isfinite(self.alpha_posterior)):
            raise ConfigError("preference state: a weight or cost factor is not finite.")
        if not all(v > 0 for v in (self.default_cost_factor, *self.cost_factors.values())):
            raise ConfigError("preference state: a cost factor is not positive.")
        if self.n_comparisons < 0:
            raise ConfigError("preference state: n_comparisons is negative.")
        if like is not None and len(self.alpha_posterior) != len(like.alpha_posterior):
            raise ConfigError(
                f"preference state: a grid of {len(self.alpha_posterior)} quality weights, this "
                f"router's has {len(like.alpha_posterior)} (a state of another router or "
                "version)."
            )


@dataclass(frozen=True)
class RoutingDecision:
    """Where one query goes, and why.

    Attributes:
        model: The chosen candidate.
        scores: Softmax of the candidates' posterior expected utilities (sums to 1).
        ranking: Candidates best first (the fallback order).
        expected_costs_usd: Expected cost of each candidate for this query.
        predicted_quality: The router's quality estimate of each candidate for this query, for
            this user (posterior mean).
        quality_weight: The preference's quality-vs-cost read-out used for this decision.
    """

    model: str
    scores: Mapping[str, float]
    ranking: tuple[str, ...]
    expected_costs_usd: Mapping[str, float]
    predicted_quality: Mapping[str, float]
    quality_weight: float

    @property
    def expected_cost_usd(self) -> float:
        """Expected cost of the chosen model."""
        return self.expected_costs_usd[self.model]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "model": self.model,
            "scores": dict(self.scores),
            "ranking": list(self.ranking),
            "expected_costs_usd": dict(self.expected_costs_usd),
            "predicted_quality": dict(self.predicted_quality),
            "quality_weight": self.quality_weight,
        }
