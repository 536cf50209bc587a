import math

import numpy as np
import pandas as pd
import pytest
from metarouter.data import OutcomeTable, load_outcomes, validate_outcomes
from metarouter.errors import DataError


def _rows(n_queries=3, models=("cheap", "strong")):
    rows = []
    for q in range(n_queries):
        for m in models:
            rows.append(
                {
                    "query_id": f"q{q}",
                    "query": f"question {q}",
                    "task": "t",
                    "split": "train",
                    "model": m,
                    "quality": 1.0 if m == "strong" else 0.5,
                    "cost_usd": 0.01 if m == "strong" else 0.001,
                }
            )
    return pd.DataFrame(rows)


def test_valid_frame_gets_canonical_columns_and_defaults():
    out = validate_outcomes(_rows())
    assert list(out.columns) == [
        "query_id",
        "query",
        "task",
        "split",
        "model",
        "quality",
        "cost_usd",
        "cost_is_estimate",
        "response",
    ]
    assert out["cost_is_estimate"].dtype == bool
    assert out["response"].isna().all()
    assert len(out) == 6


def test_missing_column_names_the_column_and_the_file():
    with pytest.raises(DataError, match=r"logs\.csv: missing required column\(s\) \['cost_usd'\]"):
        validate_outcomes(_rows().drop(columns="cost_usd"), source="logs.csv")


def test_unknown_split_names_row_and_valid_names():
    df = _rows()
    df.loc[3, "split"] = "dev"
    with pytest.raises(DataError, match=r"f\.jsonl: data row 4: unknown split 'dev'.*'validation'"):
        validate_outcomes(df, source="f.jsonl")


@pytest.mark.parametrize("bad", [float("nan"), -0.5, float("inf")])
def test_nan_negative_or_infinite_cost_is_rejected_with_row(bad):
    df = _rows()
    df.loc[2, "cost_usd"] = bad
    with pytest.raises(DataError, match=r"data row 3: cost_usd .*finite number >= 0"):
        validate_outcomes(df, source="f")


@pytest.mark.parametrize("bad", [1.5, -0.1])
def test_quality_outside_unit_interval_is_rejected(bad):
    df = _rows()
    df.loc[5, "quality"] = bad
    with pytest.raises(DataError, match=r"data row 6: quality .* outside \[0, 1\].*rescale"):
        validate_outcomes(df, source="f")


def test_duplicate_query_model_pair_lists_both_rows():
    df = pd.concat([_rows(), _rows().iloc[[1]]], ignore_index=True)
    with pytest.raises(
        DataError, match=r"duplicate \(query_id, model\) = \('q0', 'strong'\).*\[2, 7\]"
    ):
        validate_outcomes(df, source="f")


def test_nan_quality_raises_unless_explicitly_skipped(caplog):
    df = _rows()
    df.loc[0, "quality"] = math.nan
    with pytest.raises(DataError, match=r"quality is NaN.*skip_nan_quality=True"):
        validate_outcomes(df, source="f")
    with caplog.at_level("WARNING"):
        out = validate_outcomes(df, source="f", skip_nan_quality=True)
    assert len(out) == 5
    assert "skipping 1 row(s) with NaN quality" in caplog.text


def test_blank_model_name_is_rejected():
    df = _rows()
    df.loc[1, "model"] = "  "
    with pytest.raises(DataError, match=r"data row 2: column 'model' is blank"):
        validate_outcomes(df, source="f")


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_user_files_round_trip_in_every_format(tmp_path, suffix):
    df = _rows(4)
    df["response"] = "ok"
    path = tmp_path / f"logs{suffix}"
    {
        ".parquet": df.to_parquet,
        ".csv": lambda p: df.to_csv(p, index=False),
        ".jsonl": lambda p: df.to_json(p, orient="records", lines=True),
    }[suffix](path)
    table = load_outcomes(path)
    assert table.name == "logs"
    assert table.n_queries == 4
    assert table.models == ("cheap", "strong")
    matrix = table.to_matrix()
    np.testing.assert_allclose(matrix.quality[:, 1], 1.0)
    np.testing.assert_allclose(matrix.cost[:, 0], 0.001)


def test_bad_file_in_user_log_names_the_file(tmp_path):
    path = tmp_path / "bad.csv"
    df = _rows()
    df.loc[1, "quality"] = 7
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match=rf"{path}: data row 2: quality"):
        load_outcomes(path)


def test_unsupported_file_type_says_which_are_supported(tmp_path):
    path = tmp_path / "logs.xlsx"
    path.write_text("x")
    with pytest.raises(DataError, match=r"use \.parquet, \.csv or \.jsonl"):
        load_outcomes(path)


def test_matrix_drops_queries_missing_a_model():
    df = _rows(3).iloc[:-1]  # q2 lacks "strong"
    matrix = OutcomeTable.from_frame(df).to_matrix()
    assert list(matrix.query_ids) == ["q0", "q1"]
    assert matrix.quality.shape == (2, 2)


# -- messages that point at the right place (issue 15, item 13) --------------------------------
def test_row_numbers_stay_those_of_the_file_when_nan_rows_are_skipped():
    df = _rows(4)
    df.loc[[0, 1], "quality"] = math.nan  # data rows 1 and 2
    df.loc[5, "quality"] = 7.0  # data row 6 of the file
    with pytest.raises(DataError, match=r"f: data row 6: quality 7\.0 is outside"):
        validate_outcomes(df, source="f", skip_nan_quality=True)


def test_a_non_numeric_quality_names_the_data_row_and_the_value():
    df = _rows(8)
    df["quality"] = df["quality"].astype(object)
    df.loc[14, "quality"] = "good"
    with pytest.raises(DataError, match=r"f: data row 15: quality is 'good', not a number"):
        validate_outcomes(df, source="f")


def test_a_bad_cost_is_estimate_names_file_and_row():
    df = _rows()
    df["cost_is_estimate"] = ["true", "false", "maybe", "1", "0", "no"]
    with pytest.raises(DataError, match=r"f: data row 3: cost_is_estimate is 'maybe'"):
        validate_outcomes(df, source="f")


def test_a_header_only_file_says_it_has_no_rows(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("query_id,query,model,quality,cost_usd\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}: no data rows"):
        load_outcomes(path)


def test_a_malformed_jsonl_line_is_reported_by_line_number(tmp_path):
    path = tmp_path / "logs.jsonl"
    lines = _rows(2).to_json(orient="records", lines=True).splitlines()
    lines.insert(2, '{"query_id": "q9", "query": ')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}, line 3: invalid JSON"):
        load_outcomes(path)
