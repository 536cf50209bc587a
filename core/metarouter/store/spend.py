"""Budgets and spend in the SQL store: the statements behind :class:`SQLStore`'s budget methods.

Every function takes a connection inside the caller's transaction (see ``SQLStore._write``).
Charging a call (:func:`record_spend`) is one transaction: the ledger row, one charge row per
active budget of the user, and, per budget, its period row updated in place (spend, calls,
pacing multiplier) under a row lock (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's write
transactions are serialised by ``BEGIN IMMEDIATE``). Period rows are locked in key order, so
two charges never deadlock on them. The admission check (:func:`budget_states`) is a plain
read: a call admitted while a budget had money left can overrun it by its own cost, so with
one call at a time per process, ``n`` processes overspend by at most ``n`` calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from metarouter.budgets import (
    APP,
    Budget,
    BudgetState,
    Pacing,
    SpendRecord,
    carried_multiplier,
    multiplier_area,
    period_bounds,
    updated_multiplier,
)
from metarouter.store.schema import Tables

__all__ = [
    "budget_from_row",
    "budget_states",
    "delete_budget",
    "record_spend",
    "reset_budget",
    "set_budget",
    "set_team",
    "spend_history",
    "teams_of",
]


def budget_from_row(row: Any) -> Budget:
    """A :class:`Budget` from a ``metarouter_budgets`` row."""
    return Budget(
        row.scope,
        row.name,
        float(row.usd),
        row.period,
        row.starts_at,
        row.ends_at,
        row.on_exhausted,
        row.arm,
    )


def _budget_values(budget: Budget, now: float) -> dict[str, Any]:
    return {
        "scope": budget.scope,
        "name": budget.name,
        "usd": budget.usd,
        "period": budget.period,
        "starts_at": budget.starts_at,
        "ends_at": budget.ends_at,
        "on_exhausted": budget.on_exhausted,
        "arm": budget.arm,
        "updated_at": now,
    }


def _members_clause(t: Tables, scope: str, name: str) -> sa.ColumnElement[bool]:
    """Ledger rows of the scope's users (for seeding a new budget from past spend)."""
    s = t.spend
    if scope == "user":
        return s.c.user_id == name
    if scope == "team":
        members = sa.select(t.team_members.c.user_id).where(t.team_members.c.team == name)
        return s.c.user_id.in_(members)
    return sa.true()


def _insert_ignore(conn: sa.Connection, table: sa.Table, values: dict[str, Any]) -> None:
    """INSERT, doing nothing when the primary key is taken (SQLite and PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        conn.execute(pg_insert(table).values(**values).on_conflict_do_nothing())
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        conn.execute(sqlite_insert(table).values(**values).on_conflict_do_nothing())


def _carried(
    conn: sa.Connection, t: Tables, budget: Budget, start: float, pacing: Pacing | None
) -> float:
    """The multiplier the period starting at ``start`` inherits from the previous one."""
    if pacing is None:
        return 0.0
    p = t.budget_periods
    previous = conn.execute(
        sa.select(p)
        .where(p.c.scope == budget.scope, p.c.name == budget.name, p.c.period_start < start)
        .order_by(p.c.period_start.desc())
        .limit(1)
    ).first()
    if previous is None:
        return 0.0
    return carried_multiplier(
        float(previous.multiplier),
        float(previous.paced_at),
        float(previous.multiplier_area),
        float(previous.period_start),
        float(previous.period_end),
        pacing,
    )


def _ensure_period(
    conn: sa.Connection,
    t: Tables,
    budget: Budget,
    start: float,
    end: float,
    now: float,
    pacing: Pacing | None = None,
) -> None:
    """Create the budget's period row if missing, seeded with the scope's spend so far in it.

    Its multiplier starts from the previous period's time average (with ``pacing``), else 0.
    """
    p = t.budget_periods
    exists = conn.execute(
        sa.select(p.c.period_start).where(
            p.c.scope == budget.scope, p.c.name == budget.name, p.c.period_start == start
        )
    ).first()
    if exists:
        return
    s = t.spend
    spent, calls, estimated = conn.execute(
        sa.select(
            sa.func.coalesce(sa.func.sum(s.c.cost_usd), 0.0),
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(sa.case((s.c.is_estimate, 1), else_=0)), 0),
        ).where(
            _members_clause(t, budget.scope, budget.name),
            s.c.created_at >= start,
            s.c.created_at < min(end, now + 1e-6),
        )
    ).one()
    multiplier = _carried(conn, t, budget, start, pacing)
    _insert_ignore(
        conn,
        p,
        {
            "scope": budget.scope,
            "name": budget.name,
            "period_start": start,
            "period_end": end,
            "spent_usd": float(spent),
            "calls": int(calls),
            "estimated_calls": int(estimated),
            "multiplier": multiplier,
            "multiplier_area": 0.0,
            "paced_at": max(now, start) if multiplier == 0.0 else start,
        },
    )


def set_budget(conn: sa.Connection, t: Tables, budget: Budget, now: float) -> None:
    """Create or replace a scope's budget; its current period counts the spend already made."""
    b = t.budgets
    conn.execute(b.delete().where(b.c.scope == budget.scope, b.c.name == budget.name))
    conn.execute(b.insert().values(**_budget_values(budget, now)))
    bounds = period_bounds(budget, now)
    if bounds is not None:
        _ensure_period(conn, t, budget, bounds[0], bounds[1], now)


