"""Routing scopes: per-request user, model override and call log for whole pipelines.

Query engines, chat engines and agents call the LLM themselves, so per-call keyword arguments
cannot reach it. A scope, entered with :meth:`MetaRouterLLM.scope`, sets the user (and
optionally forces a model) for every routed call made inside it, and collects those calls so
the app can give feedback on them. Scopes live in a :class:`contextvars.ContextVar`: they
follow ``async`` tasks and never leak between threads or concurrent requests.

A thread started inside a scope does not inherit it (a ``ThreadPoolExecutor`` worker runs with
its own context). So that such a call is not silently booked under the default user, the
router counts the scopes open in each thread: a call that names no user, sees no scope and has
no instance user, made while a scope of the same router is open in another thread, is refused
(:func:`scopes_in_other_threads`) with a message saying how to pass the scope on.
"""

from __future__ import annotations

import threading
from collections import Counter
from contextvars import ContextVar
from dataclasses import dataclass, field
from weakref import WeakKeyDictionary

from llama_index_metarouter.feedback import RoutedCall

__all__ = [
    "RoutingScope",
    "active_scopes",
    "pop_scope",
    "push_scope",
    "scopes_in_other_threads",
]


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
#: Open scopes per owner, counted per thread id.
_OPEN: WeakKeyDictionary[object, Counter[int]] = WeakKeyDictionary()
_OPEN_LOCK = threading.Lock()


def active_scopes(owner: object) -> list[RoutingScope]:
    """Scopes of ``owner`` active in this context, innermost first."""
    return [s for s in reversed(_SCOPES.get()) if s.owner is owner]


def scopes_in_other_threads(owner: object) -> int:
    """How many scopes of ``owner`` are open in threads other than this one."""
    here = threading.get_ident()
    with _OPEN_LOCK:
        counts = _OPEN.get(owner) or Counter()
        return sum(n for thread, n in counts.items() if thread != here)


def push_scope(scope: RoutingScope) -> tuple[object, int]:
    """Enter ``scope``; returns the token :func:`pop_scope` needs."""
    thread = threading.get_ident()
    with _OPEN_LOCK:
        _OPEN.setdefault(scope.owner, Counter())[thread] += 1
    return _SCOPES.set((*_SCOPES.get(), scope)), thread


def pop_scope(scope: RoutingScope, token: tuple[object, int]) -> None:
    """Leave ``scope``, entered with ``token``."""
    context_token, thread = token
    _SCOPES.reset(context_token)  # type: ignore[arg-type]
    with _OPEN_LOCK:
        counts = _OPEN.get(scope.owner)
        if counts is not None:
            counts[thread] -= 1
            if counts[thread] <= 0:
                del counts[thread]
