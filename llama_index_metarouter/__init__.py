"""LlamaIndex integration for metarouter: ``MetaRouterLLM``."""

from __future__ import annotations

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "llama_index_metarouter needs LlamaIndex. Install the extra: "
        "pip install 'metarouter[llama-index]'"
    ) from exc

__all__: list[str] = []
