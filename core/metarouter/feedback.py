"""Pairwise feedback as every adapter takes it: a ``compare()`` pair and the user's choice.

``compare()`` answers one query with the two candidates
:meth:`metarouter.dispatch.CallFlow.pair` picks (the router's ``suggest_pair``); the user then
says which answer was worth it. :class:`Pair` holds what is needed to record that choice, and
:meth:`Pair.choose` is the one rule for what ``prefer()`` accepts, in every adapter:

* ``0`` or ``1``: the position in the pair (an ``int``; ``True``, ``False`` and ``1.0`` are
  refused, since they are not positions; :func:`metarouter.validation.preferred_index`);
* the model name of one of the two answers;
* the decision id of one of the two answers;
* one of the two answers itself (the adapter turns it into its decision id).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from metarouter.validation import preferred_index

__all__ = ["Pair", "default_feedback_user"]


@dataclass(frozen=True)
class Pair:
    """Two routed answers to the same query, for the user to choose between.

    Attributes:
        query: The routing text both answered.
        user_id: Whose comparison it is.
        models: The candidates that wrote the two answers.
        decision_ids: Their decision ids.
    """

    query: str
    user_id: str
    models: tuple[str, str]
    decision_ids: tuple[str, str]

    def index(self, winner: object) -> int:
        """The position (0 or 1) of the answer ``winner`` names (rule: module docstring).

        Raises:
            FeedbackError: ``winner`` names neither answer.
        """
        return preferred_index(winner, list(zip(self.models, self.decision_ids, strict=True)))

    def choose(self, winner: object) -> tuple[str, str]:
        """``(winner's decision id, loser's decision id)`` for the user's choice."""
        first = self.index(winner)
        return self.decision_ids[first], self.decision_ids[1 - first]


def default_feedback_user(sides: Sequence[object], instance_user: str | None) -> str | None:
    """The user a comparison is recorded for when the caller names none.

    Routed answers name their owner (the service reads it from their decisions), so the
    adapter's own user only applies when no side came from the router.

    Args:
        sides: Both sides, as normalised by :func:`metarouter.service.as_answer`.
        instance_user: The adapter's user (its ``user_id``, a scope's).
    """
    from metarouter.service import Response

    if all(isinstance(side, Response) and side.decision_id is None for side in sides):
        return instance_user
    return None
