"""Front metrics for cost-quality routing: hypervolume, IGD, utility regret, gap recovered.

All fronts live in a normalised space where *lower cost* and *higher quality* are better:
cost is scaled to [0, 1] by given bounds (the cheapest and dearest single model's mean cost),
quality is already in [0, 1]. Points are clipped to the unit box before measuring.

References:
    Zitzler & Thiele (1998), hypervolume indicator; Coello & Reyes-Sierra (2004), IGD.
"""

from __future__ import annotations

import numpy as np

from metarouter.errors import ConfigError

__all__ = [
    "gap_recovered",
    "hypervolume",
    "igd",
    "normalise_costs",
    "pareto_front",
]


def normalise_costs(cost: np.ndarray, low: float, high: float) -> np.ndarray:
    """Scale costs linearly so ``low`` maps to 0 and ``high`` to 1 (no clipping)."""
    if not high > low:
        raise ConfigError(f"cost bounds must satisfy high > low, got low={low}, high={high}.")
    return (np.asarray(cost, dtype=np.float64) - low) / (high - low)


def _as_points(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(pts).all():
        raise ConfigError("front points must be finite (cost, quality) pairs.")
    return np.clip(pts, 0.0, 1.0)


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Non-dominated (cost, quality) points sorted by cost (minimise cost, maximise quality)."""
    pts = _as_points(points)
    order = np.lexsort((-pts[:, 1], pts[:, 0]))
    front = []
    best_q = -np.inf
    for cost, quality in pts[order]:
        if quality > best_q:
            front.append((cost, quality))
            best_q = quality
    return np.asarray(front, dtype=np.float64).reshape(-1, 2)


def hypervolume(points: np.ndarray, reference: tuple[float, float] = (1.0, 0.0)) -> float:
    """Area dominated by the (cost, quality) points up to the reference point (cost 1, quality 0).

    A point (c, q) dominates the rectangle [c, ref_c] x [ref_q, q]; the hypervolume is the area of
    the union of those rectangles, after clipping points to the unit box.
    """
    front = pareto_front(points)
    ref_c, ref_q = reference
    return _staircase_area(front, ref_c, ref_q) if len(front) else 0.0


def _staircase_area(front: np.ndarray, ref_c: float, ref_q: float) -> float:
    """Exact union area of the dominated rectangles of a Pareto front sorted by cost."""
    area = 0.0
    for i, (cost, quality) in enumerate(front):
        if cost >= ref_c or quality <= ref_q:
            continue
        next_c = front[i + 1, 0] if i + 1 < len(front) else ref_c
        next_c = min(next_c, ref_c)
        # between this point's cost and the next (dearer, better) point's cost, the dominated
        # height is this point's quality
        area += (next_c - cost) * (quality - ref_q)
    return area


def igd(points: np.ndarray, reference_front: np.ndarray) -> float:
    """Inverted generational distance: mean distance from each reference point to ``points``."""
    pts = _as_points(points)
    ref = _as_points(reference_front)
    if len(pts) == 0 or len(ref) == 0:
        raise ConfigError("igd needs at least one point in each front.")
    dist = np.sqrt(((ref[:, None, :] - pts[None, :, :]) ** 2).sum(-1))
    return float(dist.min(axis=1).mean())


def gap_recovered(method: float, best_single: float, oracle: float) -> float:
    """Share of the oracle-vs-best-single-model utility gap that ``method`` recovers."""
    gap = oracle - best_single
    if abs(gap) < 1e-12:
        return float("nan")
    return float((method - best_single) / gap)
