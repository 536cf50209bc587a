"""Meta-training of the router across simulated preference profiles (bandit feedback).

Loss per step, over a batch of episodes (see :mod:`metarouter.episodes`):

* policy gradient (REINFORCE) on the utility of the *sampled* arm only, with a per-episode
  leave-one-out mean baseline and an entropy bonus (``feedback="full"`` instead maximises the
  expected utility over all arms: an ablation, not the default);
* an auxiliary quality loss on the chosen arm's observed quality (also bandit feedback);
* an auxiliary regression of the profile's alpha from z (an interpretable read-out);
* noise: Gaussian noise on z and label flips in the comparisons.

Early stopping keeps the weights whose quality head routes fixed validation users (alpha grid)
best on validation queries held out from the training split, given their true alpha: routing
reads the quality head through the user posterior. After training, the posterior's prior and
the novelty model are fitted on the training data's task groups (:mod:`metarouter.calibration`,
:mod:`metarouter.novelty`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from metarouter.arms import ArmDescriptor, CostModel, Prototypes, fit_cost_model
from metarouter.calibration import AdaptationFit
from metarouter.config import MetaRouterConfig, TrainingConfig
from metarouter.data.table import OutcomeMatrix
from metarouter.embedding_backends import DEFAULT_EMBEDDER, MINILM_DIM, EmbedderSpec
from metarouter.episodes import Episode, EpisodeData, EpisodeSampler
from metarouter.errors import ConfigError
from metarouter.model import MetaRouterModel
from metarouter.posterior import PosteriorConfig
from metarouter.pricing import Price, estimate_tokens

if TYPE_CHECKING:
    from metarouter.router import MetaRouter
    from metarouter.types import Comparison

__all__ = [
    "TrainingResult",
    "cost_scale",
    "finetune_on_comparisons",
    "torch_threads",
    "train_router",
]

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
        history: Per logged step: loss, mean reward, entropy; per validation (step 0 = the
            untrained weights): regret.
        best_step: Step of the kept weights.
        seconds: Wall-clock training time.
        adaptation: The meta-learned prior of the user posterior and the figures it was fitted
            from (None for a fine-tuned router, which keeps its prior).
    """

    router: MetaRouter
    history: dict[str, list[float]] = field(default_factory=dict)
    best_step: int = 0
    seconds: float = 0.0
    adaptation: AdaptationFit | None = None


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
    """Utility regret of routing the episodes' users with the quality head and their true alpha.

    Routing reads the quality head (through the user posterior, :mod:`metarouter.posterior`),
    so early stopping keeps the weights whose quality estimates route known users best: the
    plug-in decision ``alpha * sigmoid(logit) - (1 - alpha) * expected cost``.
    """
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for ep in episodes:
            out = model(ep.queries, ep.tokens, ep.arms, ep.support, weights=ep.weights)
            terms = ep.arms["cost"].unsqueeze(1)  # (B,1,K,2)
            usd = terms[..., 0] + terms[..., 1] * ep.tokens.unsqueeze(-1).to(terms.dtype)
            cost = torch.clamp(usd / model.config.cost_scale_usd, max=1.0).to(out.scores.dtype)
            alpha = ep.alpha.view(-1, 1, 1).to(out.scores.dtype)
            score = alpha * torch.sigmoid(out.quality_logits) - (1 - alpha) * cost
            score = score.masked_fill(~ep.arms["mask"].unsqueeze(1), float("-inf"))
            chosen = score.argmax(-1)
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
    embedder: EmbedderSpec | None = None,
) -> TrainingResult:
    """Meta-train a router on an outcome matrix (all its queries are training queries).

    Args:
        matrix: Outcomes of the training split (queries x arms).
        embeddings: (n, dim) embeddings of ``matrix.queries`` by ``embedder`` (see
            :class:`~metarouter.Embedder`).
        model_config: Architecture (``cost_scale_usd`` and ``catalog`` are filled in).
        training: Hyper-parameters.
        prices: Published prices per arm; arms without one get a cost model fitted to logs.
        tau: Cost scale in USD (default: :func:`cost_scale` of the training costs).
        progress: Show a progress bar.
        description: Provenance recorded in the config (dataset, command).
        embedder: The embedder that made ``embeddings`` (``Embedder(...).spec``), recorded in
            the config so the router is only ever used with it (default: ``minilm-torch``).

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
    spec = embedder or EmbedderSpec(DEFAULT_EMBEDDER, MINILM_DIM, "")
    if embeddings.ndim != 2 or embeddings.shape[1] != spec.dim:
        raise ConfigError(
            f"embeddings of shape {embeddings.shape} but the {spec.name!r} embedder makes "
            f"{spec.dim}-d vectors. Fix: embed the queries with Embedder({spec.name!r}) and "
            "pass its .spec as embedder=."
        )
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
            "embedding_dim": spec.dim,
            "embedder": spec.name,
            "embedder_fingerprint": spec.fingerprint,
        }
    )
    val_idx, train_idx = _validation_split(len(matrix), cfg, rng)
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
    # step 0: the untrained weights are the first candidate, so the history shows what
    # training gained and a run that never improves keeps (and reports) its initial weights
    regret0 = _regret(model, val_episodes)
    history["val_step"].append(0)
    history["val_regret"].append(regret0)
    history["train_regret"].append(_regret(model, fit_episodes))
    best = (regret0, 0, copy.deepcopy(model.state_dict()))
    stale = 0
    with _flush_denormals():
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
    model, fit = _fit_adaptation(
        model,
        train_m,
        h_train,
        val_m,
        h_val,
        profiles=full_profiles,
        cost_models=cost_models,
        cfg=cfg,
    )
    descriptors = [
        ArmDescriptor(name, cost_models[k], full_profiles[k], "outcomes")
        for k, name in enumerate(matrix.models)
    ]
    router = MetaRouter(model, descriptors)
    seconds = time.perf_counter() - start
    logger.info(
        "trained in %.1fs; best validation regret %.4f at step %d", seconds, best[0], best[1]
    )
    return TrainingResult(router, history, best[1], seconds, fit)


def _validation_split(
    n: int, cfg: TrainingConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Validation and training row indices (the first draw of the training generator)."""
    order = rng.permutation(n)
    n_val = max(round(cfg.validation_share * n), 16)
    return np.sort(order[:n_val]), np.sort(order[n_val:])


