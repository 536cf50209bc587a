"""Fixtures for core tests: the bundled router and held-out LLMRouter queries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from metarouter.data import OutcomeMatrix, load_dataset
from metarouter.pricing import estimate_tokens


@dataclass
class HeldOut:
    """Held-out (test split) LLMRouter queries with embeddings and token counts."""

    matrix: OutcomeMatrix
    embeddings: np.ndarray
    tokens: np.ndarray


@pytest.fixture(scope="session")
def default_router(embedder):
    from metarouter.router import MetaRouter

    return MetaRouter.default(embedder=embedder)


@pytest.fixture(scope="session")
def llmrouter_heldout(embedder) -> HeldOut:
    """The bundled LLMRouter test split: queries the bundled router never trained on."""
    matrix = load_dataset("llmrouter").to_matrix()
    test = matrix.split("test")
    emb = embedder.encode(list(test.queries))
    tokens = np.asarray([estimate_tokens(q) for q in test.queries], float)
    return HeldOut(test, emb, tokens)
