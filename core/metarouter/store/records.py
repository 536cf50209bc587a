"""Rows of the preference store: routing decisions, comparisons, feedback events."""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from metarouter.errors import FeedbackError

__all__ = [
    "MAX_TEXT_CHARS",
    "ComparisonRecord",
    "DecisionRecord",
    "FeedbackEvent",
    "new_id",
    "query_hash",
    "validate_user_id",
]

#: Longest user id accepted (ids are keys, not payloads).
MAX_USER_ID_CHARS = 128
#: Longest text stored in a record (responses, queries kept for export).
MAX_TEXT_CHARS = 100_000

_USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,127}$")
_DECISION_ID = re.compile(r"^[0-9a-f]{32}$")

ComparisonSource = Literal["decisions", "external", "compare", "callback", "import"]


def new_id() -> str:
    """A fresh random id (32 hex characters)."""
    return uuid.uuid4().hex


def query_hash(text: str) -> str:
    """SHA-256 hex digest of a query (queries themselves are not stored unless asked)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def validate_user_id(user_id: object) -> str:
    """Return ``user_id`` if valid, else raise :class:`FeedbackError` saying what is allowed."""
    if not isinstance(user_id, str) or not _USER_ID.match(user_id):
        raise FeedbackError(
            f"invalid user id {user_id!r}: use 1-{MAX_USER_ID_CHARS} characters from letters, "
            "digits and _ . : @ -, starting with a letter or digit (e.g. 'alice' or 'org:42')."
        )
    return user_id


def validate_decision_id(decision_id: object) -> str:
    """Return ``decision_id`` (32 lowercase hex characters) or raise :class:`FeedbackError`."""
    if isinstance(decision_id, uuid.UUID):
        return decision_id.hex
    if not isinstance(decision_id, str) or not _DECISION_ID.match(decision_id.replace("-", "")):
        raise FeedbackError(
            f"malformed decision id {decision_id!r}: expected the 32-hex-character id from "
            "response_metadata['metarouter']['decision_id'] (or a run UUID)."
        )
    return decision_id.replace("-", "")


def check_text(name: str, text: str | None) -> str | None:
    """Reject oversized or non-text payloads with a clear error."""
    if text is None:
        return None
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FeedbackError(f"{name} is not valid UTF-8 text; decode it first.") from exc
    if not isinstance(text, str):
        raise FeedbackError(f"{name} must be a string, got {type(text).__name__}.")
    if len(text) > MAX_TEXT_CHARS:
        raise FeedbackError(
            f"{name} has {len(text):,} characters; the store keeps at most {MAX_TEXT_CHARS:,}. "
            "Fix: truncate it or store a summary."
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FeedbackError(
            f"{name} contains characters that are not valid UTF-8 (lone surrogates)."
        ) from exc
    return text


@dataclass(frozen=True)
class DecisionRecord:
    """One routing decision, as stored.

    Attributes:
        decision_id: Router-issued id (32 hex characters).
        user_id: Whose call it was.
        query_hash: SHA-256 of the query text.
        embedding: The query embedding (384 float32), kept so comparisons can be encoded later.
        prompt_tokens: Estimated prompt tokens.
        candidates: Candidate names, in the order scored.
        scores: Policy probability per candidate.
        chosen: The model the call was dispatched to.
        expected_cost_usd: Expected cost of the chosen model.
        cost_usd: Real cost from token usage, once known.
        run_id: The framework run id (LangChain), when given.
        forced: Whether the model was forced by the caller (``model=`` override).
        fallbacks: Models that failed before ``chosen`` answered.
        created_at: Unix time.
        metadata: Free-form JSON-able extras.
    """

    decision_id: str
    user_id: str
    query_hash: str
    embedding: np.ndarray = field(repr=False)
    prompt_tokens: int
    candidates: tuple[str, ...]
    scores: Mapping[str, float]
    chosen: str
    expected_cost_usd: float
    cost_usd: float | None = None
    run_id: str | None = None
    forced: bool = False
    fallbacks: tuple[str, ...] = ()
    created_at: float = field(default_factory=time.time)
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ComparisonRecord:
    """One pairwise comparison, as stored.

    Attributes:
        comparison_id: Store-issued id.
        user_id: Whose preference it expresses.
        winner: Model name of the preferred answer.
        loser: Model name of the other answer.
        winner_cost_usd: Cost of the preferred answer.
        loser_cost_usd: Cost of the other answer.
        query_hash: SHA-256 of the query.
        embedding: Query embedding (384 float32).
        prompt_tokens: Estimated prompt tokens.
        source: How it was collected.
        winner_decision_id: The decision that produced the winner, if the router did.
        loser_decision_id: Same for the loser.
        created_at: Unix time.
    """

    comparison_id: str
    user_id: str
    winner: str
    loser: str
    winner_cost_usd: float
    loser_cost_usd: float
    query_hash: str
    embedding: np.ndarray = field(repr=False)
    prompt_tokens: int
    source: ComparisonSource = "decisions"
    winner_decision_id: str | None = None
    loser_decision_id: str | None = None
    created_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class FeedbackEvent:
    """What feedback callbacks receive.

    Attributes:
        kind: ``comparison_recorded`` or ``preference_updated``.
        user_id: The user concerned.
        version: The user's feedback version after the event.
        comparison: The new comparison (``comparison_recorded``).
        quality_weight: The re-estimated preference's quality weight (``preference_updated``).
        n_comparisons: Comparisons the preference is based on.
    """

    kind: Literal["comparison_recorded", "preference_updated"]
    user_id: str
    version: int
    comparison: ComparisonRecord | None = None
    quality_weight: float | None = None
    n_comparisons: int | None = None
