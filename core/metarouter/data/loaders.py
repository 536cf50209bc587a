"""Readers for the routing datasets and for users' own logs.

Datasets are found through a path argument or the ``METAROUTER_DATA`` environment variable
(a folder holding ``routerbench_subset/``, ``llmrouter_9llm/``, ``routerdc_7llm/``). Only the
MIT-licensed LLMRouter data ships inside the package (the embedded default); the other two have
no licence and are always read from where the user keeps them.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from metarouter.data.table import OutcomeTable
from metarouter.errors import ConfigError, DataError
from metarouter.pricing import DEFAULT_OUTPUT_TOKENS, Price, estimate_tokens
from metarouter.validation import excerpt

__all__ = [
    "DATASETS",
    "DATA_ENV",
    "DatasetInfo",
    "bundled_llmrouter_dir",
    "find_data_dir",
    "llmrouter_prices",
    "load_dataset",
    "load_outcomes",
]

logger = logging.getLogger(__name__)

#: Environment variable naming the folder that holds the shared datasets.
DATA_ENV = "METAROUTER_DATA"

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class DatasetInfo:
    """A known dataset: its folder name, licence and loader."""

    name: str
    folder: str
    licence: str
    description: str
    loader: Callable[[Path], OutcomeTable]


def find_data_dir(data: PathLike | None = None) -> Path | None:
    """Resolve the datasets folder: the argument, else ``$METAROUTER_DATA``, else None."""
    raw = data if data is not None else os.environ.get(DATA_ENV)
    if raw is None or str(raw) == "":
        return None
    path = Path(raw).expanduser()
    if not path.exists():
        source = "--data" if data is not None else f"${DATA_ENV}"
        raise ConfigError(
            f"data folder {str(path)!r} (from {source}) does not exist. Fix: point it at the "
            "folder holding routerbench_subset/, llmrouter_9llm/ and routerdc_7llm/ "
            "(e.g. ../shared/data), or at an outcome file."
        )
    return path


def bundled_llmrouter_dir() -> Path:
    """The folder of the LLMRouter data bundled with the package (MIT licence, attributed)."""
    return Path(str(resources.files("metarouter.data") / "bundled" / "llmrouter"))


def _read_jsonl(path: Path) -> pd.DataFrame:
    """One JSON object per line; a bad line is reported by its line number."""
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}, line {lineno}: invalid JSON ({exc.msg} at column {exc.colno}). "
                    "Fix: write one JSON object per line (e.g. with json.dumps)."
                ) from exc
            if not isinstance(row, dict):
                raise DataError(
                    f"{path}, line {lineno}: expected a JSON object with the outcome columns, "
                    f"got {excerpt(row)}."
                )
            rows.append(row)
    return pd.DataFrame.from_records(rows)


def _read_frame(path: Path) -> pd.DataFrame:
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in (".csv", ".csv.gz"):
            return pd.read_csv(path, keep_default_na=True, na_values=[""])
        if suffix in (".jsonl", ".jsonl.gz", ".ndjson"):
            return _read_jsonl(path)
    except DataError:
        raise
    except (ValueError, OSError) as exc:
        raise DataError(
            f"{path}: could not be read as {suffix} ({exc}). Fix: check the file."
        ) from exc
    raise DataError(
        f"{path}: unsupported file type {suffix!r}. Fix: use .parquet, .csv or .jsonl "
        "(optionally .gz)."
    )


def load_outcomes(
    path: PathLike, *, name: str | None = None, skip_nan_quality: bool = False
) -> OutcomeTable:
    """Read a user's routing log (Parquet, CSV or JSONL) that follows the outcome schema.

    Args:
        path: The file. Columns as in :mod:`metarouter.data.schema`.
        name: Dataset name for reports (default: the file stem).
        skip_nan_quality: Drop rows with NaN quality (logged) instead of raising.

    Raises:
        DataError: The file is missing, unreadable or breaks the schema (the message names the
            file, the row and the fix).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file. Fix: give the path of a .parquet/.csv/.jsonl log.")
    frame = _read_frame(path)
    return OutcomeTable.from_frame(
        frame,
        name=name or path.name.split(".")[0],
        source=str(path),
        skip_nan_quality=skip_nan_quality,
    )


