"""``metarouter store``: stats, a user's export, and deleting a user from the command line."""

from __future__ import annotations

import json
import re

import pytest
from _store_helpers import MODELS, make_comparison, make_decision, snapshot
from metarouter.cli import app
from metarouter.errors import ConfigError, FeedbackError
from metarouter.store import SQLStore
from typer.testing import CliRunner


@pytest.fixture
def filled(store):
    """alice and bob: two decisions and a comparison of them each."""
    for user in ("alice", "bob"):
        a = make_decision(user, chosen=MODELS[0])
        b = make_decision(user, chosen=MODELS[2])
        store.record_decision(a)
        store.record_decision(b)
        store.record_comparison(make_comparison(user, b, a))
    return store


def _run(*args: str, stdin: str | None = None):
    return CliRunner().invoke(app, ["store", *args], input=stdin)


def test_stats_prints_the_row_counts(filled, store_url):
    table = _run("stats", "--store", store_url)
    assert table.exit_code == 0, table.output
    assert re.search(r"decisions\s*│\s*4\s*│", table.output), table.output
    as_json = _run("stats", "--store", store_url, "--json")
    stats = json.loads(as_json.output)
    assert (stats["users"], stats["decisions"], stats["comparisons"]) == (2, 4, 2)
    assert stats["backend"] in ("sqlite", "postgresql")


def test_export_of_one_user_writes_only_that_users_rows(filled, store_url, tmp_path):
    out = tmp_path / "alice.jsonl"
    result = _run("export", "--store", store_url, "--user", "alice", "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    body = rows[1:-1]
    assert rows[0]["user_id"] == "alice" and rows[-1] == {"type": "footer", "rows": len(body)}
    assert {r["user_id"] for r in body} == {"alice"}
    assert sorted(r["type"] for r in body) == ["comparison", "decision", "decision", "user"]


def test_delete_asks_first_and_removes_only_that_user(filled, store_url):
    before = snapshot(filled)
    refused = _run("delete", "--store", store_url, "--user", "alice", stdin="n\n")
    assert refused.exit_code == 1 and "Aborted" in refused.output
    assert snapshot(filled) == before

    bob = list(filled.export_user("bob"))
    done = _run("delete", "--store", store_url, "--user", "alice", "--yes")
    assert done.exit_code == 0, done.output
    assert "deleted 4 rows" in done.output  # user row, comparison, two decisions
    assert list(filled.export_user("alice")) == []
    assert list(filled.export_user("bob")) == bob


def test_delete_with_a_malformed_user_id_changes_nothing(filled, store_url):
    before = snapshot(filled)
    result = _run("delete", "--store", store_url, "--user", "ali\nce", "--yes")
    assert isinstance(result.exception, FeedbackError)
    assert "invalid user id" in str(result.exception)
    assert snapshot(filled) == before


def test_commands_on_a_missing_sqlite_file_fail_without_creating_it(tmp_path):
    missing = tmp_path / "nowhere.db"
    for args in (["stats"], ["export", "--out", str(tmp_path / "x.jsonl")]):
        result = _run(*args, "--store", str(missing))
        assert isinstance(result.exception, ConfigError)
        assert "no preference store" in str(result.exception)
    assert not missing.exists()


def test_the_default_store_is_metarouter_store(tmp_path, monkeypatch):
    path = tmp_path / "default.db"
    SQLStore(path).record_decision(make_decision("carol"))
    monkeypatch.setenv("METAROUTER_STORE", str(path))
    result = _run("stats", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["decisions"] == 1
