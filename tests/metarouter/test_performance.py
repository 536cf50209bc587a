"""Hot-path optimisations: they save work without changing a single number.

The embedding LRU and the single-text fast path, the router's cached tensors, the fused
adaptation pass, the thread setting and the lazy torch import (benchmarks/, docs/benchmarks.md).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from metarouter.embeddings import THREADS_ENV, Embedder, _apply_thread_setting, embedding_text
from metarouter.errors import ConfigError
from metarouter.router import _TENSOR_CACHE_SIZE, MetaRouter

CANDS = ["gemma-2-9b-it", "qwen2.5-7b-instruct", "llama-3.1-nemotron-51b-instruct"]
TEXTS = [
    "What is 12 * 13?",
    "Write a haiku about the sea.",
    "Explain the difference between TCP and UDP in two sentences.",
    "Translate 'good morning' into French.",
    "List three prime numbers above 100.",
]


@pytest.fixture(scope="module")
def fresh_embedder():
    """An embedder that loaded its own model (so the fast-path check ran)."""
    emb = Embedder(memory_cache_size=3)
    emb.encode(["warm up"])
    return emb


def test_single_text_fast_path_is_active_and_bit_identical_to_sentence_transformers(
    fresh_embedder,
):
    assert fresh_embedder.backend._fast_one
    model = fresh_embedder.model
    for text in TEXTS:
        prepared = embedding_text(text)
        reference = model.encode([prepared], convert_to_numpy=True, normalize_embeddings=True)
        np.testing.assert_array_equal(fresh_embedder._forward([prepared]), reference)


def test_fast_path_matches_the_batched_encode_used_for_datasets(fresh_embedder):
    batched = fresh_embedder.encode(TEXTS)
    one_by_one = np.stack([fresh_embedder._forward([embedding_text(t)])[0] for t in TEXTS])
    np.testing.assert_allclose(one_by_one, batched, atol=1e-6)


def test_fast_path_puts_a_model_switched_to_training_back_into_eval(fresh_embedder):
    model = fresh_embedder.model
    before = fresh_embedder._forward(["dropout must stay off"])
    model.train()
    try:
        after = fresh_embedder._forward(["dropout must stay off"])
    finally:
        model.eval()
    np.testing.assert_array_equal(before, after)
    assert not model.training


def test_repeated_prompts_are_served_from_the_memory_lru_with_identical_vectors(
    fresh_embedder, monkeypatch
):
    fresh_embedder._lru.clear()
    calls = []
    original = fresh_embedder._forward
    monkeypatch.setattr(
        fresh_embedder, "_forward", lambda t, p=False: calls.append(list(t)) or original(t, p)
    )
    first = fresh_embedder.encode_one(TEXTS[0])
    again = fresh_embedder.encode_one(TEXTS[0])
    assert len(calls) == 1
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, fresh_embedder.encode([TEXTS[0]])[0])
    with pytest.raises(ValueError):  # cached vectors are shared, so they are read-only
        again[0] = 1.0


def test_memory_lru_is_bounded_and_evicts_the_least_recently_used(fresh_embedder):
    fresh_embedder._lru.clear()
    for text in TEXTS[:3]:
        fresh_embedder.encode_one(text)
    fresh_embedder.encode_one(TEXTS[0])  # refresh: TEXTS[1] is now the oldest
    fresh_embedder.encode_one(TEXTS[3])
    fresh_embedder.encode_one(TEXTS[4])
    assert len(fresh_embedder._lru) == fresh_embedder.memory_cache_size == 3
    kept = set(fresh_embedder._lru)
    assert kept == {embedding_text(t) for t in (TEXTS[0], TEXTS[3], TEXTS[4])}


def test_memory_lru_of_size_zero_stores_nothing(embedder):
    plain = Embedder(memory_cache_size=0)
    plain.backend = embedder.backend
    plain.encode_one("no caching here")
    assert len(plain._lru) == 0


def test_thread_setting_defaults_to_one_thread_and_zero_leaves_torch_alone(monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.delenv(THREADS_ENV, raising=False)
        _apply_thread_setting()
        assert torch.get_num_threads() == 1  # the default: one intra-op thread
        torch.set_num_threads(2)
        monkeypatch.setenv(THREADS_ENV, "0")
        _apply_thread_setting()
        assert torch.get_num_threads() == 2  # 0: torch's own setting is kept
        monkeypatch.setenv(THREADS_ENV, "2")
        _apply_thread_setting()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("value", ["-2", "two", "1.5"])
def test_thread_setting_rejects_a_bad_value_with_a_fix(monkeypatch, value):
    monkeypatch.setenv(THREADS_ENV, value)
    with pytest.raises(ConfigError, match=THREADS_ENV):
        _apply_thread_setting()


def test_cached_candidate_and_preference_tensors_give_the_same_scores_as_a_fresh_router(
    default_router, llmrouter_heldout, router_embedder
):
    pref = default_router.adapt(llmrouter_heldout.comparisons(CANDS, 6))
    arms = default_router.resolve(CANDS)
    emb, tok = llmrouter_heldout.embeddings[:4], llmrouter_heldout.tokens[:4]
    first = default_router.score_embeddings(emb, tok, arms, pref)
    cached_arms = default_router._candidate_tensors(arms)
    second = default_router.score_embeddings(emb, tok, arms, pref)
    assert default_router._candidate_tensors(arms) is cached_arms
    fresh = MetaRouter.default(embedder=router_embedder).score_embeddings(emb, tok, CANDS, pref)
    for a, b, c in zip(first, second, fresh, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_tensor_caches_are_bounded(default_router):
    prior = default_router.prior()
    base = default_router.resolve(CANDS)
    for i in range(_TENSOR_CACHE_SIZE + 10):
        arms = [*base[:2], default_router.describe(f"new-{i}", _price(), quality=0.5)]
        dim = default_router.config.embedding_dim
        default_router.score_embeddings(np.zeros((1, dim), np.float32), np.ones(1), arms, prior)
    assert len(default_router._arm_tensors) == _TENSOR_CACHE_SIZE


def _price():
    from metarouter.pricing import Price

    return Price(0.1, 0.2)


def test_importing_the_router_and_the_langchain_adapter_does_not_import_torch():
    code = textwrap.dedent(
        """
        import sys
        import metarouter.router, metarouter.service
        try:
            import langchain_metarouter
        except ImportError:
            pass
        assert "torch" not in sys.modules, "torch imported"
        assert "sentence_transformers" not in sys.modules, "sentence_transformers imported"
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_batched_decisions_carry_the_scored_arrays_as_python_floats(
    default_router, llmrouter_heldout
):
    pref = default_router.adapt(llmrouter_heldout.comparisons(CANDS, 6))
    emb, tok = llmrouter_heldout.embeddings[:32], llmrouter_heldout.tokens[:32]
    decisions = default_router.route_embeddings(emb, tok, CANDS, pref)
    probs, quality, costs = default_router.score_embeddings(emb, tok, CANDS, pref)
    for i, d in enumerate(decisions):
        order = np.argsort(-probs[i], kind="stable")
        assert d.ranking == tuple(CANDS[j] for j in order)
        assert d.model == CANDS[order[0]]
        for k, name in enumerate(CANDS):
            assert type(d.scores[name]) is float and d.scores[name] == float(probs[i, k])
            assert d.predicted_quality[name] == float(quality[i, k])
            assert d.expected_costs_usd[name] == float(costs[i, k])
