"""Instrumentation events ``MetaRouterLLM`` dispatches (LlamaIndex's ``instrumentation`` module).

Attach an event handler to the root dispatcher to see them next to LlamaIndex's own LLM
events; each carries the ``span_id`` of the router's call, so it nests in traces::

    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler

    class Costs(BaseEventHandler):
        def handle(self, event, **kwargs):
            if isinstance(event, RoutingCompletedEvent):
                print(event.model, event.cost_usd)

    get_dispatcher().add_event_handler(Costs())
"""

from __future__ import annotations

from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation.events.base import BaseEvent

__all__ = [
    "FeedbackRecordedEvent",
    "RoutingCompletedEvent",
    "RoutingDecisionEvent",
    "RoutingFallbackEvent",
]


class RoutingDecisionEvent(BaseEvent):
    """The router chose a candidate for one call (dispatched before the candidate runs)."""

    decision_id: str = Field(description="Router-issued id; quote it in feedback.")
    """Router-issued id; quote it in feedback."""
    user_id: str = Field(description="Whose call it is.")
    """Whose call it is."""
    model: str = Field(description="The candidate chosen to answer.")
    """The candidate chosen to answer."""
    reason: str = Field(
        description="'routed' (the router's choice), 'override' (model= or a scope), "
        "'tool_loop' (kept on the model that issued the pending tool calls) or 'compare'."
    )
    """Why this model: 'routed', 'override', 'tool_loop' or 'compare'."""
    scores: dict[str, float] = Field(description="Policy probability of each candidate.")
    """Policy probability of each candidate."""
    ranking: list[str] = Field(description="Candidates best first (the fallback order).")
    """Candidates best first (the fallback order)."""
    expected_cost_usd: float = Field(description="Expected cost of the chosen model (USD).")
    """Expected cost of the chosen model (USD)."""
    quality_weight: float = Field(description="The user's quality-vs-cost read-out.")
    """The user's quality-vs-cost read-out."""

    @classmethod
    def class_name(cls) -> str:
        """Class name."""
        return "RoutingDecisionEvent"


class RoutingFallbackEvent(BaseEvent):
    """A candidate failed; the call moves on to the next-best one (or fails if none is left)."""

    decision_id: str = Field(description="The decision whose call failed.")
    """The decision whose call failed."""
    failed_model: str = Field(description="The candidate that raised.")
    """The candidate that raised."""
    error: str = Field(description="The error, as type: message.")
    """The error, as type: message."""
    next_model: str | None = Field(description="The candidate tried next (None: none left).")
    """The candidate tried next (None: none left)."""

    @classmethod
    def class_name(cls) -> str:
        """Class name."""
        return "RoutingFallbackEvent"


class RoutingCompletedEvent(BaseEvent):
    """A routed call finished: who answered and what it cost (for streams, once exhausted)."""

    decision_id: str = Field(description="The decision of the call.")
    """The decision of the call."""
    user_id: str = Field(description="Whose call it was.")
    """Whose call it was."""
    model: str = Field(description="The candidate that answered.")
    """The candidate that answered."""
    fallbacks: list[str] = Field(description="Candidates that failed before it, in order.")
    """Candidates that failed before it, in order."""
    input_tokens: int | None = Field(description="Prompt tokens the candidate reported.")
    """Prompt tokens the candidate reported."""
    output_tokens: int | None = Field(description="Answer tokens the candidate reported.")
    """Answer tokens the candidate reported."""
    cost_usd: float | None = Field(
        description="Cost in USD: the reported usage at the candidate's price, else the "
        "router's expected cost for the call (then cost_is_estimate is True)."
    )
    """Cost in USD: reported usage at the candidate's price, else the expected cost."""
    cost_is_estimate: bool = Field(
        default=False,
        description="True when cost_usd is the router's expected cost (no usage or no price).",
    )
    """True when ``cost_usd`` is the router's expected cost (no usage or no price)."""

    @classmethod
    def class_name(cls) -> str:
        """Class name."""
        return "RoutingCompletedEvent"


class FeedbackRecordedEvent(BaseEvent):
    """A pairwise comparison was stored and the user's preference re-estimated."""

    user_id: str = Field(description="The user whose preference changed.")
    """The user whose preference changed."""
    comparison_id: str = Field(description="Store-issued id of the comparison.")
    """Store-issued id of the comparison."""
    winner: str = Field(description="Model of the preferred answer.")
    """Model of the preferred answer."""
    loser: str = Field(description="Model of the other answer.")
    """Model of the other answer."""
    source: str = Field(description="How it was collected (decisions, external, compare, ...).")
    """How it was collected (decisions, external, compare, ...)."""
    quality_weight: float = Field(description="The re-estimated quality-vs-cost read-out.")
    """The re-estimated quality-vs-cost read-out."""
    n_comparisons: int = Field(description="Comparisons the preference is now based on.")
    """Comparisons the preference is now based on."""

    @classmethod
    def class_name(cls) -> str:
        """Class name."""
        return "FeedbackRecordedEvent"
