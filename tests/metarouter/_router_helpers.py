"""A tiny router trained for a given embedder, for tests of loading and embedding paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from metarouter.config import TrainingConfig
from metarouter.data import load_dataset
from metarouter.embeddings import Embedder
from metarouter.training import train_router


def tiny_router(embedder: Embedder, folder: Path, *, queries: int, steps: int) -> Path:
    """Train ``steps`` steps on the first ``queries`` bundled LLMRouter training queries, save."""
    matrix = load_dataset("llmrouter").to_matrix().split("train").rows(np.arange(queries))
    result = train_router(
        matrix,
        embedder.encode(list(matrix.queries)),
        training=TrainingConfig(steps=steps, eval_every=steps, episodes_per_step=4),
        progress=False,
        embedder=embedder.spec,
    )
    return result.router.save_pretrained(folder)
