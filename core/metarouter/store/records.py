"""Rows of the preference store: routing decisions, comparisons, feedback events."""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

import numpy as np

from metarouter.errors import FeedbackError
from metarouter.validation import MAX_CALL_COST_USD, MAX_TOKENS, check_number, excerpt

if TYPE_CHECKING:
    from metarouter.types import Comparison

__all__ = [
    "COMPARISON_SOURCES",
    "MAX_EMBEDDING_DIM",
    "MAX_MODEL_NAME_CHARS",
    "MAX_TEXT_CHARS",
    "MAX_USER_ID_CHARS",
    "ComparisonRecord",
    "DecisionRecord",
    "FeedbackEvent",
    "RecentQuery",
    "check_text",
    "check_usd",
    "new_id",
    "query_hash",
    "validate_comparison",
    "validate_decision",
    "validate_decision_id",
    "validate_model_name",
    "validate_user_id",
]

#: Longest user id accepted (ids are keys, not payloads).
MAX_USER_ID_CHARS = 128
#: Longest text stored in a record (responses, queries kept for export).
MAX_TEXT_CHARS = 100_000
#: Longest model name accepted.
MAX_MODEL_NAME_CHARS = 256
#: Longest framework run id accepted.
MAX_RUN_ID_CHARS = 64
#: Longest query embedding accepted.
MAX_EMBEDDING_DIM = 8192
#: Latest Unix time accepted (the year 2200): a millisecond timestamp is refused, not stored.
MAX_UNIX_TIME = 7_258_118_400.0

