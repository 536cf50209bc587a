"""Durable per-user routing state: decisions, comparisons, cached preferences.

:class:`SQLStore` keeps it in SQLite (default) or PostgreSQL; see docs/store.md.
"""

from metarouter.store.base import PreferenceStore
from metarouter.store.export import (
    comparisons_by_user,
    load_comparison_export,
    load_decision_export,
    load_export_records,
    load_feedback,
)
from metarouter.store.maintenance import Retention
from metarouter.store.pending import StoreHealth
from metarouter.store.records import (
    ComparisonRecord,
    DecisionRecord,
    FeedbackEvent,
    RecentQuery,
    new_id,
    query_hash,
    validate_user_id,
)
from metarouter.store.schema import SCHEMA_VERSION
from metarouter.store.sql import SQLStore

__all__ = [
    "SCHEMA_VERSION",
    "ComparisonRecord",
    "DecisionRecord",
    "FeedbackEvent",
    "PreferenceStore",
    "RecentQuery",
    "Retention",
    "SQLStore",
    "StoreHealth",
    "comparisons_by_user",
    "load_comparison_export",
    "load_decision_export",
    "load_export_records",
    "load_feedback",
    "new_id",
    "query_hash",
    "validate_user_id",
]
