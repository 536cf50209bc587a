"""``metarouter store``: stats, a user's export, and deleting a user from the command line."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
from _store_helpers import MODELS, make_comparison, make_decision, snapshot
from metarouter.cli import app
from metarouter.errors import ConfigError, FeedbackError, StoreError
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


# -- issue 15: commands never destroy the store, read-only commands never write ----------------
def test_export_refuses_to_write_over_the_store_itself(tmp_path):
    path = tmp_path / "prefs.db"
    filled = SQLStore(path)
    filled.record_decision(make_decision("alice"))
    before = snapshot(filled)
    for target in (path, f"{path}-wal", f"{path}-shm"):
        result = _run("export", "--store", str(path), "--out", str(target), "--force")
        assert isinstance(result.exception, ConfigError), result.output
        assert "is the preference store itself" in str(result.exception)
    assert snapshot(filled) == before
    filled.close()


def test_export_refuses_an_existing_file_without_force(filled, store_url, tmp_path):
    out = tmp_path / "feedback.jsonl"
    out.write_text("keep me\n", encoding="utf-8")
    refused = _run("export", "--store", store_url, "--out", str(out))
    assert isinstance(refused.exception, ConfigError) and "--force" in str(refused.exception)
    assert out.read_text(encoding="utf-8") == "keep me\n"
    done = _run("export", "--store", store_url, "--out", str(out), "--force")
    assert done.exit_code == 0, done.output
    assert json.loads(out.read_text(encoding="utf-8").splitlines()[-1])["decisions"] == 4


def test_import_rebuilds_a_store_from_an_export(filled, store_url, another_store_url, tmp_path):
    out = tmp_path / "feedback.jsonl"
    assert _run("export", "--store", store_url, "--out", str(out)).exit_code == 0
    target = another_store_url()
    first = _run("import", str(out), "--store", target)
    assert first.exit_code == 0, first.output
    assert "imported 4 decisions and 2 comparisons" in first.output
    again = _run("import", str(out), "--store", target)
    assert "imported 0 decisions and 0 comparisons" in again.output and "6 already" in again.output
    with SQLStore(target) as rebuilt:
        assert {r.comparison_id for r in rebuilt.comparisons("alice")} == {
            r.comparison_id for r in filled.comparisons("alice")
        }


def test_stats_on_another_apps_database_refuses_and_changes_nothing(tmp_path, store_url):
    import sqlalchemy as sa

    if store_url.startswith("sqlite"):
        path = tmp_path / "their_app.db"
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
        conn.commit()
        conn.close()
        before = path.read_bytes()
        location = str(path)
    else:
        engine = sa.create_engine(store_url, poolclass=sa.pool.NullPool)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
        location = store_url
    for args in (
        ["stats"],
        ["export", "--out", str(tmp_path / "x.jsonl")],
        ["delete", "--user", "alice", "--yes"],
        ["prune", "--keep-last", "1"],
    ):
        result = _run(*args, "--store", location)
        assert isinstance(result.exception, StoreError), (args, result.output)
        assert "not a MetaRouter preference store" in str(result.exception)
    if store_url.startswith("sqlite"):
        assert path.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["their_app.db"]
    else:
        assert sa.inspect(engine).get_table_names() == ["orders"]
        engine.dispose()


def test_backup_and_prune_from_the_command_line(filled, store_url, tmp_path):
    backup = tmp_path / "backup.db"
    result = _run("backup", str(backup), "--store", store_url)
    if store_url.startswith("sqlite"):
        assert result.exit_code == 0, result.output
        assert SQLStore(backup).stats()["decisions"] == 4
    else:
        assert isinstance(result.exception, ConfigError)
        assert "pg_dump" in str(result.exception) and not backup.exists()
    filled.record_decision(make_decision("alice"))  # one decision no comparison cites
    pruned = _run("prune", "--store", store_url, "--keep-last", "0")
    assert pruned.exit_code == 0, pruned.output
    assert "deleted 1 of 5 routing decisions" in pruned.output
    assert filled.stats()["comparisons"] == 2
    nothing = _run("prune", "--store", store_url)
    assert isinstance(nothing.exception, ConfigError)
    assert "--older-than-days" in str(nothing.exception)


def test_a_huge_user_id_is_not_echoed_whole(filled, store_url):
    huge = "u" * 10_000_000
    result = _run("delete", "--store", store_url, "--user", huge, "--yes")
    assert isinstance(result.exception, FeedbackError)
    assert len(str(result.exception)) < 500 and "10,000,000 characters" in str(result.exception)