def refit_adaptation(
    router: MetaRouter,
    matrix: OutcomeMatrix,
    embeddings: np.ndarray,
    *,
    training: TrainingConfig | None = None,
) -> tuple[MetaRouter, AdaptationFit]:
    """Refit a trained router's adaptation prior and novelty model, keeping its network.

    Uses the same validation split as :func:`train_router` with the same ``training`` config
    (seed and validation share), so the quality head is measured on queries it never trained
    on. Useful when the prior's fitting changes, without a new meta-training run.

    Args:
        router: A router trained by :func:`train_router` on ``matrix``.
        matrix: Its training outcomes.
        embeddings: Their embeddings.
        training: The training config it was trained with (default: the defaults).
    """
    from metarouter.router import MetaRouter

    cfg = training or TrainingConfig()
    if tuple(matrix.models) != tuple(router.config.catalog):
        raise ConfigError(
            f"refit_adaptation needs the router's training table: its models "
            f"{list(router.config.catalog)}, got {list(matrix.models)}."
        )
    val_idx, train_idx = _validation_split(len(matrix), cfg, np.random.default_rng(cfg.seed))
    arms = [router.catalog[m] for m in matrix.models]
    model, fit = _fit_adaptation(
        router.model,
        matrix.rows(train_idx),
        embeddings[train_idx],
        matrix.rows(val_idx),
        embeddings[val_idx],
        profiles=np.stack([a.capability for a in arms]),
        cost_models=[a.cost for a in arms],
        cfg=cfg,
    )
    return MetaRouter(model, arms, embedder=router._embedder), fit


