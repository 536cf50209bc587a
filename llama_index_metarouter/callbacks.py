"""Feedback through LlamaIndex instrumentation: the app dispatches an event, the router learns.

The LlamaIndex counterpart of the LangChain adapter's feedback callbacks. Code deep inside a
workflow step, a tool or an event handler reports a comparison without holding the router::

    dispatch_feedback(winner, loser)        # or: await adispatch_feedback(winner, loser)

and a :class:`MetaRouterFeedbackHandler` on the root dispatcher records it::

    from llama_index.core.instrumentation import get_dispatcher

    get_dispatcher().add_event_handler(MetaRouterFeedbackHandler(router))

Each side is what :meth:`MetaRouterLLM.record_preference` takes: a routed response, a
:class:`~llama_index_metarouter.RoutedCall`, a decision id, or an answer the router did not
produce (``Response(model=..., cost_usd=..., text=...)`` or a dict with those keys). The user is
the event's ``user_id``, else the ``user_id`` of the active ``instrument_tags``, else what
``record_preference`` would pick (the decisions' owner, the scope's or the router's user).

LlamaIndex's dispatcher drops whatever its handlers raise, so invalid feedback cannot reach the
code that dispatched it: the handler logs it and keeps it in its ``errors``. Call
``record_preference`` directly where the caller must see the error.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.base import BaseEvent

from llama_index_metarouter.base import MetaRouterLLM
from llama_index_metarouter.feedback import FeedbackItem, as_feedback_item

if TYPE_CHECKING:
    from metarouter.service import RoutingService
    from metarouter.store.records import ComparisonRecord

__all__ = [
    "MetaRouterFeedbackHandler",
    "PreferenceGivenEvent",
    "adispatch_feedback",
    "dispatch_feedback",
]

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)

#: Key of the user id in ``instrument_tags`` (``with instrument_tags({"user_id": "alice"})``).
USER_TAG = "user_id"
#: Records and errors a handler keeps (oldest dropped first).
_KEEP = 1_000


class PreferenceGivenEvent(BaseEvent):
    """The app reports that ``winner``'s answer was worth it over ``loser``'s (same query)."""

    winner: Any = Field(description="The preferred answer (see the module docstring).")
    """The preferred answer: a routed response, a RoutedCall, a decision id or a Response."""
    loser: Any = Field(description="The other answer, same kinds.")
    """The other answer, same kinds."""
    user_id: str | None = Field(default=None, description="Whose comparison (None: inferred).")
    """Whose comparison (None: the ``instrument_tags`` user, else inferred)."""
    query: str | None = Field(
        default=None, description="The query text; needed when neither answer was routed."
    )
    """The query text; needed when neither answer was routed."""

    @classmethod
    def class_name(cls) -> str:
        """Class name."""
        return "PreferenceGivenEvent"


def dispatch_feedback(
    winner: FeedbackItem,
    loser: FeedbackItem,
    *,
    user_id: str | None = None,
    query: str | None = None,
) -> None:
    """Report a comparison to the instrumentation handlers (see the module docstring)."""
    dispatcher.event(PreferenceGivenEvent(winner=winner, loser=loser, user_id=user_id, query=query))


async def adispatch_feedback(
    winner: FeedbackItem,
    loser: FeedbackItem,
    *,
    user_id: str | None = None,
    query: str | None = None,
) -> None:
    """Async :func:`dispatch_feedback` (handlers record in worker threads)."""
    await dispatcher.aevent(
        PreferenceGivenEvent(winner=winner, loser=loser, user_id=user_id, query=query)
    )


class MetaRouterFeedbackHandler(BaseEventHandler):
    """Records each :class:`PreferenceGivenEvent` as a comparison; ignores other events.

    Args:
        router: The :class:`MetaRouterLLM` (or its ``RoutingService``, e.g. one shared with the
            LangChain adapter) that learns from the events.

    Attributes:
        records: Comparisons recorded by this handler, oldest first (last 1,000).
        errors: Feedback refused (unknown ids, same model twice, ...), as
            ``(event, error)``, oldest first (last 1,000). Each is also logged.
    """

    records: list[Any] = Field(default_factory=list)
    """Comparisons recorded by this handler, oldest first (last 1,000)."""
    errors: list[tuple[PreferenceGivenEvent, Exception]] = Field(default_factory=list)
    """Feedback refused, with the reason, oldest first (last 1,000)."""

    _router: MetaRouterLLM | None = PrivateAttr(default=None)
    _service: RoutingService | None = PrivateAttr(default=None)

    def __init__(self, router: MetaRouterLLM | RoutingService, **kwargs: Any) -> None:
        from metarouter.service import RoutingService

        if not isinstance(router, (MetaRouterLLM, RoutingService)):
            raise TypeError(
                "MetaRouterFeedbackHandler takes a MetaRouterLLM or a RoutingService, got "
                f"{type(router).__name__}."
            )
        super().__init__(**kwargs)
        if isinstance(router, MetaRouterLLM):
            self._router = router
        else:
            self._service = router

    @classmethod
    def class_name(cls) -> str:
        """Class name."""
        return "MetaRouterFeedbackHandler"

    def record(
        self,
        winner: FeedbackItem,
        loser: FeedbackItem,
        *,
        user_id: str | None = None,
        query: str | None = None,
    ) -> ComparisonRecord:
        """Record one comparison (as ``MetaRouterLLM.record_preference``, source ``callback``).

        Raises:
            FeedbackError: See :meth:`MetaRouterLLM.record_preference`.
        """
        if self._router is not None:
            record = self._router.record_preference(
                winner, loser, user_id=user_id, query=query, source="callback"
            )
        else:
            assert self._service is not None
            record = self._service.record_preference(
                as_feedback_item(winner),
                as_feedback_item(loser),
                user_id=user_id,
                query=query,
                source="callback",
            )
        self.records = [*self.records[-(_KEEP - 1) :], record]
        return record

    def handle(self, event: BaseEvent, **kwargs: Any) -> ComparisonRecord | None:
        """Record a :class:`PreferenceGivenEvent`; refused feedback is logged and kept."""
        if not isinstance(event, PreferenceGivenEvent):
            return None
        user_id = event.user_id
        if user_id is None and event.tags.get(USER_TAG) is not None:
            user_id = str(event.tags[USER_TAG])
        try:
            return self.record(event.winner, event.loser, user_id=user_id, query=event.query)
        except Exception as exc:  # the dispatcher would drop it unseen: log it and keep it
            logger.exception("refused feedback event %s", event.id_)
            self.errors = [*self.errors[-(_KEEP - 1) :], (event, exc)]
            return None

    async def ahandle(self, event: BaseEvent, **kwargs: Any) -> ComparisonRecord | None:
        """Async :meth:`handle`: the store is written in a worker thread."""
        if not isinstance(event, PreferenceGivenEvent):
            return None
        return await asyncio.to_thread(self.handle, event, **kwargs)
