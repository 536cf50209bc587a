"""Tables of the SQL preference store, as of :data:`SCHEMA_VERSION`.

These definitions are what :class:`~metarouter.store.sql.SQLStore` queries. Databases are never
created from them directly: :mod:`metarouter.store.migrations` builds every store (new or old)
by the same ordered steps, and a test checks that the result matches these tables. Changing a
table here therefore always goes with a new migration step (see that module).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

__all__ = ["SCHEMA_VERSION", "Tables", "define_tables"]

#: Schema version this release reads and writes (see :mod:`metarouter.store.migrations`).
SCHEMA_VERSION = 3


@dataclass(frozen=True)
class Tables:
    """The store's tables, bound to one :class:`sqlalchemy.MetaData`.

    Attributes:
        metadata: The metadata holding them.
        schema: One row: the schema version.
        clock: One row: the last issued user version (versions never repeat, even after a
            user is deleted, so a preference cached before a deletion is never served again).
        users: Per-user feedback version.
        decisions: Routing decisions.
        comparisons: Pairwise comparisons.
        cache: Cached preference state per (user, router).
        budgets: Spend budgets per scope (see :mod:`metarouter.budgets`).
        team_members: Which users make up each team.
        budget_periods: Per budget and period: spend, calls and the pacing multiplier.
        spend: The spend ledger: one row per charged call.
        spend_charges: Which budgets (and periods) each charged call counted against.
    """

    metadata: sa.MetaData
    schema: sa.Table
    clock: sa.Table
    users: sa.Table
    decisions: sa.Table
    comparisons: sa.Table
    cache: sa.Table
    budgets: sa.Table
    team_members: sa.Table
    budget_periods: sa.Table
    spend: sa.Table
    spend_charges: sa.Table


def budget_tables(md: sa.MetaData) -> tuple[sa.Table, sa.Table, sa.Table, sa.Table, sa.Table]:
    """The spend-budget tables (added by schema version 3) on ``md``."""
    budgets = sa.Table(
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
    )
    team_members = sa.Table(
        "metarouter_team_members",
        md,
        sa.Column("team", sa.String(128), primary_key=True),
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Index("ix_metarouter_team_members_user", "user_id"),
    )
    budget_periods = sa.Table(
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
    )
    spend = sa.Table(
        "metarouter_spend",
        md,
        sa.Column("spend_id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("is_estimate", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Index("ix_metarouter_spend_user_created", "user_id", "created_at"),
    )
    spend_charges = sa.Table(
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
    )
    return budgets, team_members, budget_periods, spend, spend_charges


def define_tables() -> Tables:
    """The current tables on a fresh :class:`sqlalchemy.MetaData`."""
    md = sa.MetaData()
    schema = sa.Table("metarouter_schema", md, sa.Column("version", sa.Integer, nullable=False))
    clock = sa.Table(
        "metarouter_clock",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("value", sa.Integer, nullable=False),
    )
    users = sa.Table(
        "metarouter_users",
        md,
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    decisions = sa.Table(
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
        sa.Index("ix_metarouter_decisions_user_created", "user_id", "created_at"),
    )
    comparisons = sa.Table(
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
        sa.Index("ix_metarouter_comparisons_user_created", "user_id", "created_at"),
        sa.Index("ix_metarouter_comparisons_winner_decision", "winner_decision_id"),
        sa.Index("ix_metarouter_comparisons_loser_decision", "loser_decision_id"),
    )
    cache = sa.Table(
        "metarouter_preference_cache",
        md,
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("router_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    return Tables(md, schema, clock, users, decisions, comparisons, cache, *budget_tables(md))
