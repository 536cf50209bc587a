"""The evaluation pipeline end to end, in its CI-sized quick mode."""

import dataclasses
import json
import shutil

import pytest
from metarouter.cli import app
from typer.testing import CliRunner


@pytest.mark.slow
def test_quick_evaluation_writes_results_plots_and_report(tmp_path):
    out = tmp_path / "eval"
    report = tmp_path / "results.md"
    result = CliRunner().invoke(
        app, ["eval", "--quick", "--out", str(out), "--report", str(report)]
    )
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert set(results["settings"]) == {"llmrouter/ID/K2", "llmrouter/ID/K5", "llmrouter/ID/swap"}
    for name, entry in results["settings"].items():
        met = entry["metrics"]
        assert met["oracle"]["6"]["regret"]["mean"] == pytest.approx(0.0, abs=1e-12)
        oracle_hv = met["oracle"]["6"]["hv"]["mean"]
        for method, per_n in met.items():
            hv = per_n["6"].get("hv")
            if hv:
                assert hv["mean"] <= oracle_hv + 1e-9, (name, method)
        assert met["MetaRouter"]["6"]["hv"]["n"] == 2  # two seeds
        # the inference-free reference: told the true alpha, so linear users only
        reference = met["MetaRouter (true alpha)"]["6"]
        assert reference["hv"]["n"] == 2 and reference["regret_nonlinear"] is None
        ablation = met["MetaRouter (encoder read-out)"]["6"]
        assert ablation["hv"]["n"] == 2 and ablation["regret_nonlinear"] is not None
        # the floor: whatever the router learned, it must beat guessing and, where there is
        # something to transfer (K5, swap), learning each user from scratch. Quick run, 2 seeds
        # (2026-12): MetaRouter/random 0.065/0.144 (K2), 0.097/0.213 (K5), 0.092/0.218 (swap);
        # from scratch 0.066 (K2: two models, 6 comparisons pin alpha, a tie), 0.143, 0.157.
        regret = {m: met[m]["6"]["regret"]["mean"] for m in met if met[m]["6"].get("regret")}
        assert regret["MetaRouter"] < 0.7 * regret["random"], (name, regret)
        if not name.endswith("K2"):
            scratch = regret["from scratch (N comparisons)"]
            assert regret["MetaRouter"] < 0.85 * scratch, (name, regret)
        for method in (
            "kNN (fitted alpha)",
            "Avengers-Pro (fitted alpha)",
            "LinUCB",
            "from scratch (N comparisons)",
            "random",
        ):
            assert met[method]["6"]["regret"] is not None
    swap = results["settings"]["llmrouter/ID/swap"]
    assert swap["held_out_model"] == "qwen2.5-7b-instruct"
    assert "BaRP (true alpha)" not in swap["metrics"]  # fixed output head: not applicable
    assert "RouteLLM (threshold)" in results["settings"]["llmrouter/ID/K2"]["metrics"]
    assert "RouteLLM (threshold)" not in results["settings"]["llmrouter/ID/K5"]["metrics"]
    for png in ("fronts.png", "id_vs_ood.png", "k2_vs_k5.png"):
        if png == "id_vs_ood.png":
            continue  # quick mode has no OOD split
        assert (out / png).stat().st_size > 10_000
    text = report.read_text()
    assert "llmrouter/ID/K5" in text
    assert "## Active track: MetaRouter picks its comparisons (N = 6)" in text
    assert set(results["active"]) == set(results["settings"])
    for entry in results["active"].values():  # every method scored on MetaRouter's comparisons
        assert entry["metrics"]["MetaRouter"]["6"]["regret"]["n"] == 2
        assert entry["metrics"]["kNN (fitted alpha)"]["6"]["regret"] is not None
    assert "issue" not in text.lower()  # written for users, not for the tracker
    assert "## Where MetaRouter wins and where it loses" in text
    assert "## What limits MetaRouter (N = 6)" in text
    assert "| MetaRouter (true alpha) † |" in text
    assert (tmp_path / "results" / "fronts.png").is_file()  # figures travel with the report
    assert "](results/fronts.png)" in text
    assert (out / "routers" / "llmrouter-ID" / "model.safetensors").is_file()
    assert results["config"]["scoring_threads"] == 1
    assert 0 < results["config"]["scoring_seconds"] < results["seconds"]


def test_report_assets_are_copied_beside_the_report_and_never_onto_themselves(tmp_path):
    from metarouter.cli import _report_assets

    out = tmp_path / "runs"
    out.mkdir()
    (out / "fronts.png").write_bytes(b"png")
    (out / "results.json").write_text("{}")

    assets = _report_assets(out, tmp_path / "docs" / "results.md")
    assert assets == tmp_path / "docs" / "results"
    assert (assets / "fronts.png").read_bytes() == b"png"
    assert (assets / "results.json").read_text() == "{}"

    # --out runs --report runs.md: the figures folder is the output folder (no SameFileError)
    same = _report_assets(out, tmp_path / "runs.md")
    assert same == out
    assert sorted(p.name for p in out.iterdir()) == ["fronts.png", "results.json"]


@pytest.mark.slow
def test_results_do_not_depend_on_the_number_of_worker_processes(tmp_path):
    from metarouter.evaluation.runner import EvalConfig, run_evaluation

    cfg = dataclasses.replace(EvalConfig.quick(), seeds=(0,), n_values=(6,), active=False)
    one = run_evaluation(cfg, tmp_path / "one", progress=False)
    # the second run reuses the trained router (same stamp) and scores in two processes
    (tmp_path / "two").mkdir()
    shutil.copytree(tmp_path / "one" / "routers", tmp_path / "two" / "routers")
    two = run_evaluation(dataclasses.replace(cfg, workers=2), tmp_path / "two", progress=False)
    assert two["config"]["workers"] == 2 and one["config"]["workers"] == 1
    assert list(two["settings"]) == list(one["settings"])  # same order, whoever finished first
    assert two["settings"] == one["settings"]


def test_workers_below_one_are_refused_with_the_fix():
    from metarouter.errors import ConfigError
    from metarouter.evaluation.runner import EvalConfig

    with pytest.raises(ConfigError, match="workers must be >= 1"):
        EvalConfig(workers=0)
