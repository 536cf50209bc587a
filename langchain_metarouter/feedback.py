"""Pairwise feedback in LangChain terms: what can be compared, and the result of ``compare()``.

A comparison says "this answer was worth its cost over that one" for one query. Each side can
be named by anything LangChain code has at hand; :func:`as_feedback_item` turns it into what
the core :meth:`~metarouter.service.RoutingService.record_preference` takes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from langchain_core.messages import AIMessage, BaseMessage
from metarouter.errors import FeedbackError
from metarouter.feedback import Pair
from metarouter.service import Decision, Response, as_answer
from metarouter.store.records import ComparisonRecord, ComparisonSource

from langchain_metarouter._utils import METADATA_KEY

__all__ = ["ComparePair", "FeedbackItem", "as_feedback_item"]

#: One side of a comparison: a routed ``AIMessage``, a decision id, a run id (``str`` or
#: ``UUID``), a core ``Decision`` or ``Response``, or a mapping (``{"decision_id": ...}`` or
#: ``{"model": ..., "cost_usd": ..., "text": ...}`` for an answer the router did not produce).
FeedbackItem: TypeAlias = BaseMessage | str | uuid.UUID | Decision | Response | Mapping[str, Any]


def as_feedback_item(item: FeedbackItem) -> str | uuid.UUID | Decision | Response:
    """Normalise one side of a comparison for the routing service.

    A routed ``AIMessage`` becomes its decision id; the plain forms (ids, ``Decision``,
    ``Response``, mappings) are read by the core's :func:`metarouter.service.as_answer`, as in
    every adapter.

    Raises:
        FeedbackError: The item names no answer (a message the router did not produce, a
            mapping without ``decision_id`` or ``model`` + ``cost_usd``, another type).
    """
    if isinstance(item, BaseMessage):
        data = item.response_metadata.get(METADATA_KEY)
        if not isinstance(data, Mapping) or "decision_id" not in data:
            raise FeedbackError(
                "this message was not produced by MetaRouterChat (it has no "
                "response_metadata['metarouter']). Fix: for an answer the router did not "
                "produce, pass Response(model=..., cost_usd=..., text=...) and query=..."
            )
        return str(data["decision_id"])
    if isinstance(item, (str, uuid.UUID, Decision, Response, Mapping)):
        return as_answer(item)
    raise FeedbackError(
        f"cannot compare a {type(item).__name__}: pass a routed AIMessage, a decision id, a run "
        "id, or Response(model=..., cost_usd=..., text=...)."
    )


@dataclass(frozen=True)
class ComparePair:
    """Two candidates' answers to the same input, for the user to choose between.

    Attributes:
        pair: The core's view of the pair (query, user, models, decision ids).
        answers: The two answers (each with ``response_metadata["metarouter"]``).
    """

    pair: Pair
    answers: tuple[AIMessage, AIMessage]
    recorder: Callable[..., ComparisonRecord] = field(repr=False, compare=False)

    @property
    def query(self) -> str:
        """The routing text of the input."""
        return self.pair.query

    @property
    def user_id(self) -> str:
        """Whose comparison it is."""
        return self.pair.user_id

    @property
    def models(self) -> tuple[str, str]:
        """The candidates that wrote the two answers."""
        return self.pair.models

    @property
    def decision_ids(self) -> tuple[str, str]:
        """Their decision ids (what :meth:`MetaRouterChat.record_preference` takes)."""
        return self.pair.decision_ids

    def prefer(self, winner: int | str | AIMessage) -> ComparisonRecord:
        """Record the user's choice.

        Args:
            winner: ``0`` or ``1`` (position in :attr:`answers`), the winning model's name or
                decision id, or one of the two answers (the rule of
                :class:`metarouter.feedback.Pair`: ``True`` and ``1.0`` are refused).

        Raises:
            FeedbackError: ``winner`` names neither answer.
        """
        if isinstance(winner, BaseMessage):
            winner = str(as_feedback_item(winner))
        win, lose = self.pair.choose(winner)
        source: ComparisonSource = "compare"
        return self.recorder(win, lose, user_id=self.pair.user_id, source=source)
