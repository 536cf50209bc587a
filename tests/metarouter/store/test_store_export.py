"""Exports: a user's data (retention) and the feedback dataset (training), round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _store_helpers import MODELS, ROUTER_DIM, make_comparison, make_decision
from metarouter.errors import DataError
from metarouter.store import load_comparison_export, load_decision_export
from metarouter.store.export import DATASET_FORMAT


@pytest.fixture
def filled(store):
    """alice: 2 queries x 2 decisions + 2 comparisons + 1 external; bob: 1 pair + 1 comparison."""
    decisions, comparisons = [], []
    for user, queries in (
        ("alice", ("secret question one", "secret question two")),
        ("bob", ("q",)),
    ):
        for query in queries:
            a = make_decision(
                user, query=query, chosen=MODELS[0], run_id=f"run-{user}-{len(decisions)}"
            )
            b = make_decision(user, query=query, chosen=MODELS[2], metadata={"ticket": 7})
            store.record_decision(a)
            store.record_decision(b)
            store.complete_decision(b.decision_id, chosen=MODELS[2], cost_usd=0.002)
            cmp = make_comparison(user, b, a)
            store.record_comparison(cmp)
            decisions += [a, b]
            comparisons.append(cmp)
    ext = make_comparison("alice", MODELS[1], MODELS[0], query="an external question")
    store.record_comparison(ext)
    comparisons.append(ext)
    return store, decisions, comparisons


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_dataset_export_round_trips_every_comparison_and_decision(filled, tmp_path):
    store, decisions, comparisons = filled
    out = tmp_path / "feedback.jsonl"
    assert store.export_comparisons(out) == {"decisions": 6, "comparisons": 4, "unreadable": 0}
    loaded = load_comparison_export(out)
    assert sorted(c.comparison_id for c in loaded) == sorted(c.comparison_id for c in comparisons)
    by_id = {c.comparison_id: c for c in comparisons}
    for got in loaded:
        want = by_id[got.comparison_id]
        for name in (
            "user_id",
            "winner",
            "loser",
            "winner_cost_usd",
            "loser_cost_usd",
            "query_hash",
            "prompt_tokens",
            "source",
            "winner_decision_id",
            "loser_decision_id",
            "created_at",
        ):
            assert getattr(got, name) == getattr(want, name), name
        np.testing.assert_array_equal(got.embedding, want.embedding)  # exact float32
        assert got.to_comparison().winner == want.winner
    got_decisions = {d.decision_id: d for d in load_decision_export(out)}
    assert set(got_decisions) == {d.decision_id for d in decisions}
    completed = [d for d in decisions if d.chosen == MODELS[2]]
    assert all(got_decisions[d.decision_id].cost_usd == 0.002 for d in completed)


def test_dataset_export_has_header_footer_and_no_query_text(filled, tmp_path):
    store, _, _ = filled
    out = tmp_path / "feedback.jsonl"
    store.export_comparisons(out)
    text = out.read_text(encoding="utf-8")
    assert "secret question" not in text, "query text must never be stored or exported"
    rows = _lines(out)
    assert rows[0]["type"] == "header" and rows[0]["format"] == DATASET_FORMAT
    assert rows[-1] == {"type": "footer", "decisions": 6, "comparisons": 4}
    decision_rows = [r for r in rows if r["type"] == "decision"]
    assert all("metadata" not in r and "run_id" not in r for r in decision_rows)
    assert all(len(r["embedding"]) == ROUTER_DIM for r in rows[1:-1])
    store.export_comparisons(out, include_metadata=True)
    decision_rows = [r for r in _lines(out) if r["type"] == "decision"]
    assert {r["metadata"].get("ticket") for r in decision_rows} == {7, None}


def test_the_loader_rejects_truncated_altered_or_foreign_files(filled, tmp_path):
    store, _, _ = filled
    out = tmp_path / "feedback.jsonl"
    store.export_comparisons(out)
    lines = out.read_text(encoding="utf-8").splitlines()

    dropped = tmp_path / "dropped.jsonl"
    dropped.write_text("\n".join(lines[:3] + lines[4:]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="footer announces"):
        load_comparison_export(dropped)

    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([*lines[:2], "{not json", *lines[2:]]), encoding="utf-8")
    with pytest.raises(DataError, match="line 3: invalid JSON"):
        load_comparison_export(broken)

    bad_row = json.loads(lines[-2])
    bad_row["winner"] = bad_row["loser"]
    self_cmp = tmp_path / "self.jsonl"
    self_cmp.write_text("\n".join([*lines[:-2], json.dumps(bad_row), lines[-1]]), encoding="utf-8")
    with pytest.raises(DataError, match=r"line \d+: both answers come from"):
        load_comparison_export(self_cmp)

    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"winner": "a"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="not a metarouter-feedback export"):
        load_comparison_export(foreign)

    newer = tmp_path / "newer.jsonl"
    header = json.loads(lines[0]) | {"format_version": 99}
    newer.write_text("\n".join([json.dumps(header), *lines[1:]]), encoding="utf-8")
    with pytest.raises(DataError, match="upgrade metarouter"):
        load_comparison_export(newer)

    with pytest.raises(DataError, match="cannot read"):
        load_comparison_export(tmp_path / "missing.jsonl")


def test_an_export_of_an_empty_store_loads_as_empty(store, tmp_path):
    out = tmp_path / "empty.jsonl"
    assert store.export_comparisons(out) == {"decisions": 0, "comparisons": 0, "unreadable": 0}
    assert load_comparison_export(out) == []


def test_user_export_then_delete_round_trip(filled, tmp_path):
    store, decisions, comparisons = filled
    out = tmp_path / "alice.jsonl"
    n = store.export_user_jsonl("alice", out)
    rows = _lines(out)
    assert rows[0]["type"] == "header" and rows[0]["user_id"] == "alice"
    assert rows[-1] == {"type": "footer", "rows": n}
    body = rows[1:-1]
    assert len(body) == n
    assert {r["user_id"] for r in body} == {"alice"}
    kinds = [r["type"] for r in body]
    assert kinds.count("user") == 1
    assert {r["decision_id"] for r in body if r["type"] == "decision"} == {
        d.decision_id for d in decisions if d.user_id == "alice"
    }
    assert {r["comparison_id"] for r in body if r["type"] == "comparison"} == {
        c.comparison_id for c in comparisons if c.user_id == "alice"
    }
    assert "secret question" not in out.read_text(encoding="utf-8")

    bob_before = list(store.export_user("bob"))
    assert store.delete_user("alice") == n
    assert list(store.export_user("alice")) == []
    assert store.export_user_jsonl("alice", tmp_path / "gone.jsonl") == 0
    assert list(store.export_user("bob")) == bob_before
    dataset = tmp_path / "after.jsonl"
    assert store.export_comparisons(dataset) == {"decisions": 2, "comparisons": 1, "unreadable": 0}
    assert {c.user_id for c in load_comparison_export(dataset)} == {"bob"}


def test_a_failed_export_leaves_no_partial_file(filled, tmp_path, monkeypatch):
    store, _, _ = filled
    out = tmp_path / "feedback.jsonl"
    out.write_text("previous export\n", encoding="utf-8")

    first_rows = list(store.iter_records())[:2]

    def failing_records(**kwargs):
        yield from first_rows
        raise RuntimeError("connection lost")

    monkeypatch.setattr(store, "iter_records", failing_records)
    with pytest.raises(RuntimeError, match="connection lost"):
        store.export_comparisons(out)
    assert out.read_text(encoding="utf-8") == "previous export\n"
    assert [p.name for p in tmp_path.iterdir() if "jsonl" in p.name] == ["feedback.jsonl"]


def test_an_export_killed_part_way_leaves_no_temporary_file_behind(filled, store_url, tmp_path):
    import multiprocessing
    import os
    import signal

    from _store_helpers import stalled_export

    store, _, _ = filled
    out = tmp_path / "feedback.jsonl"
    ctx = multiprocessing.get_context("spawn")
    started = ctx.Event()
    child = ctx.Process(target=stalled_export, args=(store_url, str(out), started))
    child.start()
    assert started.wait(120), "the export did not start"
    temporaries = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(temporaries) == 1 and temporaries[0].stat().st_mode & 0o077 == 0  # private
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    assert temporaries[0].exists()  # what a killed export leaves

    running = tmp_path / f".{out.name}.{os.getpid()}.abcdefgh.tmp"  # a live export's file
    running.write_text("in progress", encoding="utf-8")
    store.export_comparisons(out)
    assert not temporaries[0].exists()
    assert running.exists()
    left = sorted(p.name for p in tmp_path.iterdir() if "jsonl" in p.name)
    assert left == sorted([out.name, running.name])
