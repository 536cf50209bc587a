"""Fixtures for core tests: the bundled router and held-out LLMRouter queries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from metarouter.data import OutcomeMatrix, load_dataset
from metarouter.pricing import estimate_tokens
from metarouter.types import Comparison


@dataclass
class HeldOut:
    """Held-out (test split) LLMRouter queries with embeddings and token counts."""

    matrix: OutcomeMatrix
    embeddings: np.ndarray
    tokens: np.ndarray

    def comparisons(self, models: list[str], n: int = 6, seed: int = 0) -> list[Comparison]:
        """``n`` comparisons between random pairs of ``models`` on random held-out queries.

        The winner is simply the first of the random pair (no profile): for tests of the
        adaptation machinery, not of what it learns.
        """
        rng = np.random.default_rng(seed)
        m = self.matrix.select_models(models)
        out = []
        for r in rng.choice(len(m.quality), n, replace=False):
            a, b = rng.choice(len(models), 2, replace=False)
            out.append(
                Comparison(
                    models[a],
                    models[b],
                    m.cost[r, a],
                    m.cost[r, b],
                    embedding=self.embeddings[r],
                    tokens=int(self.tokens[r]),
                )
            )
        return out


@pytest.fixture(scope="session")
def default_router(router_embedder):
    from metarouter.router import MetaRouter

    return MetaRouter.default(embedder=router_embedder)


@pytest.fixture(scope="session")
def llmrouter_heldout(router_embedder) -> HeldOut:
    """The bundled LLMRouter test split: queries the bundled router never trained on."""
    matrix = load_dataset("llmrouter").to_matrix()
    test = matrix.split("test")
    emb = router_embedder.encode(list(test.queries))
    tokens = np.asarray([estimate_tokens(q) for q in test.queries], float)
    return HeldOut(test, emb, tokens)
