"""JSONL exports of the preference store: a user's data, and the feedback dataset.

Both are UTF-8 JSON Lines, written to a temporary file and renamed into place (a crash never
leaves a half-written export under the final name). Each starts with a ``header`` line and ends
with a ``footer`` line counting the rows, so a truncated copy is detected on load.

**Feedback dataset** (:func:`write_dataset`, :func:`load_comparison_export`), format
``metarouter-feedback`` version 1; one object per line with a ``type``:

* ``header``: ``format``, ``format_version``, ``exported_at`` (Unix time), ``schema_version``;
* ``decision``: ``decision_id``, ``user_id``, ``created_at``, ``query_hash`` (SHA-256 of the
  query; the text itself is never stored), ``embedding`` (list of floats, the query embedding),
  ``prompt_tokens``, ``candidates``, ``scores`` (policy probability per candidate), ``chosen``,
  ``expected_cost_usd``, ``cost_usd`` (real cost or null), ``forced``, ``fallbacks``, and with
  ``include_metadata`` also ``run_id`` and ``metadata``;
* ``comparison``: ``comparison_id``, ``user_id``, ``created_at``, ``winner``, ``loser``,
  ``winner_cost_usd``, ``loser_cost_usd``, ``query_hash``, ``embedding``, ``prompt_tokens``,
  ``source``, ``winner_decision_id``, ``loser_decision_id`` (null for answers the router did
  not produce);
* ``footer``: ``decisions`` and ``comparisons`` (row counts).

**User export** (:func:`write_user_export`), format ``metarouter-user-export`` version 1: the
header (with ``user_id``), then every stored row about the user as returned by
:meth:`~metarouter.store.base.PreferenceStore.export_user` (types ``user``, ``decision``,
``comparison``, ``preference_cache``), then a footer with ``rows``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metarouter.errors import DataError, FeedbackError, StoreError
from metarouter.store.records import (
    ComparisonRecord,
    DecisionRecord,
    validate_comparison,
    validate_decision,
)
from metarouter.validation import excerpt

if TYPE_CHECKING:
    from metarouter.types import Comparison

__all__ = [
    "DATASET_FORMAT",
    "DATASET_FORMAT_VERSION",
    "USER_EXPORT_FORMAT",
    "comparison_to_json",
    "comparisons_by_user",
    "decision_to_json",
    "load_comparison_export",
    "load_decision_export",
    "load_export_records",
    "load_feedback",
    "remove_stale_temporaries",
    "write_dataset",
    "write_user_export",
]

logger = logging.getLogger(__name__)

DATASET_FORMAT = "metarouter-feedback"
DATASET_FORMAT_VERSION = 1
USER_EXPORT_FORMAT = "metarouter-user-export"
USER_EXPORT_FORMAT_VERSION = 1


def _floats(vec: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(vec, dtype=np.float32)]


def decision_to_json(record: DecisionRecord, *, include_metadata: bool = True) -> dict[str, Any]:
    """A decision as a JSON-ready dict (``type: decision``)."""
    data: dict[str, Any] = {
        "type": "decision",
        "decision_id": record.decision_id,
        "user_id": record.user_id,
        "created_at": float(record.created_at),
        "query_hash": record.query_hash,
        "embedding": _floats(record.embedding),
        "prompt_tokens": int(record.prompt_tokens),
        "candidates": list(record.candidates),
        "scores": {k: float(v) for k, v in record.scores.items()},
        "chosen": record.chosen,
        "expected_cost_usd": float(record.expected_cost_usd),
        "cost_usd": None if record.cost_usd is None else float(record.cost_usd),
        "forced": bool(record.forced),
        "fallbacks": list(record.fallbacks),
    }
    if include_metadata:
        data["run_id"] = record.run_id
        data["metadata"] = dict(record.metadata)
    return data


def comparison_to_json(record: ComparisonRecord) -> dict[str, Any]:
    """A comparison as a JSON-ready dict (``type: comparison``)."""
    return {
        "type": "comparison",
        "comparison_id": record.comparison_id,
        "user_id": record.user_id,
        "created_at": float(record.created_at),
        "winner": record.winner,
        "loser": record.loser,
        "winner_cost_usd": float(record.winner_cost_usd),
        "loser_cost_usd": float(record.loser_cost_usd),
        "query_hash": record.query_hash,
        "embedding": _floats(record.embedding),
        "prompt_tokens": int(record.prompt_tokens),
        "source": record.source,
        "winner_decision_id": record.winner_decision_id,
        "loser_decision_id": record.loser_decision_id,
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Delete temporary files that an export to ``target`` left behind when it was killed.

    They are named ``.<target name>.<pid>.<random>.tmp`` (private to the user, mode 0600) and
    hold the export's rows; those of a process that no longer runs are removed, those of a
    running export are left alone.

    Returns:
        The files removed.
    """
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(?:(\d+)\.)?[A-Za-z0-9_]+\.tmp$")
    removed: list[Path] = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or (match.group(1) is not None and _alive(int(match.group(1)))):
            continue
        try:
            entry.unlink()
        except OSError as exc:
            logger.warning("could not remove the stale temporary export %s: %s", entry, exc)
            continue
        logger.warning("removed %s, left behind by an export that was interrupted", entry)
        removed.append(entry)
    return removed


