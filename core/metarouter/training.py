"""Meta-training of the router across simulated preference profiles (bandit feedback).

Loss per step, over a batch of episodes (see :mod:`metarouter.episodes`):

* policy gradient (REINFORCE) on the utility of the *sampled* arm only, with a per-episode
  leave-one-out mean baseline and an entropy bonus (``feedback="full"`` instead maximises the
  expected utility over all arms: an ablation, not the default);
* an auxiliary quality loss on the chosen arm's observed quality (also bandit feedback);
* an auxiliary regression of the profile's alpha from z (an interpretable read-out);
* noise: Gaussian noise on z and label flips in the comparisons.

Early stopping keeps the weights with the lowest utility regret on validation queries held out
from the training split, for fixed validation users (alpha grid, 6 comparisons).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from metarouter.arms import ArmDescriptor, CostModel, Prototypes, fit_cost_model
from metarouter.config import MetaRouterConfig, TrainingConfig
from metarouter.data.table import OutcomeMatrix
from metarouter.episodes import Episode, EpisodeData, EpisodeSampler
from metarouter.errors import ConfigError
from metarouter.model import MetaRouterModel
from metarouter.pricing import Price, estimate_tokens

if TYPE_CHECKING:
    from metarouter.router import MetaRouter

__all__ = ["TrainingResult", "cost_scale", "train_router"]

logger = logging.getLogger(__name__)


def cost_scale(cost: np.ndarray) -> float:
    """tau: the 95th percentile of the per-query maximum cost over the pool's arms (USD)."""
    tau = float(np.percentile(np.asarray(cost).max(axis=1), 95))
    if not tau > 0:
        raise ConfigError("every logged cost is zero: give real or estimated costs to train.")
    return tau


@dataclass
class TrainingResult:
    """The trained router and how training went.

    Attributes:
        router: The router with the best validation weights.
        history: Per logged step: loss, mean reward, entropy; per validation: regret.
        best_step: Step of the kept weights.
        seconds: Wall-clock training time.
    """

    router: MetaRouter
    history: dict[str, list[float]] = field(default_factory=dict)
    best_step: int = 0
    seconds: float = 0.0


