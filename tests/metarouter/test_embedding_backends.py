"""Embedding backends: selection, the static table, the router's record of its embedder."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from _router_helpers import tiny_router
from metarouter.config import MetaRouterConfig
from metarouter.embedding_backends import EMBEDDERS, STATIC_MODEL_NAME, static_model_dir
from metarouter.embeddings import Embedder, EmbeddingCache, embedding_text
from metarouter.errors import ConfigError, EmbedderMismatchError, MetaRouterError
from metarouter.router import MetaRouter

TEXTS = [
    "What is 12 * 13?",
    "Write a haiku about the sea.",
    "Explain the difference between TCP and UDP in two sentences.",
    "",
]


@pytest.fixture(scope="module")
def static():
    return Embedder("static")


def test_backends_are_selected_by_name_and_an_unknown_name_lists_the_valid_ones():
    assert EMBEDDERS == ("minilm-torch", "static", "minilm-onnx", "minilm-onnx-int8")
    assert Embedder().name == "minilm-torch"
    assert Embedder("static").name == "static"
    with pytest.raises(ConfigError, match="minilm-torch") as err:
        Embedder("word2vec")
    assert "static" in str(err.value)


def test_static_embeddings_are_unit_256_d_batch_independent_and_semantic(static):
    out = static.encode(TEXTS)
    assert out.shape == (4, 256) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out[:3], axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out[3], 0.0)  # no word piece at all: the zero vector
    for i, text in enumerate(TEXTS):
        np.testing.assert_allclose(static.encode_one(text), out[i], atol=1e-6)
    a, b, c = static.encode(
        ["How do I bake bread?", "What is a recipe for baking bread?", "Prove Fermat's theorem."]
    )
    assert a @ b > a @ c + 0.2


def test_static_table_is_the_normalised_mean_of_word_piece_rows(static):
    static.warm_up()
    backend = static.backend
    text = embedding_text("Sort a list of integers in Python")
    ids = backend._tokenizer.encode(text, add_special_tokens=False).ids
    mean = backend._table[ids].mean(axis=0)
    np.testing.assert_allclose(static.encode([text])[0], mean / np.linalg.norm(mean), atol=1e-6)


def test_packaged_static_table_is_small_float16_and_carries_its_licence():
    folder = static_model_dir()
    assert folder.name == STATIC_MODEL_NAME
    size = (folder / "model.safetensors").stat().st_size
    assert size < 16 * 2**20
    header_len = int.from_bytes((folder / "model.safetensors").read_bytes()[:8], "little")
    header = json.loads((folder / "model.safetensors").read_bytes()[8 : 8 + header_len])
    assert header["embeddings"]["dtype"] == "F16"
    notice = (folder / "NOTICE").read_text()
    assert "Apache License 2.0" in notice and "all-MiniLM-L6-v2" in notice


def test_static_backend_imports_neither_torch_nor_sentence_transformers():
    code = textwrap.dedent(
        """
        import sys
        from metarouter.embeddings import Embedder
        e = Embedder("static")
        v = e.encode_one("What is 2 + 2?")
        assert v.shape == (256,)
        print(sorted(m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cache_keys_differ_per_backend_and_vectors_never_mix(tmp_path, static, embedder):
    assert static.cache_key() != embedder.cache_key()
    assert static.cache_key().startswith("static-")
    shared = EmbeddingCache(tmp_path)  # built with the default (minilm-torch) namespace
    on_static = Embedder("static", cache=shared)
    on_minilm = Embedder(cache=shared)
    on_minilm.backend = embedder.backend
    a = on_static.encode(["one text, two backends"])
    b = on_minilm.encode(["one text, two backends"])
    assert a.shape == (1, 256) and b.shape == (1, 384)
    folders = sorted(p.name for p in (tmp_path / "embeddings").iterdir())
    assert folders == sorted([static.cache_key(), embedder.cache_key()])


def test_config_without_an_embedder_field_means_minilm_torch():
    cfg = MetaRouterConfig.from_dict({"embedding_dim": 384})
    assert cfg.embedder == "minilm-torch" and cfg.embedder_fingerprint == ""
    with pytest.raises(ConfigError, match="static"):
        MetaRouterConfig(embedder="glove")


def test_bundled_router_records_its_embedder(default_router):
    cfg = default_router.config
    assert cfg.embedder in EMBEDDERS
    assert Embedder(cfg.embedder).dim == cfg.embedding_dim


def _static_router(tmp_path_factory):
    folder = tmp_path_factory.mktemp("static-router")
    return tiny_router(Embedder("static"), folder, queries=300, steps=5)


@pytest.fixture(scope="module")
def static_router_dir(tmp_path_factory):
    return _static_router(tmp_path_factory)


def test_a_router_trained_for_static_records_it_and_builds_its_own_embedder(static_router_dir):
    meta = json.loads((static_router_dir / "config.json").read_text())["config"]
    assert meta["embedder"] == "static" and meta["embedding_dim"] == 256
    assert meta["embedder_fingerprint"].startswith("sha256:")
    router = MetaRouter.from_pretrained(static_router_dir)
    assert router.embedder.name == "static"
    decision = router.route("What is 2 + 2?", list(router.catalog)[:2])
    assert decision.model in router.catalog


_QUERIES = [
    "What is 12 * 13?",
    "Write a limerick about a cat who learns to code.",
    "Prove that the square root of 2 is irrational.",
    "Summarise the causes of the French Revolution in three bullet points.",
    "Translate 'good morning' into French.",
]
_COMPARISONS = [  # (query, winner index, loser index, winner cost, loser cost)
    ("Solve x^2 - 5x + 6 = 0.", 0, 1, 2e-5, 9e-5),
    ("Explain quicksort to a child.", 2, 0, 3e-4, 1e-5),
    ("Name three prime numbers.", 1, 3, 0.0, 2e-5),
]
# In a fresh process: load a static router, adapt, route, and decide through a RoutingService
_TORCH_FREE_ROUTING = textwrap.dedent(
    """
    import json, sys
    from metarouter.router import MetaRouter
    from metarouter.service import Response, RoutingService
    from metarouter.store.sql import SQLStore
    from metarouter.types import Comparison

    folder, store_path, queries, comparisons = sys.argv[1], sys.argv[2], *map(json.loads, sys.argv[3:])
    router = MetaRouter.from_pretrained(folder)
    names = list(router.catalog)[:4]
    comps = [Comparison(names[w], names[lo], cw, cl, query=q) for q, w, lo, cw, cl in comparisons]
    pref = router.adapt(comps)
    decisions = [router.route(q, names, p) for p in (None, pref) for q in queries]
    decisions += router.route_batch(queries, names, pref)
    service = RoutingService(names[:2], router=router, store=SQLStore(store_path))
    service.record_preference(Response(names[0], 1e-5), Response(names[1], 4e-5), query=queries[0])
    decided = service.decide(queries[1])
    print(json.dumps({
        "decisions": [[d.model, list(d.ranking), d.scores] for d in decisions],
        "cost_factors": pref.cost_factors,
        "decided": decided.model,
        "router_id": service.router_id,
        "loaded": sorted(m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules),
    }))
    """
)


def test_a_static_router_loads_adapts_and_routes_without_torch_as_the_torch_network_does(
    static_router_dir, tmp_path
):
    args = [str(static_router_dir), str(tmp_path / "p.db"), json.dumps(_QUERIES)]
    args.append(json.dumps(_COMPARISONS))
    out = subprocess.run(
        [sys.executable, "-c", _TORCH_FREE_ROUTING, *args],
        capture_output=True,
        text=True,
        check=True,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["loaded"] == []  # neither torch nor sentence-transformers was imported

    # the torch path: the same router, its quality head built from the torch network
    from metarouter.service import RoutingService
    from metarouter.store.sql import SQLStore
    from metarouter.types import Comparison

    loaded = MetaRouter.from_pretrained(static_router_dir)
    router = MetaRouter(loaded.model, list(loaded.catalog.values()))
    names = list(router.catalog)[:4]
    comps = [Comparison(names[w], names[lo], cw, cl, query=q) for q, w, lo, cw, cl in _COMPARISONS]
    pref = router.adapt(comps)
    decisions = [router.route(q, names, p) for p in (None, pref) for q in _QUERIES]
    decisions += router.route_batch(_QUERIES, names, pref)
    assert len(got["decisions"]) == len(decisions) == 3 * len(_QUERIES)
    for (model, ranking, scores), ref in zip(got["decisions"], decisions, strict=True):
        assert model == ref.model and tuple(ranking) == ref.ranking
        assert scores == pytest.approx(ref.scores, abs=1e-5)
    assert got["cost_factors"] == pytest.approx(pref.cost_factors, rel=1e-9)
    # same weights, same identity: preferences cached by either process are shared
    service = RoutingService(names[:2], router=router, store=SQLStore(tmp_path / "q.db"))
    assert got["router_id"] == service.router_id


def test_a_static_router_builds_its_torch_network_only_when_asked(static_router_dir, tmp_path):
    router = MetaRouter.from_pretrained(static_router_dir)
    assert router._model is None
    arrays = router.state_arrays()
    network = router.model.state_dict()  # built now (training, fine-tuning, saving need it)
    assert sorted(arrays) == sorted(network)
    for name, value in network.items():
        np.testing.assert_array_equal(arrays[name], value.numpy())
    again = MetaRouter.from_pretrained(router.save_pretrained(tmp_path / "again"))
    np.testing.assert_array_equal(again.state_arrays()["prototypes"], arrays["prototypes"])
    names = list(router.catalog)[:3]
    a, b = again.route(TEXTS[2], names), router.route(TEXTS[2], names)
    assert a.ranking == b.ranking and a.scores == pytest.approx(b.scores, abs=1e-5)


def test_a_static_router_with_weights_of_another_shape_is_refused_at_load(
    static_router_dir, tmp_path
):
    import shutil

    from metarouter.errors import ModelLoadError

    folder = tmp_path / "tampered"
    shutil.copytree(static_router_dir, folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["config"]["hidden_dim"] = 2**40  # nothing of that size may be allocated
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match=r"config.json.*nothing was loaded"):
        MetaRouter.from_pretrained(folder)


def test_using_a_router_with_another_embedder_is_a_clear_error(static_router_dir, embedder):
    with pytest.raises(EmbedderMismatchError) as err:
        MetaRouter.from_pretrained(static_router_dir, embedder=embedder)
    message = str(err.value)
    assert "'static'" in message and "'minilm-torch'" in message
    assert "Embedder('static')" in message and "--embedder minilm-torch" in message
    assert isinstance(err.value, MetaRouterError) and isinstance(err.value, ValueError)
    router = MetaRouter.from_pretrained(static_router_dir)
    with pytest.raises(EmbedderMismatchError):
        router.embedder = embedder


def test_training_refuses_embeddings_of_another_size():
    from metarouter.data import load_dataset
    from metarouter.embedding_backends import EmbedderSpec
    from metarouter.training import train_router

    matrix = load_dataset("llmrouter").to_matrix().split("train").rows(np.arange(100))
    with pytest.raises(ConfigError, match="Embedder\\('static'\\)"):
        train_router(
            matrix,
            np.zeros((100, 384), np.float32),
            embedder=EmbedderSpec("static", 256, ""),
            progress=False,
        )


def test_prime_embeds_a_batch_once_and_calls_are_then_lru_hits(static, monkeypatch):
    fresh = Embedder("static", memory_cache_size=16)
    fresh.backend = static.backend
    batches = []
    original = fresh._forward
    monkeypatch.setattr(
        fresh, "_forward", lambda t, p=False: batches.append(len(t)) or original(t, p)
    )
    texts = [f"question {i} about tides" for i in range(5)]
    fresh.prime([*texts, texts[0]])
    vectors = [fresh.encode_one(t) for t in texts]
    assert batches == [5]  # one batch of the distinct texts; every call an LRU hit
    np.testing.assert_allclose(np.stack(vectors), static.encode(texts), atol=1e-6)
