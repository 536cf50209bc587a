"""Checks of plain values at the library's boundary: numbers, choices, and what errors echo.

Every amount a caller hands in (a price, a cost, a token count) is checked here before it is
stored or reaches the network: a real number (``int``, ``float`` or a NumPy scalar, never a
``bool``), finite, and inside bounds no real call comes near, so that nothing downstream (the
float32 encoder, JSON caches, SQL columns) ever sees an infinity or a NaN. Error messages quote
what they refuse through :func:`excerpt`, so a huge value never makes a huge message.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

from metarouter.errors import MetaRouterError

__all__ = [
    "MAX_CALL_COST_USD",
    "MAX_ECHO_CHARS",
    "MAX_PRICE_PER_MILLION_USD",
    "MAX_TOKENS",
    "check_fields",
    "check_number",
    "excerpt",
    "preferred_index",
]

#: Largest cost of one call accepted, in USD (real calls cost cents; this bounds typos).
MAX_CALL_COST_USD = 1_000_000.0
#: Largest token price accepted, in USD per 1M tokens (published prices are below 1,000).
MAX_PRICE_PER_MILLION_USD = 10_000.0
#: Largest token count accepted for one prompt or answer.
MAX_TOKENS = 100_000_000
#: Characters of a refused value quoted in an error message.
MAX_ECHO_CHARS = 80


def excerpt(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """``repr(value)``, cut to about ``limit`` characters, with the full length when cut.

    Example:
        >>> excerpt("x" * 1000, limit=10)
        "'xxxxxxxxx... (1,000 characters)"
    """
    if isinstance(value, (str, bytes)) and len(value) > limit:
        return f"{value[: limit - 1]!r}"[:-1] + f"... ({len(value):,} characters)"
    text = repr(value)
    if len(text) > limit:
        return text[: limit - 3] + "..."
    return text


def check_number(
    name: str,
    value: object,
    *,
    error: type[MetaRouterError],
    minimum: float = 0.0,
    maximum: float,
    integer: bool = False,
    fix: str = "",
) -> float:
    """Return ``value`` as a float if it is a real number in ``[minimum, maximum]``.

    Args:
        name: What the value is, for the message (e.g. ``"Price.input_per_million"``).
        value: The value: ``int``, ``float`` or a NumPy number; ``bool`` is refused.
        error: The exception class to raise (e.g. :class:`~metarouter.errors.ConfigError`).
        minimum: Smallest value accepted.
        maximum: Largest value accepted.
        integer: Require a whole number (``int`` or a NumPy integer).
        fix: A sentence saying how to fix the value, appended to the message.

    Raises:
        error: Not a real number, NaN, infinite, or out of bounds.
    """
    kinds = (numbers.Integral, np.integer) if integer else (numbers.Real, np.number)
    ok = isinstance(value, kinds) and not isinstance(value, (bool, np.bool_, complex))
    number = float(value) if ok else math.nan  # type: ignore[arg-type]
    if not ok or not math.isfinite(number) or not minimum <= number <= maximum:
        kind = "a whole number" if integer else "a finite number"
        message = f"{name} must be {kind} in [{minimum:g}, {maximum:g}], got {excerpt(value)}."
        raise error(f"{message} {fix}".rstrip())
    return number


def check_fields(
    obj: object,
    names: Sequence[str],
    *,
    error: type[MetaRouterError],
    maximum: float,
    integer: bool = False,
    optional: bool = False,
    fix: str = "",
) -> None:
    """:func:`check_number` on fields of a frozen dataclass, storing each as a plain number.

    For ``__post_init__``: a NumPy number becomes a ``float`` (or ``int``); with ``optional``,
    ``None`` is left as is.

    Raises:
        error: The first field that is not a real number in ``[0, maximum]``.
    """
    for name in names:
        value = getattr(obj, name)
        if value is None and optional:
            continue
        label = f"{type(obj).__name__}.{name}"
        number = check_number(label, value, error=error, maximum=maximum, integer=integer, fix=fix)
        object.__setattr__(obj, name, int(number) if integer else number)


def preferred_index(winner: object, labels: Sequence[Sequence[str]]) -> int:
    """Which of the compared answers ``winner`` names: the one rule every adapter's ``prefer``.

    Args:
        winner: A position (``0`` or ``1``, an ``int`` or a NumPy integer; never a ``bool`` or a
            ``float``), or a string that is one of an answer's labels.
        labels: Per answer, the strings that name it (its model name, its decision id).

    Returns:
        The position of the preferred answer.

    Raises:
        FeedbackError: ``winner`` names no answer, or more than one.
    """
    from metarouter.errors import FeedbackError

    n = len(labels)
    if isinstance(winner, (numbers.Integral, np.integer)) and not isinstance(
        winner, (bool, np.bool_)
    ):
        if 0 <= int(winner) < n:
            return int(winner)
    elif isinstance(winner, str):
        hits = [i for i, names in enumerate(labels) if winner in names]
        if len(hits) == 1:
            return hits[0]
    models = [names[0] for names in labels if names]
    raise FeedbackError(
        f"prefer() takes the position of the better answer (0 to {n - 1}, an int) or its model "
        f"name ({', '.join(map(repr, models))}), got {excerpt(winner)}. Fix: pass e.g. "
        "prefer(0); True, 1.0 and other types are refused so that no call is ambiguous."
    )