def _write_jsonl(path: str | os.PathLike[str], lines: Iterable[Mapping[str, Any]]) -> int:
    """Write ``lines`` atomically to ``path``; returns the number of lines."""
    target = Path(path).expanduser()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent
        )
    except OSError as exc:
        raise StoreError(f"cannot write the export to {target}: {exc}.") from exc
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            for line in lines:
                fh.write(json.dumps(line, ensure_ascii=False, allow_nan=False))
                fh.write("\n")
                n += 1
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise StoreError(f"cannot write the export to {target}: {exc}.") from exc
        raise
    return n


def write_dataset(
    path: str | os.PathLike[str],
    records: Iterable[DecisionRecord | ComparisonRecord],
    *,
    schema_version: int | None = None,
    include_metadata: bool = False,
) -> dict[str, int]:
    """Write decisions and comparisons as a ``metarouter-feedback`` JSONL dataset.

    Args:
        path: Output file (replaced atomically).
        records: The rows, streamed.
        schema_version: The store's schema version, recorded in the header.
        include_metadata: Also write decisions' ``run_id`` and free-form ``metadata`` (may hold
            application data; off by default for a dataset).

    Returns:
        Rows written per type: ``{"decisions": ..., "comparisons": ...}``.
    """
    counts = {"decisions": 0, "comparisons": 0}

    def lines() -> Iterator[dict[str, Any]]:
        yield {
            "type": "header",
            "format": DATASET_FORMAT,
            "format_version": DATASET_FORMAT_VERSION,
            "exported_at": time.time(),
            "schema_version": schema_version,
        }
        for rec in records:
            if isinstance(rec, DecisionRecord):
                counts["decisions"] += 1
                yield decision_to_json(rec, include_metadata=include_metadata)
            else:
                counts["comparisons"] += 1
                yield comparison_to_json(rec)
        yield {"type": "footer", **counts}

    _write_jsonl(path, lines())
    return counts


def write_user_export(
    path: str | os.PathLike[str], user_id: str, rows: Iterable[Mapping[str, Any]]
) -> int:
    """Write one user's rows (from ``export_user``) as JSONL; returns the number of rows."""
    count = 0

    def lines() -> Iterator[Mapping[str, Any]]:
        nonlocal count
        yield {
            "type": "header",
            "format": USER_EXPORT_FORMAT,
            "format_version": USER_EXPORT_FORMAT_VERSION,
            "exported_at": time.time(),
            "user_id": user_id,
        }
        for row in rows:
            count += 1
            yield row
        yield {"type": "footer", "rows": count}

    _write_jsonl(path, lines())
    return count


