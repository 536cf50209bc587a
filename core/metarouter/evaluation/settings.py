"""Evaluation settings: training data, test queries, candidates and shared constants.

Each setting fixes which data a router is trained on, which queries it is scored on, which
candidates it chooses among, and the constants (tau, cost bounds) every method shares.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from metarouter.data.table import OutcomeMatrix
from metarouter.errors import ConfigError
from metarouter.pricing import estimate_tokens

__all__ = [
    "DatasetPlan",
    "Setting",
    "build_settings",
    "default_plans",
    "plan_for_table",
    "split_rows",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetPlan:
    """How one dataset is evaluated.

    Attributes:
        name: Dataset name (``load_dataset`` name, or a label for a user's table).
        k2: One cheap and one strong model.
        k5: The larger candidate set (five models where the table has them; a superset of
            ``k2``).
        held_out: A model never used in training, swapped into ``k5`` for the swap test
            (None: no swap test).
        swap_out: The ``k5`` member it replaces.
        ood_tasks: Task families left out of training and used as the OOD test set (empty: no
            OOD split).
    """

    name: str
    k2: tuple[str, str]
    k5: tuple[str, ...]
    held_out: str | None = None
    swap_out: str | None = None
    ood_tasks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not set(self.k2) <= set(self.k5) or len(set(self.k2)) != 2:
            raise ConfigError(f"{self.name}: k2 must be two different models, both in k5.")
        if self.held_out is not None and (self.held_out in self.k5 or self.swap_out not in self.k5):
            raise ConfigError(f"{self.name}: held_out must be outside k5, swap_out inside.")


def plan_for_table(
    matrix: OutcomeMatrix, name: str, *, ood_tasks: tuple[str, ...] = ()
) -> DatasetPlan:
    """A plan for a user's outcome table, chosen from its training split.

    K2 = the cheapest model and the one with the best mean quality; K5 = those two plus the
    next models by mean quality (up to five); the held-out model for the swap test is the best
    remaining model (when the table has six or more), swapped in for the weakest K5 member
    other than the K2 pair.

    Raises:
        ConfigError: Fewer than two models, identical cheapest and strongest model, no
            ``test`` split rows, or an OOD task the table does not have.
    """
    if len(matrix.models) < 2:
        raise ConfigError(f"{name}: evaluating a router needs at least two models.")
    if not (matrix.splits == "test").any():
        raise ConfigError(
            f"{name}: no rows with split 'test'. Fix: add a split column marking held-out "
            "queries as 'test' (and the rest 'train'); see docs/data.md."
        )
    missing = sorted(set(ood_tasks) - set(matrix.tasks.tolist()))
    if missing:
        raise ConfigError(
            f"{name}: OOD tasks {missing} are not in the table; its tasks are "
            f"{sorted(set(matrix.tasks.tolist()))}."
        )
    train = matrix.split("train")
    quality = train.quality.mean(axis=0)
    cost = train.cost.mean(axis=0)
    models = list(matrix.models)
    cheap = models[int(np.argmin(cost))]
    by_quality = [models[i] for i in np.argsort(-quality, kind="stable")]
    strong = by_quality[0] if by_quality[0] != cheap else by_quality[1]
    k5 = [cheap, strong, *[m for m in by_quality if m not in (cheap, strong)][:3]]
    rest = [m for m in by_quality if m not in k5]
    held_out = rest[0] if rest and len(k5) > 2 else None
    swap_out = k5[-1] if held_out is not None else None
    return DatasetPlan(
        name=name,
        k2=(cheap, strong),
        k5=tuple(k5),
        held_out=held_out,
        swap_out=swap_out,
        ood_tasks=tuple(ood_tasks),
    )


def default_plans() -> dict[str, DatasetPlan]:
    """The plans for the two datasets with costs (RouterBench subset, LLMRouter)."""
    return {
        "routerbench": DatasetPlan(
            name="routerbench",
            k2=("gpt-4-1106-preview", "mistralai/mixtral-8x7b-chat"),
            k5=(
                "gpt-4-1106-preview",
                "mistralai/mixtral-8x7b-chat",
                "gpt-3.5-turbo-1106",
                "zero-one-ai/Yi-34B-Chat",
                "mistralai/mistral-7b-chat",
            ),
            held_out="claude-instant-v1",
            swap_out="gpt-3.5-turbo-1106",
            ood_tasks=("mbpp",),  # code; this subset has no math task
        ),
        "llmrouter": DatasetPlan(
            name="llmrouter",
            k2=("gemma-2-9b-it", "llama-3.1-nemotron-51b-instruct"),
            k5=(
                "gemma-2-9b-it",
                "llama-3.1-8b-instruct",
                "mistral-7b-instruct-v0.3",
                "llama-3.3-nemotron-super-49b-v1",
                "llama-3.1-nemotron-51b-instruct",
            ),
            held_out="qwen2.5-7b-instruct",
            swap_out="llama-3.1-8b-instruct",
            ood_tasks=("mbpp", "human_eval", "gsm8k", "math", "agentverse-mgsm"),  # code + math
        ),
    }


def kset_label(kset: str, n_models: int) -> str:
    """A candidate set as reports name it: ``K2``, ``swap``, or ``K<n>``.

    ``K<n>`` is the ``K5`` set of all ``n`` pool models: ``K5``, or ``K3`` / ``K4`` on a user's
    table of that many.
    """
    return f"K{n_models}" if kset == "K5" else kset


@dataclass
class Setting:
    """One evaluation setting (dataset x ID/OOD x candidate set), with cached arrays.

    Attributes:
        dataset: Dataset name.
        split: ``ID`` (the dataset's test split) or ``OOD`` (left-out task families).
        kset: ``K2``, ``K5`` or ``swap``.
        models: The candidates, in column order of ``test``.
        train: Training outcomes (all training models, the held-out one excluded).
        train_emb: Training embeddings.
        test: Test outcomes restricted to ``models``.
        test_emb: Test embeddings.
        tau: Cost scale of the pool (USD), shared by the simulated users and every method.
        cost_bounds: (cheapest, dearest) single-model mean cost on the test queries.
        probe: Outcomes of the held-out model on the training queries (its descriptor source).
    """

    dataset: str
    split: str
    kset: str
    models: tuple[str, ...]
    train: OutcomeMatrix
    train_emb: np.ndarray
    test: OutcomeMatrix
    test_emb: np.ndarray
    tau: float
    cost_bounds: tuple[float, float]
    held_out: str | None = None
    probe: OutcomeMatrix | None = None
    train_tok: np.ndarray = field(init=False, repr=False)
    test_tok: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.train_tok = np.asarray([estimate_tokens(q) for q in self.train.queries], float)
        self.test_tok = np.asarray([estimate_tokens(q) for q in self.test.queries], float)

    @property
    def label(self) -> str:
        """The candidate set as reports name it (:func:`kset_label`)."""
        return kset_label(self.kset, len(self.models))

    @property
    def name(self) -> str:
        """``dataset/split/label`` (e.g. ``routerbench/OOD/K5``)."""
        return f"{self.dataset}/{self.split}/{self.label}"

    @property
    def train_key(self) -> str:
        """Settings sharing training data share trained routers: ``dataset/split``."""
        return f"{self.dataset}/{self.split}"

    def train_outcomes(self, model: str) -> tuple[np.ndarray, np.ndarray]:
        """Quality and cost of ``model`` on the training queries (probe set for a new model)."""
        source = self.probe if (self.probe is not None and model == self.held_out) else self.train
        k = source.models.index(model)
        return source.quality[:, k], source.cost[:, k]


def split_rows(
    matrix: OutcomeMatrix,
    plan: DatasetPlan,
    split: str,
    *,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Training and test row indices of a split (``ID`` or ``OOD``), optionally subsampled."""
    if split == "ID":
        tr = matrix.splits == "train"
        te = matrix.splits == "test"
    elif split == "OOD":
        ood = matrix.task_mask(plan.ood_tasks)
        tr = (matrix.splits == "train") & ~ood
        te = ood
    else:
        raise ConfigError(f"unknown split {split!r}; use ID or OOD.")
    rng = np.random.default_rng(seed)
    rows = []
    for mask, cap in ((tr, max_train), (te, max_test)):
        idx = np.flatnonzero(mask)
        if cap is not None and len(idx) > cap:
            idx = np.sort(rng.choice(idx, cap, replace=False))
        rows.append(idx)
    return rows[0], rows[1]


def build_settings(
    matrix: OutcomeMatrix,
    embeddings: np.ndarray,
    plan: DatasetPlan,
    *,
    splits: tuple[str, ...] = ("ID", "OOD"),
    ksets: tuple[str, ...] = ("K2", "K5", "swap"),
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
) -> list[Setting]:
    """Settings for one dataset (see :class:`DatasetPlan`).

    ``embeddings`` has one row per matrix row; only the rows of the chosen splits are read.
    """
    out: list[Setting] = []
    train_models = tuple(m for m in matrix.models if m != plan.held_out)
    if plan.held_out is None:
        ksets = tuple(k for k in ksets if k != "swap")
    if set(plan.k5) == set(plan.k2):  # a two-model table: K5 would repeat K2
        ksets = tuple(k for k in ksets if k != "K5")
    if not plan.ood_tasks:
        splits = tuple(s for s in splits if s != "OOD")
    for split in splits:
        train_idx, test_idx = split_rows(
            matrix, plan, split, max_train=max_train, max_test=max_test, seed=seed
        )
        tr = train_idx
        train_full = matrix.rows(train_idx)
        train = train_full.select_models(train_models)
        probe = train_full.select_models([plan.held_out]) if plan.held_out else None
        pool = tuple(plan.k5)
        tau = float(np.percentile(train_full.select_models(pool).cost.max(axis=1), 95))
        for kset in ksets:
            if kset == "K2":
                models: tuple[str, ...] = tuple(plan.k2)
            elif kset == "K5":
                models = tuple(plan.k5)
            elif kset == "swap" and plan.held_out is not None:
                new = plan.held_out
                models = tuple(new if m == plan.swap_out else m for m in plan.k5)
            else:
                raise ConfigError(f"unknown candidate set {kset!r}; use K2, K5 or swap.")
            test = matrix.rows(test_idx).select_models(models)
            means = test.cost.mean(axis=0)
            out.append(
                Setting(
                    dataset=plan.name,
                    split=split,
                    kset=kset,
                    models=models,
                    train=train,
                    train_emb=embeddings[tr],
                    test=test,
                    test_emb=embeddings[test_idx],
                    tau=tau,
                    cost_bounds=(float(means.min()), float(means.max())),
                    held_out=plan.held_out if kset == "swap" else None,
                    probe=probe,
                )
            )
    return out
