"""metarouter: a meta-learned contextual-bandit router for LLM calls.

Importing this package is cheap: torch, the embedding model and the database layer load on
first use. The public names below are resolved lazily.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from metarouter._version import __version__
from metarouter.errors import (
    ConfigError,
    DataError,
    DependencyError,
    DispatchError,
    FeedbackError,
    MetaRouterError,
    ModelLoadError,
    StoreError,
    UnknownArmError,
)

if TYPE_CHECKING:
    from metarouter.data import OutcomeMatrix, OutcomeTable, load_dataset, load_outcomes
    from metarouter.embeddings import Embedder
    from metarouter.pricing import Price

_LAZY = {
    "Embedder": "metarouter.embeddings",
    "OutcomeMatrix": "metarouter.data",
    "OutcomeTable": "metarouter.data",
    "Price": "metarouter.pricing",
    "load_dataset": "metarouter.data",
    "load_outcomes": "metarouter.data",
}

__all__ = [
    "ConfigError",
    "DataError",
    "DependencyError",
    "DispatchError",
    "Embedder",
    "FeedbackError",
    "MetaRouterError",
    "ModelLoadError",
    "OutcomeMatrix",
    "OutcomeTable",
    "Price",
    "StoreError",
    "UnknownArmError",
    "__version__",
    "load_dataset",
    "load_outcomes",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'metarouter' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
