"""The outcome-table schema and its validation.

An *outcome table* (a routing log) has one row per (query, model) pair:

========================  ===========  =====================================================
column                    type         meaning
========================  ===========  =====================================================
``query_id``              str          stable id of the query (unique per query)
``query``                 str          the query text as sent to the model
``task``                  str          task family (``"gsm8k"``, ``"support"``...); optional
``split``                 str          one of :data:`SPLITS`; optional (default ``"train"``)
``model``                 str          the model (arm) that answered
``quality``               float        answer quality in [0, 1] (1 = correct / best)
``cost_usd``              float        what the call cost, in US dollars (>= 0)
``cost_is_estimate``      bool         True when the cost was estimated, not billed; optional
``response``              str | null   the model's answer, when known; optional
========================  ===========  =====================================================

:func:`validate_outcomes` checks a :class:`pandas.DataFrame` against it and raises
:class:`~metarouter.errors.DataError` naming the file, the row and the fix.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from metarouter.errors import DataError
from metarouter.validation import excerpt

__all__ = [
    "COLUMNS",
    "OPTIONAL_DEFAULTS",
    "REQUIRED_COLUMNS",
    "SPLITS",
    "validate_outcomes",
]

logger = logging.getLogger(__name__)

#: Split names an outcome table may use. ``eval_only`` marks rows kept out of every training split.
SPLITS: tuple[str, ...] = ("train", "validation", "test", "eval_only")

#: Every schema column with a one-line description (used in docs and error messages).
COLUMNS: Mapping[str, str] = {
    "query_id": "stable id of the query (str)",
    "query": "query text (str)",
    "task": "task family (str)",
    "split": f"one of {', '.join(SPLITS)}",
    "model": "model name (str)",
    "quality": "answer quality in [0, 1] (float)",
    "cost_usd": "cost of the call in USD (float >= 0)",
    "cost_is_estimate": "whether cost_usd is an estimate (bool)",
    "response": "the model's answer text, or null",
}

REQUIRED_COLUMNS: tuple[str, ...] = ("query_id", "query", "model", "quality", "cost_usd")

#: Defaults for optional columns missing from a file.
OPTIONAL_DEFAULTS: Mapping[str, Any] = {
    "task": "unknown",
    "split": "train",
    "cost_is_estimate": False,
    "response": None,
}


#: Column carrying each row's position in the file (0-based) while validating.
_ROW = "__metarouter_row__"


def _row_ref(source: str, df: pd.DataFrame, position: int) -> str:
    """``source: data row N``: N counts the file's data rows from 1, whatever was dropped."""
    return f"{source}: data row {int(df[_ROW].iloc[position]) + 1}"


