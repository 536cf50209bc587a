"""Meta-training runs, is reproducible with a seed, and the CLI writes a usable router."""

import json

import numpy as np
import pandas as pd
import pytest
from metarouter.cli import app
from metarouter.config import TrainingConfig
from metarouter.data import load_dataset
from metarouter.errors import ConfigError
from metarouter.router import MetaRouter
from metarouter.training import cost_scale, train_router
from typer.testing import CliRunner

MODELS = ["gemma-2-9b-it", "qwen2.5-7b-instruct", "llama-3.1-nemotron-51b-instruct"]


@pytest.fixture(scope="module")
def small_train(embedder):
    m = load_dataset("llmrouter").to_matrix().split("train").select_models(MODELS)
    rows = np.random.default_rng(0).choice(len(m), 400, replace=False)
    small = m.rows(np.sort(rows))
    return small, embedder.encode(list(small.queries))


def test_training_is_seeded_and_the_router_routes(small_train, tmp_path):
    matrix, emb = small_train
    cfg = TrainingConfig(steps=30, eval_every=10, episodes_per_step=16, seed=3)
    a = train_router(matrix, emb, training=cfg, progress=False)
    b = train_router(matrix, emb, training=cfg, progress=False)
    for (ka, va), (kb, vb) in zip(
        a.router.model.state_dict().items(), b.router.model.state_dict().items(), strict=True
    ):
        assert ka == kb
        assert np.array_equal(va.numpy(), vb.numpy()), ka
    assert a.router.config.catalog == tuple(MODELS)
    assert a.router.config.cost_scale_usd == pytest.approx(cost_scale(matrix.cost))
    assert len(a.history["val_regret"]) >= 1 and a.best_step in a.history["val_step"]
    decisions = a.router.route_embeddings(emb[:5], np.full(5, 100.0), MODELS)
    assert all(d.model in MODELS for d in decisions)


def test_training_rejects_mismatched_inputs(small_train):
    matrix, emb = small_train
    with pytest.raises(ConfigError, match="embeddings"):
        train_router(matrix, emb[:10], training=TrainingConfig(steps=1), progress=False)
    with pytest.raises(ConfigError, match="min_arms"):
        TrainingConfig(min_arms=4, max_arms=3)
    with pytest.raises(ConfigError, match="feedback"):
        TrainingConfig(feedback="supervised")


def test_train_command_writes_router_and_report(small_train, tmp_path):
    matrix, _ = small_train
    rows = []
    for i, qid in enumerate(matrix.query_ids[:150]):
        for k, model in enumerate(matrix.models):
            rows.append(
                {
                    "query_id": qid,
                    "query": matrix.queries[i],
                    "task": matrix.tasks[i],
                    "split": "train",
                    "model": model,
                    "quality": matrix.quality[i, k],
                    "cost_usd": matrix.cost[i, k],
                    "cost_is_estimate": True,
                }
            )
    log = tmp_path / "my_logs.jsonl"
    pd.DataFrame(rows).to_json(log, orient="records", lines=True)
    out = tmp_path / "router"
    result = CliRunner().invoke(
        app, ["train", "--data", str(log), "--out", str(out), "--steps", "20", "--seed", "1"]
    )
    assert result.exit_code == 0, result.output
    router = MetaRouter.from_pretrained(out)
    assert set(router.catalog) == set(MODELS)
    report = json.loads((out / "training.json").read_text())
    assert report["dataset"] == "my_logs" and report["queries"] == 150 and report["seed"] == 1
    assert (out / "training_curve.png").stat().st_size > 10_000