def _groupings(matrix: OutcomeMatrix, embeddings: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    rows = []
    tasks = np.unique(matrix.tasks)
    if len(tasks) > 1:
        rows.append(np.searchsorted(tasks, matrix.tasks))
    n_clusters = min(8, max(2, len(embeddings) // 100))
    km = KMeans(n_clusters=n_clusters, n_init=2, random_state=seed).fit(embeddings)
    rows.append(km.labels_)
    return np.stack(rows).astype(np.int64)


def _episode_data(
    matrix: OutcomeMatrix,
    embeddings: np.ndarray,
    prototypes: Prototypes,
    cost_terms: np.ndarray,
    tau: float,
    fold: np.ndarray,
    profiles: np.ndarray,
    seed: int,
) -> EpisodeData:
    tokens = np.asarray([estimate_tokens(q) for q in matrix.queries], dtype=np.float64)
    return EpisodeData(
        embeddings=embeddings.astype(np.float32),
        weights=prototypes.weights(embeddings).astype(np.float32),
        tokens=tokens,
        quality=matrix.quality.astype(np.float32),
        cost=matrix.cost.astype(np.float64),
        profiles=profiles.astype(np.float32),
        fold=fold,
        cost_terms=cost_terms,
        groups=_groupings(matrix, embeddings, seed),
        tau=tau,
    )


def _loss(
    model: MetaRouterModel, ep: Episode, cfg: TrainingConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    queries = ep.queries
    if cfg.embedding_noise > 0:
        queries = queries + cfg.embedding_noise * torch.randn_like(queries)
        ep.support["q"] = ep.support["q"] + cfg.embedding_noise * torch.randn_like(ep.support["q"])
    out = model(
        queries, ep.tokens, ep.arms, ep.support, latent_noise=cfg.latent_noise, weights=ep.weights
    )
    mask = ep.arms["mask"].unsqueeze(1).expand_as(out.scores)
    logp = torch.log_softmax(out.scores, dim=-1)
    probs = logp.exp()
    entropy = -(probs * logp.masked_fill(~mask, 0.0)).sum(-1).mean()
    util = ep.utility.masked_fill(~mask, 0.0)
    if cfg.feedback == "full":
        reward = (probs * util).sum(-1)
        pg = -reward.mean()
        chosen = probs.argmax(-1)
        mean_reward = reward.mean()
    else:
        # behaviour policy: the policy mixed with uniform exploration (known propensities)
        k = mask.sum(-1, keepdim=True).to(probs.dtype)
        behaviour = (1 - cfg.exploration) * probs.detach() + cfg.exploration * mask / k
        chosen = torch.distributions.Categorical(probs=behaviour).sample()  # (B,M)
        reward = util.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
        m = reward.shape[1]
        baseline = (reward.sum(1, keepdim=True) - reward) / max(m - 1, 1)
        adv = reward - baseline
        adv = adv / (adv.std() + 1e-6)
        logp_a = logp.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
        weight = logp_a.detach().exp() / behaviour.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
        pg = -(weight.clamp(max=10.0) * adv.detach() * logp_a).mean()
        mean_reward = reward.mean()
    q_logit = out.quality_logits.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
    q_true = ep.quality.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
    q_loss = torch.nn.functional.binary_cross_entropy_with_logits(q_logit, q_true)
    a_loss = torch.nn.functional.mse_loss(out.alpha, ep.alpha)
    loss = (
        pg - cfg.entropy_weight * entropy + cfg.quality_weight * q_loss + cfg.alpha_weight * a_loss
    )
    stats = {
        "loss": loss.item(),
        "reward": mean_reward.item(),
        "entropy": entropy.item(),
        "quality_loss": q_loss.item(),
        "alpha_loss": a_loss.item(),
    }
    return loss, stats


@torch.no_grad()
def _regret(model: MetaRouterModel, episodes: Sequence[Episode]) -> float:
    model.eval()
    total, count = 0.0, 0
    for ep in episodes:
        out = model(ep.queries, ep.tokens, ep.arms, ep.support, weights=ep.weights)
        chosen = out.scores.argmax(-1)
        got = ep.utility.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
        best = ep.utility.max(-1).values
        total += float((best - got).sum())
        count += got.numel()
    model.train()
    return total / max(count, 1)


def train_router(
    matrix: OutcomeMatrix,
    embeddings: np.ndarray,
    *,
    model_config: MetaRouterConfig | None = None,
    training: TrainingConfig | None = None,
    prices: Mapping[str, Price] | None = None,
    tau: float | None = None,
    progress: bool = True,
    description: str = "",
) -> TrainingResult:
    """Meta-train a router on an outcome matrix (all its queries are training queries).

    Args:
        matrix: Outcomes of the training split (queries x arms).
        embeddings: (n, 384) embeddings of ``matrix.queries`` (see :class:`~metarouter.Embedder`).
        model_config: Architecture (``cost_scale_usd`` and ``catalog`` are filled in).
        training: Hyper-parameters.
        prices: Published prices per arm; arms without one get a cost model fitted to logs.
        tau: Cost scale in USD (default: :func:`cost_scale` of the training costs).
        progress: Show a progress bar.
        description: Provenance recorded in the config (dataset, command).

    Returns:
        The trained router (best validation weights) and its training history.
    """
    from tqdm.auto import tqdm

    from metarouter.router import MetaRouter

    cfg = training or TrainingConfig()
    if len(matrix) != len(embeddings):
        raise ConfigError(f"{len(matrix)} queries but {len(embeddings)} embeddings.")
    if len(matrix.models) < 2:
        raise ConfigError("training needs outcomes of at least two models.")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)

    tau = tau or cost_scale(matrix.cost)
    base = model_config or MetaRouterConfig()
    config = MetaRouterConfig(
        **{
            **base.to_dict(),
            "cost_scale_usd": tau,
            "catalog": tuple(matrix.models),
            "training_data": description,
        }
    )
    n = len(matrix)
    order = rng.permutation(n)
    n_val = max(round(cfg.validation_share * n), 16)
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    train_m, val_m = matrix.rows(train_idx), matrix.rows(val_idx)
    h_train, h_val = embeddings[train_idx], embeddings[val_idx]

    prototypes = Prototypes.fit(
        h_train, config.n_prototypes, seed=cfg.seed, temperature=config.prototype_temperature
    )
    tok_train = np.asarray([estimate_tokens(q) for q in train_m.queries], float)
    cost_models = []
    for k, name in enumerate(matrix.models):
        if prices and name in prices:
            cost_models.append(CostModel.from_price(prices[name]))
        else:
            cost_models.append(fit_cost_model(tok_train, train_m.cost[:, k]))
    cost_terms = np.asarray([[c.per_call_usd, c.per_input_token_usd] for c in cost_models])
    fold = rng.integers(0, 2, size=len(train_idx))
    fold_profiles = np.stack(
        [
            np.stack(
                [
                    prototypes.profile(h_train[fold == f], train_m.quality[fold == f, k])
                    for k in range(len(matrix.models))
                ]
            )
            for f in (0, 1)
        ]
    )
    full_profiles = np.stack(
        [prototypes.profile(h_train, train_m.quality[:, k]) for k in range(len(matrix.models))]
    )
    train_data = _episode_data(
        train_m, h_train, prototypes, cost_terms, tau, fold, fold_profiles, cfg.seed
    )
    val_data = _episode_data(
        val_m,
        h_val,
        prototypes,
        cost_terms,
        tau,
        np.zeros(len(val_idx), np.int64),
        full_profiles[None],
        cfg.seed,
    )

    model = MetaRouterModel(config)
    model.set_prototypes(prototypes)
    sampler = EpisodeSampler(train_data, cfg, rng)
    val_cfg = dataclasses.replace(cfg, queries_per_episode=min(64, len(val_idx)))
    val_sampler = EpisodeSampler(val_data, val_cfg, np.random.default_rng(cfg.seed + 1))
    val_alphas = np.linspace(0.0, 1.0, 11)
    val_episodes = [
        val_sampler.sample(len(val_alphas), n_comparisons=6, alphas=val_alphas) for _ in range(8)
    ]
    fit_episodes = [
        EpisodeSampler(train_data, val_cfg, np.random.default_rng(cfg.seed + 2)).sample(
            len(val_alphas), n_comparisons=6, alphas=val_alphas
        )
        for _ in range(4)
    ]

    optimiser = torch.optim.AdamW(
        model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimiser, T_max=cfg.steps, eta_min=cfg.learning_rate * 0.05
    )
    history: dict[str, list[float]] = {
        k: []
        for k in (
            "step",
            "loss",
            "reward",
            "entropy",
            "quality_loss",
            "alpha_loss",
            "val_step",
            "val_regret",
            "train_regret",
        )
    }
    best = (float("inf"), 0, copy.deepcopy(model.state_dict()))
    stale = 0
    bar = tqdm(range(1, cfg.steps + 1), desc="meta-training", disable=not progress, leave=False)
    for step in bar:
        loss, stats = _loss(model, sampler.sample(), cfg)
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        if step % 10 == 0:
            history["step"].append(step)
            for key, value in stats.items():
                history[key].append(value)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            regret = _regret(model, val_episodes)
            history["val_step"].append(step)
            history["val_regret"].append(regret)
            history["train_regret"].append(_regret(model, fit_episodes))
            bar.set_postfix(val_regret=f"{regret:.4f}", reward=f"{stats['reward']:.3f}")
            if regret < best[0] - 1e-5:
                best = (regret, step, copy.deepcopy(model.state_dict()))
                stale = 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    logger.info("early stop at step %d (best %d)", step, best[1])
                    break
    model.load_state_dict(best[2])
    model.eval()
    descriptors = [
        ArmDescriptor(name, cost_models[k], full_profiles[k], "outcomes")
        for k, name in enumerate(matrix.models)
    ]
    router = MetaRouter(model, descriptors)
    seconds = time.perf_counter() - start
    logger.info(
        "trained in %.1fs; best validation regret %.4f at step %d", seconds, best[0], best[1]
    )
    return TrainingResult(router, history, best[1], seconds)
