"""LlamaIndex integration for metarouter: ``MetaRouterLLM``.

``Settings.llm = MetaRouterLLM({...})`` routes every LLM call of every LlamaIndex pipeline to the
candidate that fits the user's cost-vs-quality taste, learned from pairwise feedback. See
docs/llamaindex.md.
"""

from __future__ import annotations

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "llama_index_metarouter needs LlamaIndex. Install the extra: "
        "pip install 'metarouter[llama-index]'"
    ) from exc

from llama_index_metarouter.base import MetaRouterLLM
from llama_index_metarouter.callbacks import (
    MetaRouterFeedbackHandler,
    PreferenceGivenEvent,
    adispatch_feedback,
    dispatch_feedback,
)
from llama_index_metarouter.candidates import Candidate
from llama_index_metarouter.embeddings import MiniLMEmbedding
from llama_index_metarouter.events import (
    FeedbackRecordedEvent,
    RoutingCompletedEvent,
    RoutingDecisionEvent,
    RoutingFallbackEvent,
)
from llama_index_metarouter.feedback import ComparePair, RoutedCall
from llama_index_metarouter.scope import RoutingScope
from llama_index_metarouter.utils import ROUTING_KEY

__all__ = [
    "ROUTING_KEY",
    "Candidate",
    "ComparePair",
    "FeedbackRecordedEvent",
    "MetaRouterFeedbackHandler",
    "MetaRouterLLM",
    "MiniLMEmbedding",
    "PreferenceGivenEvent",
    "RoutedCall",
    "RoutingCompletedEvent",
    "RoutingDecisionEvent",
    "RoutingFallbackEvent",
    "RoutingScope",
    "adispatch_feedback",
    "dispatch_feedback",
]