#: Rows of the stored sample of training-query embeddings (novelty reference).
REFERENCE_SIZE = 2048


def _fit_adaptation(
    model: MetaRouterModel,
    train_m: OutcomeMatrix,
    h_train: np.ndarray,
    val_m: OutcomeMatrix,
    h_val: np.ndarray,
    *,
    profiles: np.ndarray,
    cost_models: Sequence[CostModel],
    cfg: TrainingConfig,
) -> tuple[MetaRouterModel, AdaptationFit]:
    """Meta-learn the user posterior's prior and the novelty model from the training data.

    See :mod:`metarouter.calibration` and :mod:`metarouter.novelty`. Returns a model whose
    config carries the fitted prior and whose ``reference`` buffer holds the reference sample.
    """
    from metarouter.calibration import fit_posterior_config, task_groups
    from metarouter.novelty import fit_novelty

    rng = np.random.default_rng(cfg.seed + 3)
    n_train = len(h_train)
    groups_all = task_groups(
        np.concatenate([train_m.tasks, val_m.tasks]), np.vstack([h_train, h_val]), seed=cfg.seed
    )
    groups, val_groups = groups_all[:n_train], groups_all[n_train:]
    tokens = np.asarray([estimate_tokens(q) for q in val_m.queries], float)
    terms = np.asarray([[c.per_call_usd, c.per_input_token_usd] for c in cost_models])
    usd = terms[None, :, 0] + terms[None, :, 1] * tokens[:, None]
    with torch.inference_mode():
        logits = (
            model.quality_logits(
                torch.as_tensor(h_val, dtype=torch.float32).unsqueeze(0),
                torch.as_tensor(usd).unsqueeze(0),
                torch.as_tensor(profiles, dtype=torch.float32).unsqueeze(0),
            )[0]
            .double()
            .numpy()
        )
    prob = 1.0 / (1.0 + np.exp(-logits))
    families = len(np.unique(np.concatenate([train_m.tasks, val_m.tasks])))
    fit = fit_posterior_config(
        train_m.quality,
        groups,
        val_m.quality,
        prob,
        val_groups,
        families=families if families >= 2 else None,
    )
    keep = rng.permutation(len(h_train))[:REFERENCE_SIZE]
    novelty = fit_novelty(h_train[keep], groups[keep], h_val)
    config = dataclasses.replace(
        model.config,
        reference_size=len(keep),
        posterior=fit.config.to_dict(),
        novelty=novelty.to_dict(),
    )
    fitted = MetaRouterModel(config)
    state = {k: v for k, v in model.state_dict().items() if k != "reference"}
    fitted.load_state_dict(state, strict=False)
    fitted.reference.copy_(torch.as_tensor(h_train[keep], dtype=torch.float16))
    return fitted.eval(), fit


@contextmanager
def _flush_denormals() -> Iterator[None]:
    """Flush subnormal floats to zero while training, then restore the default.

    Some gradients and activations become subnormal, and CPU arithmetic on subnormals is an
    order of magnitude slower: the OOD evaluation routers trained at 0.37 steps/s without
    flushing and 3.7 steps/s with it, on the same 2-core machine with nothing else running.
    Flushing changes only values below about 1e-38.
    """
    supported = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(False)


@contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch intra-op threads and ``n`` BLAS / OpenMP threads (0: unchanged).

    numpy's BLAS (the user posterior's batched solves, the baselines' scikit-learn fits) keeps
    one thread per core otherwise, so two evaluation workers on two cores ran four busy-waiting
    BLAS threads: the standard and active tracks' scoring took 22 min with ``--workers 2`` and
    6.9 min with one BLAS thread per worker, on this project's 2-core machine
    (docs/evaluation.md, "Run time"). One thread also makes the BLAS reductions, and so the
    figures, the same whatever the number of workers.
    """
    from threadpoolctl import threadpool_limits

    with torch_threads(n):
        if not n:
            yield
            return
        with threadpool_limits(limits=n):
            yield


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch intra-op threads (0: unchanged), then restore the setting.

    Work on many tiny tensors (fine-tuning on a user's comparisons, the evaluation's per-user
    routing) runs fastest on one thread: more threads only add synchronisation.
    """
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _feedback_episode(
    router: MetaRouter,
    model: MetaRouterModel,
    comparisons: Sequence[Comparison],
    known: Mapping[str, ArmDescriptor],
    rng: np.random.Generator,
    max_support: int,
    max_targets: int,
) -> tuple[torch.Tensor, float]:
    """How well the router's quality head explains one user's comparisons.

    The comparisons' marginal likelihood under the user posterior's model with the user's
    trade-off and temperature marginalised on their grids (the offsets at zero): the quantity
    the posterior's evidence is built from, differentiable in the quality head. Also the share
    of the comparisons whose winner the posterior from the user's *other* comparisons predicts
    (leave one out).

    Returns:
        Minus the log marginal likelihood per comparison, and the leave-one-out accuracy.
    """
    order = rng.permutation(len(comparisons))[: max_support + max_targets]
    chosen = [comparisons[i] for i in order]
    cfg = router.posterior_config
    descs = {c.winner: router._descriptor(c.winner, known) for c in chosen}
    descs.update({c.loser: router._descriptor(c.loser, known) for c in chosen})
    emb, _ = router._comparison_inputs(chosen)
    caps = torch.as_tensor(
        np.stack([[descs[c.winner].capability, descs[c.loser].capability] for c in chosen])
    )  # (N, 2, P)
    usd = torch.as_tensor([[c.winner_cost_usd, c.loser_cost_usd] for c in chosen]).unsqueeze(1)
    logits = model.quality_logits(torch.as_tensor(emb).unsqueeze(1), usd, caps)[:, 0]  # (N, 2)
    p = torch.sigmoid(logits).unsqueeze(-1)  # (N, 2, 1)
    tau = router.config.cost_scale_usd
    cost = torch.clamp(usd[:, 0] / tau, max=1.0)
    grid = cfg.alpha_grid
    alpha = torch.as_tensor(np.repeat(grid, len(cfg.temperatures)))
    temp = torch.as_tensor(np.tile(cfg.temperatures, len(grid)))
    like = _win_probability_torch(p[:, 0], p[:, 1], cost[:, :1] - cost[:, 1:], alpha, temp, cfg)
    logl = torch.log(like.clamp(min=1e-9))  # (N, G)
    total = logl.sum(0)  # (G,)
    marginal = torch.logsumexp(total, 0) - math.log(len(alpha))
    with torch.no_grad():
        loo = total.unsqueeze(0) - logl  # (N, G): every comparison but one
        post = torch.softmax(loo, -1)
        accuracy = float(((post * like).sum(-1) > 0.5).double().mean())
    return -marginal / len(chosen), accuracy


def _win_probability_torch(
    pw: torch.Tensor,
    pl: torch.Tensor,
    dc: torch.Tensor,
    alpha: torch.Tensor,
    temp: torch.Tensor,
    cfg: PosteriorConfig,
) -> torch.Tensor:
    """:func:`metarouter.posterior.win_probability` on torch tensors (for gradients)."""
    from metarouter.posterior import bt_terms, coupled_outcomes, graded_terms

    base, d_plus, d_minus = bt_terms(dc, alpha, temp, cfg.flip_rate, sigmoid=torch.sigmoid)
    p10, p01 = coupled_outcomes(pw, pl, cfg.outcome_coupling, softplus=torch.nn.functional.softplus)
    out: torch.Tensor = base + p10 * d_plus + p01 * d_minus
    if cfg.binary_share < 1:
        graded = graded_terms(pw, pl, dc, alpha, temp, cfg.flip_rate, sigmoid=torch.sigmoid)[0]
        out = cfg.binary_share * out + (1 - cfg.binary_share) * graded
    return out


