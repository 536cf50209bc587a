"""Typed, frozen configurations: the router architecture (saved beside the weights) and training."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from metarouter.errors import ConfigError
from metarouter.novelty import NoveltyModel
from metarouter.posterior import PosteriorConfig

__all__ = ["FORMAT_VERSION", "MetaRouterConfig", "TrainingConfig"]

#: Version of the saved-router layout (config.json + model.safetensors). Bump on breaking change.
FORMAT_VERSION = 2


def _check_positive(obj: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(obj, name)
        if not value > 0:
            raise ConfigError(f"{type(obj).__name__}.{name} must be > 0, got {value!r}.")


@dataclass(frozen=True)
class MetaRouterConfig:
    """Architecture and data-dependent constants of a trained router.

    A router is rebuilt from this config alone (``MetaRouter.from_pretrained`` needs no
    architecture arguments).

    Attributes:
        embedding_dim: Query embedding size (``minilm-torch``: 384, ``static``: 256).
        embedder: The embedding backend the router was trained for (one of
            :data:`metarouter.embeddings.EMBEDDERS`; routers saved before backends existed
            were trained for ``minilm-torch``, the default).
        embedder_fingerprint: The embedder weights' identity at training time (package
            version or table hash; empty: not recorded). A different one is logged as a warning.
        n_prototypes: Regions of query space used by arm capability profiles.
        prototype_temperature: Softmax temperature of region membership.
        query_dim: Size of the learned query projection.
        arm_dim: Size of the learned capability projection.
        latent_dim: Size of the latent preference z.
        evidence_dim: Size of the per-arm evidence summary.
        hidden_dim: Width of every MLP.
        dropout: Dropout on the projected query features (training only).
        policy: ``structured`` (expected utility under the inferred alpha + residual) or
            ``mlp`` (residual only; an ablation).
        residual_scale: Bound on the structured policy's learned residual, in utility units
            (used in meta-training; routing uses the user posterior, see docs/model.md).
        cost_scale_usd: tau, the pool's cost scale in USD: normalised cost is min(cost/tau, 1).
        catalog: Names of the arms known at training time (their descriptors are saved too).
        training_data: Free-text provenance (dataset, splits, seed, command).
        reference_size: Rows of the stored sample of training-query embeddings that tells how
            familiar a user's traffic is (0: none stored; every user counts as familiar).
        posterior: The user posterior's grids and meta-learned priors
            (:meth:`metarouter.posterior.PosteriorConfig.to_dict`; empty: the defaults).
        novelty: The fitted familiarity -> P(novel traffic) mapping
            (:meth:`metarouter.novelty.NoveltyModel.to_dict`; empty: a low flat prior).
    """

    embedding_dim: int = 384
    embedder: str = "minilm-torch"
    embedder_fingerprint: str = ""
    n_prototypes: int = 32
    prototype_temperature: float = 0.05
    query_dim: int = 16
    arm_dim: int = 16
    latent_dim: int = 8
    evidence_dim: int = 8
    hidden_dim: int = 64
    dropout: float = 0.2
    policy: str = "structured"
    residual_scale: float = 0.1
    cost_scale_usd: float = 0.01
    catalog: tuple[str, ...] = ()
    training_data: str = ""
    reference_size: int = 0
    posterior: dict[str, Any] = field(default_factory=dict)
    novelty: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reference_size < 0:
            raise ConfigError("MetaRouterConfig.reference_size must be >= 0.")
        _check_positive(
            self,
            (
                "embedding_dim",
                "n_prototypes",
                "prototype_temperature",
                "query_dim",
                "arm_dim",
                "latent_dim",
                "evidence_dim",
                "hidden_dim",
                "cost_scale_usd",
            ),
        )
        object.__setattr__(self, "catalog", tuple(self.catalog))
        from metarouter.embedding_backends import EMBEDDERS

        if self.embedder not in EMBEDDERS:
            raise ConfigError(
                f"embedder must be one of {list(EMBEDDERS)}, got {self.embedder!r}; the router "
                "was saved by a newer metarouter, install that version."
            )
        if self.policy not in ("structured", "mlp"):
            raise ConfigError(f"policy must be 'structured' or 'mlp', got {self.policy!r}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["catalog"] = list(self.catalog)
        return out

    def posterior_config(self) -> PosteriorConfig:
        """The user posterior's settings (:class:`~metarouter.posterior.PosteriorConfig`)."""
        return PosteriorConfig.from_dict(self.posterior) if self.posterior else PosteriorConfig()

    def novelty_model(self) -> NoveltyModel:
        """The novelty model (:class:`~metarouter.novelty.NoveltyModel`)."""
        return NoveltyModel.from_dict(self.novelty) if self.novelty else NoveltyModel()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetaRouterConfig:
        """Build from :meth:`to_dict` output; unknown keys are an error (a mismatched file)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown MetaRouterConfig keys {unknown}; the file was written by another "
                f"version. Known keys: {sorted(known)}."
            )
        return cls(**data)

    def to_json(self) -> str:
        """Pretty JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


