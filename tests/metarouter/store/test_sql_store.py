"""SQLStore behaviour on SQLite and PostgreSQL: round trips, versions, cache, errors, reopen."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
import sqlalchemy as sa
from _store_helpers import MODELS, make_comparison, make_decision, snapshot, unit_vectors
from metarouter.errors import ConfigError, FeedbackError, StoreError
from metarouter.store import SCHEMA_VERSION, SQLStore


def _pair(store, user, query="what is 2+2?"):
    a = make_decision(user, query=query, chosen=MODELS[0])
    b = make_decision(user, query=query, chosen=MODELS[2])
    store.record_decision(a)
    store.record_decision(b)
    return a, b


def test_decision_round_trips_every_field(store):
    rec = make_decision(
        "alice",
        run_id="2f1c1a0e-6a43-4d0e-9a43-4b3f0f3c1d2e",
        forced=True,
        cost_usd=0.00123,
        fallbacks=(MODELS[1],),
        metadata={"tenant": "acme", "tags": ["a", "b"], "n": 3},
    )
    store.record_decision(rec)
    got = store.get_decision(rec.decision_id)
    assert got.embedding.dtype == np.float32
    np.testing.assert_array_equal(got.embedding, rec.embedding)
    for name in (
        "decision_id",
        "user_id",
        "query_hash",
        "prompt_tokens",
        "candidates",
        "chosen",
        "expected_cost_usd",
        "cost_usd",
        "run_id",
        "forced",
        "fallbacks",
        "created_at",
    ):
        assert getattr(got, name) == getattr(rec, name), name
    assert dict(got.scores) == pytest.approx(dict(rec.scores))
    assert dict(got.metadata) == {"tenant": "acme", "tags": ["a", "b"], "n": 3}
    assert store.find_decision(rec.run_id).decision_id == rec.decision_id
    assert store.find_decision("8c7b0a4e-0000-4000-8000-000000000000") is None


def test_unknown_decision_id_is_a_clear_feedback_error(store):
    with pytest.raises(FeedbackError, match=r"unknown decision id .*Fix"):
        store.get_decision("0" * 32)


def test_complete_decision_updates_the_answer_and_cost(store):
    rec = make_decision("alice")
    store.record_decision(rec)
    store.complete_decision(rec.decision_id, chosen=MODELS[1], cost_usd=0.5, fallbacks=(MODELS[0],))
    got = store.get_decision(rec.decision_id)
    assert (got.chosen, got.cost_usd, got.fallbacks) == (MODELS[1], 0.5, (MODELS[0],))


def test_complete_decision_of_unknown_id_changes_nothing(store):
    store.record_decision(make_decision("alice"))
    before = snapshot(store)
    with pytest.raises(FeedbackError, match="unknown decision id"):
        store.complete_decision("f" * 32, chosen=MODELS[1], cost_usd=0.1)
    assert snapshot(store) == before


def test_duplicate_decision_id_or_run_id_is_refused_and_changes_nothing(store):
    rec = make_decision("alice", run_id="run-1")
    store.record_decision(rec)
    before = snapshot(store)
    with pytest.raises(StoreError, match="already stored"):
        store.record_decision(rec)
    with pytest.raises(StoreError, match="already stored"):
        store.record_decision(make_decision("bob", run_id="run-1"))
    assert snapshot(store) == before


def test_each_comparison_gives_the_user_a_new_higher_version(store):
    assert store.user_version("alice") == 0
    versions = []
    for i in range(3):
        a, b = _pair(store, "alice", query=f"q{i}")
        versions.append(store.record_comparison(make_comparison("alice", a, b, query=f"q{i}")))
        assert store.user_version("alice") == versions[-1]
    assert versions == sorted(set(versions))
    a, b = _pair(store, "bob")
    bob = store.record_comparison(make_comparison("bob", a, b))
    assert bob > versions[-1], "versions come from one clock: never reused across users"
    assert store.user_version("alice") == versions[-1]


def test_comparisons_are_returned_oldest_first_with_embeddings(store):
    made = []
    for i, t in enumerate((30.0, 10.0, 20.0)):
        cmp = make_comparison("alice", MODELS[0], MODELS[1], query=f"q{i}", created_at=t)
        store.record_comparison(cmp)
        made.append(cmp)
    got = store.comparisons("alice")
    assert [c.created_at for c in got] == [10.0, 20.0, 30.0]
    by_id = {c.comparison_id: c for c in made}
    for c in got:
        np.testing.assert_array_equal(c.embedding, by_id[c.comparison_id].embedding)
        assert c.source == "external" and c.winner_decision_id is None
    assert store.comparisons("bob") == []


def test_preference_cache_is_kept_only_for_the_current_version(store):
    a, b = _pair(store, "alice")
    v1 = store.record_comparison(make_comparison("alice", a, b))
    store.cache_preference("alice", "router-a", v1, {"z": [1.0]})
    assert store.cached_preference("alice", "router-a") == (v1, {"z": [1.0]})
    assert store.cached_preference("alice", "router-b") is None
    v2 = store.record_comparison(make_comparison("alice", b, a))
    # the cached row is now older than the user: readers see the version and recompute
    assert store.cached_preference("alice", "router-a")[0] == v1 != v2
    store.cache_preference("alice", "router-a", v1, {"z": [2.0]})  # stale write: ignored
    assert store.cached_preference("alice", "router-a") == (v1, {"z": [1.0]})
    store.cache_preference("alice", "router-a", v2, {"z": [3.0]})
    assert store.cached_preference("alice", "router-a") == (v2, {"z": [3.0]})
    store.cache_preference("carol", "router-a", 0, {"z": [0.0]})  # the prior is never cached
    assert store.cached_preference("carol", "router-a") is None


def test_a_failed_write_midway_rolls_back_and_the_store_stays_usable(store, monkeypatch):
    a, b = _pair(store, "alice")
    store.record_comparison(make_comparison("alice", a, b))
    before = snapshot(store)

    def broken(*args):
        raise sa.exc.OperationalError("UPDATE metarouter_users", {}, RuntimeError("disk full"))

    # fails after the earlier judgement of the pair was deleted and the new one inserted
    monkeypatch.setattr(store, "_set_user_version", broken)
    with pytest.raises(StoreError, match="Nothing was written"):
        store.record_comparison(make_comparison("alice", b, a))
    monkeypatch.setattr(store, "_tick", broken)
    with pytest.raises(StoreError, match="Nothing was written"):
        store.delete_user("alice")
    assert snapshot(store) == before
    monkeypatch.undo()
    store.record_comparison(make_comparison("alice", b, a))
    (kept,) = store.comparisons("alice")  # the new judgement of the pair replaced the old one
    assert (kept.winner_decision_id, kept.loser_decision_id) == (b.decision_id, a.decision_id)


def test_delete_user_removes_everything_of_that_user_only(store):
    for user in ("alice", "bob"):
        a, b = _pair(store, user)
        v = store.record_comparison(make_comparison(user, a, b))
        store.cache_preference(user, "r", v, {"z": [0.5]})
    bob_before = list(store.export_user("bob"))
    deleted = store.delete_user("alice")
    assert deleted == 1 + 1 + 1 + 2  # user row, cache row, comparison, two decisions
    assert store.comparisons("alice") == []
    assert store.user_version("alice") == 0
    assert store.cached_preference("alice", "r") is None
    assert list(store.export_user("alice")) == []
    assert store.users() == ["bob"]
    assert list(store.export_user("bob")) == bob_before
    assert store.delete_user("alice") == 0


def test_a_user_recreated_after_deletion_never_reuses_a_version(store):
    a, b = _pair(store, "alice")
    old = store.record_comparison(make_comparison("alice", a, b))
    store.delete_user("alice")
    a, b = _pair(store, "alice")
    new = store.record_comparison(make_comparison("alice", a, b))
    assert new > old


def test_reopened_store_keeps_everything(store_url):
    with SQLStore(store_url) as first:
        a, b = _pair(first, "alice")
        v = first.record_comparison(make_comparison("alice", a, b))
        first.cache_preference("alice", "r", v, {"z": [0.25]})
        before = snapshot(first)
    with SQLStore(store_url) as second:
        assert snapshot(second) == before
        assert second.cached_preference("alice", "r") == (v, {"z": [0.25]})
        assert second.get_decision(a.decision_id).decision_id == a.decision_id
    first.close()  # closing twice is harmless; using it again reconnects
    assert first.user_version("alice") == v


def test_stats_counts_rows(store):
    a, b = _pair(store, "alice")
    store.record_comparison(make_comparison("alice", a, b))
    store.record_decision(make_decision("bob"))
    stats = store.stats()
    assert stats["schema_version"] == SCHEMA_VERSION
    assert (stats["users"], stats["users_with_feedback"]) == (2, 1)
    assert (stats["decisions"], stats["comparisons"]) == (3, 1)
    assert "password" not in stats["url"]


def test_nothing_touches_the_database_before_first_use(tmp_path):
    path = tmp_path / "sub" / "dir" / "store.db"
    store = SQLStore(path)
    assert not path.exists()
    assert store.user_version("alice") == 0
    assert path.exists()


def test_sqlite_store_runs_in_wal_mode_with_full_sync_and_foreign_keys(tmp_path):
    store = SQLStore(tmp_path / "s.db")
    store.migrate()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_sqlite_reads_do_not_wait_for_a_writer_and_a_stuck_writer_gives_a_clear_error(tmp_path):
    path = tmp_path / "s.db"
    store = SQLStore(path, busy_timeout=0.3)
    a, b = _pair(store, "alice")
    store.record_comparison(make_comparison("alice", a, b))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        assert len(store.comparisons("alice")) == 1
        assert store.user_version("alice") > 0
        with pytest.raises(StoreError, match=r"write lock .*Fix: raise busy_timeout"):
            store.record_decision(make_decision("alice"))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    store.record_decision(make_decision("alice"))


def test_in_memory_sqlite_store_works():
    store = SQLStore(":memory:")
    a, b = _pair(store, "alice")
    assert store.record_comparison(make_comparison("alice", a, b)) == 1


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("mysql://u@h/db", "unsupported store database 'mysql'.*PostgreSQL"),
        ("", "empty store location"),
        ("sqlite:///x.db", None),
    ],
)
def test_store_locations_are_checked_when_constructed(target, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if message is None:
        SQLStore(target)
        return
    with pytest.raises(ConfigError, match=message):
        SQLStore(target)


def test_postgres_urls_without_a_driver_use_psycopg():
    store = SQLStore("postgres://user:secret@127.0.0.1:1/db")
    assert store.engine.url.drivername == "postgresql+psycopg"
    assert "secret" not in repr(store)


def test_an_unreachable_postgres_server_gives_an_actionable_store_error():
    store = SQLStore("postgresql+psycopg://user:secret@127.0.0.1:1/db", connect_timeout=2)
    with pytest.raises(StoreError, match="server is running") as info:
        store.user_version("alice")
    assert "secret" not in str(info.value)


def test_recent_embeddings_are_the_users_last_decisions_newest_first(store):
    vecs = unit_vectors(5, 11)
    for i, vec in enumerate(vecs):
        store.record_decision(make_decision("alice", embedding=vec, created_at=1000.0 + i))
    store.record_decision(make_decision("bob", embedding=unit_vectors(1, 12)[0]))
    queries = store.recent_queries("alice", 3)
    assert [q.prompt_tokens for q in queries] == [7, 7, 7]
    got = store.recent_embeddings("alice", 3)
    for q, vec in zip(queries, got, strict=True):
        np.testing.assert_array_equal(q.embedding, vec)
    assert len(got) == 3
    for vec, want in zip(got, vecs[::-1][:3], strict=True):
        assert vec.dtype == np.float32
        np.testing.assert_array_equal(vec, want)
    assert len(store.recent_embeddings("alice")) == 5  # the default limit (40) keeps all five
    assert store.recent_embeddings("carol") == []
    assert store.recent_embeddings("alice", 0) == []
    for bad in (-1, 2.5, True):
        with pytest.raises(ConfigError, match="limit must be an integer >= 0"):
            store.recent_embeddings("alice", bad)
        with pytest.raises(ConfigError, match="limit must be an integer >= 0"):
            store.recent_queries("alice", bad)


def test_recent_queries_carry_the_answering_model_and_its_billed_cost(store):
    first = make_decision("alice", created_at=1000.0, chosen=MODELS[0])
    second = make_decision("alice", created_at=1001.0, chosen=MODELS[0])
    store.record_decision(first)
    store.record_decision(second)
    newest, oldest = store.recent_queries("alice")
    assert (newest.model, newest.cost_usd) == (MODELS[0], None)  # routed, not billed yet
    store.complete_decision(second.decision_id, chosen=MODELS[1], cost_usd=0.0125)
    store.complete_decision(first.decision_id, chosen=MODELS[0], cost_usd=None)
    newest, oldest = store.recent_queries("alice")
    assert (newest.model, newest.cost_usd) == (MODELS[1], pytest.approx(0.0125))
    assert (oldest.model, oldest.cost_usd) == (MODELS[0], None)  # no usage reported