def delete_budget(conn: sa.Connection, t: Tables, scope: str, name: str) -> bool:
    """Remove a budget and its period rows (the ledger stays)."""
    b, p = t.budgets, t.budget_periods
    n = conn.execute(b.delete().where(b.c.scope == scope, b.c.name == name)).rowcount
    conn.execute(p.delete().where(p.c.scope == scope, p.c.name == name))
    return bool(n)


def reset_budget(conn: sa.Connection, t: Tables, budget: Budget, now: float) -> float:
    """Zero the current period's spend, calls and multiplier; returns what had been spent."""
    bounds = period_bounds(budget, now)
    if bounds is None:
        return 0.0
    p = t.budget_periods
    key = sa.and_(p.c.scope == budget.scope, p.c.name == budget.name, p.c.period_start == bounds[0])
    before = conn.execute(sa.select(p.c.spent_usd).where(key).with_for_update()).scalar()
    if before is None:
        _insert_ignore(
            conn,
            p,
            {
                "scope": budget.scope,
                "name": budget.name,
                "period_start": bounds[0],
                "period_end": bounds[1],
                "spent_usd": 0.0,
                "calls": 0,
                "estimated_calls": 0,
                "multiplier": 0.0,
                "multiplier_area": 0.0,
                "paced_at": now,
            },
        )
        return 0.0
    conn.execute(
        p.update()
        .where(key)
        .values(
            spent_usd=0.0,
            calls=0,
            estimated_calls=0,
            multiplier=0.0,
            multiplier_area=0.0,
            paced_at=now,
        )
    )
    return float(before)


def set_team(conn: sa.Connection, t: Tables, team: str, members: Sequence[str]) -> None:
    """Replace the members of ``team`` (an empty list removes the team)."""
    m = t.team_members
    conn.execute(m.delete().where(m.c.team == team))
    for user in members:
        conn.execute(m.insert().values(team=team, user_id=user))


def teams_of(conn: sa.Connection, t: Tables, user_id: str) -> list[str]:
    """The teams ``user_id`` belongs to."""
    m = t.team_members
    return list(conn.execute(sa.select(m.c.team).where(m.c.user_id == user_id)).scalars())


def _applicable(conn: sa.Connection, t: Tables, user_id: str | None) -> list[Budget]:
    b = t.budgets
    if user_id is None:
        rows = conn.execute(sa.select(b)).all()
    else:
        teams = sa.select(t.team_members.c.team).where(t.team_members.c.user_id == user_id)
        rows = conn.execute(
            sa.select(b).where(
                sa.or_(
                    sa.and_(b.c.scope == "user", b.c.name == user_id),
                    sa.and_(b.c.scope == "team", b.c.name.in_(teams)),
                    sa.and_(b.c.scope == "app", b.c.name == APP),
                )
            )
        ).all()
    return [budget_from_row(r) for r in rows]


