"""Creation and migration of the SQL preference store's schema.

Every store records its schema version in the one-row table ``metarouter_schema``. Opening a
store (:func:`migrate`, called by :class:`~metarouter.store.sql.SQLStore` on first use) runs, in
**one transaction** holding a lock (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on
PostgreSQL, so concurrent processes migrate once):

* empty database: the version-1 baseline, then every step in :data:`MIGRATIONS`;
* version ``v`` older than :data:`~metarouter.store.schema.SCHEMA_VERSION`: the steps after ``v``;
* the current version: nothing;
* a newer version: :class:`~metarouter.errors.StoreError` (upgrade metarouter), nothing touched.

A failing step rolls the whole migration back: the store stays at its old version.

Adding a migration step (a schema change):

1. Change the tables in :mod:`metarouter.store.schema` and bump ``SCHEMA_VERSION`` to ``N``.
2. Write ``_to_vN(conn)`` here, which turns a version ``N-1`` database into version ``N``: use
   SQLAlchemy Core constructs (``sa.Table(...).create(conn)``, ``sa.Index(...).create(conn)``,
   parameterised ``insert``/``update``), so the same code runs on SQLite and PostgreSQL. SQLite
   cannot alter constraints or column types: there, create the new table, copy the rows, drop the
   old one and rename (its documented 12-step procedure). Never edit an existing step: stores in
   the field were built by it.
3. Append ``Migration(N, "what and why", _to_vN)`` to :data:`MIGRATIONS`.
4. Extend ``tests/metarouter/store/test_store_migrations.py``: a store built at ``N-1`` with rows in
   it opens at ``N`` with the rows intact, and the migrated schema equals the declared tables.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from metarouter.errors import StoreError
from metarouter.store.schema import SCHEMA_VERSION

__all__ = ["MIGRATIONS", "Migration", "baseline_v1", "migrate", "stored_version"]

logger = logging.getLogger(__name__)

#: ``pg_advisory_xact_lock`` key serialising migrations on PostgreSQL.
_PG_LOCK_KEY = int.from_bytes(b"metarout", "big")


@dataclass(frozen=True)
class Migration:
    """One schema step.

    Attributes:
        version: The version the step produces (the previous one plus one).
        description: What changes and why.
        apply: Turns a ``version - 1`` database into ``version``, inside the open transaction.
    """

    version: int
    description: str
    apply: Callable[[sa.Connection], None]


def baseline_v1() -> sa.MetaData:
    """The version-1 tables exactly as the first release created them (frozen; never edit)."""
    md = sa.MetaData()
    sa.Table("metarouter_schema", md, sa.Column("version", sa.Integer, nullable=False))
    sa.Table(
        "metarouter_users",
        md,
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    sa.Table(
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
    sa.Table(
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
    sa.Table(
        "metarouter_preference_cache",
        md,
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("router_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    return md


def _to_v2(conn: sa.Connection) -> None:
    """Version clock (no version reuse after a deletion) and indexes for hot queries."""
    v1 = baseline_v1()  # the frozen version-1 tables: what this step starts from
    users = v1.tables["metarouter_users"]
    decisions = v1.tables["metarouter_decisions"]
    comparisons = v1.tables["metarouter_comparisons"]
    clock = sa.Table(
        "metarouter_clock",
        v1,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("value", sa.Integer, nullable=False),
    )
    clock.create(conn)
    highest = conn.execute(sa.select(sa.func.max(users.c.version))).scalar_one_or_none()
    conn.execute(clock.insert().values(id=1, value=int(highest or 0)))
    sa.Index(
        "ix_metarouter_decisions_user_created", decisions.c.user_id, decisions.c.created_at
    ).create(conn)
    sa.Index(
        "ix_metarouter_comparisons_user_created", comparisons.c.user_id, comparisons.c.created_at
    ).create(conn)
    sa.Index("ix_metarouter_comparisons_winner_decision", comparisons.c.winner_decision_id).create(
        conn
    )
    sa.Index("ix_metarouter_comparisons_loser_decision", comparisons.c.loser_decision_id).create(
        conn
    )


def _budget_tables_v3(md: sa.MetaData) -> list[sa.Table]:
    """The spend-budget tables exactly as version 3 created them (frozen; never edit)."""
    return [
        sa.Table(
            "metarouter_budgets",
            md,
            sa.Column("scope", sa.String(8), primary_key=True),
            sa.Column("name", sa.String(128), primary_key=True),
            sa.Column("usd", sa.Float, nullable=False),
            sa.Column("period", sa.String(8), nullable=False),
            sa.Column("starts_at", sa.Float, nullable=True),
            sa.Column("ends_at", sa.Float, nullable=True),
            sa.Column("on_exhausted", sa.String(8), nullable=False),
            sa.Column("arm", sa.String(256), nullable=True),
            sa.Column("updated_at", sa.Float, nullable=False),
        ),
        sa.Table(
            "metarouter_team_members",
            md,
            sa.Column("team", sa.String(128), primary_key=True),
            sa.Column("user_id", sa.String(128), primary_key=True),
            sa.Index("ix_metarouter_team_members_user", "user_id"),
        ),
        sa.Table(
            "metarouter_budget_periods",
            md,
            sa.Column("scope", sa.String(8), primary_key=True),
            sa.Column("name", sa.String(128), primary_key=True),
            sa.Column("period_start", sa.Float, primary_key=True),
            sa.Column("period_end", sa.Float, nullable=False),
            sa.Column("spent_usd", sa.Float, nullable=False),
            sa.Column("calls", sa.Integer, nullable=False),
            sa.Column("estimated_calls", sa.Integer, nullable=False),
            sa.Column("multiplier", sa.Float, nullable=False),
            sa.Column("multiplier_area", sa.Float, nullable=False),
            sa.Column("paced_at", sa.Float, nullable=False),
        ),
        sa.Table(
            "metarouter_spend",
            md,
            sa.Column("spend_id", sa.String(32), primary_key=True),
            sa.Column("user_id", sa.String(128), nullable=False),
            sa.Column("model", sa.String(256), nullable=False),
            sa.Column("cost_usd", sa.Float, nullable=False),
            sa.Column("is_estimate", sa.Boolean, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Index("ix_metarouter_spend_user_created", "user_id", "created_at"),
        ),
        sa.Table(
            "metarouter_spend_charges",
            md,
            sa.Column(
                "spend_id",
                sa.String(32),
                sa.ForeignKey("metarouter_spend.spend_id", ondelete="CASCADE"),
                primary_key=True,
            ),
            sa.Column("scope", sa.String(8), primary_key=True),
            sa.Column("name", sa.String(128), primary_key=True),
            sa.Column("period_start", sa.Float, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Index("ix_metarouter_spend_charges_scope", "scope", "name", "created_at"),
        ),
    ]


def _to_v3(conn: sa.Connection) -> None:
    """Spend budgets: budgets, team members, per-period spend and pacing, the spend ledger."""
    for table in _budget_tables_v3(sa.MetaData()):  # new tables only, in dependency order
        table.create(conn)


#: Ordered steps after the version-1 baseline (append only).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        2,
        "metarouter_clock: user versions come from one monotonic clock, so a user deleted and "
        "re-created never reuses a version a stale cache may hold; indexes on (user_id, "
        "created_at) and on the comparisons' decision ids (fast per-user reads and deletes).",
        _to_v2,
    ),
    Migration(
        3,
        "spend budgets (metarouter_budgets, metarouter_team_members, metarouter_budget_periods, "
        "metarouter_spend, metarouter_spend_charges): per-scope budgets the router paces "
        "against, and a ledger of charged calls. New tables only; existing rows are untouched.",
        _to_v3,
    ),
)


def stored_version(conn: sa.Connection) -> int | None:
    """The schema version recorded in the database (None when it has no metarouter tables).

    Raises:
        StoreError: metarouter tables exist but their version row is missing.
    """
    inspector = sa.inspect(conn)
    if not inspector.has_table("metarouter_schema"):
        others = [t for t in inspector.get_table_names() if t.startswith("metarouter_")]
        if others:
            raise StoreError(
                f"the database has metarouter tables {sorted(others)} but no metarouter_schema "
                "table, so their version is unknown. Fix: restore it from a backup or point the "
                "store at a new database."
            )
        return None
    table = sa.table("metarouter_schema", sa.column("version"))
    rows = conn.execute(sa.select(table.c.version)).scalars().all()
    if len(rows) != 1:
        raise StoreError(
            f"metarouter_schema holds {len(rows)} rows instead of one. Fix: restore the store "
            "from a backup (or keep the row of the version its tables are at)."
        )
    return int(rows[0])


def _set_version(conn: sa.Connection, version: int) -> None:
    table = sa.table("metarouter_schema", sa.column("version"))
    conn.execute(table.update().values(version=version))


def migrate(conn: sa.Connection, *, where: str = "the store") -> tuple[int | None, int]:
    """Bring the database behind ``conn`` to :data:`SCHEMA_VERSION` (inside its transaction).

    Args:
        conn: A connection in an open write transaction (the caller commits).
        where: The store's location, for error messages.

    Returns:
        The version found (None for an empty database) and the version now.

    Raises:
        StoreError: The database is at a newer version than this metarouter knows.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
    found = stored_version(conn)
    if found is not None and found > SCHEMA_VERSION:
        raise StoreError(
            f"{where} has schema version {found}, newer than this metarouter understands "
            f"({SCHEMA_VERSION}): a newer metarouter wrote it. Fix: upgrade metarouter "
            "(pip install -U metarouter) in every process using this store."
        )
    if found == SCHEMA_VERSION:
        return found, found
    started = time.perf_counter()
    if found is None:
        baseline_v1().create_all(conn)
        conn.execute(sa.table("metarouter_schema", sa.column("version")).insert().values(version=1))
        current = 1
    else:
        current = found
    for step in MIGRATIONS:
        if step.version <= current:
            continue
        if step.version != current + 1:
            raise StoreError(
                f"{where}: migration steps are not contiguous: {current} -> {step.version}, so "
                "the store cannot be brought up to date; the store was not changed. This "
                "metarouter installation is broken (its list of migration steps has a gap). Fix: "
                "reinstall or upgrade metarouter (pip install --force-reinstall -U metarouter); "
                "if you added the step yourself, add the missing step in between (see "
                "metarouter/store/migrations.py)."
            )
        step.apply(conn)
        _set_version(conn, step.version)
        current = step.version
    if current != SCHEMA_VERSION:
        raise StoreError(
            f"migrations end at version {current} but SCHEMA_VERSION is {SCHEMA_VERSION}; "
            "a step is missing from metarouter.store.migrations.MIGRATIONS."
        )
    logger.info(
        "%s: schema %s -> %s in %.2fs",
        where,
        "created" if found is None else found,
        current,
        time.perf_counter() - started,
    )
    return found, current
