"""Durable per-user routing state: decisions, comparisons, cached preferences."""

from metarouter.store.base import PreferenceStore
from metarouter.store.records import (
    ComparisonRecord,
    DecisionRecord,
    FeedbackEvent,
    new_id,
    query_hash,
    validate_user_id,
)
from metarouter.store.sql import SQLStore

__all__ = [
    "ComparisonRecord",
    "DecisionRecord",
    "FeedbackEvent",
    "PreferenceStore",
    "SQLStore",
    "new_id",
    "query_hash",
    "validate_user_id",
]
