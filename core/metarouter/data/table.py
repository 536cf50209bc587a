"""Validated routing logs: the long :class:`OutcomeTable` and its dense :class:`OutcomeMatrix`."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from metarouter.data.schema import SPLITS, validate_outcomes
from metarouter.errors import ConfigError, DataError

__all__ = ["OutcomeMatrix", "OutcomeTable"]

logger = logging.getLogger(__name__)


def _check_names(kind: str, asked: Iterable[str], valid: Sequence[str]) -> None:
    unknown = sorted(set(asked) - set(valid))
    if unknown:
        raise ConfigError(f"unknown {kind} {unknown}. Valid {kind}s: {sorted(valid)}.")


@dataclass(frozen=True)
class OutcomeTable:
    """A validated routing log (long format, one row per query and model).

    Build one with :func:`metarouter.data.load_outcomes` or a dataset loader, or from a frame:
    ``OutcomeTable.from_frame(df, name="mylogs")``.

    Attributes:
        frame: The rows, with exactly the schema columns (see :mod:`metarouter.data.schema`).
        name: A short dataset name, used in reports.
        source: Where the rows were read from.
    """

    frame: pd.DataFrame = field(repr=False)
    name: str
    source: str = "<memory>"

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        name: str = "outcomes",
        source: str = "<dataframe>",
        skip_nan_quality: bool = False,
    ) -> OutcomeTable:
        """Validate ``frame`` (:func:`~metarouter.data.schema.validate_outcomes`) and wrap it."""
        return cls(
            validate_outcomes(frame, source=source, skip_nan_quality=skip_nan_quality),
            name=name,
            source=source,
        )

    @property
    def models(self) -> tuple[str, ...]:
        """Model names in sorted order."""
        return tuple(sorted(self.frame["model"].unique()))

    @property
    def tasks(self) -> tuple[str, ...]:
        """Task families in sorted order."""
        return tuple(sorted(self.frame["task"].unique()))

    @property
    def n_queries(self) -> int:
        """Number of distinct queries."""
        return int(self.frame["query_id"].nunique())

    def filter(
        self,
        *,
        splits: Iterable[str] | None = None,
        tasks: Iterable[str] | None = None,
        exclude_tasks: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
    ) -> OutcomeTable:
        """Return the rows matching every given condition (names are checked)."""
        df = self.frame
        if splits is not None:
            splits = list(splits)
            _check_names("split", splits, SPLITS)
            df = df[df["split"].isin(splits)]
        for kind, names, keep in (("task", tasks, True), ("task", exclude_tasks, False)):
            if names is not None:
                names = list(names)
                _check_names(kind, names, self.tasks)
                df = df[df["task"].isin(names) == keep]
        if models is not None:
            models = list(models)
            _check_names("model", models, self.models)
            df = df[df["model"].isin(models)]
        return OutcomeTable(df.reset_index(drop=True), name=self.name, source=self.source)

    def summary(self) -> pd.DataFrame:
        """Per model: rows, mean quality, mean cost (USD) and whether costs are estimates."""
        g = self.frame.groupby("model", sort=True)
        return pd.DataFrame(
            {
                "rows": g.size(),
                "mean_quality": g["quality"].mean(),
                "mean_cost_usd": g["cost_usd"].mean(),
                "cost_is_estimate": g["cost_is_estimate"].any(),
            }
        )

    def to_matrix(self, models: Sequence[str] | None = None) -> OutcomeMatrix:
        """Pivot to a dense (query x model) view.

        Queries without an outcome for every requested model are dropped (and the count logged),
        so every method compared on the matrix sees the same queries.

        Args:
            models: Column order; defaults to :attr:`models`.
        """
        models = tuple(models) if models is not None else self.models
        _check_names("model", models, self.models)
        df = self.frame[self.frame["model"].isin(models)]
        quality = df.pivot(index="query_id", columns="model", values="quality")
        complete = quality.notna().all(axis=1)
        if not complete.all():
            logger.info(
                "%s: dropping %d of %d queries that lack an outcome for some of %d models",
                self.name,
                int((~complete).sum()),
                len(complete),
                len(models),
            )
        ids = quality.index[complete]
        cost = df.pivot(index="query_id", columns="model", values="cost_usd")
        meta = df.drop_duplicates("query_id").set_index("query_id").loc[ids]
        if len(ids) == 0:
            raise DataError(
                f"{self.source}: no query has an outcome for all of {list(models)}. "
                "Fix: choose models that were run on the same queries."
            )
        return OutcomeMatrix(
            query_ids=np.asarray(ids, dtype=object),
            queries=meta["query"].to_numpy(dtype=object),
            tasks=meta["task"].to_numpy(dtype=object),
            splits=meta["split"].to_numpy(dtype=object),
            models=models,
            quality=quality.loc[ids, list(models)].to_numpy(dtype=np.float64),
            cost=cost.loc[ids, list(models)].to_numpy(dtype=np.float64),
            name=self.name,
        )


@dataclass(frozen=True)
class OutcomeMatrix:
    """Dense outcomes: ``quality[i, k]`` and ``cost[i, k]`` for query ``i`` and model ``k``.

    Attributes:
        query_ids: Query ids, shape (n,).
        queries: Query texts, shape (n,).
        tasks: Task family per query, shape (n,).
        splits: Split per query, shape (n,).
        models: Model names, the column order.
        quality: Quality in [0, 1], shape (n, k).
        cost: Cost in USD, shape (n, k).
        name: Dataset name.
    """

    query_ids: np.ndarray = field(repr=False)
    queries: np.ndarray = field(repr=False)
    tasks: np.ndarray = field(repr=False)
    splits: np.ndarray = field(repr=False)
    models: tuple[str, ...]
    quality: np.ndarray = field(repr=False)
    cost: np.ndarray = field(repr=False)
    name: str = "outcomes"

    def __len__(self) -> int:
        return len(self.query_ids)

    def rows(self, mask: np.ndarray) -> OutcomeMatrix:
        """The queries selected by a boolean mask or an index array."""
        return OutcomeMatrix(
            self.query_ids[mask],
            self.queries[mask],
            self.tasks[mask],
            self.splits[mask],
            self.models,
            self.quality[mask],
            self.cost[mask],
            self.name,
        )

    def select_models(self, models: Sequence[str]) -> OutcomeMatrix:
        """The same queries restricted to (and ordered by) ``models``."""
        _check_names("model", models, self.models)
        idx = [self.models.index(m) for m in models]
        return OutcomeMatrix(
            self.query_ids,
            self.queries,
            self.tasks,
            self.splits,
            tuple(models),
            self.quality[:, idx],
            self.cost[:, idx],
            self.name,
        )

    def split(self, *names: str) -> OutcomeMatrix:
        """The queries whose split is one of ``names``."""
        _check_names("split", names, SPLITS)
        return self.rows(np.isin(self.splits, names))

    def task_mask(self, tasks: Iterable[str]) -> np.ndarray:
        """Boolean mask of the queries in ``tasks`` (names are checked)."""
        tasks = list(tasks)
        _check_names("task", tasks, sorted(set(self.tasks)))
        return np.isin(self.tasks, tasks)