def _comparison_from_json(obj: Mapping[str, Any]) -> ComparisonRecord:
    return ComparisonRecord(
        comparison_id=obj["comparison_id"],
        user_id=obj["user_id"],
        winner=obj["winner"],
        loser=obj["loser"],
        winner_cost_usd=obj["winner_cost_usd"],
        loser_cost_usd=obj["loser_cost_usd"],
        query_hash=obj["query_hash"],
        embedding=np.asarray(obj["embedding"], dtype=np.float32),
        prompt_tokens=obj["prompt_tokens"],
        source=obj["source"],
        winner_decision_id=obj.get("winner_decision_id"),
        loser_decision_id=obj.get("loser_decision_id"),
        created_at=obj["created_at"],
    )


def _decision_from_json(obj: Mapping[str, Any]) -> DecisionRecord:
    return DecisionRecord(
        decision_id=obj["decision_id"],
        user_id=obj["user_id"],
        query_hash=obj["query_hash"],
        embedding=np.asarray(obj["embedding"], dtype=np.float32),
        prompt_tokens=obj["prompt_tokens"],
        candidates=tuple(obj["candidates"]),
        scores=dict(obj["scores"]),
        chosen=obj["chosen"],
        expected_cost_usd=obj["expected_cost_usd"],
        cost_usd=obj.get("cost_usd"),
        run_id=obj.get("run_id"),
        forced=obj["forced"],
        fallbacks=tuple(obj["fallbacks"]),
        created_at=obj["created_at"],
        metadata=dict(obj.get("metadata") or {}),
    )


