"""Routing logs: the outcome schema, its validation, and loaders for datasets and user files."""

from metarouter.data.loaders import (
    DATA_ENV,
    DATASETS,
    bundled_llmrouter_dir,
    find_data_dir,
    llmrouter_prices,
    load_dataset,
    load_outcomes,
)
from metarouter.data.schema import COLUMNS, SPLITS, validate_outcomes
from metarouter.data.table import OutcomeMatrix, OutcomeTable

__all__ = [
    "COLUMNS",
    "DATASETS",
    "DATA_ENV",
    "SPLITS",
    "OutcomeMatrix",
    "OutcomeTable",
    "bundled_llmrouter_dir",
    "find_data_dir",
    "llmrouter_prices",
    "load_dataset",
    "load_outcomes",
    "validate_outcomes",
]
