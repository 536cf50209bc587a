"""Keeping a store small and safe: retention of routing decisions, and online backups.

* :class:`Retention` says how long routing decisions are kept; :func:`prune_batch` deletes one
  batch of the decisions it no longer keeps. **Comparisons are always kept**, and so is every
  decision a comparison references (the feedback is what a user's taste is learned from).
* :func:`sqlite_backup` copies a live SQLite store with SQLite's online backup API: a consistent
  snapshot that includes every commit still in the write-ahead log, which a plain ``cp`` of the
  database file misses. PostgreSQL stores are backed up with ``pg_dump``
  (:func:`pg_dump_command`).

:class:`~metarouter.store.sql.SQLStore` exposes these as ``SQLStore.prune`` and
``SQLStore.backup``; the command line as ``metarouter store prune`` and ``metarouter store
backup``.
"""

from __future__ import annotations

import os
import shlex
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from metarouter.errors import ConfigError, StoreError
from metarouter.store.schema import Tables
from metarouter.validation import check_number

__all__ = [
    "Retention",
    "check_output_path",
    "pg_dump_command",
    "prune_batch",
    "sqlite_backup",
    "store_files",
]

#: Decisions deleted per transaction while pruning (keeps each write lock short).
PRUNE_BATCH = 5000


@dataclass(frozen=True)
class Retention:
    """How long routing decisions are kept.

    Comparisons, and the decisions they reference, are always kept.

    Attributes:
        max_age_days: Delete decisions older than this many days.
        max_decisions_per_user: Keep only each user's newest this many decisions.
        every: With ``SQLStore(retention=...)``, prune after every this many decisions recorded
            through that store object (one batch at a time, so no call waits long); 0 prunes
            only when :meth:`~metarouter.store.sql.SQLStore.prune` is called.

    Raises:
        ConfigError: Neither limit is given, or a value is out of range.

    Example:
        >>> Retention(max_age_days=90, max_decisions_per_user=10_000)  # doctest: +ELLIPSIS
        Retention(max_age_days=90, max_decisions_per_user=10000, every=1000)
    """

    max_age_days: float | None = None
    max_decisions_per_user: int | None = None
    every: int = 1000

    def __post_init__(self) -> None:
        if self.max_age_days is None and self.max_decisions_per_user is None:
            raise ConfigError(
                "Retention needs max_age_days or max_decisions_per_user (or both), e.g. "
                "Retention(max_age_days=90)."
            )
        if self.max_age_days is not None:
            check_number(
                "Retention.max_age_days", self.max_age_days, error=ConfigError, maximum=1e6
            )
        if self.max_decisions_per_user is not None:
            check_number(
                "Retention.max_decisions_per_user",
                self.max_decisions_per_user,
                error=ConfigError,
                maximum=1e12,
                integer=True,
            )
        check_number("Retention.every", self.every, error=ConfigError, maximum=1e12, integer=True)


def prune_batch(
    conn: sa.Connection,
    tables: Tables,
    retention: Retention,
    *,
    now: float | None = None,
    limit: int = PRUNE_BATCH,
) -> int:
    """Delete up to ``limit`` decisions that ``retention`` no longer keeps; returns how many.

    A decision is deleted when it is older than ``max_age_days`` or not among its user's newest
    ``max_decisions_per_user``, and no comparison references it.
    """
    d, c = tables.decisions, tables.comparisons
    unreferenced = sa.and_(
        ~sa.exists().where(c.c.winner_decision_id == d.c.decision_id),
        ~sa.exists().where(c.c.loser_decision_id == d.c.decision_id),
    )
    expired = []
    if retention.max_age_days is not None:
        cutoff = (time.time() if now is None else now) - retention.max_age_days * 86400.0
        expired.append(d.c.created_at < cutoff)
    if retention.max_decisions_per_user is not None:
        rank = (
            sa.select(
                d.c.decision_id,
                sa.func.row_number()
                .over(
                    partition_by=d.c.user_id,
                    order_by=(d.c.created_at.desc(), d.c.decision_id.desc()),
                )
                .label("rank"),
            )
        ).subquery()
        surplus = sa.select(rank.c.decision_id).where(
            rank.c.rank > int(retention.max_decisions_per_user)
        )
        expired.append(d.c.decision_id.in_(surplus))
    ids = (
        conn.execute(
            sa.select(d.c.decision_id).where(sa.or_(*expired), unreferenced).limit(int(limit))
        )
        .scalars()
        .all()
    )
    if not ids:
        return 0
    return int(conn.execute(d.delete().where(d.c.decision_id.in_(ids))).rowcount)


def store_files(path: Path) -> list[Path]:
    """The files of a SQLite store: the database and its ``-wal``, ``-shm`` and ``-journal``."""
    return [path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def check_output_path(
    out: str | os.PathLike[str], protected: Sequence[Path], *, force: bool
) -> Path:
    """Refuse to write an output over a store's files, or over any file without ``force``.

    Args:
        out: Where the output would go.
        protected: The store's files (see :func:`store_files`).
        force: Allow replacing an existing file that is not one of ``protected``.

    Raises:
        ConfigError: ``out`` is one of ``protected``, a folder, or an existing file and
            ``force`` is False.
    """
    target = Path(out).expanduser()
    if any(_same_file(target, f) for f in protected):
        raise ConfigError(
            f"{target} is the preference store itself (or one of its files); writing there would "
            "destroy it. Nothing was written. Fix: choose another output file."
        )
    if target.is_dir():
        raise ConfigError(f"{target} is a folder. Fix: give a file name, e.g. {target}/out.jsonl.")
    if target.exists() and not force:
        raise ConfigError(
            f"{target} already exists; nothing was written. Fix: choose a new file name, or pass "
            "--force (force=True) to replace it."
        )
    return target


def sqlite_backup(source: sqlite3.Connection, out: Path) -> int:
    """Copy a live SQLite database to ``out`` with the online backup API; returns its size.

    The copy is written to a temporary file beside ``out`` and renamed into place, so ``out``
    is either the previous file or a complete backup.

    Raises:
        StoreError: The copy failed (nothing is left behind under ``out``).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        target = sqlite3.connect(tmp)
        try:
            source.backup(target)
            # the copy stands alone: one file, no -wal beside it
            target.execute("PRAGMA journal_mode=DELETE")
        finally:
            target.close()
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except (sqlite3.Error, OSError) as exc:
        Path(tmp).unlink(missing_ok=True)
        raise StoreError(
            f"could not back the store up to {out}: {exc}. Nothing was written."
        ) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out.stat().st_size


def pg_dump_command(url: sa.URL, out: str | os.PathLike[str]) -> str:
    """The ``pg_dump`` command that backs up the store's tables of a PostgreSQL database.

    The password is never included: ``pg_dump`` reads it from ``PGPASSWORD`` or ``~/.pgpass``.
    """
    parts = ["pg_dump", "--format=custom", "--table=metarouter_*"]
    if url.host:
        parts.append(f"--host={url.host}")
    if url.port:
        parts.append(f"--port={url.port}")
    if url.username:
        parts.append(f"--username={url.username}")
    options = url.query.get("options")
    if isinstance(options, str) and "search_path" in options:
        schema = options.split("search_path", 1)[1].lstrip("=").split(",")[0].strip()
        parts[2] = f"--table={schema}.metarouter_*"
    parts += [f"--file={os.fspath(out)}", url.database or ""]
    return " ".join(shlex.quote(p) for p in parts)
