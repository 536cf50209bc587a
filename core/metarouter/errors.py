"""The exception hierarchy: one root, subclasses that also inherit the matching builtin.

Every message says what went wrong *and how to fix it*. Catch :class:`MetaRouterError` to handle
anything raised by this library.
"""

from __future__ import annotations

__all__ = [
    "AttemptTimeoutError",
    "BudgetExceededError",
    "ChargeError",
    "ConfigError",
    "DataError",
    "DependencyError",
    "DispatchError",
    "EmbedderMismatchError",
    "FeedbackError",
    "MetaRouterError",
    "ModelLoadError",
    "StoreError",
    "UnknownArmError",
    "UnreadableRowError",
]


class MetaRouterError(Exception):
    """Root of every error raised by metarouter."""


class ConfigError(MetaRouterError, ValueError):
    """An argument or configuration value is invalid."""


class EmbedderMismatchError(ConfigError):
    """A router is used with another embedder than the one it was trained for.

    Its vectors mean something else to the router: use the embedder its config names, or
    retrain the router for this one (``metarouter train --embedder NAME``).
    """


class DataError(MetaRouterError, ValueError):
    """An outcome table or comparison file does not follow the schema."""


class UnknownArmError(MetaRouterError, KeyError):
    """A candidate model name is neither in the router's catalog nor described by the caller."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ModelLoadError(MetaRouterError, OSError):
    """A saved router directory is missing, corrupted or from an incompatible version."""


class StoreError(MetaRouterError, RuntimeError):
    """The preference store could not complete an operation; nothing was written."""


class ChargeError(StoreError):
    """A finished call's cost could not be charged to its spend budgets, even after retries.

    Nothing was written for the call (no ledger, charge or period row); the message names the
    call, its cost and how to charge it again once the store works.
    """


class UnreadableRowError(StoreError):
    """A stored row cannot be decoded: altered outside metarouter, or from another version."""


class FeedbackError(MetaRouterError, ValueError):
    """A pairwise comparison is invalid (unknown ids, self-comparison, another user's decision)."""


class DispatchError(MetaRouterError, RuntimeError):
    """No candidate answered a call, or the answering candidate failed mid-stream.

    The message lists each candidate tried and its error; the first error is chained.
    """


class AttemptTimeoutError(MetaRouterError, TimeoutError):
    """A candidate gave no answer within the router's per-candidate ``timeout``.

    The router moves on to the next candidate (it is listed among the call's fallbacks), or
    raises :class:`DispatchError` when none is left.
    """


class DependencyError(MetaRouterError, ImportError):
    """An optional dependency (extra) is not installed."""


class BudgetExceededError(MetaRouterError, RuntimeError):
    """A call was refused because a spend budget with ``on_exhausted="error"`` is spent.

    The message names the budget, what it allows and when its period ends.
    """
