"""LangChain integration for metarouter: ``MetaRouterChat`` and the agent middleware.

* :class:`MetaRouterChat`: a chat model that routes each call to one of its candidate chat
  models, per user, and learns from pairwise feedback.
* :class:`MetaRouterMiddleware`: the same routing for ``create_agent`` agents (needs the
  ``langchain`` package; imported on first use).
* :class:`MetaRouterFeedbackHandler`, :func:`dispatch_feedback`: feedback as LangChain events.

See docs/langchain.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "langchain_metarouter needs LangChain. Install the extra: "
        "pip install 'metarouter[langchain]'"
    ) from exc

from metarouter.pricing import Price
from metarouter.service import ArmSpec, Response, RoutingService

from langchain_metarouter._utils import query_text
from langchain_metarouter.callbacks import (
    FEEDBACK_EVENT,
    MetaRouterFeedbackHandler,
    adispatch_feedback,
    dispatch_feedback,
    feedback_event,
)
from langchain_metarouter.chat_models import MetaRouterChat
from langchain_metarouter.feedback import ComparePair

if TYPE_CHECKING:
    from langchain_metarouter.middleware import MetaRouterMiddleware

__all__ = [
    "FEEDBACK_EVENT",
    "ArmSpec",
    "ComparePair",
    "MetaRouterChat",
    "MetaRouterFeedbackHandler",
    "MetaRouterMiddleware",
    "Price",
    "Response",
    "RoutingService",
    "adispatch_feedback",
    "dispatch_feedback",
    "feedback_event",
    "query_text",
]


def __getattr__(name: str) -> Any:
    if name == "MetaRouterMiddleware":
        try:
            from langchain_metarouter.middleware import MetaRouterMiddleware
        except ImportError as exc:
            raise ImportError(
                "MetaRouterMiddleware needs the 'langchain' package (LangChain 1.x agents): "
                "pip install 'langchain>=1.0,<2'"
            ) from exc
        globals()[name] = MetaRouterMiddleware
        return MetaRouterMiddleware
    raise AttributeError(f"module 'langchain_metarouter' has no attribute {name!r}")