def _read_dataset(
    path: str | os.PathLike[str], *, user_exports: bool = False
) -> tuple[list[DecisionRecord], list[ComparisonRecord]]:
    source = Path(path).expanduser()
    decisions: list[DecisionRecord] = []
    comparisons: list[ComparisonRecord] = []
    footer: Mapping[str, Any] | None = None
    formats = (DATASET_FORMAT, USER_EXPORT_FORMAT) if user_exports else (DATASET_FORMAT,)
    versions = {
        DATASET_FORMAT: DATASET_FORMAT_VERSION,
        USER_EXPORT_FORMAT: USER_EXPORT_FORMAT_VERSION,
    }
    kind_of_file = DATASET_FORMAT
    other_rows = 0
    try:
        fh = source.open(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read the feedback export {source}: {exc}.") from exc
    with fh:
        lineno = 0
        seen_header = False
        try:
            for lineno, line in enumerate(fh, start=1):  # noqa: B007 - used in errors
                if not line.strip():
                    continue
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise DataError("expected a JSON object")
                kind = obj.get("type")
                if not seen_header:
                    seen_header = True
                    if kind != "header" or obj.get("format") not in formats:
                        raise DataError(
                            f"not a {' or '.join(formats)} export (the first line must be its "
                            "header; write one with SQLStore.export_comparisons or "
                            "`metarouter store export`)"
                        )
                    kind_of_file = obj["format"]
                    version = obj.get("format_version")
                    if not isinstance(version, int) or version > versions[kind_of_file]:
                        raise DataError(
                            f"format version {excerpt(version)} is newer than this metarouter "
                            f"reads ({versions[kind_of_file]}); upgrade metarouter"
                        )
                    continue
                if footer is not None:
                    raise DataError("rows after the footer")
                if obj.get("unreadable"):
                    raise DataError(
                        f"the exported row has unreadable fields {excerpt(obj['unreadable'])} "
                        "(damaged in the store it came from); remove the line to import the rest"
                    )
                if kind in ("user", "preference_cache") and kind_of_file == USER_EXPORT_FORMAT:
                    other_rows += 1  # versions and caches are rebuilt, not imported
                elif kind == "comparison":
                    rec_c = _comparison_from_json(obj)
                    validate_comparison(rec_c)
                    comparisons.append(rec_c)
                elif kind == "decision":
                    rec_d = _decision_from_json(obj)
                    validate_decision(rec_d)
                    decisions.append(rec_d)
                elif kind == "footer":
                    footer = obj
                else:
                    raise DataError(f"unknown row type {excerpt(kind)}")
        except UnicodeDecodeError as exc:
            raise DataError(f"{source}: not UTF-8 text ({exc}).") from exc
        except json.JSONDecodeError as exc:
            raise DataError(f"{source}, line {lineno}: invalid JSON ({exc.msg}).") from exc
        except KeyError as exc:
            raise DataError(f"{source}, line {lineno}: missing field {exc}.") from exc
        except (FeedbackError, DataError, TypeError, ValueError) as exc:
            raise DataError(f"{source}, line {lineno}: {exc}.") from exc
    if not seen_header:
        raise DataError(f"{source} is empty; expected a {DATASET_FORMAT} export.")
    if footer is None:
        logger.warning(
            "%s has no footer line: it may be truncated (%d decisions, %d comparisons read)",
            source,
            len(decisions),
            len(comparisons),
        )
    elif kind_of_file == USER_EXPORT_FORMAT:
        if footer.get("rows") != len(decisions) + len(comparisons) + other_rows:
            raise DataError(
                f"{source}: the footer announces {excerpt(footer.get('rows'))} rows but the file "
                f"holds {len(decisions) + len(comparisons) + other_rows}; the file was altered or "
                "truncated. Fix: export it again."
            )
    elif footer.get("decisions") != len(decisions) or footer.get("comparisons") != len(comparisons):
        raise DataError(
            f"{source}: the footer announces {footer.get('decisions')} decisions and "
            f"{footer.get('comparisons')} comparisons but the file holds {len(decisions)} and "
            f"{len(comparisons)}; the file was altered or truncated. Fix: export it again."
        )
    return decisions, comparisons


def load_comparison_export(path: str | os.PathLike[str]) -> list[ComparisonRecord]:
    """The comparisons of a ``metarouter-feedback`` export, in file order (oldest first).

    Each record carries the query embedding and prompt tokens, so
    ``[r.to_comparison() for r in records]`` is ready for :meth:`MetaRouter.adapt` or training.

    Raises:
        DataError: Not such an export, a newer format version, an invalid row (with its line
            number), or counts that disagree with the footer.
    """
    return _read_dataset(path)[1]


def load_decision_export(path: str | os.PathLike[str]) -> list[DecisionRecord]:
    """The routing decisions of a ``metarouter-feedback`` export, in file order.

    Raises:
        DataError: As :func:`load_comparison_export`.
    """
    return _read_dataset(path)[0]


def load_export_records(
    path: str | os.PathLike[str],
) -> list[DecisionRecord | ComparisonRecord]:
    """Every decision, then every comparison, of an export (what ``metarouter store import`` reads).

    The file is a ``metarouter-feedback`` dataset or a ``metarouter-user-export``.

    Raises:
        DataError: As :func:`load_comparison_export`; also a row marked unreadable.
    """
    decisions, comparisons = _read_dataset(path, user_exports=True)
    return [*decisions, *comparisons]


def comparisons_by_user(records: Iterable[ComparisonRecord]) -> dict[str, list[Comparison]]:
    """Group comparison records by user, as :class:`~metarouter.types.Comparison` objects.

    The result is what :func:`metarouter.training.finetune_on_comparisons` takes.
    """
    grouped: dict[str, list[Comparison]] = {}
    for rec in records:
        grouped.setdefault(rec.user_id, []).append(rec.to_comparison())
    return grouped


def load_feedback(path: str | os.PathLike[str]) -> dict[str, list[Comparison]]:
    """The comparisons of a ``metarouter-feedback`` export, per user, ready for fine-tuning.

    Example:
        >>> from metarouter import MetaRouter  # doctest: +SKIP
        >>> from metarouter.training import finetune_on_comparisons  # doctest: +SKIP
        >>> result = finetune_on_comparisons(MetaRouter.default(), load_feedback("fb.jsonl"))

    Raises:
        DataError: As :func:`load_comparison_export`.
    """
    return comparisons_by_user(load_comparison_export(path))
