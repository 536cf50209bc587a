"""docs/store.md's bad-input table tells the truth: every row is run here.

For each row, the case below does what the "input" column says and returns what it observed:
the exceptions raised and the warnings logged. The "what happens" column must match: every
error class named in backticks was raised (or is a base of one raised), every phrase in double
quotes is in one of those messages or log lines. A row without a case, or a case without a row,
fails the test.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from _store_helpers import (
    MODELS,
    WriteLock,
    impatient_store,
    make_comparison,
    make_decision,
    snapshot,
)
from metarouter.cli import app
from metarouter.service import Response, RoutingService
from metarouter.store import SQLStore
from typer.testing import CliRunner

PAGE = Path(__file__).resolve().parents[3] / "docs" / "store.md"
QUERY = "Prove that there are infinitely many prime numbers."


def _table() -> dict[str, str]:
    text = PAGE.read_text(encoding="utf-8").split("## Bad input and faults: what happens", 1)[1]
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] not in ("input", "---"):
            rows[cells[0]] = cells[1]
    return rows


@dataclass
class Seen:
    """What a case observed: exceptions raised, log lines written."""

    errors: list[BaseException] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)

    def raises(self, fn: Callable[[], Any]) -> BaseException:
        try:
            fn()
        except Exception as exc:
            self.errors.append(exc)
            return exc
        raise AssertionError("expected an error, got none")

    def cli(self, *args: str) -> Any:
        result = CliRunner().invoke(app, list(args))
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            self.errors.append(result.exception)
        return result


@dataclass
class Ctx:
    tmp: Path
    router: Any
    caplog: Any
    monkeypatch: Any
    seen: Seen = field(default_factory=Seen)

    def service(self, name: str = "s.db", store: SQLStore | None = None) -> RoutingService:
        return RoutingService(
            list(MODELS), router=self.router, store=store or SQLStore(self.tmp / name)
        )


def _sql(path: Path, statement: str, **params: Any) -> None:
    engine = sa.create_engine(f"sqlite:///{path}", poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text(statement), params)
    engine.dispose()


# -- the cases, keyed by the table's "input" cell ---------------------------------------------
def huge_cost(c: Ctx) -> None:
    from metarouter.types import Comparison

    service = c.service()
    for cost in (3.5e38, 1e300, float("inf"), float("nan"), -0.01, True):
        c.seen.raises(lambda cost=cost: Comparison(MODELS[0], MODELS[1], cost, 0.0, query=QUERY))
        before = snapshot(service.store)
        c.seen.raises(
            lambda cost=cost: service.record_preference(
                Response(MODELS[0], cost), Response(MODELS[1], 0.001), query=QUERY
            )
        )
        assert snapshot(service.store) == before
    assert service.decide(QUERY).model in MODELS


def bad_price(c: Ctx) -> None:
    from metarouter.pricing import Price

    for args in ((1e300, 1), (True, 1), (-0.5, 1)):
        c.seen.raises(lambda args=args: Price(*args))
    assert Price(np.float32(0.2), 0.6).input_per_million == pytest.approx(0.2)


def bad_tokens(c: Ctx) -> None:
    from metarouter.types import Comparison

    for tokens in (-3, 2.5, 10**12):
        c.seen.raises(
            lambda tokens=tokens: Comparison(MODELS[0], MODELS[1], 0, 0, query="q", tokens=tokens)
        )


def huge_user_id(c: Ctx) -> None:
    error = c.seen.raises(lambda: c.service().decide(QUERY, "u" * 10_000_000))
    assert len(str(error)) < 400 and "u" * 79 in str(error)


def bad_text(c: Ctx) -> None:
    service = c.service()
    before = snapshot(service.store)
    for text in ("x" * 100_001, "bad \udc80 text"):
        c.seen.raises(
            lambda text=text: service.record_preference(
                Response(MODELS[0], 0.001, text=text), Response(MODELS[1], 0.002), query=QUERY
            )
        )
    assert snapshot(service.store) == before


def _refused(c: Ctx, service: RoutingService, pairs: list[tuple[Any, Any]]) -> None:
    before = snapshot(service.store)
    for winner, loser in pairs:
        c.seen.raises(lambda w=winner, lo=loser: service.record_preference(w, lo))
    assert snapshot(service.store) == before


def same_answer(c: Ctx) -> None:
    service = c.service()
    a, b = (service.decide(QUERY, "ann", forced=MODELS[0]) for _ in range(2))
    _refused(c, service, [(a, b), (a, a)])


def foreign_decisions(c: Ctx) -> None:
    service = c.service()
    ann = service.decide(QUERY, "ann", forced=MODELS[0])
    bob = service.decide(QUERY, "bob", forced=MODELS[2])
    other = service.decide("What is 2 + 2?", "ann", forced=MODELS[2])
    _refused(c, service, [(ann, bob), (ann, other)])


def judged_again(c: Ctx) -> None:
    service = c.service()
    a = service.decide(QUERY, "ann", forced=MODELS[0])
    b = service.decide(QUERY, "ann", forced=MODELS[2])
    service.record_preference(a, b)
    service.record_preference(a, b)
    last = service.record_preference(b, a)
    assert [x.comparison_id for x in service.store.comparisons("ann")] == [last.comparison_id]


def unusable_comparison(c: Ctx) -> None:
    service = c.service()
    rec = make_comparison("ann", MODELS[0], MODELS[2])
    service.store.record_comparison(rec)
    service.store.record_comparison(
        make_comparison("ann", MODELS[1], MODELS[2], embedding=np.ones(10, np.float32) / 10)
    )
    _sql(
        c.tmp / "s.db",
        "UPDATE metarouter_comparisons SET winner_cost_usd = 3.5e38 WHERE comparison_id = :id",
        id=rec.comparison_id,
    )
    with c.caplog.at_level(logging.WARNING):
        assert service.decide(QUERY, "ann").model in MODELS
    assert service.preference("ann").n_comparisons == 0


def unusable_cache(c: Ctx) -> None:
    service = c.service()
    service.store.record_comparison(make_comparison("ann", MODELS[0], MODELS[2]))
    state = service.preference("ann").to_dict()
    weights = state["posterior"]["weight"]
    nan = {**state, "posterior": {**state["posterior"], "weight": [float("nan")] * len(weights)}}
    for bad in ("{broken", json.dumps(nan)):
        _sql(c.tmp / "s.db", "UPDATE metarouter_preference_cache SET state = :s", s=bad)
        fresh = c.service()
        with c.caplog.at_level(logging.WARNING):
            assert fresh.decide(QUERY, "ann").model in MODELS


def broken_decision_row(c: Ctx) -> None:
    service = c.service()
    decision = service.decide(QUERY, "ann")
    service.decide(QUERY, "bob")
    _sql(c.tmp / "s.db", "UPDATE metarouter_decisions SET scores = '{' WHERE user_id = 'ann'")
    with c.caplog.at_level(logging.WARNING):
        counts = service.store.export_comparisons(c.tmp / "out.jsonl")
    assert counts["unreadable"] == 1 and counts["decisions"] == 1
    c.seen.raises(lambda: service.store.get_decision(decision.decision_id))


def _filled_store(c: Ctx) -> Path:
    path = c.tmp / "prefs.db"
    service = c.service("prefs.db")
    service.decide(QUERY, "ann")
    service.store.close()  # the last connection checkpoints: the file is stable from here
    return path


def export_over_store(c: Ctx) -> None:
    path = _filled_store(c)
    before = path.read_bytes()
    for out in (path, f"{path}-wal", f"{path}-shm"):
        c.seen.cli("store", "export", "--store", str(path), "--out", str(out), "--force")
    assert path.read_bytes() == before


def export_existing(c: Ctx) -> None:
    path = _filled_store(c)
    out = c.tmp / "feedback.jsonl"
    out.write_text("keep\n", encoding="utf-8")
    c.seen.cli("store", "export", "--store", str(path), "--out", str(out))
    assert out.read_text(encoding="utf-8") == "keep\n"
    assert c.seen.cli("store", "export", "--store", str(path), "--out", str(out), "--force")


def foreign_database(c: Ctx) -> None:
    path = c.tmp / "their.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE orders (id INTEGER)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    for args in (
        ["stats"],
        ["export", "--out", str(c.tmp / "x.jsonl")],
        ["delete", "--user", "ann", "--yes"],
        ["prune", "--keep-last", "1"],
        ["backup", str(c.tmp / "b.db")],
    ):
        c.seen.cli("store", *args, "--store", str(path))
    assert path.read_bytes() == before


def postgres_backup(c: Ctx) -> None:
    c.seen.cli("store", "backup", str(c.tmp / "b.dump"), "--store", "postgresql://app@db/app")


def store_fails(c: Ctx) -> None:
    url = f"sqlite:///{c.tmp / 'locked.db'}"
    store = impatient_store(url)
    store.migrate()
    service = c.service(store=store)
    a = service.decide(QUERY, "ann", forced=MODELS[0])
    b = service.decide(QUERY, "ann", forced=MODELS[2])
    with WriteLock(url), c.caplog.at_level(logging.WARNING):
        assert service.decide(QUERY, "ann").model in MODELS
        c.seen.raises(lambda: service.record_preference(a, b))
    assert service.store.comparisons("ann") == []


def disk_full(c: Ctx) -> None:
    store = SQLStore(c.tmp / "full.db")
    store.migrate()

    @sa.event.listens_for(store.engine, "connect")
    def _small_disk(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA max_page_count=24")

    store.engine.dispose()
    service = c.service(store=store)
    with c.caplog.at_level(logging.WARNING):
        for i in range(30):
            assert service.decide(f"{QUERY} {i}", "ann").model in MODELS
    assert service.store_health().pending > 0
    c.seen.raises(lambda: store.record_decision(make_decision("ann")))  # what was logged


def huge_config(c: Ctx) -> None:
    from metarouter import model as model_module
    from metarouter.router import CONFIG_FILE, MetaRouter

    build = model_module.MetaRouterModel.__init__

    def guarded(self: Any, config: Any) -> None:  # for real, this would take ~16 GB
        assert config.hidden_dim < 10_000 or _on_meta(), "allocated the oversized network"
        build(self, config)

    c.monkeypatch.setattr(model_module.MetaRouterModel, "__init__", guarded)
    folder = c.router.save_pretrained(c.tmp / "r")
    meta = json.loads((folder / CONFIG_FILE).read_text())
    meta["config"]["hidden_dim"] = 20_000
    (folder / CONFIG_FILE).write_text(json.dumps(meta))
    c.seen.raises(lambda: MetaRouter.from_pretrained(folder))


def _on_meta() -> bool:
    import torch

    return torch.empty(0).device.type == "meta"


def _outcome_rows(n_queries: int) -> list[dict[str, Any]]:
    from metarouter.data import load_dataset

    m = load_dataset("llmrouter").to_matrix().select_models(list(MODELS))
    return [
        {
            "query_id": m.query_ids[i],
            "query": m.queries[i],
            "model": model,
            "quality": float(m.quality[i, k]),
            "cost_usd": float(m.cost[i, k]),
        }
        for i in range(n_queries)
        for k, model in enumerate(m.models)
    ]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tiny_training(c: Ctx) -> None:
    log = _write_jsonl(c.tmp / "tiny.jsonl", _outcome_rows(47))
    c.seen.cli("train", "--data", str(log), "--out", str(c.tmp / "router"))


def _load(c: Ctx, path: Path) -> None:
    from metarouter.data import load_outcomes

    c.seen.raises(lambda: load_outcomes(path))


def text_quality(c: Ctx) -> None:
    rows = _outcome_rows(8)
    rows[14]["quality"] = "good"
    _load(c, _write_jsonl(c.tmp / "q.jsonl", rows))


def maybe_estimate(c: Ctx) -> None:
    rows = _outcome_rows(2)
    for i, row in enumerate(rows):
        row["cost_is_estimate"] = "maybe" if i == 2 else "true"
    _load(c, _write_jsonl(c.tmp / "e.jsonl", rows))


def cut_jsonl(c: Ctx) -> None:
    path = _write_jsonl(c.tmp / "cut.jsonl", _outcome_rows(2))
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2][:20]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _load(c, path)


def header_only(c: Ctx) -> None:
    path = c.tmp / "empty.csv"
    path.write_text("query_id,query,model,quality,cost_usd\n", encoding="utf-8")
    _load(c, path)


def empty_data_folder(c: Ctx) -> None:
    (c.tmp / "data").mkdir()
    c.seen.cli("data", "summary", "--data", str(c.tmp / "data"))


def migration_gap(c: Ctx) -> None:
    from metarouter.store import migrations
    from metarouter.store.migrations import Migration

    url = f"sqlite:///{c.tmp / 'gap.db'}"
    saved = migrations.MIGRATIONS
    migrations.MIGRATIONS = (Migration(3, "gap", lambda conn: None),)
    try:
        c.seen.raises(lambda: SQLStore(url).migrate())
    finally:
        migrations.MIGRATIONS = saved
    tables = sa.inspect(sa.create_engine(url)).get_table_names()
    assert tables == [] or "metarouter_schema" not in tables  # rolled back: nothing created


def planted_link(c: Ctx) -> None:
    from metarouter.router import CONFIG_FILE, WEIGHTS_FILE

    folder = c.tmp / "router"
    folder.mkdir()
    victim = c.tmp / "victim"
    victim.write_text("precious", encoding="utf-8")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        (folder / f".{name}.tmp").symlink_to(victim)
    c.router.save_pretrained(folder)
    assert victim.read_text(encoding="utf-8") == "precious"


CASES: dict[str, Callable[[Ctx], None]] = {
    "A comparison or feedback with a cost of `3.5e38`, `1e300`, `inf`, `NaN`, `-0.01` or "
    "`True`": huge_cost,
    "`Price(1e300, 1)`, `Price(True, 1)` or a negative price": bad_price,
    "A prompt token count of `-3`, `2.5` or `10**12`": bad_tokens,
    "A user id of 10,000,000 characters": huge_user_id,
    "An answer text over 100,000 characters, or with a lone surrogate": bad_text,
    "Both answers from the same model, or the same decision twice": same_answer,
    "Decisions of two users, or of two queries": foreign_decisions,
    "The same two routed answers judged again (`prefer(0)`, `prefer(0)`, `prefer(1)`)": (
        judged_again
    ),
    "A stored comparison the router cannot use (a cost of `3.5e38` written by an older "
    "version, an embedding of another size)": unusable_comparison,
    "A cached preference that cannot be used (broken JSON, NaN, another router's shapes, "
    "another version's fields)": unusable_cache,
    "A decision row with broken JSON": broken_decision_row,
    "`metarouter store export --out prefs.db` (the store, or its `-wal` or `-shm` file)": (
        export_over_store
    ),
    "`metarouter store export --out` a file that exists": export_existing,
    "`metarouter store stats`, `export`, `delete`, `prune` or `backup` on another "
    "application's database": foreign_database,
    "`metarouter store backup` of a PostgreSQL store": postgres_backup,
    "The store cannot be written (a lock held past `busy_timeout`, a full disk, a server that "
    "is down)": store_fails,
    "The disk holding a SQLite store is full": disk_full,
    "A router folder whose `config.json` asks for `hidden_dim=20000`": huge_config,
    "`metarouter train` on an outcome file with 47 queries": tiny_training,
    "An outcome file with `quality` = `good` in its 15th data row": text_quality,
    "An outcome file with `cost_is_estimate` = `maybe`": maybe_estimate,
    "A JSONL outcome file whose third line is cut off": cut_jsonl,
    "An outcome file with a header and no rows": header_only,
    "`metarouter data summary --data` on a folder without the datasets": empty_data_folder,
    "A store whose migration steps have a gap (a broken install)": migration_gap,
    "`save_pretrained` into a folder with symlinks planted at `.config.json.tmp` and "
    "`.model.safetensors.tmp`": planted_link,
}


def test_every_row_of_the_table_has_a_case_and_every_case_a_row():
    rows = _table()
    assert sorted(rows) == sorted(CASES)


@pytest.mark.parametrize("row", list(CASES))
def test_the_table_says_what_really_happens(row, router, tmp_path, caplog, monkeypatch):
    said = _table()[row]
    monkeypatch.chdir(tmp_path)
    ctx = Ctx(tmp_path, router, caplog, monkeypatch)
    CASES[row](ctx)
    seen = ctx.seen
    texts = [str(e) for e in seen.errors] + seen.logs + [r.getMessage() for r in caplog.records]
    for name in re.findall(r"`(\w+Error)`", said):
        assert any(name in [k.__name__ for k in type(e).__mro__] for e in seen.errors), (
            f"the table says {name}, but the case raised {[type(e) for e in seen.errors]}"
        )
    if said.startswith("no error"):
        assert seen.errors == [], seen.errors
    for phrase in re.findall(r'"([^"]+)"', said):
        assert any(phrase in text for text in texts), (phrase, texts[:5])
