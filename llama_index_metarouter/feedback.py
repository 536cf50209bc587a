"""What feedback is given about: routed calls and pairs of answers to choose between.

The feedback itself is stored and learned from by the core
(:meth:`metarouter.service.RoutingService.record_preference`); these are the LlamaIndex-side
views of it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from llama_index.core.base.llms.types import ChatResponse, CompletionResponse
from metarouter.errors import FeedbackError
from metarouter.feedback import Pair
from metarouter.store.records import ComparisonRecord

from llama_index_metarouter.utils import routing_info

if TYPE_CHECKING:
    from metarouter.service import Decision, Response
    from metarouter.store.records import ComparisonSource

__all__ = ["ComparePair", "FeedbackItem", "RoutedCall", "as_feedback_item"]

#: One side of a comparison: a response ``MetaRouterLLM`` returned, a :class:`RoutedCall`, a
#: decision id, a core ``Decision`` or ``Response``, or a mapping (``{"decision_id": ...}``, or
#: ``{"model": ..., "cost_usd": ..., "text": ...}`` for an answer the router did not produce).
FeedbackItem: TypeAlias = Any


@dataclass(frozen=True)
class RoutedCall:
    """One call ``MetaRouterLLM`` routed: the decision, who answered, what it cost.

    Pass it (or its ``decision_id``, or the response itself) to
    :meth:`MetaRouterLLM.record_preference`.

    Attributes:
        decision_id: Router-issued id.
        user_id: Whose call it was.
        model: The candidate that answered.
        chosen_model: The candidate the router (or an override) chose first.
        reason: 'routed', 'override', 'tool_loop' or 'compare'.
        scores: Policy probability of each candidate.
        expected_cost_usd: Expected cost of the chosen model.
        cost_usd: Cost in USD: the reported usage at the candidate's price, else the router's
            expected cost (``cost_is_estimate``); None only for a stream not yet done.
        cost_is_estimate: Whether ``cost_usd`` is the expected cost, not a measured one.
        input_tokens: Prompt tokens the candidate reported.
        output_tokens: Answer tokens the candidate reported.
        fallbacks: Candidates that failed before ``model`` answered.
        text: The answer text, when known.
        response: The LlamaIndex response, when known.
    """

    decision_id: str
    user_id: str
    model: str
    chosen_model: str
    reason: str
    scores: Mapping[str, float]
    expected_cost_usd: float
    cost_usd: float | None = None
    cost_is_estimate: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None
    fallbacks: tuple[str, ...] = ()
    text: str | None = field(default=None, repr=False)
    response: ChatResponse | CompletionResponse | None = field(
        default=None, repr=False, compare=False
    )

    @classmethod
    def from_info(
        cls,
        info: Mapping[str, Any],
        response: ChatResponse | CompletionResponse | None = None,
    ) -> RoutedCall:
        """Build from the routing data in ``additional_kwargs["metarouter"]``."""
        text: str | None = None
        if isinstance(response, ChatResponse):
            text = response.message.content
        elif isinstance(response, CompletionResponse):
            text = response.text
        return cls(
            decision_id=str(info["decision_id"]),
            user_id=str(info["user_id"]),
            model=str(info.get("model") or info["chosen_model"]),
            chosen_model=str(info["chosen_model"]),
            reason=str(info.get("reason", "routed")),
            scores=dict(info.get("scores", {})),
            expected_cost_usd=float(info.get("expected_cost_usd", 0.0)),
            cost_usd=info.get("cost_usd"),
            cost_is_estimate=bool(info.get("cost_is_estimate", False)),
            input_tokens=info.get("input_tokens"),
            output_tokens=info.get("output_tokens"),
            fallbacks=tuple(f["model"] for f in info.get("fallbacks", ())),
            text=text,
            response=response,
        )

    @classmethod
    def from_response(cls, response: ChatResponse | CompletionResponse) -> RoutedCall:
        """The routed call behind a response returned by ``MetaRouterLLM``.

        Raises:
            FeedbackError: The response did not come through ``MetaRouterLLM``.
        """
        info = routing_info(response)
        if info is None:
            raise FeedbackError(
                "this response carries no routing data (additional_kwargs['metarouter']), so it "
                "did not come through MetaRouterLLM. Fix: pass the routed response, its "
                "decision id, or describe the answer: Response(model=..., cost_usd=..., "
                "text=...) from metarouter.service."
            )
        return cls.from_info(info, response)


class _Recorder(Protocol):
    def record_preference(
        self,
        winner: Any,
        loser: Any,
        *,
        user_id: str | None = None,
        query: str | None = None,
        source: ComparisonSource | None = None,
    ) -> ComparisonRecord: ...


@dataclass(frozen=True)
class ComparePair:
    """Two candidates' answers to the same query, for the user to choose between.

    Returned by :meth:`MetaRouterLLM.compare`; call :meth:`prefer` with the better one.

    Attributes:
        query: The routing text both answered.
        user_id: Whose comparison it is.
        answers: The two answers (their ``text``, ``model`` and ``cost_usd``).
    """

    query: str
    user_id: str
    answers: tuple[RoutedCall, RoutedCall]
    recorder: _Recorder = field(repr=False, compare=False)

    @classmethod
    def of(
        cls, query: str, answers: tuple[RoutedCall, RoutedCall], recorder: _Recorder
    ) -> ComparePair:
        """The pair of two routed answers (the user is theirs)."""
        return cls(query, answers[0].user_id, answers, recorder)

    @property
    def models(self) -> tuple[str, str]:
        """The candidates that wrote the two answers."""
        return self.answers[0].model, self.answers[1].model

    @property
    def decision_ids(self) -> tuple[str, str]:
        """Decision ids of the two answers."""
        return self.answers[0].decision_id, self.answers[1].decision_id

    @property
    def pair(self) -> Pair:
        """The core's view of the pair."""
        return Pair(self.query, self.user_id, self.models, self.decision_ids)

    def prefer(self, winner: int | str | RoutedCall | ChatResponse | CompletionResponse) -> Any:
        """Record that ``winner``'s answer was worth it over the other one.

        Args:
            winner: 0 or 1 (index into :attr:`answers`), a model name or decision id, or one of
                the answers (the rule of :class:`metarouter.feedback.Pair`: ``True`` and
                ``1.0`` are refused).

        Returns:
            The stored comparison.

        Raises:
            FeedbackError: ``winner`` names neither answer.
        """
        if isinstance(winner, RoutedCall):
            winner = winner.decision_id
        elif isinstance(winner, (ChatResponse, CompletionResponse)):
            winner = RoutedCall.from_response(winner).decision_id
        win, lose = self.pair.choose(winner)
        return self.recorder.record_preference(win, lose, user_id=self.user_id, source="compare")


def as_feedback_item(item: FeedbackItem) -> str | uuid.UUID | Decision | Response:
    """Normalise one side of a comparison for :meth:`RoutingService.record_preference`.

    LlamaIndex responses and :class:`RoutedCall` become their decision id; the plain forms
    (ids, ``Decision``, ``Response``, mappings) are read by the core's
    :func:`metarouter.service.as_answer`, as in every adapter.

    Raises:
        FeedbackError: The item names no answer (a response the router did not produce, a
            mapping without ``decision_id`` or ``model`` + ``cost_usd``, another type).
    """
    from metarouter.service import Decision, Response, as_answer

    if isinstance(item, RoutedCall):
        return item.decision_id
    if isinstance(item, (ChatResponse, CompletionResponse)):
        return RoutedCall.from_response(item).decision_id
    if isinstance(item, (str, uuid.UUID, Decision, Response, Mapping)):
        return as_answer(item)
    raise FeedbackError(
        f"cannot compare a {type(item).__name__}: pass a response MetaRouterLLM returned, a "
        "RoutedCall (e.g. scope.last), a decision id, or, for an answer the router did not "
        "produce, Response(model=..., cost_usd=..., text=...) from metarouter.service or a dict "
        "with those keys."
    )