@dataclass(frozen=True)
class TrainingConfig:
    """Meta-training hyper-parameters (see docs/model.md for what each does).

    Attributes:
        steps: Maximum optimisation steps.
        episodes_per_step: Episodes (simulated users) per step.
        queries_per_episode: Routed queries per episode.
        min_arms: Smallest candidate set in an episode.
        max_arms: Largest candidate set in an episode.
        max_comparisons: Largest support set (comparisons) in an episode.
        task_episode_share: Share of episodes whose traffic is one task family or query cluster,
            so the encoder learns to adapt to a task from the comparisons.
        temperature_range: Bradley-Terry temperature T, sampled uniformly per episode.
        max_flip_rate: Label-flip noise rate, sampled uniformly in [0, max] per episode.
        cost_shift: Std of the log of a per-episode, per-arm factor on real costs (the arms'
            cost models do not see it; the comparisons' observed costs do).
        traffic_cost_shift: Std of the log of a per-episode factor shared by all arms (a
            user whose traffic is cheaper or dearer than the training traffic).
        latent_noise: Std of Gaussian noise added to z during training.
        embedding_noise: Std of Gaussian noise added to query embeddings during training
            (regularises against memorising training queries).
        entropy_weight: Entropy bonus weight.
        exploration: Share of uniform exploration in the behaviour policy that picks the arm
            whose outcome is observed (policy gradient is importance-weighted accordingly).
        quality_weight: Weight of the auxiliary quality loss on the chosen arm.
        alpha_weight: Weight of the auxiliary preference (alpha) regression from z.
        feedback: ``bandit`` (only the chosen arm's utility, REINFORCE) or ``full`` (expected
            utility over all arms; an ablation).
        learning_rate: Adam learning rate.
        weight_decay: AdamW weight decay.
        validation_share: Share of training queries held out for early stopping.
        eval_every: Steps between validation runs.
        patience: Validation runs without improvement before stopping.
        seed: Seed for every random draw.
        threads: torch intra-op threads (0 = leave torch's default).
    """

    steps: int = 3000
    episodes_per_step: int = 64
    queries_per_episode: int = 32
    min_arms: int = 2
    max_arms: int = 5
    max_comparisons: int = 12
    task_episode_share: float = 0.5
    temperature_range: tuple[float, float] = (0.02, 0.1)
    max_flip_rate: float = 0.05
    cost_shift: float = 0.3
    traffic_cost_shift: float = 0.7
    latent_noise: float = 0.1
    embedding_noise: float = 0.03
    entropy_weight: float = 0.01
    exploration: float = 0.3
    quality_weight: float = 1.0
    alpha_weight: float = 0.5
    feedback: str = "bandit"
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    validation_share: float = 0.15
    eval_every: int = 100
    patience: int = 8
    seed: int = 0
    threads: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_positive(
            self,
            (
                "steps",
                "episodes_per_step",
                "queries_per_episode",
                "learning_rate",
                "eval_every",
                "patience",
            ),
        )
        if not 2 <= self.min_arms <= self.max_arms:
            raise ConfigError(
                f"need 2 <= min_arms <= max_arms, got {self.min_arms}, {self.max_arms}."
            )
        if self.feedback not in ("bandit", "full"):
            raise ConfigError(f"feedback must be 'bandit' or 'full', got {self.feedback!r}.")
        if not 0 <= self.task_episode_share <= 1:
            raise ConfigError("task_episode_share must be in [0, 1].")
        if not 0 < self.validation_share < 0.5:
            raise ConfigError("validation_share must be in (0, 0.5).")
        object.__setattr__(self, "temperature_range", tuple(self.temperature_range))
