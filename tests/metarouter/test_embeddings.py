import numpy as np
import pytest
import pytest_socket
from metarouter.embeddings import (
    LONG_PROMPT_CHARS,
    Embedder,
    EmbeddingCache,
    embedding_text,
)


def test_embeddings_have_shape_n_by_384_and_unit_norm(embedder):
    out = embedder.encode(["What is 2 + 2?", "Write a function that reverses a string."])
    assert out.shape == (2, 384)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_embeddings_are_deterministic_and_batch_independent(embedder):
    texts = [f"question number {i} about {'physics' if i % 2 else 'cooking'}" for i in range(40)]
    a = embedder.encode(texts)
    b = embedder.encode(texts)
    np.testing.assert_array_equal(a, b)
    alone = embedder.encode_one(texts[7])
    np.testing.assert_allclose(alone, a[7], atol=1e-5)


def test_similar_questions_are_closer_than_unrelated_ones(embedder):
    a, b, c = embedder.encode(
        ["How do I bake bread?", "What is a recipe for baking bread?", "Prove Fermat's theorem."]
    )
    assert a @ b > a @ c + 0.2


def test_model_loads_and_embeds_with_sockets_disabled():
    pytest_socket.disable_socket(allow_unix_socket=True)
    try:
        fresh = Embedder()  # a new instance: the model is loaded inside the blocked section
        out = fresh.encode(["offline please"])
        with pytest.raises(pytest_socket.SocketBlockedError):
            import socket

            socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    finally:
        pytest_socket.enable_socket()
    assert out.shape == (1, 384)


def test_long_few_shot_prompt_is_embedded_by_its_last_question():
    shots = "\n\n".join(
        f"Example question {i} about rocks?\nA) yes\nB) no\nAnswer:\nA" for i in range(30)
    )
    question = (
        "Which planet is closest to the sun?\nA) Mercury\nB) Venus\nC) Earth\nD) Mars\n"
        'Print only a single choice from "A" or "B" or "C" or "D" without explanation.\nAnswer:'
    )
    prompt = shots + "\n\n" + question
    assert len(prompt) > LONG_PROMPT_CHARS
    kept = embedding_text(prompt)
    assert kept == question


def test_short_last_block_is_extended_backwards():
    prefix = "x" * 1200
    prompt = prefix + "\n\nContext: the sky is blue.\n\nQ: colour?"
    kept = embedding_text(prompt)
    assert kept.endswith("Q: colour?")
    assert "Context: the sky is blue." in kept


def test_short_prompts_are_embedded_whole():
    assert embedding_text("  hi there\n\nsecond part ") == "hi there\n\nsecond part"


def test_shared_prefix_does_not_dominate_embeddings(embedder):
    prefix = "\n\n".join(f"Example {i}: the answer is {i}." for i in range(60))
    spider = "How many legs does a spider have? Explain the biology of arachnids, and how their body plan differs from that of insects."
    water = "What is the boiling point of water at sea level in degrees Celsius, and why does it drop when you climb a high mountain like Everest?"
    q1, q2, q3 = embedder.encode([prefix + "\n\n" + spider, prefix + "\n\n" + water, spider])
    assert q1 @ q3 > 0.99
    assert q1 @ q2 < 0.6


def test_disk_cache_embeds_each_text_once(tmp_path, embedder, monkeypatch):
    cache = EmbeddingCache(tmp_path)
    cached = Embedder(cache=cache)
    cached.backend = embedder.backend  # share the loaded weights
    calls = []
    original = cached._forward
    monkeypatch.setattr(
        cached, "_forward", lambda t, p=False: calls.append(len(t)) or original(t, p)
    )
    first = cached.encode(["alpha", "beta", "alpha"])
    second = cached.encode(["beta", "alpha", "gamma"])
    assert calls == [2, 1]
    np.testing.assert_array_equal(first[0], second[1])
    # a new process (new cache object) reads the shards back without recomputing
    again = EmbeddingCache(tmp_path)
    assert len(again) == 3
    assert all(v is not None for v in again.get_many([EmbeddingCache.key("gamma")]))
    assert not list(tmp_path.rglob("*.tmp"))


def test_corrupt_cache_shard_is_ignored_not_fatal(tmp_path, embedder):
    cache = EmbeddingCache(tmp_path)
    cache.folder.mkdir(parents=True)
    (cache.folder / "shard-broken.npz").write_bytes(b"not a zip")
    cached = Embedder(cache=cache)
    cached.backend = embedder.backend
    out = cached.encode(["still works"])
    assert out.shape == (1, 384)
