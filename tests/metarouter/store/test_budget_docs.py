"""docs/budgets.md: its ``metarouter budget`` commands run as written, its table is generated."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from metarouter.cli import app
from metarouter.store import SQLStore
from typer.testing import CliRunner

DOCS = Path(__file__).resolve().parents[3] / "docs"
PAGE = DOCS / "budgets.md"


def _commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("metarouter budget")]


def test_the_budget_commands_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    SQLStore("prefs.db").migrate()
    commands = [c for c in _commands() if " simulate" not in c]
    assert len(commands) >= 8
    for command in commands:
        args = [*shlex.split(command)[1:], "--store", "prefs.db"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, f"{command}: {result.output} {result.exception!r}"
    assert (tmp_path / "research.png").is_file()


def test_the_page_shows_the_generated_table():
    generated = (DOCS / "budgets" / "budget_simulation.md").read_text(encoding="utf-8")
    assert generated.strip() in PAGE.read_text(encoding="utf-8")
    assert "metarouter budget simulate --out docs/budgets" in PAGE.read_text(encoding="utf-8")
