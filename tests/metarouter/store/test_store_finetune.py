"""Closing the loop: feedback recorded in the store -> exported dataset -> fine-tuned router.

The simulated population finds ``qwen2.5-7b-instruct`` best, then the cheap ``gemma-2-9b-it``,
then the dear ``llama-3.1-nemotron-51b-instruct``: a taste the bundled router does not predict
well, so fine-tuning on their comparisons must predict held-out users' choices better.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _store_helpers import COST, MODELS, QUERIES, QWEN_FIRST, judgements, record_population
from metarouter.cli import app
from metarouter.errors import ConfigError
from metarouter.router import MetaRouter
from metarouter.store import SQLStore, load_feedback
from metarouter.training import finetune_on_comparisons
from metarouter.types import Comparison
from typer.testing import CliRunner


@pytest.fixture(scope="module")
def query_embeddings(router_embedder) -> np.ndarray:
    return router_embedder.encode(QUERIES)


def _comparisons(embeddings, seed, rank, n=6):
    return [
        Comparison(w, lo, COST[w], COST[lo], embedding=embeddings[q], tokens=12)
        for q, w, lo in judgements(n, seed, rank)
    ]


def _same_weights(a: MetaRouter, b: MetaRouter) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_feedback_exported_from_the_store_fine_tunes_a_router_that_loads_and_routes(
    store_url, query_embeddings, default_router, tmp_path
):
    from metarouter.service import RoutingService

    users = [f"user-{k}" for k in range(12)]
    store = SQLStore(store_url)
    record_population(store, query_embeddings, users)
    feedback, out = tmp_path / "feedback.jsonl", tmp_path / "tuned"
    runner = CliRunner()

    exported = runner.invoke(app, ["store", "export", "--store", store_url, "--out", str(feedback)])
    assert exported.exit_code == 0, exported.output
    assert "72 decisions and 72 comparisons" in " ".join(exported.output.split())
    by_user = load_feedback(feedback)
    assert sorted(by_user) == sorted(users) and {len(v) for v in by_user.values()} == {6}

    tuned_run = runner.invoke(
        app,
        ["train", "--from-feedback", str(feedback), "--out", str(out), "--steps", "10"],
    )  # `metarouter store finetune --feedback` is the same code under the store commands
    assert tuned_run.exit_code == 0, tuned_run.output
    report = json.loads((out / "finetuning.json").read_text(encoding="utf-8"))
    assert (report["users"], report["comparisons"]) == (12, 72)
    losses = report["history"]["val_loss"]
    assert report["best_step"] > 0 and min(losses) < losses[0], losses

    tuned = MetaRouter.from_pretrained(out, embedder=default_router.embedder)
    assert "fine-tuned on 72 comparisons of 12 users" in tuned.config.training_data
    assert tuned.config.catalog == default_router.config.catalog
    assert not _same_weights(tuned, default_router)

    # the application switches to the fine-tuned router: cached preferences are recomputed
    before = RoutingService(list(MODELS), router=default_router, store=store)
    before.preference("user-0")
    after = RoutingService(list(MODELS), router=tuned, store=store)
    assert after.router_id != before.router_id
    assert store.cached_preference("user-0", after.router_id) is None
    assert after.preference("user-0").n_comparisons == 6
    assert store.cached_preference("user-0", after.router_id)[0] == store.user_version("user-0")
    assert after.decide(QUERIES[0], "user-0").model in MODELS
    store.close()


def test_fine_tuning_keeps_the_starting_router_when_held_out_users_disagree(
    query_embeddings, default_router
):
    # the bundled router already predicts savers (the cheapest answer wins) almost perfectly;
    # learning from spenders (the dearest answer wins) can only predict savers worse
    cheap_first = {m: r for r, m in enumerate(MODELS)}
    dear_first = {m: len(MODELS) - 1 - r for m, r in cheap_first.items()}
    by_user = {f"spender-{k}": _comparisons(query_embeddings, k, dear_first) for k in range(6)}
    by_user |= {f"saver-{k}": _comparisons(query_embeddings, 50 + k, cheap_first) for k in range(2)}
    start = {k: v.clone() for k, v in default_router.model.state_dict().items()}

    result = finetune_on_comparisons(
        default_router,
        by_user,
        validation_users=["saver-0", "saver-1"],
        steps=10,
        eval_every=5,
        episodes_per_step=8,
    )

    losses = result.history["val_loss"]
    assert min(losses[1:]) > losses[0], losses
    assert result.best_step == 0
    assert _same_weights(result.router, default_router), "the starting weights are kept"
    assert all(torch.equal(v, start[k]) for k, v in default_router.model.state_dict().items())
    assert "fine-tuned on 48 comparisons of 8 users" in result.router.config.training_data


@pytest.mark.parametrize(
    ("data", "kwargs", "message"),
    [
        ({}, {}, "no comparisons to fine-tune on"),
        ({"a": []}, {}, "no comparisons to fine-tune on"),
        ("one user", {"validation_users": ["nobody"]}, "unknown: \\['nobody'\\]"),
        ("one user", {"validation_users": ["a"]}, "some, not all"),
        ("one user", {"steps": 0}, "must be >= 1"),
        ("one user", {"learning_rate": 0.0}, "learning_rate > 0"),
    ],
)
def test_fine_tuning_refuses_unusable_input(
    data, kwargs, message, default_router, query_embeddings
):
    if data == "one user":
        data = {"a": _comparisons(query_embeddings, 0, QWEN_FIRST, n=3)}
    with pytest.raises(ConfigError, match=message):
        finetune_on_comparisons(default_router, data, **kwargs)
