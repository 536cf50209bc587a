"""Schema creation and migration: old stores are upgraded in place, newer ones refused."""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest
import sqlalchemy as sa
from _store_helpers import MODELS, make_comparison, make_decision, open_and_write, snapshot
from metarouter.errors import StoreError
from metarouter.store import SCHEMA_VERSION, SQLStore, migrations
from metarouter.store.schema import define_tables


def _engine(url):
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def _version(url):
    engine = _engine(url)
    with engine.connect() as conn:
        version = conn.execute(sa.text("SELECT version FROM metarouter_schema")).scalar_one()
    engine.dispose()
    return version


def _build_v1_store(url):
    """A store as the first release left it: v1 tables, rows, user versions counted per user."""
    engine = _engine(url)
    v1 = migrations.baseline_v1()
    emb = make_decision("x").embedding.tobytes()
    with engine.begin() as conn:
        v1.create_all(conn)
        conn.execute(v1.tables["metarouter_schema"].insert().values(version=1))
        d = v1.tables["metarouter_decisions"]
        for i, user in enumerate(("alice", "alice", "bob")):
            conn.execute(
                d.insert().values(
                    decision_id=f"{i:032x}",
                    user_id=user,
                    created_at=100.0 + i,
                    query_hash="a" * 64,
                    embedding=emb,
                    prompt_tokens=5,
                    candidates=json.dumps(list(MODELS)),
                    scores=json.dumps({m: 1 / 3 for m in MODELS}),
                    chosen=MODELS[i % 2],
                    expected_cost_usd=0.001,
                    cost_usd=None,
                    run_id=None,
                    forced=False,
                    fallbacks="[]",
                    metadata="{}",
                )
            )
        c = v1.tables["metarouter_comparisons"]
        for k in range(3):
            conn.execute(
                c.insert().values(
                    comparison_id=f"{100 + k:032x}",
                    user_id="alice",
                    created_at=200.0 + k,
                    winner=MODELS[0],
                    loser=MODELS[1],
                    winner_cost_usd=0.001,
                    loser_cost_usd=0.002,
                    query_hash="a" * 64,
                    embedding=emb,
                    prompt_tokens=5,
                    source="decisions",
                    winner_decision_id=f"{0:032x}",
                    loser_decision_id=f"{1:032x}",
                )
            )
        u = v1.tables["metarouter_users"]
        conn.execute(u.insert().values(user_id="alice", version=3, updated_at=300.0))
    engine.dispose()


def test_a_new_store_is_created_at_the_current_version(store_url):
    SQLStore(store_url).migrate()
    assert _version(store_url) == SCHEMA_VERSION


def test_the_migrated_schema_matches_the_declared_tables(store_url):
    """Every store is built by the migration steps; the code queries the declared tables."""
    SQLStore(store_url).migrate()
    engine = _engine(store_url)
    inspector = sa.inspect(engine)
    declared = define_tables().metadata
    assert set(inspector.get_table_names()) == set(declared.tables)
    for name, table in declared.tables.items():
        columns = {c["name"]: c["nullable"] for c in inspector.get_columns(name)}
        assert columns == {c.name: c.nullable for c in table.columns}, name
        indexes = {i["name"] for i in inspector.get_indexes(name)}
        assert {i.name for i in table.indexes} <= indexes, name
        keys = {tuple(fk["constrained_columns"]) for fk in inspector.get_foreign_keys(name)}
        assert keys == {(fk.parent.name,) for fk in table.foreign_keys}, name
    engine.dispose()


def test_a_version_1_store_is_migrated_in_place_with_its_rows(store_url):
    _build_v1_store(store_url)
    assert _version(store_url) == 1
    with SQLStore(store_url) as store:
        assert store.stats()["schema_version"] == SCHEMA_VERSION
        assert _version(store_url) == SCHEMA_VERSION
        assert [c.comparison_id for c in store.comparisons("alice")] == [
            f"{100 + k:032x}" for k in range(3)
        ]
        assert store.user_version("alice") == 3
        assert store.get_decision(f"{2:032x}").user_id == "bob"
        # the new version clock starts above every version already handed out
        a = make_decision("bob", chosen=MODELS[0])
        b = make_decision("bob", chosen=MODELS[2])
        store.record_decision(a)
        store.record_decision(b)
        assert store.record_comparison(make_comparison("bob", a, b)) == 4
        before = snapshot(store)
    with SQLStore(store_url) as again:  # opening a current store changes nothing
        assert snapshot(again) == before


def test_a_failing_migration_step_leaves_the_store_at_its_old_version(store_url, monkeypatch):
    _build_v1_store(store_url)
    real_step = migrations.MIGRATIONS[0].apply

    def broken(conn):
        real_step(conn)  # the real step, then a failure
        raise RuntimeError("boom in step 2")

    monkeypatch.setattr(migrations, "MIGRATIONS", (migrations.Migration(2, "broken", broken),))
    with pytest.raises(RuntimeError, match="boom"):
        SQLStore(store_url).migrate()
    assert _version(store_url) == 1
    assert "metarouter_clock" not in sa.inspect(_engine(store_url)).get_table_names()
    monkeypatch.undo()
    with SQLStore(store_url) as store:
        assert store.user_version("alice") == 3


def test_a_store_from_a_newer_metarouter_is_refused_untouched(store_url):
    SQLStore(store_url).migrate()
    engine = _engine(store_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE metarouter_schema SET version = :v"), {"v": SCHEMA_VERSION + 5}
        )
    engine.dispose()
    store = SQLStore(store_url)
    with pytest.raises(StoreError, match=r"newer than this metarouter .*Fix: upgrade metarouter"):
        store.user_version("alice")
    with pytest.raises(StoreError, match="newer"):
        store.record_decision(make_decision("alice"))
    assert _version(store_url) == SCHEMA_VERSION + 5


def test_metarouter_tables_without_a_version_are_refused(store_url):
    engine = _engine(store_url)
    v1 = migrations.baseline_v1()
    with engine.begin() as conn:
        v1.tables["metarouter_users"].create(conn)
    engine.dispose()
    with pytest.raises(StoreError, match="no metarouter_schema table"):
        SQLStore(store_url).migrate()


def test_migration_steps_are_contiguous_and_end_at_the_schema_version():
    versions = [step.version for step in migrations.MIGRATIONS]
    assert versions == list(range(2, SCHEMA_VERSION + 1))
    assert all(step.description for step in migrations.MIGRATIONS)


def test_processes_opening_a_new_store_at_once_create_it_once(store_url, tmp_path):
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    outs = [tmp_path / f"open-{i}.json" for i in range(4)]
    procs = [
        ctx.Process(target=open_and_write, args=(store_url, i, str(out), start))
        for i, out in enumerate(outs)
    ]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(90)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    with SQLStore(store_url) as store:
        assert store.stats()["decisions"] == 4
        for out in outs:
            store.get_decision(json.loads(out.read_text())["decision"])
    engine = _engine(store_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT version FROM metarouter_schema")).all()
    engine.dispose()
    assert rows == [(SCHEMA_VERSION,)]


def test_a_gap_in_the_migration_steps_says_how_to_fix_it(store_url, monkeypatch):
    from metarouter.store.migrations import Migration

    _build_v1_store(store_url)
    gap = (Migration(3, "skips version 2", lambda conn: None),)
    monkeypatch.setattr(migrations, "MIGRATIONS", gap)
    with pytest.raises(StoreError, match=r"not contiguous: 1 -> 3.*Fix: .*metarouter") as raised:
        SQLStore(store_url).migrate()
    assert "store was not changed" in str(raised.value)
    assert _version(store_url) == 1
