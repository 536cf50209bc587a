"""Spend reports of one budget scope: per-day and per-model totals, and a plot over time."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metarouter.budgets import Budget, SpendRecord

__all__ = ["plot_spend", "spend_report"]


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d")


def spend_report(
    scope: str,
    name: str,
    budget: Budget | None,
    rows: Sequence[SpendRecord],
    *,
    plot: str | Path | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Totals of the charged calls ``rows`` per UTC day and per model; a plot if asked.

    Returns:
        ``{"scope", "name", "budget", "total_usd", "calls", "estimated_calls", "days":
        [(date, usd, calls)], "models": {model: usd}, "plot": str | None}``.
    """
    days: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    models: dict[str, float] = defaultdict(float)
    for r in rows:
        cell = days[_day(r.created_at)]
        cell[0] += r.cost_usd
        cell[1] += 1
        models[r.model] += r.cost_usd
    out: dict[str, Any] = {
        "scope": scope,
        "name": name,
        "budget": budget.to_dict() if budget is not None else None,
        "total_usd": float(sum(r.cost_usd for r in rows)),
        "calls": len(rows),
        "estimated_calls": sum(1 for r in rows if r.is_estimate),
        "days": [(d, v[0], int(v[1])) for d, v in sorted(days.items())],
        "models": dict(sorted(models.items(), key=lambda kv: -kv[1])),
        "plot": None,
    }
    if plot is not None:
        out["plot"] = str(plot_spend(rows, budget, Path(plot), title=f"{scope} {name}", now=now))
    return out


def plot_spend(
    rows: Sequence[SpendRecord],
    budget: Budget | None,
    path: Path,
    *,
    title: str,
    now: float | None = None,
) -> Path:
    """Cumulative spend over time (per budget period), with the budget and its even pace."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metarouter.budgets import period_bounds

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    by_period: dict[tuple[float, float] | None, list[SpendRecord]] = defaultdict(list)
    for r in rows:
        key = period_bounds(budget, r.created_at) if budget is not None else None
        by_period[key].append(r)
    import matplotlib.dates as mdates

    def when(ts: float) -> float:
        return float(mdates.date2num(datetime.fromtimestamp(ts, tz=timezone.utc)))

    for i, (bounds, items) in enumerate(sorted(by_period.items(), key=lambda kv: kv[0] or (0, 0))):
        times = [when(r.created_at) for r in items]
        total, cumulative = 0.0, []
        for r in items:
            total += r.cost_usd
            cumulative.append(total)
        first = i == 0
        ax.step(times, cumulative, where="post", color="C0", label="spend" if first else "_")
        if bounds is not None and budget is not None:
            start, end = when(bounds[0]), when(bounds[1])
            ax.plot([start, end], [0, budget.usd], "--", color="0.5",
                    label="even pace" if first else "_")  # fmt: skip
            ax.hlines(budget.usd, start, end, color="C3", label="budget" if first else "_")
    ax.xaxis_date()
    ax.set(title=f"spend of {title}", ylabel="cumulative spend (USD)")
    if rows:
        ax.legend(fontsize=8, loc="upper left")
    else:
        ax.text(0.5, 0.5, "no charged calls", transform=ax.transAxes, ha="center")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
