"""Routing scopes: per-request user, model override and call log for whole pipelines.

Query engines, chat engines and agents call the LLM themselves, so per-call keyword arguments
cannot reach it. A scope, entered with :meth:`MetaRouterLLM.scope`, sets the user (and
optionally forces a model) for every routed call made inside it, and collects those calls so
the app can give feedback on them. Scopes live in a :class:`contextvars.ContextVar`: they
follow ``async`` tasks and never leak between threads or concurrent requests.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field

from llama_index_metarouter.feedback import RoutedCall

__all__ = ["RoutingScope", "active_scopes", "pop_scope", "push_scope"]


@dataclass
class RoutingScope:
    """Settings and call log of one ``with router.scope(...)`` block.

    Attributes:
        owner: The routing service the scope belongs to (routers sharing it share scopes).
        user_id: User of every call in the block (None: the router's own).
        model: Candidate forced for every call in the block (None: route).
        calls: Routed calls made in the block, in completion order (a stream is logged once
            exhausted).
    """

    owner: object = field(repr=False)
    user_id: str | None = None
    model: str | None = None
    calls: list[RoutedCall] = field(default_factory=list)

    @property
    def last(self) -> RoutedCall:
        """The most recent call (raises ``LookupError`` if none was made)."""
        if not self.calls:
            raise LookupError("no routed call was made in this scope yet.")
        return self.calls[-1]

    @property
    def decision_ids(self) -> list[str]:
        """Decision ids of the calls, in order."""
        return [c.decision_id for c in self.calls]


_SCOPES: ContextVar[tuple[RoutingScope, ...]] = ContextVar("metarouter_scopes", default=())


def active_scopes(owner: object) -> list[RoutingScope]:
    """Scopes of ``owner`` active in this context, innermost first."""
    return [s for s in reversed(_SCOPES.get()) if s.owner is owner]


def push_scope(scope: RoutingScope) -> object:
    """Enter ``scope``; returns the token :func:`pop_scope` needs."""
    return _SCOPES.set((*_SCOPES.get(), scope))


def pop_scope(token: object) -> None:
    """Leave the scope entered with ``token``."""
    _SCOPES.reset(token)  # type: ignore[arg-type]
