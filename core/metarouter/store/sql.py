"""SQL preference store (SQLAlchemy Core): SQLite by default, PostgreSQL for many processes.

* SQLite: a file path or ``sqlite:///path.db``; WAL journal, ``BEGIN IMMEDIATE`` write
  transactions (reads are snapshots that never block writers), a busy timeout, foreign keys on,
  ``synchronous=FULL`` (a commit survives power loss, not just a process crash). Good for one
  machine and several processes.
* PostgreSQL: ``postgresql+psycopg://user:password@host:5432/db`` (install
  ``metarouter[postgres]``; ``postgres://`` and ``postgresql://`` URLs are read as psycopg); for
  several app instances and machines. Transient deadlocks and serialization failures are
  retried.

Nothing touches the database until first use; then the schema is created or migrated (see
:mod:`metarouter.store.migrations`). Every statement is parameterised; embeddings are raw
little-endian float32 bytes, lists and dicts JSON; nothing is ever unpickled. Every write is one
transaction: when it fails, nothing of it is stored and a
:class:`~metarouter.errors.StoreError` (database trouble) or
:class:`~metarouter.errors.FeedbackError` (invalid input) says why.

User versions come from one monotonic clock (``metarouter_clock``): recording a comparison
gives the user a version no one had before, so a preference cached at an older version, in this
process or another, is recomputed rather than served, even across a deletion of the user.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import sqlalchemy as sa

from metarouter.budgets import Budget, BudgetState, Pacing, SpendRecord
from metarouter.errors import (
    ChargeError,
    ConfigError,
    DependencyError,
    FeedbackError,
    MetaRouterError,
    StoreError,
    UnreadableRowError,
)
from metarouter.novelty import RECENT_TRAFFIC
from metarouter.store.base import PreferenceStore
from metarouter.store.maintenance import (
    PRUNE_BATCH,
    Retention,
    check_output_path,
    pg_dump_command,
    prune_batch,
    sqlite_backup,
    store_files,
)
from metarouter.store.migrations import migrate, stored_version
from metarouter.store.records import (
    ComparisonRecord,
    DecisionRecord,
    RecentQuery,
    check_text,
    check_usd,
    encode_json,
    validate_comparison,
    validate_decision,
    validate_decision_id,
    validate_model_name,
    validate_user_id,
)
from metarouter.store.schema import SCHEMA_VERSION, Tables, define_tables
from metarouter.validation import excerpt

__all__ = ["SQLStore"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Attempts for a write that hits a PostgreSQL deadlock or serialization failure.
_WRITE_ATTEMPTS = 4
#: SQLSTATEs worth retrying: serialization_failure, deadlock_detected.
_TRANSIENT_SQLSTATES = {"40001", "40P01"}
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
#: Attempts to charge a call to its budgets when the store fails (any failure, not only the
#: transient ones every write retries), and the wait before the second (doubled after).
CHARGE_ATTEMPTS = 3
CHARGE_BACKOFF_SECONDS = 0.1


def _normalise_url(target: str | os.PathLike[str]) -> str:
    text = os.fspath(target)
    if not text:
        raise ConfigError("empty store location: give a SQLite file path or a database URL.")
    if "://" not in text:
        if text == ":memory:":
            return "sqlite://"
        return f"sqlite:///{Path(text).expanduser()}"
    scheme, rest = text.split("://", 1)
    if scheme in ("postgres", "postgresql"):
        return f"postgresql+psycopg://{rest}"
    return text


def _read_only_url(path: Path) -> sa.URL:
    """A URL opening the SQLite file read-only (``mode=ro``: SQLite refuses every write)."""
    uri = f"file:{urllib.parse.quote(str(path.expanduser().absolute()))}?mode=ro"
    return sa.URL.create("sqlite", database=uri, query={"uri": "true"})


def _sqlite_file(url: sa.URL) -> Path | None:
    db = url.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


class SQLStore(PreferenceStore):
    """A :class:`PreferenceStore` on SQLite or PostgreSQL.

    Args:
        target: A SQLite file path (created with its folder on first use), ``":memory:"``
            (tests), or a SQLAlchemy URL: ``sqlite:///path.db``,
            ``postgresql+psycopg://user:password@host:5432/db``. Put the tables in their own
            PostgreSQL schema with ``?options=-csearch_path%3Dmetarouter``.
        busy_timeout: Seconds a SQLite writer waits for another writer's lock.
        synchronous: SQLite durability: ``FULL`` (default; a commit survives power loss) or
            ``NORMAL`` (faster; the last commits may be lost on power loss, never on a crash).
        pool_size: Connections kept open per process (PostgreSQL; SQLite files too).
        max_overflow: Extra connections allowed under load, closed when idle.
        pool_timeout: Seconds to wait for a free pooled connection.
        connect_timeout: Seconds to wait when connecting to PostgreSQL.
        echo: Log every SQL statement (``logging`` at INFO).
        read_only: Open without ever writing (inspection, export, backup): SQLite opens the file
            read-only, PostgreSQL sessions are read-only, the schema is neither created nor
            migrated, and a database that is not a MetaRouter store is refused.
        create: Create the tables in a database that has none (default). With ``False`` a
            database without MetaRouter tables is refused instead of being written to.
        retention: How long routing decisions are kept (see :class:`Retention`); applied by
            :meth:`prune`, and every ``retention.every`` decisions recorded through this object.

    Raises:
        ConfigError: The URL is invalid or names an unsupported database.
        DependencyError: The PostgreSQL driver is not installed.

    Example:
        >>> store = SQLStore("~/.local/share/myapp/metarouter.db")  # doctest: +SKIP
        >>> store = SQLStore("postgresql+psycopg://app@db.internal/app")  # doctest: +SKIP
    """

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        busy_timeout: float = 30.0,
        synchronous: str = "FULL",
        pool_size: int = 5,
        max_overflow: int = 10,
        pool_timeout: float = 30.0,
        connect_timeout: int = 10,
        echo: bool = False,
        read_only: bool = False,
        create: bool = True,
        retention: Retention | None = None,
    ) -> None:
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ConfigError(f"synchronous={synchronous!r}: use one of {list(_SYNCHRONOUS)}.")
        self.busy_timeout = float(busy_timeout)
        self._synchronous = synchronous.upper()
        try:
            url = sa.make_url(_normalise_url(target))
        except sa.exc.ArgumentError as exc:
            raise ConfigError(
                f"invalid store location {os.fspath(target)!r}: {exc}. Fix: give a SQLite file "
                "path or a URL like postgresql+psycopg://user@host/db."
            ) from exc
        backend = url.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise ConfigError(
                f"unsupported store database {backend!r}; supported: SQLite (a file path or "
                "sqlite:///path.db) and PostgreSQL (postgresql+psycopg://user@host/db)."
            )
        self.read_only = bool(read_only)
        self.create = bool(create) and not self.read_only
        self.retention = retention
        self._since_prune = 0
        #: The SQLite file (None for PostgreSQL and in-memory databases).
        self.path: Path | None = _sqlite_file(url) if backend == "sqlite" else None
        shown_url = self._mask(url)
        kwargs: dict[str, Any] = {"echo": echo}
        if backend == "sqlite":
            kwargs["connect_args"] = {"timeout": self.busy_timeout, "check_same_thread": False}
            if self.read_only and self.path is not None:
                # mode=ro: SQLite itself refuses every write, whatever runs on the connection
                url = _read_only_url(self.path)
            if self.path is None:
                kwargs["poolclass"] = sa.pool.StaticPool
            else:
                kwargs.update(
                    pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout
                )
        else:
            kwargs.update(
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_timeout=pool_timeout,
                pool_pre_ping=True,
                connect_args={"connect_timeout": int(connect_timeout)},
            )
        try:
            self.engine = sa.create_engine(url, **kwargs)
        except ImportError as exc:
            raise DependencyError(
                f"the database driver for {url.drivername!r} is missing ({exc}). Fix: pip "
                "install 'metarouter[postgres]' for PostgreSQL."
            ) from exc
        except (sa.exc.ArgumentError, TypeError) as exc:
            raise ConfigError(f"invalid store URL {self._mask(url)!r}: {exc}") from exc
        self.url = shown_url
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            self._setup_sqlite()
        elif self.read_only:
            self._setup_postgres_read_only()
        self._write_engine = self.engine.execution_options(metarouter_write=True)
        self.tables: Tables = define_tables()
        self._ready = False
        self._init_lock = threading.Lock()
        ref = weakref.ref(self)

        def _after_fork() -> None:  # a forked worker must not share pooled connections
            store = ref()
            if store is not None:
                store.engine.dispose(close=False)

        os.register_at_fork(after_in_child=_after_fork)

    # -- setup ----------------------------------------------------------------------------------
    @staticmethod
    def _mask(url: sa.URL) -> str:
        return url.render_as_string(hide_password=True)

    def _setup_sqlite(self) -> None:
        busy_ms = int(self.busy_timeout * 1000)
        synchronous = self._synchronous

        read_only = self.read_only

        @sa.event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # transactions are begun explicitly below
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            if read_only:
                cur.execute("PRAGMA query_only=ON")
            else:
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute(f"PRAGMA synchronous={synchronous}")
                # deleted rows are overwritten with zeros, not left in free pages (privacy)
                cur.execute("PRAGMA secure_delete=ON")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @sa.event.listens_for(self.engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            # Writers take the write lock up front (no deadlock-prone lock upgrades); readers
            # get a snapshot and never block anyone.
            write = conn.get_execution_options().get("metarouter_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    def _setup_postgres_read_only(self) -> None:
        @sa.event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            cur.close()
            dbapi_conn.commit()

    def _ensure(self) -> None:
        """Create or migrate the schema on first use (once per process, under a lock)."""
        if self._ready:
            return
        with self._init_lock:
            if self._ready:
                return
            if self.read_only:
                self._check_existing(self.engine)
                self._ready = True
                return
            path = self.path
            if path is not None:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(
                        f"cannot create the folder of the SQLite store {path}: {exc}. Fix: "
                        "choose a writable location (or set METAROUTER_STORE)."
                    ) from exc
            if not self.create:
                self._check_existing(self.engine, older_ok=True)
            try:
                with self._write_engine.begin() as conn:
                    found, now = migrate(conn, where=self.url)
            except StoreError:
                raise
            except sa.exc.SQLAlchemyError as exc:
                raise StoreError(
                    self._explain("open the store (create or migrate its schema)", exc)
                ) from exc
            if found != now:
                logger.info("store %s: schema %s -> version %s", self.url, found or "new", now)
            self._ready = True

    def _check_existing(self, engine: sa.Engine, *, older_ok: bool = False) -> None:
        """Refuse a database that is not a MetaRouter store (or, read-only, not at our version)."""
        if self.path is not None and not self.read_only:
            # look without our connection settings: they would switch the file to WAL
            engine = sa.create_engine(_read_only_url(self.path), poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                found = stored_version(conn)
        except StoreError:
            raise
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(self._explain("open the store", exc)) from exc
        finally:
            if engine is not self.engine:
                engine.dispose()
        if found is None:
            raise StoreError(
                f"{self.url} is not a MetaRouter preference store (it has no metarouter_schema "
                "table), so it was left untouched. Fix: pass --store with the file or URL your "
                "application routes with (or set METAROUTER_STORE)."
            )
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"{self.url} has schema version {found}, newer than this metarouter understands "
                f"({SCHEMA_VERSION}). Fix: upgrade metarouter (pip install -U metarouter)."
            )
        if found < SCHEMA_VERSION and not older_ok:
            raise StoreError(
                f"{self.url} has schema version {found}; this metarouter reads version "
                f"{SCHEMA_VERSION} and opened it read-only, so it did not migrate it. Fix: open "
                "it once read-write (your application, or any `metarouter store` command that "
                "writes, such as prune) to migrate it, then retry."
            )

    def migrate(self) -> int:
        """Create or migrate the schema now (otherwise done on first use); returns its version.

        Raises:
            StoreError: The database is unreachable or at a newer schema version.
        """
        self._ensure()
        return SCHEMA_VERSION

    # -- transactions and errors ----------------------------------------------------------------
    def _explain(self, action: str, exc: sa.exc.SQLAlchemyError) -> str:
        orig = getattr(exc, "orig", None)
        detail = " ".join(str(orig if orig is not None else exc).split())
        lowered = detail.lower()
        sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        where = self.url
        if self.dialect == "sqlite":
            if "locked" in lowered or "busy" in lowered:
                hint = (
                    f"another process held the write lock for more than {self.busy_timeout:g}s. "
                    "Fix: raise busy_timeout, keep transactions short, or use PostgreSQL for "
                    "many concurrent writers."
                )
            elif "full" in lowered:
                hint = (
                    f"The disk holding {self.path} is full. Fix: free space on that volume "
                    "(SQLite also needs room for the -wal file beside it), or move the store "
                    "to a larger volume; `metarouter store prune` removes old decisions."
                )
            elif "readonly" in lowered or "unable to open" in lowered or "i/o" in lowered:
                hint = (
                    "Fix: check the file and its folder exist and are writable by this process "
                    "(SQLite writes -wal and -shm files beside it)."
                )
            elif "malformed" in lowered or "not a database" in lowered:
                hint = "Fix: the file is not an intact SQLite database; restore it from a backup."
            else:
                hint = ""
        elif sqlstate in ("53100", "53200"):
            hint = (
                "The database server is out of disk space or memory. Fix: free space on the "
                "server's data volume (or prune old decisions: metarouter store prune), then retry."
            )
        elif sqlstate == "42501":
            hint = (
                "Fix: grant the database user CREATE on the schema (first use and migrations) "
                "and SELECT, INSERT, UPDATE, DELETE on the metarouter_* tables."
            )
        elif sqlstate == "53300" or "too many" in lowered:
            hint = (
                "Fix: lower pool_size/max_overflow (per process) or raise the server's "
                "max_connections."
            )
        elif isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)):
            hint = (
                "Fix: check that the server is running and reachable, and the URL's user, "
                "password, host, port and database."
            )
        else:
            hint = ""
        if isinstance(exc, sa.exc.IntegrityError):
            hint = "It conflicts with a stored row: ids and run ids must be unique."
        return f"{where}: could not {action}: {detail}. {hint}".rstrip()

    def _write(self, action: str, fn: Callable[[sa.Connection], T]) -> T:
        """Run ``fn`` in one write transaction; all or nothing."""
        if self.read_only:
            raise StoreError(
                f"{self.url} was opened read-only: cannot {action}. Nothing was written. Fix: "
                "open it without read_only=True."
            )
        self._ensure()
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                with self._write_engine.begin() as conn:
                    return fn(conn)
            except sa.exc.DBAPIError as exc:
                sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
                if sqlstate in _TRANSIENT_SQLSTATES and attempt < _WRITE_ATTEMPTS:
                    logger.info("%s: retrying %s after %s", self.url, action, sqlstate)
                    time.sleep(0.02 * attempt)
                    continue
                raise StoreError(f"{self._explain(action, exc)} Nothing was written.") from exc
            except sa.exc.SQLAlchemyError as exc:
                raise StoreError(f"{self._explain(action, exc)} Nothing was written.") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _read(self, action: str, fn: Callable[[sa.Connection], T]) -> T:
        """Run ``fn`` on a read connection (one snapshot on SQLite)."""
        self._ensure()
        try:
            with self.engine.connect() as conn:
                return fn(conn)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(self._explain(action, exc)) from exc

    @contextmanager
    def _snapshot(self) -> Iterator[sa.Connection]:
        """A connection whose reads all see one consistent snapshot (exports)."""
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            yield conn

    def _stream(
        self, action: str, queries: list[tuple[sa.Select[Any], Callable[[Any], T]]]
    ) -> Iterator[T]:
        """Yield converted rows of several queries from one snapshot, without loading them all."""
        self._ensure()
        try:
            with self._snapshot() as conn:
                for query, convert in queries:
                    result = conn.execution_options(yield_per=500).execute(query)
                    for row in result:
                        yield convert(row)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(self._explain(action, exc)) from exc

    # -- row conversion -------------------------------------------------------------------------
    @staticmethod
    def _emb(vec: np.ndarray) -> bytes:
        return np.asarray(vec, dtype="<f4").tobytes()

    @staticmethod
    def _vec(raw: bytes) -> np.ndarray:
        data = bytes(raw)
        if not data or len(data) % 4:
            raise ValueError(f"an embedding of {len(data)} bytes is not a float32 vector")
        return np.frombuffer(data, dtype="<f4").copy()

    @staticmethod
    def _json(row: Any, column: str) -> Any:
        return json.loads(getattr(row, column))

    def _decision_from_row(self, row: Any) -> DecisionRecord:
        try:
            return DecisionRecord(
                decision_id=row.decision_id,
                user_id=row.user_id,
                query_hash=row.query_hash,
                embedding=self._vec(row.embedding),
                prompt_tokens=row.prompt_tokens,
                candidates=tuple(self._json(row, "candidates")),
                scores=self._json(row, "scores"),
                chosen=row.chosen,
                expected_cost_usd=row.expected_cost_usd,
                cost_usd=row.cost_usd,
                run_id=row.run_id,
                forced=bool(row.forced),
                fallbacks=tuple(self._json(row, "fallbacks")),
                created_at=row.created_at,
                metadata=self._json(row, "metadata"),
            )
        except (TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            raise UnreadableRowError(self._unreadable("decision", row.decision_id, exc)) from exc

    def _comparison_from_row(self, row: Any) -> ComparisonRecord:
        try:
            return ComparisonRecord(
                comparison_id=row.comparison_id,
                user_id=row.user_id,
                winner=row.winner,
                loser=row.loser,
                winner_cost_usd=row.winner_cost_usd,
                loser_cost_usd=row.loser_cost_usd,
                query_hash=row.query_hash,
                embedding=self._vec(row.embedding),
                prompt_tokens=row.prompt_tokens,
                source=row.source,
                winner_decision_id=row.winner_decision_id,
                loser_decision_id=row.loser_decision_id,
                created_at=row.created_at,
            )
        except (TypeError, ValueError) as exc:
            raise UnreadableRowError(
                self._unreadable("comparison", row.comparison_id, exc)
            ) from exc

    def _unreadable(self, kind: str, row_id: str, exc: Exception) -> str:
        return (
            f"{self.url}: the stored {kind} {excerpt(row_id)} is unreadable ({exc}); it was "
            "altered outside metarouter or written by an incompatible version. Fix: restore the "
            "store from a backup, or delete that row."
        )

    def _tick(self, conn: sa.Connection) -> int:
        """Advance the version clock; the row lock also serialises per-user version changes."""
        clock = self.tables.clock
        conn.execute(clock.update().where(clock.c.id == 1).values(value=clock.c.value + 1))
        return int(conn.execute(sa.select(clock.c.value).where(clock.c.id == 1)).scalar_one())

    # -- decisions ------------------------------------------------------------------------------
    def record_decision(self, record: DecisionRecord) -> None:
        """Store a routing decision.

        Raises:
            FeedbackError: A field is invalid (named in the message).
            StoreError: The id or run id is already stored, or the database failed.
        """
        validate_decision(record)
        t = self.tables.decisions
        values = self._decision_values(record)

        def insert(conn: sa.Connection) -> None:
            clash = sa.or_(t.c.decision_id == record.decision_id)
            if record.run_id is not None:
                clash = sa.or_(clash, t.c.run_id == record.run_id)
            if conn.execute(sa.select(t.c.decision_id).where(clash).limit(1)).first():
                raise StoreError(
                    f"decision {record.decision_id} (run id {record.run_id}) is already stored; "
                    "decision ids and run ids must be unique (use new_id()). Nothing was written."
                )
            conn.execute(t.insert().values(**values))

        self._write(f"record decision {record.decision_id}", insert)
        self._maybe_prune()

    def _decision_values(self, record: DecisionRecord) -> dict[str, Any]:
        return {
            "decision_id": record.decision_id,
            "user_id": record.user_id,
            "created_at": float(record.created_at),
            "query_hash": record.query_hash,
            "embedding": self._emb(record.embedding),
            "prompt_tokens": int(record.prompt_tokens),
            "candidates": encode_json("candidates", list(record.candidates)),
            "scores": encode_json("scores", {k: float(v) for k, v in record.scores.items()}),
            "chosen": record.chosen,
            "expected_cost_usd": float(record.expected_cost_usd),
            "cost_usd": None if record.cost_usd is None else float(record.cost_usd),
            "run_id": record.run_id,
            "forced": bool(record.forced),
            "fallbacks": encode_json("fallbacks", list(record.fallbacks)),
            "metadata": encode_json("decision metadata", dict(record.metadata)),
        }

    def _maybe_prune(self) -> None:
        """Apply the retention every ``retention.every`` decisions (one batch; never raises)."""
        retention = self.retention
        if retention is None or retention.every <= 0:
            return
        with self._init_lock:
            self._since_prune += 1
            if self._since_prune < retention.every:
                return
            self._since_prune = 0
        try:
            n = self._write(
                "prune old decisions", lambda conn: prune_batch(conn, self.tables, retention)
            )
        except MetaRouterError as exc:
            logger.warning("automatic pruning failed (it is retried later): %s", exc)
            return
        if n:
            logger.info("pruned %d old decisions from %s", n, self.url)

    def get_decision(self, decision_id: str) -> DecisionRecord:
        """The decision with this id.

        Raises:
            FeedbackError: The id is malformed or unknown.
        """
        did = validate_decision_id(decision_id)
        t = self.tables.decisions
        row = self._read(
            "read a decision",
            lambda conn: conn.execute(sa.select(t).where(t.c.decision_id == did)).first(),
        )
        if row is None:
            raise FeedbackError(
                f"unknown decision id {did!r}: no routing decision with this id is stored. Fix: "
                "pass the decision_id from response_metadata['metarouter'] of a call made "
                "with this store."
            )
        return self._decision_from_row(row)

    def find_decision(self, run_id: str) -> DecisionRecord | None:
        """The decision recorded with ``run_id``, if any."""
        run = check_text("run id", str(run_id), 64) or ""
        t = self.tables.decisions
        row = self._read(
            "find a decision by run id",
            lambda conn: conn.execute(sa.select(t).where(t.c.run_id == run)).first(),
        )
        return None if row is None else self._decision_from_row(row)

    def complete_decision(
        self,
        decision_id: str,
        *,
        chosen: str,
        cost_usd: float | None,
        fallbacks: tuple[str, ...] = (),
    ) -> None:
        """Record the answering model, its real cost and the models that failed first.

        Raises:
            FeedbackError: Unknown or malformed id, invalid model name or cost.
        """
        did = validate_decision_id(decision_id)
        validate_model_name(chosen, "chosen model")
        for name in fallbacks:
            validate_model_name(name, "fallback model name")
        check_usd("cost_usd", cost_usd, optional=True)
        t = self.tables.decisions
        values = {
            "chosen": chosen,
            "cost_usd": None if cost_usd is None else float(cost_usd),
            "fallbacks": encode_json("fallbacks", list(fallbacks)),
        }

        def update(conn: sa.Connection) -> None:
            done = conn.execute(t.update().where(t.c.decision_id == did).values(**values))
            if done.rowcount != 1:
                raise FeedbackError(
                    f"unknown decision id {did!r}: nothing to complete. Fix: pass the id of a "
                    "decision recorded in this store."
                )

        self._write(f"complete decision {did}", update)

    # -- comparisons ----------------------------------------------------------------------------
    def record_comparison(self, record: ComparisonRecord) -> int:
        """Store a comparison after checking the decisions it references.

        A comparison is one judgement per user and pair of answers: when the user already
        compared the same two routed answers (the same two decision ids, or the same decision
        and the same model's outside answer), the new comparison **replaces** the earlier one,
        in the same transaction. Comparisons of two answers the router did not produce are
        all kept (nothing identifies the answers).

        Returns:
            The user's new version.

        Raises:
            FeedbackError: A field is invalid, a referenced decision is unknown, belongs to
                another user or answers another query. Nothing is stored then.
            StoreError: The comparison id is already stored, or the database failed.
        """
        validate_comparison(record)
        c = self.tables.comparisons

        def insert(conn: sa.Connection) -> int:
            version = self._tick(conn)  # first: serialises writers, so a repeat is always seen
            self._check_references(conn, record)
            if conn.execute(
                sa.select(c.c.comparison_id).where(c.c.comparison_id == record.comparison_id)
            ).first():
                raise StoreError(
                    f"comparison {record.comparison_id} is already stored; comparison ids must "
                    "be unique (use new_id()). Nothing was written."
                )
            earlier = self._same_judgement(conn, record)
            if earlier:
                conn.execute(c.delete().where(c.c.comparison_id.in_(earlier)))
                logger.info(
                    "user %s compared the same answers again: comparison %s replaces %s",
                    excerpt(record.user_id),
                    record.comparison_id,
                    ", ".join(earlier),
                )
            conn.execute(c.insert().values(**self._comparison_values(record)))
            self._set_user_version(conn, record.user_id, version)
            return version

        return self._write("record a comparison", insert)

    def _comparison_values(self, record: ComparisonRecord) -> dict[str, Any]:
        return {
            "comparison_id": record.comparison_id,
            "user_id": record.user_id,
            "created_at": float(record.created_at),
            "winner": record.winner,
            "loser": record.loser,
            "winner_cost_usd": float(record.winner_cost_usd),
            "loser_cost_usd": float(record.loser_cost_usd),
            "query_hash": record.query_hash,
            "embedding": self._emb(record.embedding),
            "prompt_tokens": int(record.prompt_tokens),
            "source": record.source,
            "winner_decision_id": record.winner_decision_id,
            "loser_decision_id": record.loser_decision_id,
        }

    def _check_references(self, conn: sa.Connection, record: ComparisonRecord) -> None:
        """Refuse a comparison whose decisions are unknown, another user's, or another query's."""
        d = self.tables.decisions
        for role in ("winner", "loser"):
            did = getattr(record, f"{role}_decision_id")
            if did is None:
                continue
            row = conn.execute(
                sa.select(d.c.user_id, d.c.query_hash).where(d.c.decision_id == did)
            ).first()
            if row is None:
                raise FeedbackError(
                    f"unknown decision id {did!r} for the {role}: no such routing decision "
                    "is stored. Fix: use the decision_id from the response metadata of a "
                    "call routed with this store."
                )
            if row.user_id != record.user_id:
                raise FeedbackError(
                    f"decision {did} (the {role}) belongs to another user; a comparison for "
                    f"user {excerpt(record.user_id)} may only reference that user's decisions."
                )
            if row.query_hash != record.query_hash:
                raise FeedbackError(
                    f"decision {did} (the {role}) answered another query; a comparison is "
                    "between two answers to the same query."
                )

    def _same_judgement(self, conn: sa.Connection, record: ComparisonRecord) -> list[str]:
        """Ids of the user's earlier comparisons of the same two answers (see record_comparison)."""
        if record.winner_decision_id is None and record.loser_decision_id is None:
            return []
        c = self.tables.comparisons

        def sides(w_id: str | None, w: str, l_id: str | None, lose: str) -> frozenset[str]:
            return frozenset(
                (f"d:{w_id}" if w_id else f"m:{w}", f"d:{l_id}" if l_id else f"m:{lose}")
            )

        wanted = sides(
            record.winner_decision_id, record.winner, record.loser_decision_id, record.loser
        )
        rows = conn.execute(
            sa.select(
                c.c.comparison_id,
                c.c.winner,
                c.c.loser,
                c.c.winner_decision_id,
                c.c.loser_decision_id,
            ).where(c.c.user_id == record.user_id, c.c.query_hash == record.query_hash)
        ).all()
        return [
            r.comparison_id
            for r in rows
            if sides(r.winner_decision_id, r.winner, r.loser_decision_id, r.loser) == wanted
        ]

    def _set_user_version(self, conn: sa.Connection, user_id: str, version: int) -> None:
        users = self.tables.users
        now = time.time()
        done = conn.execute(
            users.update().where(users.c.user_id == user_id).values(version=version, updated_at=now)
        )
        if done.rowcount == 0:
            conn.execute(users.insert().values(user_id=user_id, version=version, updated_at=now))

    def comparisons(self, user_id: str) -> list[ComparisonRecord]:
        """A user's comparisons, oldest first."""
        uid = validate_user_id(user_id)
        c = self.tables.comparisons
        rows = self._read(
            "read comparisons",
            lambda conn: conn.execute(
                sa.select(c).where(c.c.user_id == uid).order_by(c.c.created_at, c.c.comparison_id)
            ).all(),
        )
        return [rec for rec in map(self._readable(self._comparison_from_row), rows) if rec]

    def recent_queries(self, user_id: str, limit: int = RECENT_TRAFFIC) -> list[RecentQuery]:
        """The queries of the user's last ``limit`` routed decisions, newest first.

        An unreadable row is skipped with a logged warning, as in every other read.
        """
        uid = validate_user_id(user_id)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ConfigError(f"limit must be an integer >= 0, got {limit!r}.")
        d = self.tables.decisions
        rows = self._read(
            "read recent decisions",
            lambda conn: conn.execute(
                sa.select(
                    d.c.decision_id, d.c.embedding, d.c.prompt_tokens, d.c.chosen, d.c.cost_usd
                )
                .where(d.c.user_id == uid)
                .order_by(d.c.created_at.desc(), d.c.decision_id.desc())
                .limit(limit)
            ).all(),
        )
        return [q for q in map(self._readable(self._recent_from_row), rows) if q is not None]

    def _recent_from_row(self, row: Any) -> RecentQuery:
        try:
            cost = None if row.cost_usd is None else float(row.cost_usd)
            return RecentQuery(
                self._vec(row.embedding),
                int(row.prompt_tokens),
                str(row.chosen),
                cost if cost is not None and np.isfinite(cost) and cost >= 0 else None,
            )
        except (TypeError, ValueError) as exc:
            raise UnreadableRowError(self._unreadable("decision", row.decision_id, exc)) from exc

    # -- versions and cache ---------------------------------------------------------------------
    def user_version(self, user_id: str) -> int:
        """The user's version (0 when the user has no comparisons)."""
        uid = validate_user_id(user_id)
        u = self.tables.users
        version = self._read(
            "read a user version",
            lambda conn: conn.execute(
                sa.select(u.c.version).where(u.c.user_id == uid)
            ).scalar_one_or_none(),
        )
        return int(version or 0)

    @staticmethod
    def _router_id(router_id: str) -> str:
        if not isinstance(router_id, str) or not 0 < len(router_id) <= 64:
            raise FeedbackError(f"router id must be 1-64 characters, got {excerpt(router_id)}.")
        return router_id

    def cached_preference(self, user_id: str, router_id: str) -> tuple[int, dict[str, Any]] | None:
        """Cached state for (user, router) with the version it was computed at, or None."""
        uid = validate_user_id(user_id)
        rid = self._router_id(router_id)
        t = self.tables.cache
        row = self._read(
            "read a cached preference",
            lambda conn: conn.execute(
                sa.select(t.c.version, t.c.state).where(t.c.user_id == uid, t.c.router_id == rid)
            ).first(),
        )
        if row is None:
            return None
        try:
            state = json.loads(row.state)
        except json.JSONDecodeError:
            logger.warning("unreadable cached preference of %s; it will be recomputed", uid)
            return None
        return int(row.version), state

    def cache_preference(
        self, user_id: str, router_id: str, version: int, state: dict[str, Any]
    ) -> None:
        """Cache a preference computed at ``version``, unless the user has moved on since."""
        uid = validate_user_id(user_id)
        rid = self._router_id(router_id)
        if isinstance(version, bool) or not isinstance(version, int) or version <= 0:
            return  # version 0 is the prior: nothing to cache
        try:
            payload = json.dumps(state, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise FeedbackError(f"preference state is not JSON-serialisable ({exc}).") from exc
        t, u = self.tables.cache, self.tables.users

        def upsert(conn: sa.Connection) -> None:
            # Lock the user's row: a concurrent delete_user either waits for this cache row (and
            # then deletes it) or has already removed the user (and nothing is cached).
            current = conn.execute(
                sa.select(u.c.version).where(u.c.user_id == uid).with_for_update()
            ).scalar_one_or_none()
            if current != version:
                return
            now = time.time()
            done = conn.execute(
                t.update()
                .where(t.c.user_id == uid, t.c.router_id == rid)
                .values(version=version, state=payload, updated_at=now)
            )
            if done.rowcount == 0:
                conn.execute(
                    t.insert().values(
                        user_id=uid, router_id=rid, version=version, state=payload, updated_at=now
                    )
                )

        try:
            self._write("cache a preference", upsert)
        except StoreError as exc:
            if isinstance(exc.__cause__, sa.exc.IntegrityError):
                logger.debug("preference cache race for %s; another process cached it", uid)
                return
            raise

    # -- retention and export -------------------------------------------------------------------
    def export_user(self, user_id: str) -> Iterator[dict[str, Any]]:
        """Every stored row about the user, as JSON-ready dicts with a ``type`` key.

        Types: ``user`` (the version), ``decision``, ``comparison``, ``preference_cache``,
        ``spend`` (charged calls), ``team_membership``; read from one consistent snapshot.
        """
        uid = validate_user_id(user_id)
        tables = (
            ("user", self.tables.users),
            ("decision", self.tables.decisions),
            ("comparison", self.tables.comparisons),
            ("preference_cache", self.tables.cache),
            ("spend", self.tables.spend),
            ("team_membership", self.tables.team_members),
        )

        def converter(kind: str) -> Callable[[Any], dict[str, Any]]:
            def convert(row: Any) -> dict[str, Any]:
                data = dict(row._mapping)
                unreadable = []  # a data-access export carries every row, even a damaged one
                if "embedding" in data:
                    try:
                        data["embedding"] = [float(v) for v in self._vec(data["embedding"])]
                    except ValueError:
                        data["embedding"] = bytes(data["embedding"]).hex()
                        unreadable.append("embedding")
                for key in ("candidates", "scores", "fallbacks", "metadata", "state"):
                    if isinstance(data.get(key), str):
                        try:
                            data[key] = json.loads(data[key])
                        except ValueError:
                            unreadable.append(key)  # kept as the stored text
                if unreadable:
                    data["unreadable"] = unreadable
                for key in ("forced", "is_estimate"):
                    if key in data:
                        data[key] = bool(data[key])
                return {"type": kind, **data}

            return convert

        queries = []
        for kind, table in tables:
            order = [table.c.created_at] if "created_at" in table.c else []
            query = sa.select(table).where(table.c.user_id == uid).order_by(*order)
            queries.append((query, converter(kind)))
        yield from self._stream(f"export user {excerpt(uid)}", queries)

    def _readable(
        self, convert: Callable[[Any], T], skipped: list[str] | None = None
    ) -> Callable[[Any], T | None]:
        """``convert``, but an unreadable row is logged, noted in ``skipped`` and gives None."""

        def safe(row: Any) -> T | None:
            try:
                return convert(row)
            except UnreadableRowError as exc:
                logger.warning("skipping a row: %s", exc)
                if skipped is not None:
                    skipped.append(str(exc))
                return None

        return safe

    def iter_records(
        self, *, skipped: list[str] | None = None
    ) -> Iterator[DecisionRecord | ComparisonRecord]:
        """Every decision, then every comparison, oldest first, from one snapshot (streamed).

        Args:
            skipped: Collects a message per row that could not be decoded (such rows are
                skipped with a logged warning, never fatal).
        """
        d, c = self.tables.decisions, self.tables.comparisons
        queries: list[tuple[sa.Select[Any], Callable[[Any], Any]]] = [
            (
                sa.select(d).order_by(d.c.created_at, d.c.decision_id),
                self._readable(self._decision_from_row, skipped),
            ),
            (
                sa.select(c).order_by(c.c.created_at, c.c.comparison_id),
                self._readable(self._comparison_from_row, skipped),
            ),
        ]
        for rec in self._stream("export the dataset", queries):
            if rec is not None:
                yield rec

    def export_comparisons(
        self, path: str | os.PathLike[str], *, include_metadata: bool = False
    ) -> dict[str, int]:
        """Write every decision and comparison as a ``metarouter-feedback`` JSONL dataset.

        See :mod:`metarouter.store.export` (and docs/store.md) for the format; read it back
        with :func:`~metarouter.store.export.load_comparison_export`.

        Args:
            path: Output file (replaced atomically).
            include_metadata: Also write decisions' run ids and free-form metadata.

        Returns:
            Rows written: ``{"decisions": ..., "comparisons": ..., "unreadable": ...}``; rows
            that could not be decoded are left out, each with a logged warning.
        """
        from metarouter.store.export import write_dataset

        target = check_output_path(path, self.files(), force=True)
        skipped: list[str] = []
        counts = write_dataset(
            target,
            self.iter_records(skipped=skipped),
            schema_version=SCHEMA_VERSION,
            include_metadata=include_metadata,
        )
        return {**counts, "unreadable": len(skipped)}

    def delete_user(self, user_id: str) -> int:
        """Delete everything about a user in one transaction (right to be forgotten).

        Returns:
            The number of rows deleted (0 for an unknown user).
        """
        uid = validate_user_id(user_id)
        t = self.tables

        def delete(conn: sa.Connection) -> int:
            self._tick(conn)  # serialise with comparison writers of any user
            n = 0
            for table in (t.users, t.cache, t.comparisons, t.decisions, t.team_members):
                n += conn.execute(table.delete().where(table.c.user_id == uid)).rowcount
            spent = sa.select(t.spend.c.spend_id).where(t.spend.c.user_id == uid)
            n += conn.execute(
                t.spend_charges.delete().where(t.spend_charges.c.spend_id.in_(spent))
            ).rowcount
            n += conn.execute(t.spend.delete().where(t.spend.c.user_id == uid)).rowcount
            for table in (t.budgets, t.budget_periods):  # the user's own budget
                n += conn.execute(
                    table.delete().where(table.c.scope == "user", table.c.name == uid)
                ).rowcount
            return n

        deleted = self._write(f"delete user {excerpt(uid)}", delete)
        if self.dialect == "sqlite" and self.path is not None:
            self.checkpoint()
        logger.info("deleted %d rows of user %s from %s", deleted, excerpt(uid), self.url)
        return deleted

    def files(self) -> list[Path]:
        """The SQLite database file and its ``-wal``, ``-shm`` and ``-journal`` files."""
        return store_files(self.path) if self.path is not None else []

    def checkpoint(self, attempts: int = 10) -> bool:
        """SQLite: copy the write-ahead log into the database file and empty it.

        Called after :meth:`delete_user`: with ``secure_delete`` on (always, in this store) the
        deleted rows are zeroed in the database pages, and emptying the ``-wal`` file removes
        the older copies of those pages, so no trace of the user is left in any store file.
        A reader in another process can hold the log open; then this retries for a moment and
        logs a warning if it still cannot finish (the next checkpoint completes it).

        Returns:
            Whether the log is now empty (always True on PostgreSQL, which has no such file).
        """
        if self.dialect != "sqlite" or self.path is None:
            return True
        self._ensure()
        for attempt in range(attempts):
            raw = self.engine.raw_connection()  # no transaction: a checkpoint runs outside one
            try:
                cursor = raw.cursor()
                busy = cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                cursor.close()
            except sqlite3.Error as exc:
                logger.warning("%s: could not checkpoint the write-ahead log: %s", self.url, exc)
                return False
            finally:
                raw.close()
            if busy is not None and busy[0] == 0:
                return True
            time.sleep(0.05 * (attempt + 1))
        logger.warning(
            "%s: another connection kept the write-ahead log busy; deleted rows may stay in "
            "its -wal file until the next checkpoint (SQLStore.checkpoint(), run by every "
            "delete).",
            self.url,
        )
        return False

    # -- maintenance ----------------------------------------------------------------------------
    def prune(self, retention: Retention | None = None, *, now: float | None = None) -> int:
        """Delete the routing decisions ``retention`` (default: the store's) no longer keeps.

        Comparisons are kept, and so is every decision a comparison references. Deletes in
        batches of short transactions, so routing in other processes goes on meanwhile.

        Returns:
            The number of decisions deleted.

        Raises:
            ConfigError: No retention given and none set on the store.
            StoreError: The database failed (batches already done stay done).
        """
        retention = retention or self.retention
        if retention is None:
            raise ConfigError(
                "no retention setting: pass prune(Retention(max_age_days=...)) or create the "
                "store with SQLStore(..., retention=Retention(...))."
            )
        total = 0
        while True:
            n = self._write(
                "prune old decisions",
                lambda conn: prune_batch(conn, self.tables, retention, now=now),
            )
            total += n
            if n < PRUNE_BATCH:
                break
        logger.info("pruned %d decisions from %s", total, self.url)
        return total

    def vacuum(self) -> None:
        """Give the space of deleted rows back (SQLite ``VACUUM``; PostgreSQL ``VACUUM``).

        Takes a while on a large store, and SQLite holds the write lock meanwhile.

        Raises:
            StoreError: The database failed (or is busy).
        """
        self._ensure()
        try:
            if self.dialect == "sqlite":
                raw = self.engine.raw_connection()
                try:
                    raw.cursor().execute("VACUUM")
                finally:
                    raw.close()
                self.checkpoint()
                return
            with self.engine.connect() as conn:
                auto = conn.execution_options(isolation_level="AUTOCOMMIT")
                for table in self.tables.metadata.sorted_tables:
                    auto.exec_driver_sql(f"VACUUM {table.name}")
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(self._explain("vacuum the store", exc)) from exc
        except sqlite3.Error as exc:
            raise StoreError(f"{self.url}: could not vacuum the store: {exc}.") from exc

    def backup(self, out: str | os.PathLike[str], *, force: bool = False) -> int:
        """Write a consistent copy of a SQLite store to ``out`` while it is in use.

        Uses SQLite's online backup API, so commits still in the write-ahead log are included
        (a plain ``cp`` of the database file misses them). The copy is a single self-contained
        file; open it with ``SQLStore(out)``.

        Args:
            out: The backup file (written to a temporary name, then renamed into place).
            force: Replace ``out`` if it exists.

        Returns:
            The size of the backup in bytes.

        Raises:
            ConfigError: ``out`` is the store itself, exists (without ``force``), or the store is
                on PostgreSQL (the message gives the ``pg_dump`` command to use instead).
            StoreError: The copy failed; nothing was written.
        """
        if self.dialect != "sqlite" or self.path is None:
            if self.dialect == "postgresql":
                raise ConfigError(
                    "a PostgreSQL store is backed up with PostgreSQL's own tools, e.g.: "
                    f"{pg_dump_command(self.engine.url, out)} (the password comes from "
                    "PGPASSWORD or ~/.pgpass); restore with pg_restore. See docs/store.md."
                )
            raise ConfigError("an in-memory store has nothing to back up.")
        target = check_output_path(out, self.files(), force=force)
        self._ensure()
        raw = self.engine.raw_connection()
        try:
            size = sqlite_backup(raw.driver_connection, target)  # type: ignore[arg-type]
        finally:
            raw.close()
        logger.info("backed %s up to %s (%d bytes)", self.url, target, size)
        return size

    def import_records(
        self, records: Iterable[DecisionRecord | ComparisonRecord]
    ) -> dict[str, int]:
        """Store exported decisions and comparisons (rebuilding a store from an export).

        All in one transaction: if any row is refused, nothing is imported. Rows whose id is
        already stored are skipped (so importing the same file twice changes nothing);
        comparisons keep their ids, times and sources, and each user with imported comparisons
        gets a new version (cached preferences are recomputed).

        Returns:
            ``{"decisions": ..., "comparisons": ..., "skipped": ...}`` (rows stored, rows
            already present).

        Raises:
            FeedbackError: A row is invalid or a comparison references an unknown decision.
            StoreError: A run id clashes with another stored decision, or the database failed.
        """
        decisions: list[DecisionRecord] = []
        comparisons: list[ComparisonRecord] = []
        for rec in records:
            if isinstance(rec, DecisionRecord):
                validate_decision(rec)
                decisions.append(rec)
            else:
                validate_comparison(rec)
                comparisons.append(rec)
        d, c = self.tables.decisions, self.tables.comparisons

        def existing(conn: sa.Connection, column: sa.Column[Any], ids: list[str]) -> set[str]:
            found: set[str] = set()
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                found.update(conn.execute(sa.select(column).where(column.in_(chunk))).scalars())
            return found

        def load(conn: sa.Connection) -> dict[str, int]:
            counts = {"decisions": 0, "comparisons": 0, "skipped": 0}
            have = existing(conn, d.c.decision_id, [r.decision_id for r in decisions])
            for rec in decisions:
                if rec.decision_id in have:
                    counts["skipped"] += 1
                    continue
                if (
                    rec.run_id is not None
                    and conn.execute(
                        sa.select(d.c.decision_id).where(d.c.run_id == rec.run_id)
                    ).first()
                ):
                    raise StoreError(
                        f"decision {rec.decision_id}: its run id {excerpt(rec.run_id)} belongs "
                        "to another stored decision. Nothing was imported."
                    )
                conn.execute(d.insert().values(**self._decision_values(rec)))
                have.add(rec.decision_id)
                counts["decisions"] += 1
            have_c = existing(conn, c.c.comparison_id, [r.comparison_id for r in comparisons])
            users: set[str] = set()
            for rec_c in comparisons:
                if rec_c.comparison_id in have_c:
                    counts["skipped"] += 1
                    continue
                self._check_references(conn, rec_c)
                conn.execute(c.insert().values(**self._comparison_values(rec_c)))
                have_c.add(rec_c.comparison_id)
                users.add(rec_c.user_id)
                counts["comparisons"] += 1
            for user in sorted(users):
                self._set_user_version(conn, user, self._tick(conn))
            return counts

        counts = self._write("import records", load)
        logger.info("imported %s into %s", counts, self.url)
        return counts

    # -- spend budgets (see metarouter.budgets and metarouter.store.spend) ---------------------
    def set_budget(self, budget: Budget, *, now: float | None = None) -> None:
        """Create or replace the budget of ``budget``'s scope (one transaction)."""
        from metarouter.store import spend

        at = time.time() if now is None else float(now)
        self._write(
            f"set the {budget.label()} budget",
            lambda conn: spend.set_budget(conn, self.tables, budget, at),
        )

    def get_budget(self, scope: str, name: str) -> Budget | None:
        """The budget of a scope, if set."""
        from metarouter.store.spend import budget_from_row

        b = self.tables.budgets
        row = self._read(
            "read a budget",
            lambda conn: conn.execute(
                sa.select(b).where(b.c.scope == scope, b.c.name == name)
            ).first(),
        )
        return None if row is None else budget_from_row(row)

    def budgets(self) -> list[Budget]:
        """Every stored budget."""
        from metarouter.store.spend import budget_from_row

        b = self.tables.budgets
        rows = self._read("list budgets", lambda conn: conn.execute(sa.select(b)).all())
        return [budget_from_row(r) for r in rows]

    def delete_budget(self, scope: str, name: str) -> bool:
        """Remove a scope's budget and its period totals (the spend ledger stays)."""
        from metarouter.store import spend

        return self._write(
            "delete a budget", lambda conn: spend.delete_budget(conn, self.tables, scope, name)
        )

    def reset_budget(self, scope: str, name: str, *, now: float | None = None) -> float:
        """Start a budget's current period afresh; returns what it had spent.

        Raises:
            ConfigError: The scope has no budget.
        """
        from metarouter.store import spend

        budget = self.get_budget(scope, name)
        if budget is None:
            raise ConfigError(
                f"there is no {scope} budget for {excerpt(name)} to reset. Fix: check the "
                "scope and name with `metarouter budget show`."
            )
        at = time.time() if now is None else float(now)
        return self._write(
            f"reset the {budget.label()} budget",
            lambda conn: spend.reset_budget(conn, self.tables, budget, at),
        )

    def set_team(self, team: str, members: Sequence[str]) -> None:
        """Replace the members of ``team`` (an empty list removes it)."""
        from metarouter.store import spend

        users = [validate_user_id(m) for m in members]
        self._write(
            f"set the members of team {excerpt(team)}",
            lambda conn: spend.set_team(conn, self.tables, team, users),
        )

    def teams(self) -> dict[str, list[str]]:
        """Every team and its members."""
        m = self.tables.team_members
        rows = self._read(
            "list teams",
            lambda conn: conn.execute(sa.select(m).order_by(m.c.team, m.c.user_id)).all(),
        )
        out: dict[str, list[str]] = {}
        for row in rows:
            out.setdefault(row.team, []).append(row.user_id)
        return out

    def budget_states(
        self, user_id: str | None, *, now: float | None = None, pacing: Pacing | None = None
    ) -> list[BudgetState]:
        """The active budgets (of ``user_id``, or all) and their current period.

        With ``pacing``, a period without a charge yet shows the multiplier it inherits.
        """
        from metarouter.store import spend

        at = time.time() if now is None else float(now)
        uid = None if user_id is None else validate_user_id(user_id)
        return self._read(
            "read budgets", lambda conn: spend.budget_states(conn, self.tables, uid, at, pacing)
        )

    def record_spend(
        self, record: SpendRecord, *, pacing: Pacing, attempts: int = CHARGE_ATTEMPTS
    ) -> list[BudgetState]:
        """Charge one call to its user's active budgets, atomically; returns their new states.

        Nothing is written when no budget applies. Each attempt is one transaction (all or
        nothing; PostgreSQL serialisation failures and deadlocks are retried inside it like
        every write). A failed attempt is tried again, up to ``attempts`` in all, after
        ``CHARGE_BACKOFF_SECONDS`` (doubled each time): a charge is not dropped for a lock held
        too long or a dropped connection. If a retry finds the call already charged (an earlier
        attempt was committed but its answer was lost), that charge stands; it is not doubled.

        Raises:
            StoreError: The spend id was already charged before this call (nothing written).
            ChargeError: Every attempt failed; nothing was written for the call.
        """
        from metarouter.store import spend

        validate_user_id(record.user_id)
        validate_model_name(record.model)
        check_usd("the charged cost", record.cost_usd)
        action = f"charge call {record.spend_id}"
        attempts = max(1, int(attempts))
        for attempt in range(1, attempts + 1):
            try:
                return self._write(
                    action, lambda conn: spend.record_spend(conn, self.tables, record, pacing)
                )
            except StoreError as exc:
                if isinstance(exc.__cause__, sa.exc.IntegrityError):
                    if attempt == 1:
                        raise  # charged before this call: a duplicate, refused
                    logger.warning("%s: %s was committed by an earlier attempt", self.url, action)
                    return self.budget_states(record.user_id, now=record.created_at, pacing=pacing)
                if self.read_only or attempt == attempts:
                    raise ChargeError(
                        f"could not charge call {record.spend_id} ({record.cost_usd:.6f} USD, "
                        f"user {excerpt(record.user_id)}, model {excerpt(record.model)}) to its "
                        f"spend budgets after {attempt} attempt(s): {exc} No ledger, charge or "
                        "period row was written for it, so the budgets do not count it. Fix the "
                        "store, then charge it again: Budgets.charge("
                        f"{record.spend_id!r}, {record.user_id!r}, {record.model!r}, "
                        f"{record.cost_usd!r}, is_estimate={record.is_estimate})."
                    ) from exc
                wait = CHARGE_BACKOFF_SECONDS * 2 ** (attempt - 1)
                logger.warning(
                    "%s: %s failed (attempt %d of %d), retrying in %.2fs: %s",
                    self.url,
                    action,
                    attempt,
                    attempts,
                    wait,
                    exc,
                )
                time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def spend_history(
        self, scope: str, name: str, *, since: float | None = None, until: float | None = None
    ) -> list[SpendRecord]:
        """The calls charged to a scope's budget, oldest first."""
        from metarouter.store import spend

        return self._read(
            "read the spend ledger",
            lambda conn: spend.spend_history(conn, self.tables, scope, name, since, until),
        )

    # -- inspection -----------------------------------------------------------------------------
    def users(self) -> list[str]:
        """All users with decisions or comparisons."""
        d, c = self.tables.decisions, self.tables.comparisons
        query = sa.union(sa.select(d.c.user_id), sa.select(c.c.user_id))
        ids = self._read("list users", lambda conn: conn.execute(query).scalars().all())
        return sorted(ids)

    def stats(self) -> dict[str, Any]:
        """Backend, location, schema version and row counts."""
        t = self.tables

        def count(conn: sa.Connection) -> dict[str, int]:
            def n(table: sa.Table) -> int:
                return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())

            users = sa.union(sa.select(t.decisions.c.user_id), sa.select(t.comparisons.c.user_id))
            return {
                "users": int(
                    conn.execute(
                        sa.select(sa.func.count()).select_from(users.subquery())
                    ).scalar_one()
                ),
                "users_with_feedback": n(t.users),
                "decisions": n(t.decisions),
                "comparisons": n(t.comparisons),
                "cached_preferences": n(t.cache),
                "budgets": n(t.budgets),
                "charged_calls": n(t.spend),
            }

        counts = self._read("count rows", count)
        return {
            "backend": self.dialect,
            "url": self.url,
            "schema_version": SCHEMA_VERSION,
            **counts,
        }

    def close(self) -> None:
        """Close pooled connections (the store reopens them if used again)."""
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"SQLStore({self.url!r})"