# --- RouterBench (0-shot subset) -----------------------------------------------------------------


def _load_routerbench(folder: Path) -> OutcomeTable:
    long = pd.read_parquet(folder / "routerbench_0shot_subset_long.parquet")
    wide = pd.read_parquet(
        folder / "routerbench_0shot_subset_wide.parquet", columns=["sample_id", "prompt_text"]
    )
    frame = long.merge(wide, on="sample_id", how="left", validate="many_to_one")
    frame = pd.DataFrame(
        {
            "query_id": frame["sample_id"],
            "query": frame["prompt_text"],
            "task": frame["eval_name"],
            "split": frame["split"],
            "model": frame["model"],
            "quality": frame["quality"],
            "cost_usd": frame["cost_usd"],
            "cost_is_estimate": False,
            "response": frame["response"],
        }
    )
    # The source has 14 NaN-quality cells (see its README); dropping them is an explicit choice.
    return OutcomeTable.from_frame(
        frame, name="routerbench", source=str(folder), skip_nan_quality=True
    )


# --- LLMRouter (9 open models, MIT) --------------------------------------------------------------


def llmrouter_prices(folder: Path | None = None) -> dict[str, Price]:
    """USD-per-1M-token prices of the LLMRouter models, from its ``llm_candidates.json``."""
    folder = folder or bundled_llmrouter_dir()
    table = json.loads((folder / "llm_candidates.json").read_text(encoding="utf-8"))
    return {
        name: Price(float(row["input_price"]), float(row["output_price"]))
        for name, row in table.items()
    }


def _load_llmrouter(folder: Path) -> OutcomeTable:
    scores = pd.read_parquet(folder / "llmrouter_dcrouter_scores.parquet")
    prices = llmrouter_prices(folder)
    score_cols = [c for c in scores.columns if c.startswith("score|")]
    long = scores.melt(
        id_vars=["split", "idx", "query", "task_name"],
        value_vars=score_cols,
        var_name="model",
        value_name="quality",
    )
    long["model"] = long["model"].str.removeprefix("score|")
    missing = sorted(set(long["model"]) - set(prices))
    if missing:
        raise DataError(f"{folder}: no price for models {missing} in llm_candidates.json.")
    # Cost estimate (see docs/data.md): ceil(chars/4) prompt tokens x input price
    # + DEFAULT_OUTPUT_TOKENS x output price.
    in_tok = long["query"].map(estimate_tokens).to_numpy(dtype=np.float64)
    in_price = long["model"].map(lambda m: prices[m].input_per_million).to_numpy()
    out_price = long["model"].map(lambda m: prices[m].output_per_million).to_numpy()
    cost = (in_tok * in_price + DEFAULT_OUTPUT_TOKENS * out_price) / 1e6
    frame = pd.DataFrame(
        {
            "query_id": long["split"] + "-" + long["idx"].astype(str),
            "query": long["query"],
            "task": long["task_name"],
            "split": long["split"],
            "model": long["model"],
            "quality": long["quality"],
            "cost_usd": cost,
            "cost_is_estimate": True,
            "response": None,
        }
    )
    return OutcomeTable.from_frame(frame, name="llmrouter", source=str(folder))


# --- RouterDC (7 open 7-8B models, quality only) -------------------------------------------------

#: Parameter counts (billions) of the RouterDC models, for the synthetic price.
ROUTERDC_PARAMS_B = {
    "mistralai/Mistral-7B-v0.1": 7.2,
    "meta-math/MetaMath-Mistral-7B": 7.2,
    "itpossible/Chinese-Mistral-7B-v0.1": 7.4,
    "HuggingFaceH4/zephyr-7b-beta": 7.2,
    "cognitivecomputations/dolphin-2.6-mistral-7b": 7.2,
    "meta-llama/Meta-Llama-3-8B": 8.0,
    "cognitivecomputations/dolphin-2.9-llama3-8b": 8.0,
}


