"""The ONNX Runtime embedders: export, torch's vectors, int8 closeness, torch-free routing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from _router_helpers import tiny_router

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

from metarouter.data import load_dataset
from metarouter.embedding_backends import same_vectors
from metarouter.embeddings import Embedder, embedding_text
from metarouter.errors import ConfigError, DependencyError, EmbedderMismatchError, ModelLoadError
from metarouter.onnx_export import (
    MANIFEST_FILE,
    export_onnx,
    onnx_cache_dir,
    read_manifest,
)
from metarouter.router import MetaRouter, default_router_dir
from metarouter.types import Comparison

#: fp32 against minilm-torch: max abs difference measured 1.7e-7 on 300 bundled LLMRouter prompts.
FP32_ATOL = 1e-5
#: int8 against fp32, cosine: min 0.987 / mean 0.994 on this test's 300 prompts, min 0.975 /
#: mean 0.994 on bench_embedders.py's 300; the bounds leave room for other CPUs' int8 kernels.
INT8_MIN_COSINE = 0.95
INT8_MEAN_COSINE = 0.985


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory):
    """A cache root holding one export (fp32 + int8), where the automatic lookup finds it."""
    root = tmp_path_factory.mktemp("onnx-cache")
    export_onnx(root / "onnx" / onnx_cache_dir().name)
    return root


@pytest.fixture(scope="session")
def onnx_dir(onnx_cache):
    return onnx_cache / "onnx" / onnx_cache_dir().name


@pytest.fixture(scope="session")
def prompts():
    """300 distinct real prompts (as embedded) from the bundled LLMRouter data, long ones too."""
    queries = load_dataset("llmrouter").to_matrix().queries
    texts = list(dict.fromkeys(embedding_text(q) for q in queries))
    rng = np.random.default_rng(0)
    picked = [texts[i] for i in rng.choice(len(texts), 300, replace=False)]
    assert max(len(t) for t in picked) > 1000  # some exceed the 256-token truncation
    return picked


@pytest.fixture(scope="session")
def torch_vectors(embedder, prompts):
    return embedder.encode(prompts, prepare=False)


def test_fp32_vectors_equal_minilm_torch_on_real_prompts_batched_and_one_by_one(
    onnx_dir, prompts, torch_vectors, embedder
):
    onnx = Embedder("minilm-onnx", model_path=onnx_dir, memory_cache_size=0)
    batched = onnx.encode(prompts, prepare=False)
    assert batched.shape == (300, 384) and batched.dtype == np.float32
    assert np.abs(batched - torch_vectors).max() < FP32_ATOL
    one_by_one = np.stack([onnx.encode_one(t) for t in prompts[:60]])
    assert np.abs(one_by_one - torch_vectors[:60]).max() < FP32_ATOL
    long = "tide " * 3000  # far beyond max_seq_length: truncated as sentence-transformers does
    np.testing.assert_allclose(
        onnx.encode([long], prepare=False), embedder.encode([long], prepare=False), atol=FP32_ATOL
    )


def test_int8_vectors_are_close_to_fp32_but_a_different_embedder(onnx_dir, prompts, torch_vectors):
    int8 = Embedder("minilm-onnx-int8", model_path=onnx_dir)
    vectors = int8.encode(prompts, prepare=False)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = (vectors * torch_vectors).sum(axis=1)
    assert cosine.min() > INT8_MIN_COSINE and cosine.mean() > INT8_MEAN_COSINE
    assert np.abs(vectors - torch_vectors).max() > FP32_ATOL  # not the same vectors
    assert not same_vectors("minilm-torch", "minilm-onnx-int8")
    assert same_vectors("minilm-torch", "minilm-onnx")
    assert same_vectors("minilm-onnx", "minilm-torch")  # either way round


@pytest.fixture(scope="module")
def minilm_router(embedder):
    """The bundled router trained for minilm-torch."""
    return MetaRouter.default(embedder=embedder)


@pytest.fixture(scope="module")
def onnx_router(onnx_dir):
    return MetaRouter.default(embedder=Embedder("minilm-onnx", model_path=onnx_dir))


def test_a_minilm_torch_router_makes_the_same_decisions_with_minilm_onnx(
    onnx_router, minilm_router, caplog
):
    default_router = minilm_router
    assert default_router.config.embedder == "minilm-torch"
    assert default_router_dir("minilm-onnx") == default_router_dir("minilm-torch")
    assert onnx_router._model is None  # loaded without building the torch network
    test = load_dataset("llmrouter").to_matrix().split("test")
    queries = list(dict.fromkeys(test.queries))[:150]
    names = list(default_router.config.catalog)[:5]
    comparisons = [
        Comparison(names[w], names[lo], cw, cl, query=queries[i])
        for i, (w, lo, cw, cl) in enumerate([(0, 1, 2e-5, 9e-5), (2, 0, 3e-4, 1e-5)])
    ]
    for pref in (None, default_router.adapt(comparisons)):
        got = onnx_router.route_batch(queries, names, pref)
        ref = default_router.route_batch(queries, names, pref)
        assert [d.model for d in got] == [d.model for d in ref]
        assert len({d.model for d in ref}) > 1  # the prompts do not all go one way
        assert [d.ranking for d in got] == [d.ranking for d in ref]
        for a, b in zip(got, ref, strict=True):
            assert a.scores == pytest.approx(b.scores, abs=1e-4)
    one = onnx_router.route(queries[0], names)
    assert one.model == default_router.route(queries[0], names).model
    assert "differ" not in caplog.text  # same source weights: no fingerprint warning


def test_a_minilm_torch_router_refuses_the_int8_embedder_and_names_what_fits(onnx_dir):
    int8 = Embedder("minilm-onnx-int8", model_path=onnx_dir)
    with pytest.raises(EmbedderMismatchError) as err:
        MetaRouter.from_pretrained(default_router_dir("minilm-torch"), embedder=int8)
    message = str(err.value)
    assert "Embedder('minilm-torch')" in message and "Embedder('minilm-onnx')" in message
    assert "--embedder minilm-onnx-int8" in message
    with pytest.raises(ConfigError, match="--embedder minilm-onnx-int8"):
        MetaRouter.default(embedder=int8)  # no router is bundled for it


_TORCH_FREE = textwrap.dedent(
    """
    import json, sys
    from metarouter.embeddings import Embedder
    from metarouter.router import MetaRouter, default_router_dir
    from metarouter.types import Comparison

    folder, backend = sys.argv[1], sys.argv[2]
    router = MetaRouter.from_pretrained(folder, embedder=Embedder(backend))
    names = list(router.config.catalog)[:3]
    pref = router.adapt([Comparison(names[0], names[1], 1e-5, 4e-5, query="Name a prime.")])
    queries = ["What is 2 + 2?", "Write a sonnet about the sea.", "Sort a list in Python."]
    decisions = [router.route(q, names, pref) for q in queries]
    decisions += router.route_batch(queries, names, pref)
    print(json.dumps({
        "models": [d.model for d in decisions],
        "loaded": sorted(m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules),
    }))
    """
)


@pytest.mark.parametrize("backend", ["minilm-onnx", "minilm-onnx-int8"])
def test_routing_with_an_onnx_embedder_imports_neither_torch_nor_sentence_transformers(
    backend, onnx_cache, tmp_path
):
    folder = default_router_dir("minilm-torch")
    if backend == "minilm-onnx-int8":  # the bundled router is for minilm-torch: train one
        folder = _int8_router(tmp_path, onnx_cache)
    env = {**os.environ, "METAROUTER_CACHE": str(onnx_cache)}  # the export is found there
    out = subprocess.run(
        [sys.executable, "-c", _TORCH_FREE, str(folder), backend],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["loaded"] == []
    assert len(got["models"]) == 6 and got["models"][:3] == got["models"][3:]


def _int8_router(tmp_path, onnx_cache):
    emb = Embedder("minilm-onnx-int8", model_path=onnx_cache / "onnx" / onnx_cache_dir().name)
    folder = tiny_router(emb, tmp_path / "int8-router", queries=200, steps=3)
    meta = MetaRouter.from_pretrained(folder, embedder=emb).config
    assert meta.embedder == "minilm-onnx-int8" and "int8" in meta.embedder_fingerprint
    return folder


def test_a_missing_onnxruntime_is_a_clear_error_naming_the_extra(onnx_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(DependencyError, match=r'pip install "metarouter\[onnx\]"'):
        Embedder("minilm-onnx", model_path=onnx_dir).encode_one("What is 2 + 2?")


def test_a_damaged_export_in_the_cache_is_exported_again(onnx_dir, tmp_path, monkeypatch):
    cached = tmp_path / "onnx" / onnx_dir.name
    cached.mkdir(parents=True)
    for name in ("model.onnx", "tokenizer.json", "sentence_bert_config.json", MANIFEST_FILE):
        shutil.copyfile(onnx_dir / name, cached / name)
    (cached / "model.onnx").write_bytes(b"truncated")
    monkeypatch.setenv("METAROUTER_CACHE", str(tmp_path))
    assert onnx_cache_dir() == cached
    vec = Embedder("minilm-onnx").encode_one("What is 2 + 2?")
    ref = Embedder("minilm-onnx", model_path=onnx_dir).encode_one("What is 2 + 2?")
    np.testing.assert_allclose(vec, ref, atol=1e-6)
    manifest = read_manifest(cached)
    assert manifest is not None
    assert (cached / "model.onnx").stat().st_size == manifest["files"]["model.onnx"]["size"]


def test_a_missing_or_unloadable_explicit_export_is_a_clear_error(onnx_dir, tmp_path):
    with pytest.raises(ModelLoadError, match="export-onnx --dir"):
        Embedder("minilm-onnx", model_path=tmp_path).encode_one("hi")
    folder = tmp_path / "damaged"
    shutil.copytree(onnx_dir, folder)
    (folder / "model-int8.onnx").write_bytes(b"not an onnx graph")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["files"]["model-int8.onnx"]["size"] = len(b"not an onnx graph")
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="onnxruntime cannot load") as err:
        Embedder("minilm-onnx-int8", model_path=folder).encode_one("hi")
    assert f"export-onnx --dir {folder}" in str(err.value)


def test_onnxruntime_threads_follow_metarouter_num_threads(onnx_dir, monkeypatch):
    for setting, threads in (("", 1), ("2", 2)):
        monkeypatch.setenv("METAROUTER_NUM_THREADS", setting)
        backend = Embedder("minilm-onnx-int8", model_path=onnx_dir).backend
        backend.warm_up()
        options = backend._session.get_session_options()
        assert options.intra_op_num_threads == threads and options.inter_op_num_threads == 1


def test_fingerprints_are_deterministic_and_name_source_opset_and_quantization(onnx_dir):
    fp32 = Embedder("minilm-onnx").spec
    assert fp32 == Embedder("minilm-onnx", model_path=onnx_dir).spec
    assert fp32.fingerprint.split(";")[0] == Embedder().spec.fingerprint
    assert fp32.fingerprint.endswith(";onnx-opset17") and fp32.dim == 384
    int8 = Embedder("minilm-onnx-int8").spec
    assert int8.fingerprint.startswith(fp32.fingerprint + ";int8-")
    keys = {Embedder(n).cache_key() for n in ("minilm-torch", "minilm-onnx", "minilm-onnx-int8")}
    assert len(keys) == 3  # vectors of the three never share a disk cache namespace


def test_the_cli_exports_to_a_folder_the_embedder_can_use(tmp_path, prompts, torch_vectors):
    from metarouter.cli import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(
        app, ["embedder", "export-onnx", "--dir", str(tmp_path), "--fp32-only"]
    )
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path)
    assert manifest is not None and manifest["max_seq_length"] == 256
    assert sorted(manifest["files"]) == ["model.onnx"]
    assert not (tmp_path / "model-int8.onnx").exists()
    vectors = Embedder("minilm-onnx", model_path=tmp_path).encode(prompts[:20], prepare=False)
    assert np.abs(vectors - torch_vectors[:20]).max() < FP32_ATOL
