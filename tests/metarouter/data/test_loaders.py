import numpy as np
import pytest
from metarouter.data import (
    DATA_ENV,
    bundled_llmrouter_dir,
    llmrouter_prices,
    load_dataset,
)
from metarouter.errors import ConfigError
from metarouter.pricing import DEFAULT_OUTPUT_TOKENS, estimate_tokens


def test_routerbench_has_3164_queries_and_11_models_with_gpt4_figures(shared_data):
    table = load_dataset("routerbench", shared_data)
    assert table.n_queries == 3164
    assert len(table.models) == 11
    summary = table.summary()
    gpt4 = summary.loc["gpt-4-1106-preview"]
    assert round(gpt4["mean_quality"], 3) == 0.880
    assert gpt4["mean_cost_usd"] == pytest.approx(0.0050, abs=0.00005)
    assert not summary["cost_is_estimate"].any()
    # the 14 NaN-quality cells of the source are all gpt-3.5 rows
    assert summary.loc["gpt-3.5-turbo-1106", "rows"] == 3164 - 14
    splits = table.frame.drop_duplicates("query_id")["split"].value_counts()
    assert splits.to_dict() == {"train": 2217, "test": 947}
    assert set(table.tasks) == {"arc-challenge", "winogrande", "mbpp"}


def test_llmrouter_matches_its_readme(shared_data):
    table = load_dataset("llmrouter", shared_data)
    assert table.n_queries == 6108
    assert len(table.models) == 9
    assert len(table.tasks) == 14
    matrix = table.to_matrix()
    assert matrix.quality.max(axis=1).mean() == pytest.approx(0.797, abs=0.001)
    best = dict(zip(matrix.models, matrix.quality.mean(axis=0), strict=True))
    assert best["llama-3.1-nemotron-51b-instruct"] == pytest.approx(0.617, abs=0.001)
    assert table.frame["cost_is_estimate"].all()


def test_llmrouter_cost_is_the_documented_estimate():
    table = load_dataset("llmrouter")  # bundled copy
    prices = llmrouter_prices()
    row = table.frame.iloc[0]
    price = prices[row["model"]]
    expected = (
        estimate_tokens(row["query"]) * price.input_per_million
        + DEFAULT_OUTPUT_TOKENS * price.output_per_million
    ) / 1e6
    assert row["cost_usd"] == pytest.approx(expected)


def test_bundled_llmrouter_carries_licence_and_attribution():
    """Data-free: the bundled copy ships its licence without the shared datasets."""
    folder = bundled_llmrouter_dir()
    assert "MIT License" in (folder / "LICENSE").read_text()
    assert "ulab-uiuc" in (folder / "ATTRIBUTION.md").read_text()


def test_bundled_llmrouter_equals_the_shared_copy(shared_data):
    bundled = load_dataset("llmrouter")
    shared = load_dataset("llmrouter", shared_data)
    assert bundled.frame.equals(shared.frame)


def test_routerdc_matches_its_readme(shared_data):
    table = load_dataset("routerdc", shared_data)
    assert table.n_queries == 20600
    assert len(table.models) == 7
    matrix = table.to_matrix()
    assert matrix.quality.max(axis=1).mean() == pytest.approx(0.710, abs=0.001)
    assert matrix.quality.mean(axis=0).max() == pytest.approx(0.495, abs=0.001)
    assert set(np.unique(matrix.splits)) == {"train", "test", "eval_only"}


def test_dataset_found_through_environment_variable(shared_data, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(shared_data))
    assert load_dataset("routerbench").n_queries == 3164


def test_missing_dataset_says_how_to_point_at_it(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(
        ConfigError, match=r"routerbench_subset/.*--data PATH or set METAROUTER_DATA"
    ):
        load_dataset("routerbench")
    with pytest.raises(
        ConfigError, match=r"Known datasets: \['llmrouter', 'routerbench', 'routerdc'\]"
    ):
        load_dataset("nope", tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_dataset("routerbench", tmp_path / "absent")


def test_filter_rejects_unknown_names_and_lists_valid_ones(shared_data):
    table = load_dataset("routerbench", shared_data)
    assert table.filter(tasks=["mbpp"]).n_queries == 427
    assert table.filter(exclude_tasks=["mbpp"], splits=["train"]).tasks == (
        "arc-challenge",
        "winogrande",
    )
    with pytest.raises(ConfigError, match=r"unknown task \['code'\]. Valid tasks"):
        table.filter(tasks=["code"])


def test_data_summary_on_a_folder_without_datasets_is_an_error(tmp_path):
    from metarouter.cli import app
    from metarouter.errors import ConfigError
    from typer.testing import CliRunner

    (tmp_path / "notes.txt").write_text("nothing here", encoding="utf-8")
    result = CliRunner().invoke(app, ["data", "summary", "--data", str(tmp_path)])
    assert isinstance(result.exception, ConfigError)
    assert "holds none of the datasets" in str(result.exception)
    assert "llmrouter" not in result.output  # the bundled data is not shown instead
