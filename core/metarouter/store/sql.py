"""SQL preference store (SQLAlchemy Core): SQLite by default, PostgreSQL for many processes.

* SQLite: a file path or ``sqlite:///path.db``; WAL journal, ``BEGIN IMMEDIATE`` write
  transactions, a busy timeout, foreign keys on. Good for one machine, several processes.
* PostgreSQL: ``postgresql+psycopg://user@host/db`` (install ``metarouter[postgres]``); for
  several app instances and machines.

The schema is created (and migrated) on first use; its version lives in ``metarouter_schema``.
Every statement is parameterised; embeddings are raw float32 bytes, lists and dicts JSON; nothing
is ever unpickled.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from metarouter.errors import ConfigError, DependencyError, FeedbackError, StoreError
from metarouter.store.base import PreferenceStore
from metarouter.store.records import (
    ComparisonRecord,
    DecisionRecord,
    validate_decision_id,
    validate_user_id,
)

__all__ = ["SCHEMA_VERSION", "SQLStore"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


def _url(target: str | os.PathLike[str]) -> str:
    text = str(target)
    if "://" in text:
        return text
    path = Path(text).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


class SQLStore(PreferenceStore):
    """A :class:`PreferenceStore` on SQLite or PostgreSQL.

    Args:
        target: A SQLite file path, or a SQLAlchemy URL (``sqlite:///...``,
            ``postgresql+psycopg://...``).
        busy_timeout: Seconds a SQLite writer waits for the lock.
        echo: Log SQL statements.

    Example:
        >>> store = SQLStore("~/.local/share/myapp/metarouter.db")  # doctest: +SKIP
    """

    def __init__(
        self, target: str | os.PathLike[str], *, busy_timeout: float = 30.0, echo: bool = False
    ) -> None:
        try:
            import sqlalchemy as sa
        except ImportError as exc:  # pragma: no cover - core dependency
            raise DependencyError("SQLAlchemy is required: pip install metarouter") from exc
        self._sa = sa
        self.url = _url(target)
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": busy_timeout, "check_same_thread": False}
        try:
            self.engine = sa.create_engine(self.url, **kwargs)
        except ImportError as exc:
            raise DependencyError(
                f"the database driver for {self.url.split('://')[0]!r} is missing. Fix: pip "
                "install 'metarouter[postgres]' for PostgreSQL."
            ) from exc
        except sa.exc.ArgumentError as exc:
            raise ConfigError(f"invalid store URL {self.url!r}: {exc}") from exc
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            self._setup_sqlite(busy_timeout)
        self._define_tables()
        self._migrate()

    # -- setup ----------------------------------------------------------------------------------
    def _setup_sqlite(self, busy_timeout: float) -> None:
        sa = self._sa

        @sa.event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" event issue BEGIN
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            cur.close()

        @sa.event.listens_for(self.engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    def _define_tables(self) -> None:
        sa = self._sa
        md = sa.MetaData()
        self.t_schema = sa.Table(
            "metarouter_schema", md, sa.Column("version", sa.Integer, nullable=False)
        )
        self.t_users = sa.Table(
            "metarouter_users",
            md,
            sa.Column("user_id", sa.String(128), primary_key=True),
            sa.Column("version", sa.Integer, nullable=False),
            sa.Column("updated_at", sa.Float, nullable=False),
        )
        self.t_decisions = sa.Table(
            "metarouter_decisions",
            md,
            sa.Column("decision_id", sa.String(32), primary_key=True),
            sa.Column("user_id", sa.String(128), nullable=False, index=True),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("query_hash", sa.String(64), nullable=False),
            sa.Column("embedding", sa.LargeBinary, nullable=False),
            sa.Column("prompt_tokens", sa.Integer, nullable=False),
            sa.Column("candidates", sa.Text, nullable=False),
            sa.Column("scores", sa.Text, nullable=False),
            sa.Column("chosen", sa.String(256), nullable=False),
            sa.Column("expected_cost_usd", sa.Float, nullable=False),
            sa.Column("cost_usd", sa.Float, nullable=True),
            sa.Column("run_id", sa.String(64), nullable=True, unique=True),
            sa.Column("forced", sa.Boolean, nullable=False),
            sa.Column("fallbacks", sa.Text, nullable=False),
            sa.Column("metadata", sa.Text, nullable=False),
        )
        self.t_comparisons = sa.Table(
            "metarouter_comparisons",
            md,
            sa.Column("comparison_id", sa.String(32), primary_key=True),
            sa.Column("user_id", sa.String(128), nullable=False, index=True),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("winner", sa.String(256), nullable=False),
            sa.Column("loser", sa.String(256), nullable=False),
            sa.Column("winner_cost_usd", sa.Float, nullable=False),
            sa.Column("loser_cost_usd", sa.Float, nullable=False),
            sa.Column("query_hash", sa.String(64), nullable=False),
            sa.Column("embedding", sa.LargeBinary, nullable=False),
            sa.Column("prompt_tokens", sa.Integer, nullable=False),
            sa.Column("source", sa.String(32), nullable=False),
            sa.Column(
                "winner_decision_id",
                sa.String(32),
                sa.ForeignKey("metarouter_decisions.decision_id", ondelete="CASCADE"),
                nullable=True,
            ),
            sa.Column(
                "loser_decision_id",
                sa.String(32),
                sa.ForeignKey("metarouter_decisions.decision_id", ondelete="CASCADE"),
                nullable=True,
            ),
        )
        self.t_cache = sa.Table(
            "metarouter_preference_cache",
            md,
            sa.Column("user_id", sa.String(128), primary_key=True),
            sa.Column("router_id", sa.String(64), primary_key=True),
            sa.Column("version", sa.Integer, nullable=False),
            sa.Column("state", sa.Text, nullable=False),
            sa.Column("updated_at", sa.Float, nullable=False),
        )
        self.metadata = md

    def _migrate(self) -> None:
        sa = self._sa
        try:
            with self.engine.begin() as conn:
                self.metadata.create_all(conn)
                row = conn.execute(sa.select(self.t_schema.c.version)).first()
                if row is None:
                    conn.execute(self.t_schema.insert().values(version=SCHEMA_VERSION))
                elif row.version > SCHEMA_VERSION:
                    raise StoreError(
                        f"{self._where()}: schema version {row.version} is newer than this "
                        f"metarouter ({SCHEMA_VERSION}). Fix: upgrade metarouter."
                    )
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"{self._where()}: could not open the store ({exc}).") from exc

    def _where(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    # -- helpers --------------------------------------------------------------------------------
    def _write(self) -> Any:
        return self.engine.begin()

    @staticmethod
    def _emb(vec: np.ndarray) -> bytes:
        arr = np.asarray(vec, dtype="<f4")
        if arr.ndim != 1 or not np.isfinite(arr).all():
            raise FeedbackError("query embedding must be a finite 1-d vector.")
        return arr.tobytes()

    @staticmethod
    def _vec(raw: bytes) -> np.ndarray:
        return np.frombuffer(bytes(raw), dtype="<f4").copy()

    def _decision_from_row(self, row: Any) -> DecisionRecord:
        return DecisionRecord(
            decision_id=row.decision_id,
            user_id=row.user_id,
            query_hash=row.query_hash,
            embedding=self._vec(row.embedding),
            prompt_tokens=row.prompt_tokens,
            candidates=tuple(json.loads(row.candidates)),
            scores=json.loads(row.scores),
            chosen=row.chosen,
            expected_cost_usd=row.expected_cost_usd,
            cost_usd=row.cost_usd,
            run_id=row.run_id,
            forced=bool(row.forced),
            fallbacks=tuple(json.loads(row.fallbacks)),
            created_at=row.created_at,
            metadata=json.loads(row.metadata),
        )

    def _comparison_from_row(self, row: Any) -> ComparisonRecord:
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

    def _bump(self, conn: Any, user_id: str) -> int:
        now = time.time()
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        base = insert(self.t_users).values(user_id=user_id, version=1, updated_at=now)
        upsert = base.on_conflict_do_update(
            index_elements=[self.t_users.c.user_id],
            set_={"version": self.t_users.c.version + 1, "updated_at": now},
        ).returning(self.t_users.c.version)
        return int(conn.execute(upsert).scalar_one())

    # -- interface ------------------------------------------------------------------------------
    def record_decision(self, record: DecisionRecord) -> None:
        """Store a routing decision."""
        sa = self._sa
        validate_user_id(record.user_id)
        validate_decision_id(record.decision_id)
        try:
            with self._write() as conn:
                conn.execute(
                    self.t_decisions.insert().values(
                        decision_id=record.decision_id,
                        user_id=record.user_id,
                        created_at=record.created_at,
                        query_hash=record.query_hash,
                        embedding=self._emb(record.embedding),
                        prompt_tokens=int(record.prompt_tokens),
                        candidates=json.dumps(list(record.candidates)),
                        scores=json.dumps(dict(record.scores)),
                        chosen=record.chosen,
                        expected_cost_usd=float(record.expected_cost_usd),
                        cost_usd=record.cost_usd,
                        run_id=record.run_id,
                        forced=bool(record.forced),
                        fallbacks=json.dumps(list(record.fallbacks)),
                        metadata=json.dumps(dict(record.metadata), default=str),
                    )
                )
        except sa.exc.IntegrityError as exc:
            raise StoreError(
                f"decision {record.decision_id} (run id {record.run_id}) already exists; ids "
                "and run ids must be unique. Nothing was written."
            ) from exc
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"could not record decision: {exc}. Nothing was written.") from exc

    def get_decision(self, decision_id: str) -> DecisionRecord:
        """The decision with this id."""
        did = validate_decision_id(decision_id)
        with self.engine.connect() as conn:
            row = conn.execute(
                self._sa.select(self.t_decisions).where(self.t_decisions.c.decision_id == did)
            ).first()
        if row is None:
            raise FeedbackError(
                f"unknown decision id {did!r}: no routing decision with this id is stored. Fix: "
                "pass the decision_id from response_metadata['metarouter'] of a call made "
                "with this store."
            )
        return self._decision_from_row(row)

    def find_decision(self, run_id: str) -> DecisionRecord | None:
        """The decision recorded with ``run_id``."""
        with self.engine.connect() as conn:
            row = conn.execute(
                self._sa.select(self.t_decisions).where(self.t_decisions.c.run_id == str(run_id))
            ).first()
        return None if row is None else self._decision_from_row(row)

    def complete_decision(
        self,
        decision_id: str,
        *,
        chosen: str,
        cost_usd: float | None,
        fallbacks: tuple[str, ...] = (),
    ) -> None:
        """Record the answering model, its real cost and failed models."""
        sa = self._sa
        did = validate_decision_id(decision_id)
        try:
            with self._write() as conn:
                done = conn.execute(
                    self.t_decisions.update()
                    .where(self.t_decisions.c.decision_id == did)
                    .values(chosen=chosen, cost_usd=cost_usd, fallbacks=json.dumps(list(fallbacks)))
                )
                if done.rowcount != 1:
                    raise FeedbackError(f"unknown decision id {did!r}.")
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"could not complete decision {did}: {exc}") from exc

    def record_comparison(self, record: ComparisonRecord) -> int:
        """Store a comparison after checking the decisions it references; returns new version."""
        sa = self._sa
        validate_user_id(record.user_id)
        try:
            with self._write() as conn:
                for role in ("winner", "loser"):
                    did = getattr(record, f"{role}_decision_id")
                    if did is None:
                        continue
                    owner = conn.execute(
                        sa.select(self.t_decisions.c.user_id).where(
                            self.t_decisions.c.decision_id == did
                        )
                    ).scalar_one_or_none()
                    if owner is None:
                        raise FeedbackError(f"unknown decision id {did!r} for the {role}.")
                    if owner != record.user_id:
                        raise FeedbackError(
                            f"decision {did} belongs to another user; a comparison may only "
                            f"reference decisions of user {record.user_id!r}."
                        )
                conn.execute(
                    self.t_comparisons.insert().values(
                        comparison_id=record.comparison_id,
                        user_id=record.user_id,
                        created_at=record.created_at,
                        winner=record.winner,
                        loser=record.loser,
                        winner_cost_usd=float(record.winner_cost_usd),
                        loser_cost_usd=float(record.loser_cost_usd),
                        query_hash=record.query_hash,
                        embedding=self._emb(record.embedding),
                        prompt_tokens=int(record.prompt_tokens),
                        source=record.source,
                        winner_decision_id=record.winner_decision_id,
                        loser_decision_id=record.loser_decision_id,
                    )
                )
                return self._bump(conn, record.user_id)
        except FeedbackError:
            raise
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"could not record comparison: {exc}. Nothing was written.") from exc

    def comparisons(self, user_id: str) -> list[ComparisonRecord]:
        """A user's comparisons, oldest first."""
        validate_user_id(user_id)
        t = self.t_comparisons
        with self.engine.connect() as conn:
            rows = conn.execute(
                self._sa.select(t)
                .where(t.c.user_id == user_id)
                .order_by(t.c.created_at, t.c.comparison_id)
            ).all()
        return [self._comparison_from_row(r) for r in rows]

    def user_version(self, user_id: str) -> int:
        """The user's version (0 if unknown)."""
        with self.engine.connect() as conn:
            v = conn.execute(
                self._sa.select(self.t_users.c.version).where(self.t_users.c.user_id == user_id)
            ).scalar_one_or_none()
        return int(v or 0)

    def cached_preference(self, user_id: str, router_id: str) -> tuple[int, dict[str, Any]] | None:
        """Cached state for (user, router), or None."""
        t = self.t_cache
        with self.engine.connect() as conn:
            row = conn.execute(
                self._sa.select(t.c.version, t.c.state).where(
                    t.c.user_id == user_id, t.c.router_id == router_id
                )
            ).first()
        if row is None:
            return None
        return int(row.version), json.loads(row.state)

    def cache_preference(
        self, user_id: str, router_id: str, version: int, state: dict[str, Any]
    ) -> None:
        """Upsert the cache row unless the user's version has moved past ``version``."""
        sa = self._sa
        now = time.time()
        payload = json.dumps(state)
        try:
            with self._write() as conn:
                current = conn.execute(
                    sa.select(self.t_users.c.version).where(self.t_users.c.user_id == user_id)
                ).scalar_one_or_none()
                if int(current or 0) != version:
                    return
                t = self.t_cache
                done = conn.execute(
                    t.update()
                    .where(t.c.user_id == user_id, t.c.router_id == router_id)
                    .values(version=version, state=payload, updated_at=now)
                )
                if done.rowcount == 0:
                    conn.execute(
                        t.insert().values(
                            user_id=user_id,
                            router_id=router_id,
                            version=version,
                            state=payload,
                            updated_at=now,
                        )
                    )
        except sa.exc.IntegrityError:
            logger.debug("preference cache race for %s; another writer cached it", user_id)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"could not cache preference: {exc}") from exc

    def export_user(self, user_id: str) -> Iterator[dict[str, Any]]:
        """Every stored row about the user, as JSON-ready dicts with a ``type`` key."""
        validate_user_id(user_id)
        sa = self._sa
        with self.engine.connect() as conn:
            for kind, table in (
                ("decision", self.t_decisions),
                ("comparison", self.t_comparisons),
                ("preference_cache", self.t_cache),
            ):
                for row in conn.execute(sa.select(table).where(table.c.user_id == user_id)):
                    data = dict(row._mapping)
                    if "embedding" in data:
                        data["embedding"] = self._vec(data["embedding"]).tolist()
                    for key in ("candidates", "scores", "fallbacks", "metadata", "state"):
                        if key in data and isinstance(data[key], str):
                            data[key] = json.loads(data[key])
                    yield {"type": kind, **data}

    def delete_user(self, user_id: str) -> int:
        """Delete all rows of the user in one transaction."""
        validate_user_id(user_id)
        sa = self._sa
        try:
            with self._write() as conn:
                n = 0
                for table in (self.t_cache, self.t_comparisons, self.t_decisions, self.t_users):
                    n += conn.execute(table.delete().where(table.c.user_id == user_id)).rowcount
                return n
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(
                f"could not delete user {user_id!r}: {exc}. Nothing was deleted."
            ) from exc

    def users(self) -> list[str]:
        """All users with decisions or comparisons."""
        sa = self._sa
        with self.engine.connect() as conn:
            a = conn.execute(sa.select(self.t_decisions.c.user_id).distinct()).scalars().all()
            b = conn.execute(sa.select(self.t_comparisons.c.user_id).distinct()).scalars().all()
        return sorted(set(a) | set(b))

    def close(self) -> None:
        """Dispose of the connection pool."""
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"SQLStore({self._where()!r})"
