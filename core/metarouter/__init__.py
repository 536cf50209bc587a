"""metarouter: a meta-learned contextual-bandit router for LLM calls.

The public API, importable from the package itself::

    from metarouter import MetaRouter, RoutingService, ArmSpec, Comparison, Price, SQLStore

Importing this package is cheap: torch, the embedding model and the database layer load on
first use. Every public name except the errors and ``__version__`` is resolved lazily, when it
is first accessed.
"""

import importlib as _importlib
import typing as _typing

from metarouter._version import __version__
from metarouter.errors import (
    AttemptTimeoutError,
    BudgetExceededError,
    ChargeError,
    ConfigError,
    DataError,
    DependencyError,
    DispatchError,
    EmbedderMismatchError,
    FeedbackError,
    MetaRouterError,
    ModelLoadError,
    StoreError,
    UnknownArmError,
)

if _typing.TYPE_CHECKING:
    from metarouter.arms import ArmDescriptor, CostModel
    from metarouter.budgets import Budget, Budgets, Pacing
    from metarouter.config import MetaRouterConfig, TrainingConfig
    from metarouter.data import OutcomeMatrix, OutcomeTable, load_dataset, load_outcomes
    from metarouter.dispatch import Call, CallFlow, CallRequest, FallbackPolicy
    from metarouter.embeddings import Embedder
    from metarouter.feedback import Pair
    from metarouter.pricing import Price
    from metarouter.router import MetaRouter
    from metarouter.service import ArmSpec, Decision, Response, RoutingService
    from metarouter.store.base import PreferenceStore
    from metarouter.store.records import ComparisonRecord, DecisionRecord, FeedbackEvent
    from metarouter.store.sql import SQLStore
    from metarouter.text import Turn, routing_text
    from metarouter.types import BilledCall, Comparison, Preference, RoutingDecision

#: Public name -> the module that defines it (imported on first access).
_LAZY = {
    "ArmDescriptor": "metarouter.arms",
    "ArmSpec": "metarouter.service",
    "BilledCall": "metarouter.types",
    "Budget": "metarouter.budgets",
    "Budgets": "metarouter.budgets",
    "Call": "metarouter.dispatch",
    "CallFlow": "metarouter.dispatch",
    "CallRequest": "metarouter.dispatch",
    "Comparison": "metarouter.types",
    "ComparisonRecord": "metarouter.store.records",
    "CostModel": "metarouter.arms",
    "Decision": "metarouter.service",
    "DecisionRecord": "metarouter.store.records",
    "Embedder": "metarouter.embeddings",
    "FallbackPolicy": "metarouter.dispatch",
    "FeedbackEvent": "metarouter.store.records",
    "MetaRouter": "metarouter.router",
    "MetaRouterConfig": "metarouter.config",
    "OutcomeMatrix": "metarouter.data",
    "OutcomeTable": "metarouter.data",
    "Pacing": "metarouter.budgets",
    "Pair": "metarouter.feedback",
    "Preference": "metarouter.types",
    "PreferenceStore": "metarouter.store.base",
    "Price": "metarouter.pricing",
    "Response": "metarouter.service",
    "RoutingDecision": "metarouter.types",
    "RoutingService": "metarouter.service",
    "SQLStore": "metarouter.store.sql",
    "TrainingConfig": "metarouter.config",
    "Turn": "metarouter.text",
    "load_dataset": "metarouter.data",
    "load_outcomes": "metarouter.data",
    "routing_text": "metarouter.text",
}

__all__ = [
    "ArmDescriptor",
    "ArmSpec",
    "AttemptTimeoutError",
    "BilledCall",
    "Budget",
    "BudgetExceededError",
    "Budgets",
    "Call",
    "CallFlow",
    "CallRequest",
    "ChargeError",
    "Comparison",
    "ComparisonRecord",
    "ConfigError",
    "CostModel",
    "DataError",
    "Decision",
    "DecisionRecord",
    "DependencyError",
    "DispatchError",
    "Embedder",
    "EmbedderMismatchError",
    "FallbackPolicy",
    "FeedbackError",
    "FeedbackEvent",
    "MetaRouter",
    "MetaRouterConfig",
    "MetaRouterError",
    "ModelLoadError",
    "OutcomeMatrix",
    "OutcomeTable",
    "Pacing",
    "Pair",
    "Preference",
    "PreferenceStore",
    "Price",
    "Response",
    "RoutingDecision",
    "RoutingService",
    "SQLStore",
    "StoreError",
    "TrainingConfig",
    "Turn",
    "UnknownArmError",
    "__version__",
    "load_dataset",
    "load_outcomes",
    "routing_text",
]


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'metarouter' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