def _load_routerdc(folder: Path) -> OutcomeTable:
    scores = pd.read_parquet(folder / "routerdc_split2_model7.parquet")
    score_cols = [c for c in scores.columns if c.startswith("score|")]
    scores["query_id"] = (
        scores["source_file"].str.rsplit("/", n=1).str[-1].str.removesuffix(".json")
        + ":"
        + scores["idx_in_file"].astype(str)
    )
    long = scores.melt(
        id_vars=["query_id", "question", "task", "split"],
        value_vars=score_cols,
        var_name="model",
        value_name="quality",
    )
    long["model"] = long["model"].str.removeprefix("score|")
    # No cost in the source: synthetic price proportional to parameter count
    # ($0.20 per 1M tokens per 7B parameters), applied to the same token estimate as LLMRouter.
    per_m = long["model"].map(lambda m: 0.2 * ROUTERDC_PARAMS_B.get(m, 7.0) / 7.0).to_numpy()
    in_tok = long["question"].map(estimate_tokens).to_numpy(dtype=np.float64)
    frame = pd.DataFrame(
        {
            "query_id": long["query_id"],
            "query": long["question"],
            "task": long["task"],
            "split": long["split"],
            "model": long["model"],
            "quality": long["quality"],
            "cost_usd": (in_tok + DEFAULT_OUTPUT_TOKENS) * per_m / 1e6,
            "cost_is_estimate": True,
            "response": None,
        }
    )
    return OutcomeTable.from_frame(frame, name="routerdc", source=str(folder))


DATASETS: dict[str, DatasetInfo] = {
    "routerbench": DatasetInfo(
        "routerbench",
        "routerbench_subset",
        "none declared (research use; never copied)",
        "RouterBench 0-shot: ARC-Challenge, Winogrande, MBPP; 11 models; real USD cost",
        _load_routerbench,
    ),
    "llmrouter": DatasetInfo(
        "llmrouter",
        "llmrouter_9llm",
        "MIT (bundled, see metarouter/data/bundled/llmrouter)",
        "LLMRouter: 14 tasks, 9 open models; cost estimated from the price table",
        _load_llmrouter,
    ),
    "routerdc": DatasetInfo(
        "routerdc",
        "routerdc_7llm",
        "none declared (research use; never copied)",
        "RouterDC: 16 subsets, 7 open 7-8B models; quality only, synthetic cost",
        _load_routerdc,
    ),
}


def load_dataset(name: str, data: PathLike | None = None) -> OutcomeTable:
    """Load a known dataset by name.

    Args:
        name: One of :data:`DATASETS` (``routerbench``, ``llmrouter``, ``routerdc``).
        data: The folder holding the datasets (default ``$METAROUTER_DATA``). ``llmrouter``
            falls back to the bundled copy when no folder is given or it lacks the dataset.

    Raises:
        ConfigError: Unknown name, or the dataset is not in the folder.
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}. Known datasets: {sorted(DATASETS)}.")
    info = DATASETS[name]
    root = find_data_dir(data)
    folder = root / info.folder if root is not None else None
    if folder is None or not folder.is_dir():
        if name == "llmrouter":
            folder = bundled_llmrouter_dir()
        else:
            where = str(root) if root is not None else f"(no --data and ${DATA_ENV} unset)"
            raise ConfigError(
                f"dataset {name!r} not found: expected folder {info.folder}/ in {where}. "
                f"Fix: pass --data PATH or set {DATA_ENV} to the folder holding {info.folder}/ "
                "(e.g. ../shared/data). Only 'llmrouter' ships with the package."
            )
    logger.info("loading %s from %s", name, folder)
    return info.loader(folder)
