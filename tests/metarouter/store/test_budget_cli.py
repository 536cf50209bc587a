"""``metarouter budget``: set, team, show, reset, delete and report from the command line."""

from __future__ import annotations

import json

from metarouter.budgets import Budgets
from metarouter.cli import app
from metarouter.store import SQLStore, new_id
from typer.testing import CliRunner


def _run(*args: str):
    return CliRunner().invoke(app, ["budget", *args])


def test_set_show_reset_and_delete_a_budget(store_url, store):
    store.migrate()  # the application's store exists
    done = _run("set", "--user", "alice", "--usd", "50", "--per", "month", "--store", store_url)
    assert done.exit_code == 0, done.output
    assert "user alice: 50 USD per month" in done.output
    team = _run("team", "research", "--members", "alice, bob", "--store", store_url)
    assert team.exit_code == 0, team.output
    _run("set", "--team", "research", "--usd", "5", "--per", "day", "--store", store_url)
    Budgets(store).charge(new_id(), "alice", "m", 1.25, is_estimate=True)

    shown = json.loads(_run("show", "--store", store_url, "--json").output)
    by_scope = {(b["scope"], b["name"]): b for b in shown["budgets"]}
    assert by_scope[("user", "alice")]["spent_usd"] == 1.25
    assert by_scope[("team", "research")]["usd"] == 5.0
    assert shown["teams"] == {"research": ["alice", "bob"]}
    table = _run("show", "--store", store_url)
    assert table.exit_code == 0 and "team 'research': alice, bob" in table.output

    reset = _run("reset", "--user", "alice", "--store", store_url)
    assert reset.exit_code == 0 and "1.2500 USD" in reset.output
    shown = json.loads(_run("show", "--user", "alice", "--store", store_url, "--json").output)
    assert {b["spent_usd"] for b in shown["budgets"]} == {0.0, 1.25}  # user reset, team not
    assert _run("delete", "--user", "alice", "--store", store_url).exit_code == 0
    assert Budgets(store).get(user="alice") is None


def test_report_prints_days_and_models_and_writes_a_plot(store_url, store, tmp_path):
    budgets = Budgets(store)
    budgets.set(1.0, app=True)
    budgets.charge(new_id(), "alice", "gemma-2-9b-it", 0.25, is_estimate=False)
    budgets.charge(new_id(), "bob", "qwen2.5-7b-instruct", 0.5, is_estimate=True)
    plot = tmp_path / "spend.png"
    out = _run("report", "--app", "--plot", str(plot), "--store", store_url)
    assert out.exit_code == 0, out.output
    assert "qwen2.5-7b-instruct" in out.output and "total 0.750000 USD in 2 calls" in out.output
    assert plot.stat().st_size > 10_000
    as_json = json.loads(_run("report", "--app", "--store", store_url, "--json").output)
    assert as_json["calls"] == 2 and as_json["estimated_calls"] == 1


def test_bad_commands_say_how_to_fix_them(store_url, store, tmp_path):
    store.migrate()
    both = _run("set", "--user", "a", "--team", "t", "--usd", "1", "--store", store_url)
    assert both.exit_code != 0 and "exactly one scope" in str(both.exception)
    bad_period = _run("set", "--app", "--usd", "1", "--per", "year", "--store", store_url)
    assert "unknown budget period" in str(bad_period.exception)
    bad_date = _run("set", "--app", "--usd", "1", "--per", "window", "--from", "soon",
                    "--to", "2026-07-01", "--store", store_url)  # fmt: skip
    assert "is not a date" in str(bad_date.exception)
    missing = _run("set", "--app", "--usd", "1", "--store", str(tmp_path / "nowhere.db"))
    assert "no preference store" in str(missing.exception)
    created = _run("set", "--app", "--usd", "1", "--store", str(tmp_path / "new.db"), "--create")
    assert created.exit_code == 0, created.output
    assert Budgets(SQLStore(tmp_path / "new.db")).get(app=True).usd == 1.0