def finetune_on_comparisons(
    router: MetaRouter,
    comparisons: Mapping[str, Sequence[Comparison]],
    *,
    arms: Sequence[ArmDescriptor] = (),
    steps: int = 300,
    learning_rate: float = 1e-3,
    anchor_weight: float = 1.0,
    episodes_per_step: int = 16,
    max_support: int = 12,
    max_targets: int = 8,
    validation_share: float = 0.2,
    validation_users: Sequence[str] | None = None,
    eval_every: int = 20,
    patience: int = 5,
    seed: int = 0,
    threads: int = 1,
    progress: bool = False,
    description: str = "",
) -> TrainingResult:
    """Fine-tune a trained router on real users' comparisons (live feedback -> better router).

    Each episode is one user: their comparisons are shuffled and split into a support set (what
    the router adapts on, as in :meth:`MetaRouter.adapt`) and targets (the user's other
    judgements). The loss is the Bradley-Terry negative log-likelihood of the targets under the
    policy's scores given the support, ``softplus(score(loser) - score(winner))`` with the
    costs the user saw, plus ``anchor_weight`` times the squared distance to the starting
    weights. Users are split into training and validation users; the weights with the lowest
    validation loss are kept, the starting weights included, so the result never predicts the
    validation users' choices worse than the router it started from. The input router is not
    changed.

    Args:
        router: The router to start from (e.g. :meth:`MetaRouter.default`).
        comparisons: Comparisons per user, each with its query embedding (as exported by the
            preference store: :func:`metarouter.store.load_feedback`).
        arms: Descriptors of compared models outside the router's catalog.
        steps: Maximum optimisation steps.
        learning_rate: Adam learning rate.
        anchor_weight: Weight of the pull towards the starting weights.
        episodes_per_step: Users sampled per step.
        max_support: Largest support set.
        max_targets: Most held-out comparisons scored per episode.
        validation_share: Share of users held out for early stopping (none with one user).
        validation_users: Hold out exactly these users instead (e.g. one tenant).
        eval_every: Steps between validation runs.
        patience: Validation runs without improvement before stopping.
        seed: Seed of every random draw.
        threads: torch intra-op threads while fine-tuning (restored afterwards; 0 = leave
            torch's setting).
        progress: Show a progress bar.
        description: Provenance appended to the router config's ``training_data``.

    Returns:
        The fine-tuned router and its history: ``step``, ``loss``, and per validation run
        ``val_step``, ``val_loss`` and ``val_accuracy`` (share of held-out comparisons ranked
        right); index 0 is the starting router.

    Raises:
        ConfigError: No comparisons, or invalid settings.
    """
    from tqdm.auto import tqdm

    from metarouter.router import MetaRouter

    users = sorted(u for u, cs in comparisons.items() if len(cs) > 0)
    if not users:
        raise ConfigError(
            "no comparisons to fine-tune on. Fix: export a store with recorded feedback "
            "(`metarouter store export --out feedback.jsonl`)."
        )
    if steps < 1 or episodes_per_step < 1 or eval_every < 1 or patience < 1:
        raise ConfigError("steps, episodes_per_step, eval_every and patience must be >= 1.")
    if not 0 <= validation_share < 1 or learning_rate <= 0 or anchor_weight < 0:
        raise ConfigError(
            "need 0 <= validation_share < 1, learning_rate > 0 and anchor_weight >= 0."
        )
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    known = {a.name: a for a in router.resolve(arms)} if arms else {}
    data: dict[str, list[Comparison]] = {}
    for user in users:  # embed text-only comparisons once, not once per episode
        cs = list(comparisons[user])
        todo = [i for i, c in enumerate(cs) if c.embedding is None]
        if todo:
            emb = router.embedder.encode([cs[i].query or "" for i in todo])
            for row, i in enumerate(todo):
                cs[i] = dataclasses.replace(cs[i], embedding=emb[row])
        data[user] = cs
    order = [users[i] for i in rng.permutation(len(users))]
    if validation_users is not None:
        held = set(validation_users)
        if not held <= set(users) or held == set(users):
            raise ConfigError(
                f"validation_users must be some, not all, of the users with comparisons; "
                f"unknown: {sorted(held - set(users))}."
            )
        val_users = [u for u in order if u in held]
        train_users = [u for u in order if u not in held]
    else:
        n_val = round(validation_share * len(users))
        n_val = min(max(n_val, 1 if validation_share > 0 else 0), len(users) - 1)
        val_users, train_users = order[:n_val], order[n_val:]
    if not val_users:
        logger.warning("one user (or validation_share=0): validating on the training users")
        val_users = train_users
    val_rng = np.random.default_rng(seed + 1)
    val_plan = [(u, int(val_rng.integers(2**31))) for u in val_users for _ in range(4)]

    model = copy.deepcopy(router.model)
    anchor = [p.detach().clone() for p in model.parameters()]

    def validate() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            runs = [
                _feedback_episode(
                    router,
                    model,
                    data[u],
                    known,
                    np.random.default_rng(s),
                    max_support,
                    max_targets,
                )
                for u, s in val_plan
            ]
        model.train()
        return float(np.mean([r[0].item() for r in runs])), float(np.mean([r[1] for r in runs]))

    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    history: dict[str, list[float]] = {k: [] for k in ("step", "loss", "val_step", "val_loss")}
    history["val_accuracy"] = []

    def log_validation(step: int) -> float:
        val, accuracy = validate()
        history["val_step"].append(step)
        history["val_loss"].append(val)
        history["val_accuracy"].append(accuracy)
        return val

    with torch_threads(threads):  # tiny tensors: one thread is the fastest
        best = (log_validation(0), 0, copy.deepcopy(model.state_dict()))
        stale = 0
        model.train()
        bar = tqdm(range(1, steps + 1), desc="fine-tuning", disable=not progress, leave=False)
        for step in bar:
            picked = rng.choice(len(train_users), episodes_per_step)
            fit = torch.stack(
                [
                    _feedback_episode(
                        router, model, data[train_users[i]], known, rng, max_support, max_targets
                    )[0]
                    for i in picked
                ]
            ).mean()
            pull = sum(
                ((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True)
            )
            loss = fit + anchor_weight * pull
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            history["step"].append(step)
            history["loss"].append(float(fit.item()))
            if step % eval_every == 0 or step == steps:
                val = log_validation(step)
                bar.set_postfix(val_loss=f"{val:.4f}")
                if val < best[0] - 1e-6:
                    best, stale = (val, step, copy.deepcopy(model.state_dict())), 0
                else:
                    stale += 1
                    if stale >= patience:
                        logger.info("fine-tuning: early stop at step %d (best %d)", step, best[1])
                        break
    note = f"fine-tuned on {sum(len(v) for v in data.values())} comparisons of {len(users)} users"
    if description:
        note = f"{note} ({description})"
    base = router.config.training_data
    config = dataclasses.replace(router.config, training_data=f"{base}; {note}" if base else note)
    tuned = MetaRouterModel(config)
    tuned.load_state_dict(best[2])
    result = MetaRouter(tuned.eval(), list(router.catalog.values()), embedder=router._embedder)
    seconds = time.perf_counter() - start
    logger.info(
        "fine-tuned in %.1fs; validation loss %.4f -> %.4f (step %d)",
        seconds,
        history["val_loss"][0],
        best[0],
        best[1],
    )
    return TrainingResult(result, history, best[1], seconds)