_DECISION_ID = re.compile(r"^[0-9a-f]{32}$")
_QUERY_HASH = re.compile(r"^[0-9a-f]{64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

ComparisonSource = Literal["decisions", "external", "compare", "callback", "import"]
#: Valid values of :attr:`ComparisonRecord.source`.
COMPARISON_SOURCES: tuple[str, ...] = get_args(ComparisonSource)


def new_id() -> str:
    """A fresh random id (32 hex characters)."""
    return uuid.uuid4().hex


def query_hash(text: str) -> str:
    """SHA-256 hex digest of a query (queries themselves are not stored unless asked)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def validate_user_id(user_id: object) -> str:
    """Return ``user_id`` if it can key a user's data, else raise :class:`FeedbackError`.

    Any non-empty string of at most :data:`MAX_USER_ID_CHARS` characters is a user id (an
    email address, a display name, ``"zoë"``, an org id): the store binds it as a query
    parameter, never pastes it into SQL or a path. Refused: a non-string, an empty or
    whitespace-only string, control characters (a NUL cannot be stored by PostgreSQL), lone
    surrogates, and longer ids (hash them first, e.g. ``hashlib.sha256(id).hexdigest()``).
    """
    problem = None
    if not isinstance(user_id, str):
        problem = f"it is a {type(user_id).__name__}, not a string. Fix: pass str(user_id)"
    elif not user_id.strip():
        problem = "it is empty. Fix: name the user, e.g. 'alice' or 'org:42'"
    elif len(user_id) > MAX_USER_ID_CHARS:
        problem = (
            f"it has {len(user_id):,} characters; at most {MAX_USER_ID_CHARS} are kept. Fix: "
            "pass a shorter key, e.g. the SHA-256 hex digest of the id (64 characters)"
        )
    elif _CONTROL.search(user_id):
        problem = "it contains control characters (newline, tab, NUL, ...). Fix: strip them"
    else:
        try:
            user_id.encode("utf-8")
        except UnicodeEncodeError:
            problem = "it contains a lone surrogate (not valid UTF-8). Fix: decode it properly"
    if problem is not None:
        raise FeedbackError(f"invalid user id {excerpt(user_id)}: {problem}.")
    return cast("str", user_id)


def validate_decision_id(decision_id: object) -> str:
    """Return ``decision_id`` (32 lowercase hex characters) or raise :class:`FeedbackError`."""
    if isinstance(decision_id, uuid.UUID):
        return decision_id.hex
    if not isinstance(decision_id, str) or not _DECISION_ID.match(decision_id.replace("-", "")):
        raise FeedbackError(
            f"malformed decision id {excerpt(decision_id)}: expected the 32-hex-character id from "
            "response_metadata['metarouter']['decision_id'] (or a run UUID)."
        )
    return decision_id.replace("-", "")


def check_text(
    name: str, text: str | bytes | None, max_chars: int | None = MAX_TEXT_CHARS
) -> str | None:
    """Return ``text`` as a ``str`` after checking it can be stored and sent on.

    Args:
        name: What the text is, for the error message (e.g. ``"query"``).
        text: The text; UTF-8 ``bytes`` are decoded.
        max_chars: Longest text accepted (None: no limit).

    Raises:
        FeedbackError: Not text, bytes that are not UTF-8, lone surrogates, or too long.
    """
    if text is None:
        return None
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FeedbackError(
                f"{name} is not valid UTF-8 ({exc.reason} at byte {exc.start}). Fix: decode it "
                "with the right encoding first, e.g. data.decode('latin-1')."
            ) from exc
    if not isinstance(text, str):
        raise FeedbackError(f"{name} must be a string, got {type(text).__name__}.")
    if max_chars is not None and len(text) > max_chars:
        raise FeedbackError(
            f"{name} has {len(text):,} characters; the store keeps at most {max_chars:,}. "
            "Fix: truncate it or store a summary."
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FeedbackError(
            f"{name} contains characters that are not valid UTF-8 (a lone surrogate at "
            f"position {exc.start}). Fix: decode the source bytes with errors='replace'."
        ) from exc
    return text


def validate_model_name(name: object, what: str = "model name") -> str:
    """Return ``name`` if it is a usable model name, else raise :class:`FeedbackError`."""
    if not isinstance(name, str) or not name.strip():
        raise FeedbackError(f"{what} must be a non-empty string, got {excerpt(name)}.")
    check_text(what, name, MAX_MODEL_NAME_CHARS)
    if _CONTROL.search(name):
        raise FeedbackError(
            f"{what} {excerpt(name)} contains control characters; use a plain name."
        )
    return name


def validate_query_hash(value: object) -> str:
    """Return ``value`` if it is a SHA-256 hex digest (see :func:`query_hash`)."""
    if not isinstance(value, str) or not _QUERY_HASH.match(value):
        raise FeedbackError(
            f"malformed query hash {excerpt(value)}: expected 64 lowercase hex characters, "
            "i.e. metarouter.store.query_hash(query_text)."
        )
    return value


def validate_embedding(value: object) -> np.ndarray:
    """Return the embedding as a float32 vector, or raise :class:`FeedbackError`."""
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise FeedbackError(f"query embedding is not a numeric vector ({exc}).") from exc
    if arr.ndim != 1 or not 0 < arr.shape[0] <= MAX_EMBEDDING_DIM:
        raise FeedbackError(
            f"query embedding must be a 1-d vector of 1-{MAX_EMBEDDING_DIM} numbers, got shape "
            f"{arr.shape}. Fix: pass the router's embedder.encode_one(query)."
        )
    if not np.isfinite(arr).all():
        raise FeedbackError("query embedding contains NaN or infinite values.")
    return arr


def check_usd(name: str, value: object, *, optional: bool = False) -> None:
    """Refuse anything but a cost of one call in USD (see :data:`MAX_CALL_COST_USD`).

    Raises:
        FeedbackError: Not a real number, NaN, negative or beyond the bound.
    """
    if value is None and optional:
        return
    check_number(
        name,
        value,
        error=FeedbackError,
        maximum=MAX_CALL_COST_USD,
        fix="Fix: give the cost of one call in US dollars (e.g. 0.0004).",
    )


def _check_count(name: str, value: object) -> None:
    check_number(name, value, error=FeedbackError, maximum=MAX_TOKENS, integer=True)


def _check_time(value: object) -> None:
    check_number(
        "created_at",
        value,
        error=FeedbackError,
        maximum=MAX_UNIX_TIME,
        fix="Fix: give a Unix time in seconds (time.time()).",
    )


def encode_json(name: str, value: Mapping[str, Any] | list[Any]) -> str:
    """Serialise a JSON field of a record, rejecting what cannot round-trip.

    Non-JSON values (e.g. datetimes) are stored as their ``str()``; NaN, lone surrogates and
    payloads over :data:`MAX_TEXT_CHARS` characters are refused.
    """
    try:
        text = json.dumps(value, default=str, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise FeedbackError(f"{name} is not JSON-serialisable ({exc}).") from exc
    check_text(name, text)
    return text


def validate_decision(record: DecisionRecord) -> None:
    """Check every field of a decision before it is stored.

    Raises:
        FeedbackError: Naming the first invalid field and how to fix it.
    """
    if not isinstance(record.decision_id, str) or not _DECISION_ID.match(record.decision_id):
        raise FeedbackError(
            f"malformed decision id {excerpt(record.decision_id)}: expected 32 lowercase hex "
            "characters without dashes (metarouter.store.new_id())."
        )
    validate_user_id(record.user_id)
    validate_query_hash(record.query_hash)
    validate_embedding(record.embedding)
    _check_count("prompt_tokens", record.prompt_tokens)
    if isinstance(record.candidates, str) or not record.candidates:
        raise FeedbackError("candidates must be a non-empty sequence of model names.")
    for name in record.candidates:
        validate_model_name(name, "candidate name")
    if len(set(record.candidates)) != len(record.candidates):
        raise FeedbackError(f"candidates {list(record.candidates)} contain duplicates.")
    if not isinstance(record.scores, Mapping):
        raise FeedbackError("scores must be a mapping of model name to probability.")
    for name, score in record.scores.items():
        validate_model_name(name, "scored model name")
        check_number(f"score of {excerpt(name)}", score, error=FeedbackError, maximum=1.0)
    validate_model_name(record.chosen, "chosen model")
    check_usd("expected_cost_usd", record.expected_cost_usd)
    check_usd("cost_usd", record.cost_usd, optional=True)
    if record.run_id is not None:
        if not isinstance(record.run_id, str) or not record.run_id:
            raise FeedbackError(f"run id must be a non-empty string, got {excerpt(record.run_id)}.")
        check_text("run id", record.run_id, MAX_RUN_ID_CHARS)
    if not isinstance(record.forced, (bool, np.bool_)):
        raise FeedbackError(f"forced must be a bool, got {excerpt(record.forced)}.")
    for name in record.fallbacks:
        validate_model_name(name, "fallback model name")
    _check_time(record.created_at)
    if not isinstance(record.metadata, Mapping):
        raise FeedbackError("metadata must be a mapping (a JSON object).")
    encode_json("decision metadata", dict(record.metadata))


def validate_comparison(record: ComparisonRecord) -> None:
    """Check every field of a comparison before it is stored.

    Raises:
        FeedbackError: Naming the first invalid field and how to fix it; self-comparisons
            (the same model or the same decision on both sides) included.
    """
    if not isinstance(record.comparison_id, str) or not _DECISION_ID.match(record.comparison_id):
        raise FeedbackError(
            f"malformed comparison id {excerpt(record.comparison_id)}: expected 32 lowercase hex "
            "characters (metarouter.store.new_id())."
        )
    validate_user_id(record.user_id)
    validate_model_name(record.winner, "winner model name")
    validate_model_name(record.loser, "loser model name")
    if record.winner == record.loser:
        raise FeedbackError(
            f"both answers come from {excerpt(record.winner)}; a comparison needs two different "
            "models. Fix: compare answers of two different candidates."
        )
    check_usd("winner_cost_usd", record.winner_cost_usd)
    check_usd("loser_cost_usd", record.loser_cost_usd)
    validate_query_hash(record.query_hash)
    validate_embedding(record.embedding)
    _check_count("prompt_tokens", record.prompt_tokens)
    if record.source not in COMPARISON_SOURCES:
        raise FeedbackError(
            f"unknown comparison source {excerpt(record.source)}; use one of "
            f"{list(COMPARISON_SOURCES)}."
        )
    ids = []
    for role in ("winner", "loser"):
        did = getattr(record, f"{role}_decision_id")
        if did is not None:
            if not isinstance(did, str) or not _DECISION_ID.match(did):
                raise FeedbackError(
                    f"malformed {role} decision id {excerpt(did)}: expected 32 lowercase hex "
                    "characters as in response_metadata['metarouter']['decision_id']."
                )
            ids.append(did)
    if len(ids) == 2 and ids[0] == ids[1]:
        raise FeedbackError("winner and loser are the same decision; compare two answers.")
    _check_time(record.created_at)


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
class RecentQuery:
    """A query of one of the user's recent routed calls, as the router reads their traffic.

    Attributes:
        embedding: The query embedding (float32).
        prompt_tokens: Its estimated prompt tokens.
        model: The model that answered (the routed choice until the call completes).
        cost_usd: What the call was billed, when its provider reported usage (else None).
    """

    embedding: np.ndarray = field(repr=False)
    prompt_tokens: int
    model: str | None = None
    cost_usd: float | None = None


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

    def to_comparison(self) -> Comparison:
        """The :class:`~metarouter.types.Comparison` the router adapts on."""
        from metarouter.types import Comparison

        return Comparison(
            self.winner,
            self.loser,
            self.winner_cost_usd,
            self.loser_cost_usd,
            embedding=self.embedding,
            tokens=self.prompt_tokens,
        )


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