def budget_states(
    conn: sa.Connection, t: Tables, user_id: str | None, now: float, pacing: Pacing | None = None
) -> list[BudgetState]:
    """The active budgets (of ``user_id``, or all) with their current period, as stored.

    A period without a charge yet shows the multiplier it inherits (with ``pacing``).
    """
    p = t.budget_periods
    out = []
    for budget in _applicable(conn, t, user_id):
        bounds = period_bounds(budget, now)
        if bounds is None:
            continue
        row = conn.execute(
            sa.select(p).where(
                p.c.scope == budget.scope, p.c.name == budget.name, p.c.period_start == bounds[0]
            )
        ).first()
        if row is None:  # no charge yet this period
            carried = _carried(conn, t, budget, bounds[0], pacing)
            out.append(
                BudgetState(budget, bounds[0], bounds[1], multiplier=carried, paced_at=bounds[0])
            )
            continue
        out.append(
            BudgetState(
                budget,
                bounds[0],
                bounds[1],
                float(row.spent_usd),
                int(row.calls),
                int(row.estimated_calls),
                float(row.multiplier),
                float(row.paced_at),
                float(row.multiplier_area),
            )
        )
    return out


def record_spend(
    conn: sa.Connection, t: Tables, record: SpendRecord, pacing: Pacing
) -> list[BudgetState]:
    """Charge one call to the active budgets of its user; returns their new states.

    Nothing is written when no budget applies to the user.
    """
    now = record.created_at
    active = []
    for budget in sorted(_applicable(conn, t, record.user_id), key=lambda b: b.key):
        bounds = period_bounds(budget, now)
        if bounds is not None:
            active.append((budget, bounds))
    if not active:
        return []
    for budget, (start, end) in active:  # before the ledger row: a seed must not count it
        _ensure_period(conn, t, budget, start, end, now, pacing)
    conn.execute(
        t.spend.insert().values(
            spend_id=record.spend_id,
            user_id=record.user_id,
            model=record.model,
            cost_usd=record.cost_usd,
            is_estimate=record.is_estimate,
            created_at=now,
        )
    )
    p = t.budget_periods
    states = []
    for budget, (start, end) in active:
        key = sa.and_(p.c.scope == budget.scope, p.c.name == budget.name, p.c.period_start == start)
        row = conn.execute(sa.select(p).where(key).with_for_update()).one()
        multiplier = updated_multiplier(
            float(row.multiplier),
            float(row.paced_at),
            now,
            record.cost_usd,
            budget.usd,
            start,
            end,
            pacing,
        )
        area = float(row.multiplier_area) + multiplier_area(
            float(row.multiplier), float(row.paced_at), now, start, end, pacing
        )
        spent = float(row.spent_usd) + record.cost_usd
        calls = int(row.calls) + 1
        estimated = int(row.estimated_calls) + int(record.is_estimate)
        conn.execute(
            p.update()
            .where(key)
            .values(
                spent_usd=p.c.spent_usd + record.cost_usd,
                calls=p.c.calls + 1,
                estimated_calls=p.c.estimated_calls + int(record.is_estimate),
                multiplier=multiplier,
                multiplier_area=area,
                paced_at=now,
            )
        )
        conn.execute(
            t.spend_charges.insert().values(
                spend_id=record.spend_id,
                scope=budget.scope,
                name=budget.name,
                period_start=start,
                created_at=now,
            )
        )
        states.append(
            BudgetState(budget, start, end, spent, calls, estimated, multiplier, now, area)
        )
    return states


def spend_history(
    conn: sa.Connection,
    t: Tables,
    scope: str,
    name: str,
    since: float | None = None,
    until: float | None = None,
) -> list[SpendRecord]:
    """The calls charged to a scope's budget, oldest first."""
    s, c = t.spend, t.spend_charges
    query = (
        sa.select(s)
        .join(c, c.c.spend_id == s.c.spend_id)
        .where(c.c.scope == scope, c.c.name == name)
        .order_by(s.c.created_at, s.c.spend_id)
    )
    if since is not None:
        query = query.where(s.c.created_at >= since)
    if until is not None:
        query = query.where(s.c.created_at < until)
    return [
        SpendRecord(
            r.spend_id,
            r.user_id,
            r.model,
            float(r.cost_usd),
            bool(r.is_estimate),
            float(r.created_at),
            ((scope, name),),
        )
        for r in conn.execute(query)
    ]
