"""The evaluation on an outcome table a user brings (not one of the shared datasets)."""

from __future__ import annotations

import numpy as np
import pytest
from metarouter.data import OutcomeMatrix, load_dataset
from metarouter.errors import ConfigError
from metarouter.evaluation import EvalConfig, plan_for_table, run_evaluation
from metarouter.evaluation.settings import build_settings


def _small_log(tmp_path, n_train=300, n_test=120):
    """A user's routing log: a slice of the bundled LLMRouter data written as Parquet."""
    frame = load_dataset("llmrouter").frame
    rng = np.random.default_rng(0)
    ids = []
    for split, n in (("train", n_train), ("test", n_test)):
        pool = frame.loc[frame["split"] == split, "query_id"].unique()
        ids += list(rng.choice(pool, n, replace=False))
    path = tmp_path / "my_log.parquet"
    frame[frame["query_id"].isin(ids)].to_parquet(path)
    return path


def _matrix(models, quality, cost, splits=None, tasks=None):
    n = len(quality)
    return OutcomeMatrix(
        query_ids=np.array([f"q{i}" for i in range(n)]),
        queries=np.array([f"question {i}" for i in range(n)]),
        tasks=np.array(tasks or ["qa"] * n),
        splits=np.array(splits or ["train"] * (n - 1) + ["test"]),
        models=tuple(models),
        quality=np.asarray(quality, float),
        cost=np.asarray(cost, float),
    )


def test_plan_picks_cheapest_and_strongest_and_a_held_out_model():
    models = ["a", "b", "c", "d", "e", "f", "g"]
    quality = np.tile([0.1, 0.9, 0.5, 0.6, 0.4, 0.3, 0.2], (4, 1))
    cost = np.tile([1.0, 9.0, 3.0, 4.0, 0.5, 2.0, 2.5], (4, 1))
    plan = plan_for_table(_matrix(models, quality, cost), "log")
    assert plan.k2 == ("e", "b")  # cheapest, best quality
    assert plan.k5 == ("e", "b", "d", "c", "f")  # then by mean quality
    assert plan.held_out == "g" and plan.swap_out == "f"
    assert plan.ood_tasks == ()


def test_plan_refuses_tables_it_cannot_evaluate():
    one = _matrix(["a"], [[0.5]] * 3, [[1.0]] * 3)
    with pytest.raises(ConfigError, match="at least two models"):
        plan_for_table(one, "log")
    no_test = _matrix(["a", "b"], [[0.5, 0.6]] * 3, [[1.0, 2.0]] * 3, splits=["train"] * 3)
    with pytest.raises(ConfigError, match="split 'test'"):
        plan_for_table(no_test, "log")
    two = _matrix(["a", "b"], [[0.5, 0.6]] * 3, [[1.0, 2.0]] * 3)
    with pytest.raises(ConfigError, match=r"OOD tasks \['code'\]"):
        plan_for_table(two, "log", ood_tasks=("code",))


@pytest.mark.parametrize(
    ("n_models", "names"),
    [
        (2, ["log/ID/K2"]),  # the all-models set would repeat K2; no model left for a swap
        (3, ["log/ID/K2", "log/ID/K3"]),  # named by its size; the swap needs a sixth model
        (7, ["log/ID/K2", "log/ID/K5", "log/ID/swap"]),
    ],
)
def test_settings_are_named_by_the_number_of_candidates(n_models, names):
    models = [chr(ord("a") + i) for i in range(n_models)]
    rng = np.random.default_rng(0)
    n = 12
    matrix = _matrix(
        models,
        rng.random((n, n_models)),
        rng.random((n, n_models)) + 0.1,
        splits=["train"] * 8 + ["test"] * 4,
    )
    plan = plan_for_table(matrix, "log")
    settings = build_settings(matrix, rng.random((n, 8)).astype(np.float32), plan)
    assert [s.name for s in settings] == names


@pytest.mark.slow
def test_evaluation_runs_on_a_users_outcome_file_with_an_ood_split(tmp_path):
    path = _small_log(tmp_path)
    cfg = EvalConfig(
        datasets=(str(path),),
        seeds=(0,),
        n_values=(0, 6),
        train_steps=40,
        train_variant=False,
        ksets=("K2",),  # K5 and swap run the same code paths (see test_quick_mode)
        ood_tasks=("gsm8k",),
    )
    results = run_evaluation(cfg, tmp_path / "out", progress=False)

    assert set(results["settings"]) == {"my_log/ID/K2", "my_log/OOD/K2"}
    ood = results["settings"]["my_log/OOD/K2"]
    assert ood["n_test_queries"] > 0 and ood["n_train_queries"] < 300  # gsm8k left out
    for entry in results["settings"].values():
        met = entry["metrics"]
        oracle = met["oracle"]["6"]["hv"]["mean"]
        assert 0.0 < met["MetaRouter"]["6"]["hv"]["mean"] <= oracle + 1e-9
    assert (tmp_path / "out" / "results.json").is_file()


def test_unknown_dataset_names_say_what_is_accepted(tmp_path):
    with pytest.raises(ConfigError, match="path of an outcome file"):
        run_evaluation(EvalConfig(datasets=("nope",)), tmp_path, progress=False)
