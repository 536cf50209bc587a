"""Backups, retention, import, deletion without a trace, and read-only opening (issue 15).

Items 5 (backup), 6 (retention and prune), 2 (import), 7 (secure delete) and 10 (read-only
commands never write) at the store's API; the command-line side is in test_store_cli.py.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from _store_helpers import MODELS, make_comparison, make_decision, snapshot
from metarouter.errors import ConfigError, StoreError
from metarouter.store import SQLStore
from metarouter.store.export import load_export_records
from metarouter.store.maintenance import Retention

DAY = 86400.0


def _count_decisions(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT count(*) FROM metarouter_decisions").fetchone()[0]
    except sqlite3.DatabaseError:
        return 0
    finally:
        conn.close()


# -- backup (item 5) ----------------------------------------------------------------------------
def test_a_backup_of_a_live_store_keeps_the_commits_a_file_copy_loses(tmp_path):
    path = tmp_path / "prefs.db"
    store = SQLStore(path)  # stays open, like the running application
    ids = []
    for i in range(30):
        rec = make_decision(f"user-{i}")
        store.record_decision(rec)
        ids.append(rec.decision_id)
    assert Path(f"{path}-wal").stat().st_size > 0  # the commits are still in the WAL

    copied = tmp_path / "copied.db"
    shutil.copyfile(path, copied)  # what `cp prefs.db` does
    assert _count_decisions(copied) < 30  # control: the plain copy misses commits

    backup = tmp_path / "backup.db"
    size = store.backup(backup)
    assert size == backup.stat().st_size
    assert not Path(f"{backup}-wal").exists()  # one self-contained file
    with SQLStore(backup) as restored:
        assert sorted(r.decision_id for r in restored.iter_records()) == sorted(ids)
    with pytest.raises(ConfigError, match="already exists"):
        store.backup(backup)
    with pytest.raises(ConfigError, match="is the preference store itself"):
        store.backup(path, force=True)
    store.backup(backup, force=True)
    store.close()


@pytest.mark.postgres
def test_a_postgres_backup_gives_the_pg_dump_command_that_works(postgres_store_url, tmp_path):
    store_url = postgres_store_url
    store = SQLStore(store_url)
    store.record_decision(make_decision("alice"))
    out = tmp_path / "prefs.dump"
    with pytest.raises(ConfigError, match="pg_dump") as refused:
        store.backup(out)
    command = str(refused.value).split("e.g.: ", 1)[1].split(" (the password", 1)[0]
    assert "--table=" in command and str(out) in command
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"))
    if not binaries:
        pytest.skip("pg_dump is not installed here; the command above was not run")
    url = sa.make_url(store_url)
    env = {"PGPASSWORD": url.password or "", "PATH": f"{binaries[-1].parent}:/usr/bin:/bin"}
    subprocess.run(command, shell=True, check=True, env=env, timeout=60)
    listing = subprocess.run(
        [str(binaries[-1].parent / "pg_restore"), "--list", str(out)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "metarouter_decisions" in listing and "metarouter_comparisons" in listing
    store.close()


# -- retention (item 6) ------------------------------------------------------------------------
def _aged(store, user, days_old, **kwargs):
    rec = make_decision(user, created_at=time.time() - days_old * DAY, **kwargs)
    store.record_decision(rec)
    return rec


def test_prune_deletes_old_decisions_but_keeps_comparisons_and_what_they_cite(store):
    old_a = _aged(store, "alice", 100, chosen=MODELS[0])
    old_b = _aged(store, "alice", 100, chosen=MODELS[2])
    store.record_comparison(make_comparison("alice", old_b, old_a))
    stale = [_aged(store, "alice", 60 + i) for i in range(3)]
    recent = _aged(store, "alice", 1)
    bob_old = _aged(store, "bob", 90)
    comparisons = [c.comparison_id for c in store.comparisons("alice")]

    assert store.prune(Retention(max_age_days=30)) == 4
    left = {r.decision_id for r in store.iter_records() if hasattr(r, "scores")}
    assert left == {old_a.decision_id, old_b.decision_id, recent.decision_id}
    assert [c.comparison_id for c in store.comparisons("alice")] == comparisons
    assert not left & {s.decision_id for s in stale} and bob_old.decision_id not in left


def test_prune_keeps_each_users_newest_decisions(store):
    alice = [_aged(store, "alice", 10 - i) for i in range(5)]  # oldest first
    bob = [_aged(store, "bob", 3 - i) for i in range(2)]
    assert store.prune(Retention(max_decisions_per_user=2)) == 3
    left = {r.decision_id for r in store.iter_records() if hasattr(r, "scores")}
    assert left == {alice[3].decision_id, alice[4].decision_id, *(b.decision_id for b in bob)}


def test_a_store_with_retention_prunes_as_it_records(store_url):
    with SQLStore(store_url, retention=Retention(max_age_days=7, every=5)) as store:
        old = [_aged(store, "alice", 30) for _ in range(3)]
        assert store.stats()["decisions"] == 3
        new = [_aged(store, "alice", 0) for _ in range(2)]  # the 5th decision triggers a prune
        left = {r.decision_id for r in store.iter_records()}
        assert left == {r.decision_id for r in new}
        assert not left & {r.decision_id for r in old}


def test_retention_settings_are_checked():
    with pytest.raises(ConfigError, match="max_age_days or max_decisions_per_user"):
        Retention()
    with pytest.raises(ConfigError, match="max_decisions_per_user"):
        Retention(max_decisions_per_user=-1)
    with pytest.raises(ConfigError, match="no retention setting"):
        SQLStore(":memory:").prune()


# -- import (item 2) ---------------------------------------------------------------------------
def test_an_export_rebuilds_the_store_and_importing_twice_changes_nothing(
    store, tmp_path, another_store_url
):
    a, b = make_decision("alice"), make_decision("alice", chosen=MODELS[2])
    for rec in (a, b, make_decision("bob", run_id="run-1", metadata={"k": "v"})):
        store.record_decision(rec)
    store.record_comparison(make_comparison("alice", b, a))
    store.record_comparison(make_comparison("bob", MODELS[1], MODELS[0], query="q"))
    out = tmp_path / "all.jsonl"
    store.export_comparisons(out, include_metadata=True)

    rebuilt = SQLStore(another_store_url())
    counts = rebuilt.import_records(load_export_records(out))
    assert counts == {"decisions": 3, "comparisons": 2, "skipped": 0}
    original, copy = list(store.iter_records()), list(rebuilt.iter_records())
    assert [r.__dict__.keys() for r in copy] == [r.__dict__.keys() for r in original]
    for x, y in zip(original, copy, strict=True):
        for key, value in x.__dict__.items():
            other = y.__dict__[key]
            assert np.array_equal(value, other) if key == "embedding" else value == other, key
    assert rebuilt.user_version("alice") > 0 and rebuilt.user_version("bob") > 0
    before = snapshot(rebuilt)
    assert rebuilt.import_records(load_export_records(out))["skipped"] == 5
    assert snapshot(rebuilt) == before
    rebuilt.close()


def test_a_refused_import_imports_nothing(store, tmp_path):
    a = make_decision("alice")
    store.record_decision(a)
    orphan = make_comparison("alice", make_decision("alice", chosen=MODELS[2]), a)  # unknown id
    before = snapshot(store)
    with pytest.raises(Exception, match="unknown decision id"):
        store.import_records([make_decision("carol"), orphan])
    assert snapshot(store) == before


def test_a_user_export_can_be_imported(store, tmp_path):
    a, b = make_decision("alice"), make_decision("alice", chosen=MODELS[2])
    store.record_decision(a)
    store.record_decision(b)
    store.record_comparison(make_comparison("alice", b, a))
    store.cache_preference("alice", "r", store.user_version("alice"), {"z": [0.1]})
    out = tmp_path / "alice.jsonl"
    store.export_user_jsonl("alice", out)
    store.delete_user("alice")
    assert store.import_records(load_export_records(out)) == {
        "decisions": 2,
        "comparisons": 1,
        "skipped": 0,
    }
    assert len(store.comparisons("alice")) == 1 and store.user_version("alice") > 0


# -- deletion leaves no trace (item 7) ---------------------------------------------------------
def _traces(folder: Path, needles: list[bytes]) -> dict[str, list[int]]:
    found = {}
    for path in folder.iterdir():
        data = path.read_bytes()
        hits = [i for i, needle in enumerate(needles) if needle in data]
        if hits:
            found[path.name] = hits
    return found


def test_deleting_a_user_leaves_no_trace_in_any_store_file(tmp_path):
    folder = tmp_path / "store"
    store = SQLStore(folder / "prefs.db")  # stays open, like the running application
    alice = "alice.secret-id"
    recs = [make_decision(alice, query=f"alice question {i}") for i in range(40)]
    recs += [make_decision(alice, query=f"alice question {i}", chosen=MODELS[2]) for i in range(40)]
    for rec in recs:
        store.record_decision(rec)
    for i in range(40):
        store.record_comparison(make_comparison(alice, recs[i + 40], recs[i]))
    others = [make_decision(f"user-{i}", query=f"other question {i}") for i in range(60)]
    for rec in others:
        store.record_decision(rec)
    store.cache_preference(alice, "router", store.user_version(alice), {"z": [0.5]})
    needles = [alice.encode()]
    needles += [r.query_hash.encode() for r in recs[::7]]
    needles += [np.asarray(r.embedding, "<f4").tobytes()[:64] for r in recs[::7]]
    assert _traces(folder, needles), "control: her data is in the files before the deletion"

    assert store.delete_user(alice) > 0
    assert _traces(folder, needles) == {}
    # the other users are intact and the store keeps working
    assert {r.decision_id for r in store.iter_records()} == {r.decision_id for r in others}
    store.record_decision(make_decision("user-0"))
    store.close()
    assert _traces(folder, needles) == {}


# -- read-only opening (item 10) ---------------------------------------------------------------
def test_a_read_only_store_refuses_a_database_that_is_not_a_store_and_writes_nothing(
    store_url, backend
):
    engine = sa.create_engine(store_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE their_orders (id INTEGER PRIMARY KEY, total REAL)")
    with SQLStore(store_url, read_only=True) as opened, pytest.raises(StoreError) as refused:
        opened.stats()
    assert "is not a MetaRouter preference store" in str(refused.value)
    with SQLStore(store_url, create=False) as opened, pytest.raises(StoreError):
        opened.record_decision(make_decision("alice"))
    tables = sa.inspect(engine).get_table_names()
    assert tables == ["their_orders"]
    if backend == "sqlite":
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "delete"
    engine.dispose()


def test_a_read_only_store_reads_and_refuses_writes(store_url):
    with SQLStore(store_url) as store:
        store.record_decision(make_decision("alice"))
        before = snapshot(store)
    with SQLStore(store_url, read_only=True) as opened:
        assert opened.stats()["decisions"] == 1
        with pytest.raises(StoreError, match="opened read-only"):
            opened.record_decision(make_decision("bob"))
        with pytest.raises(StoreError, match="opened read-only"):
            opened.delete_user("alice")
    with SQLStore(store_url) as store:
        assert snapshot(store) == before


def test_a_read_only_sqlite_store_leaves_the_file_untouched(tmp_path):
    path = tmp_path / "prefs.db"
    with SQLStore(path) as store:
        store.record_decision(make_decision("alice"))
    before = path.read_bytes()
    with SQLStore(path, read_only=True) as opened:
        opened.stats()
        list(opened.iter_records())
    assert path.read_bytes() == before
