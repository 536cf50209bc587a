"""docs/store.md: its Python examples and ``metarouter store`` commands run as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from _store_helpers import QUERIES, record_population
from metarouter.cli import app
from metarouter.router import MetaRouter
from metarouter.store import SQLStore
from typer.testing import CliRunner

PAGE = Path(__file__).resolve().parents[3] / "docs" / "store.md"
USERS = ["alice", *(f"user-{k}" for k in range(9))]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.S)


@pytest.fixture
def prefs_db(tmp_path, monkeypatch, router_embedder):
    """The page's ``prefs.db`` in the working folder: ten users' feedback, alice among them."""
    monkeypatch.chdir(tmp_path)
    with SQLStore("prefs.db") as store:
        record_population(store, router_embedder.encode(QUERIES), USERS)
    return tmp_path / "prefs.db"


@pytest.fixture
def short_finetuning(monkeypatch):
    """Fine-tuning as the page calls it, with a few steps instead of hundreds."""
    import metarouter.training as training

    real = training.finetune_on_comparisons

    def few_steps(*args, **kwargs):
        return real(*args, **{**kwargs, "steps": 4, "eval_every": 2})

    monkeypatch.setattr(training, "finetune_on_comparisons", few_steps)


def test_the_python_examples_run_in_order(prefs_db, short_finetuning, capsys):
    namespace: dict = {}
    for i, block in enumerate(_blocks("python")):
        exec(compile(block, f"{PAGE}:python block {i}", "exec"), namespace)
    assert namespace["deleted"] == 1 + 6 + 6  # alice's version row, comparisons, decisions
    assert Path("alice.jsonl").read_text(encoding="utf-8").count('"type": "comparison"') == 6
    assert "alice" not in SQLStore(prefs_db).users()
    router = MetaRouter.from_pretrained("my_router/")
    assert "fine-tuned on 54 comparisons of 9 users" in router.config.training_data


def test_the_store_commands_run(prefs_db, short_finetuning):
    lines = [
        line.split("#")[0].strip()
        for block in _blocks("bash")
        for line in block.splitlines()
        if line.startswith("metarouter store") and "://" not in line
    ]
    assert len(lines) >= 4
    for line in lines:
        args = shlex.split(line)[1:]
        if "finetune" in args:
            args[args.index("--steps") + 1] = "4"
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (line, result.output, result.exception)
    assert Path("alice.jsonl").is_file() and Path("feedback.jsonl").is_file()
    assert "alice" not in SQLStore(prefs_db).users()
    assert MetaRouter.from_pretrained("my_router/").config.catalog


def test_the_sizes_quoted_are_those_the_load_benchmark_measured():
    import json

    measured = json.loads((PAGE.parent / "benchmarks" / "store_load.json").read_text())
    block = PAGE.read_text(encoding="utf-8").split("<!-- store-sizes:start -->", 1)[1]
    block = block.split("<!-- store-sizes:end -->", 1)[0]
    size, prune = measured["size"], measured["prune"]
    assert f"| {size['bytes_per_decision']:,} bytes |" in block
    assert f"| {size['bytes_checkpointed'] / 1e6:.1f} MB |" in block
    assert f"| {prune['bytes_after_vacuum'] / 1e6:.1f} MB |" in block
    assert f"{size['decisions']:,} decisions" in block
    assert measured["errors"] == 0 and measured["missing"] == 0
    bench = (PAGE.parent / "benchmarks.md").read_text(encoding="utf-8")
    assert f"**p99 {measured['latency_ms']['p99']}**" in bench
