"""LangChain integration for metarouter: ``MetaRouterChat`` and the agent middleware."""

from __future__ import annotations

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "langchain_metarouter needs LangChain. Install the extra: "
        "pip install 'metarouter[langchain]'"
    ) from exc

__all__: list[str] = []
