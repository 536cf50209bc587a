"""Feedback through LangChain callbacks: the app dispatches an event, the router learns from it.

The event (name :data:`FEEDBACK_EVENT`) is a plain custom event, so it travels wherever
LangChain's callbacks go (chains, LangGraph nodes, tools)::

    dispatch_feedback(winner, loser)            # inside a runnable; or adispatch_feedback
    # i.e. dispatch_custom_event("metarouter_feedback", {"winner": ..., "loser": ...})

Event data (a mapping; JSON-able when the sides are ids):

* ``winner``, ``loser`` (required): each a decision id
  (``response_metadata["metarouter"]["decision_id"]``), a LangChain run id given as
  ``config={"run_id": ...}``, a routed ``AIMessage``, or an answer the router did not produce as
  ``{"model": str, "cost_usd": float, "text": str}``;
* ``user_id`` (optional): whose comparison; default: the run's ``metadata["user_id"]``, else the
  decisions' owner;
* ``query`` (optional): the query text; needed when neither side was routed.

:class:`MetaRouterFeedbackHandler`, in the run's callbacks, records each event as a comparison.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.callbacks.manager import adispatch_custom_event, dispatch_custom_event
from langchain_core.runnables import RunnableConfig
from metarouter.errors import FeedbackError
from metarouter.service import RoutingService
from metarouter.store.records import ComparisonRecord

from langchain_metarouter._utils import USER_ID_KEY
from langchain_metarouter.chat_models import MetaRouterChat
from langchain_metarouter.feedback import FeedbackItem, as_feedback_item

__all__ = [
    "FEEDBACK_EVENT",
    "MetaRouterFeedbackHandler",
    "adispatch_feedback",
    "dispatch_feedback",
    "feedback_event",
]

logger = logging.getLogger(__name__)

#: Name of the custom event :class:`MetaRouterFeedbackHandler` records.
FEEDBACK_EVENT = "metarouter_feedback"


def feedback_event(
    winner: FeedbackItem,
    loser: FeedbackItem,
    *,
    user_id: str | None = None,
    query: str | None = None,
) -> dict[str, Any]:
    """The event data for one comparison (see the module docstring)."""
    data: dict[str, Any] = {"winner": winner, "loser": loser}
    if user_id is not None:
        data["user_id"] = user_id
    if query is not None:
        data["query"] = query
    return data


def dispatch_feedback(
    winner: FeedbackItem,
    loser: FeedbackItem,
    *,
    user_id: str | None = None,
    query: str | None = None,
    config: RunnableConfig | None = None,
) -> None:
    """Send a comparison to the run's callbacks (call it inside a runnable, tool or node)."""
    dispatch_custom_event(
        FEEDBACK_EVENT, feedback_event(winner, loser, user_id=user_id, query=query), config=config
    )


async def adispatch_feedback(
    winner: FeedbackItem,
    loser: FeedbackItem,
    *,
    user_id: str | None = None,
    query: str | None = None,
    config: RunnableConfig | None = None,
) -> None:
    """Async :func:`dispatch_feedback`."""
    await adispatch_custom_event(
        FEEDBACK_EVENT, feedback_event(winner, loser, user_id=user_id, query=query), config=config
    )


class MetaRouterFeedbackHandler(BaseCallbackHandler):
    """Turns the app's feedback events into comparisons for the router.

    Add it to the callbacks of the runs that dispatch feedback (or globally). Events named
    ``event_name`` are recorded with :meth:`record`; other events are ignored.

    Args:
        router: The ``MetaRouterChat`` (or its ``RoutingService``) that learns from the events.
        event_name: The custom event to listen to.
        raise_error: Re-raise invalid feedback (unknown ids, malformed data) in the code that
            dispatched it (default); when False it is logged and dropped.

    Attributes:
        records: The comparisons recorded by this handler, oldest first (last 1,000).
    """

    def __init__(
        self,
        router: MetaRouterChat | RoutingService,
        *,
        event_name: str = FEEDBACK_EVENT,
        raise_error: bool = True,
    ) -> None:
        super().__init__()
        self._router: MetaRouterChat | None = None
        self._service: RoutingService | None = None
        if isinstance(router, MetaRouterChat):
            self._router = router
        elif isinstance(router, RoutingService):
            self._service = router
        else:
            raise TypeError(
                f"MetaRouterFeedbackHandler takes a MetaRouterChat or a RoutingService, got "
                f"{type(router).__name__}."
            )
        self.event_name = event_name
        self.raise_error = raise_error
        self.records: list[ComparisonRecord] = []

    def record(
        self,
        winner: FeedbackItem,
        loser: FeedbackItem,
        *,
        user_id: str | None = None,
        query: str | None = None,
    ) -> ComparisonRecord:
        """Record one comparison (the same as ``MetaRouterChat.record_preference``)."""
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
        self.records = [*self.records[-999:], record]
        return record

    def on_custom_event(
        self,
        name: str,
        data: Any,
        *,
        run_id: uuid.UUID,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Record a feedback event (see the module docstring for its data)."""
        if name != self.event_name:
            return
        try:
            if not isinstance(data, Mapping) or "winner" not in data or "loser" not in data:
                raise FeedbackError(
                    f"a {self.event_name!r} event needs data {{'winner': ..., 'loser': ...}} "
                    f"(optional 'user_id', 'query'), got {data!r}."
                )
            user_id = data.get("user_id")
            if user_id is None and metadata:
                user_id = metadata.get(USER_ID_KEY)
            self.record(
                data["winner"],
                data["loser"],
                user_id=str(user_id) if user_id is not None else None,
                query=data.get("query"),
            )
        except FeedbackError:
            if self.raise_error:
                raise
            logger.exception("dropped invalid %s event from run %s", self.event_name, run_id)