def validate_outcomes(
    frame: pd.DataFrame,
    *,
    source: str = "<dataframe>",
    skip_nan_quality: bool = False,
) -> pd.DataFrame:
    """Validate a routing log and return it in canonical form.

    Args:
        frame: One row per (query, model) with the columns of :data:`COLUMNS`.
        source: Where the rows came from (a file path); named in every error.
        skip_nan_quality: Drop rows whose ``quality`` is NaN (logged with their count) instead of
            raising. Off by default: a silently dropped row biases every mean computed later.

    Returns:
        A new frame with exactly the schema columns, canonical dtypes, sorted by
        (``query_id``, ``model``) and with a fresh ``RangeIndex``.

    Raises:
        DataError: On a missing column, an unknown split name, a NaN or negative cost, a quality
            outside [0, 1], a NaN quality (unless ``skip_nan_quality``), an empty query or model
            name, or a duplicated (query_id, model) pair. The message names ``source``, the
            offending row (1-based, in file order) and how to fix it.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{source}: missing required column(s) {missing}. Found columns: "
            f"{list(frame.columns)}. Fix: rename or add them; the schema is "
            + "; ".join(f"{k}: {v}" for k, v in COLUMNS.items())
            + ". See docs/data.md."
        )
    if len(frame) == 0:
        raise DataError(
            f"{source}: no data rows (only a header, or an empty table). Fix: add one row per "
            "(query, model) with the columns " + ", ".join(REQUIRED_COLUMNS) + "; see docs/data.md."
        )
    df = frame.reset_index(drop=True).copy()
    df[_ROW] = np.arange(len(df))
    for col, default in OPTIONAL_DEFAULTS.items():
        if col not in df.columns:
            df[col] = default

    for col in ("query_id", "model", "query", "task", "split"):
        null = df[col].isna()
        if null.any():
            i = int(np.flatnonzero(null.to_numpy())[0])
            raise DataError(
                f"{_row_ref(source, df, i)}: column {col!r} is empty. Fix: fill it in or drop "
                "the row."
            )
        df[col] = df[col].astype(str)
    for col in ("query_id", "model"):
        blank = df[col].str.strip() == ""
        if blank.any():
            i = int(np.flatnonzero(blank.to_numpy())[0])
            raise DataError(
                f"{_row_ref(source, df, i)}: column {col!r} is blank. Fix: give every row a "
                f"non-empty {col}."
            )

    bad_split = ~df["split"].isin(SPLITS)
    if bad_split.any():
        i = int(np.flatnonzero(bad_split.to_numpy())[0])
        raise DataError(
            f"{_row_ref(source, df, i)}: unknown split {excerpt(df['split'].iloc[i])}. Fix: use "
            f"one of {list(SPLITS)} (e.g. map 'dev'/'val' to 'validation')."
        )

    for col in ("quality", "cost_usd"):
        numeric = pd.to_numeric(df[col], errors="coerce")
        bad = numeric.isna() & df[col].notna() & ~df[col].map(_is_nan)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{_row_ref(source, df, i)}: {col} is {excerpt(df[col].iloc[i])}, not a number. "
                "Fix: store plain numbers (e.g. 0.75), or leave the cell empty for a missing value."
            )
        df[col] = numeric.astype(float)

    cost = df["cost_usd"].to_numpy()
    bad_cost = ~np.isfinite(cost) | (cost < 0)
    if bad_cost.any():
        i = int(np.flatnonzero(bad_cost)[0])
        raise DataError(
            f"{_row_ref(source, df, i)}: cost_usd is {float(cost[i])!r}; it must be a finite "
            "number >= 0 "
            "(US dollars per call). Fix: fill missing costs from the provider's price table "
            "(tokens x price) and set cost_is_estimate=true, or drop the row."
        )

    quality = df["quality"].to_numpy()
    nan_q = np.isnan(quality)
    if nan_q.any():
        if not skip_nan_quality:
            i = int(np.flatnonzero(nan_q)[0])
            raise DataError(
                f"{_row_ref(source, df, i)}: quality is NaN ({int(nan_q.sum())} such row(s)). Fix: "
                "grade the answer, drop the row, or pass skip_nan_quality=True "
                "(CLI: --skip-nan-quality) to drop such rows explicitly."
            )
        logger.warning("%s: skipping %d row(s) with NaN quality", source, int(nan_q.sum()))
        df = df.loc[~nan_q].reset_index(drop=True)
        quality = df["quality"].to_numpy()
    bad_q = (quality < 0) | (quality > 1)
    if bad_q.any():
        i = int(np.flatnonzero(bad_q)[0])
        raise DataError(
            f"{_row_ref(source, df, i)}: quality {float(quality[i])!r} is outside [0, 1]. Fix: "
            "rescale "
            "scores to [0, 1] (e.g. divide percentages by 100)."
        )

    dup = df.duplicated(["query_id", "model"], keep=False)
    if dup.any():
        rows = np.flatnonzero(dup.to_numpy())
        first = df.iloc[rows[0]]
        twins = [
            int(df[_ROW].iloc[r]) + 1
            for r in rows
            if df["query_id"].iloc[r] == first["query_id"] and df["model"].iloc[r] == first["model"]
        ]
        raise DataError(
            f"{source}: duplicate (query_id, model) = ({first['query_id']!r}, {first['model']!r}) "
            f"in data rows {twins}. Fix: keep one row per query and model (average repeated "
            "gradings first if you have several)."
        )

    pairs = zip(df["cost_is_estimate"], df[_ROW], strict=True)
    flags = [_as_bool(value, source, int(row)) for value, row in pairs]
    df["cost_is_estimate"] = pd.Series(flags, index=df.index, dtype=bool)
    df["response"] = df["response"].map(
        lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
    )
    df = df[list(COLUMNS)].sort_values(["query_id", "model"], kind="stable")
    return df.reset_index(drop=True)


def _is_nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _as_bool(value: Any, source: str, row: int) -> bool:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in {"true", "1", "yes", "y", "t"}:
            return True
        if lowered in {"false", "0", "no", "n", "f", ""}:
            return False
    elif _is_nan(value):
        return False
    elif isinstance(value, (bool, np.bool_)) or (
        isinstance(value, (int, float, np.integer, np.floating)) and value in (0, 1)
    ):
        return bool(value)
    raise DataError(
        f"{source}: data row {row + 1}: cost_is_estimate is {excerpt(value)}, not a boolean. "
        "Fix: use true or false (or 1/0)."
    )
