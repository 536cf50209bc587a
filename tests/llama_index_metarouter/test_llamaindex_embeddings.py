"""``MiniLMEmbedding``: the router's offline embedder as a LlamaIndex embedding model."""

from __future__ import annotations

import numpy as np
import pytest

from llama_index_metarouter import MiniLMEmbedding


@pytest.fixture
def embed_model(embedder):
    return MiniLMEmbedding(embedder)


def test_embeddings_are_384_dimensional_unit_vectors(embed_model):
    vector = np.asarray(embed_model.get_text_embedding("Capybaras graze on grasses."))
    assert vector.shape == (384,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_similar_texts_are_closer_than_unrelated_ones(embed_model):
    query = np.asarray(embed_model.get_query_embedding("What do capybaras eat?"))
    docs = np.asarray(
        embed_model.get_text_embedding_batch(
            ["Capybaras graze on grasses and water plants.", "Jupiter has a great red storm."]
        )
    )
    related, unrelated = docs @ query
    assert related > unrelated + 0.2


async def test_async_embeddings_match_sync_ones(embed_model):
    text = "The borrow checker keeps references valid."
    sync = embed_model.get_text_embedding(text)
    assert await embed_model.aget_text_embedding(text) == pytest.approx(sync, abs=1e-6)
    assert await embed_model.aget_query_embedding(text) == pytest.approx(sync, abs=1e-6)


def test_shares_a_given_minilm_embedder(embedder):
    assert MiniLMEmbedding(embedder)._embedder is embedder


def test_takes_the_onnx_runtime_of_the_same_model(embedder):
    pytest.importorskip("onnxruntime")
    from metarouter.embeddings import Embedder

    onnx = Embedder("minilm-onnx")
    embed_model = MiniLMEmbedding(onnx)
    text = "How do I reverse a linked list in place?"
    assert embed_model.get_text_embedding(text) == pytest.approx(
        MiniLMEmbedding(embedder).get_text_embedding(text), abs=1e-5
    )


def test_refuses_the_bundled_routers_static_table_and_says_what_to_pass(
    make_router, mock_candidates
):
    from metarouter.errors import ConfigError

    router = make_router(mock_candidates())
    assert router.service.router.embedder.name == "static"
    with pytest.raises(ConfigError, match=r"pass no embedder .*minilm-torch"):
        MiniLMEmbedding(router.service.router.embedder)
