"""Routing quality per embedding backend: HV and regret per setting, standard track, N = 6.

Reads the ``results.json`` of two ``metarouter eval`` runs that differ only in ``--embedder``
and writes the comparison table into docs/benchmarks.md (between the ``backend-quality``
markers; ``bench_routing.py`` carries that block over when it rewrites the page).

Usage::

    python benchmarks/backend_quality.py \\
        --run minilm-torch=docs/results/results.json \\
        --run static=/work/evalruns/static/results.json [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- backend-quality:start -->", "<!-- backend-quality:end -->"
METHOD = "MetaRouter"
N = "6"
#: Mean HV a faster backend may lose, at most, to become the default (issue 16).
HV_MARGIN = 0.005


def _metric(run: dict[str, Any], setting: str, name: str) -> tuple[float, float]:
    entry = run["settings"][setting]["metrics"][METHOD][N][name]
    return float(entry["mean"]), float(entry["std"])


def table(runs: dict[str, dict[str, Any]], commands: dict[str, str]) -> list[str]:
    """The Markdown block (lines) comparing the runs; the first run is the reference."""
    names = list(runs)
    ref = names[0]
    settings = [s for s in runs[ref]["settings"] if all(s in r["settings"] for r in runs.values())]
    head = "| setting | " + " | ".join(f"HV {n} | regret {n}" for n in names)
    head += " | " + " | ".join(f"HV {n} - {ref}" for n in names[1:]) + " |"
    lines = [head, "|---|" + "---:|" * (2 * len(names) + len(names) - 1)]
    diffs: dict[str, list[float]] = {n: [] for n in names[1:]}
    regret_diffs: dict[str, list[float]] = {n: [] for n in names[1:]}
    for s in settings:
        cells = []
        for n in names:
            hv, hv_sd = _metric(runs[n], s, "hv")
            rg, rg_sd = _metric(runs[n], s, "regret")
            cells += [f"{hv:.3f} ± {hv_sd:.3f}", f"{rg:.4f} ± {rg_sd:.4f}"]
        for n in names[1:]:
            d = _metric(runs[n], s, "hv")[0] - _metric(runs[ref], s, "hv")[0]
            diffs[n].append(d)
            regret_diffs[n].append(
                _metric(runs[n], s, "regret")[0] - _metric(runs[ref], s, "regret")[0]
            )
            cells.append(f"{d:+.4f}")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines.append("")
    for n in names[1:]:
        mean = statistics.fmean(diffs[n])
        verdict = (
            f"within the {HV_MARGIN} margin: it qualifies as the default"
            if mean > -HV_MARGIN
            else f"more than the {HV_MARGIN} margin: it does not qualify as the default"
        )
        lines.append(
            f"* **{n} vs {ref}**: mean HV difference {mean:+.4f} over {len(diffs[n])} settings "
            f"(worst {min(diffs[n]):+.4f}, best {max(diffs[n]):+.4f}); mean regret difference "
            f"{statistics.fmean(regret_diffs[n]):+.4f}; {verdict}."
        )
    lines += ["", "Reproduce:", "", "```bash"]
    lines += [commands[n] for n in names]
    lines += [
        "python benchmarks/backend_quality.py "
        + " ".join(f"--run {n}=OUT_{n}/results.json" for n in names),
        "```",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    """Read the runs, write the block into the page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="NAME=results.json")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--note", default="", help="provenance of the runs (under the table)")
    args = parser.parse_args(argv)
    runs, commands = {}, {}
    for item in args.run:
        name, path = item.split("=", 1)
        runs[name] = json.loads(Path(path).read_text())
        embedder = runs[name]["config"].get("embedder", "minilm-torch")
        if embedder != name:
            parser.error(f"{path} was run with the {embedder!r} embedder, not {name!r}")
        seeds = len(runs[name]["config"]["seeds"])
        commands[name] = (
            f"METAROUTER_NUM_THREADS=1 metarouter eval --data /work/shared/data --embedder {name} "
            f"--out OUT_{name} --seeds {seeds}"
        )
    block = [
        START,
        "## Routing quality per embedding backend",
        "",
        f"`{METHOD}` on the evaluation harness's standard track at N = {N} comparisons "
        "(hypervolume, higher is better, and regret, lower is better; mean ± sd over seeds), "
        "each backend with routers trained for it by the same `metarouter eval` (same code, "
        "data, seeds and settings; only `--embedder` differs). The kNN, Avengers-Pro and BaRP "
        "baselines read the same vectors, so their figures move too (in each run's "
        "results.json).",
        "",
        *table(runs, commands),
        *(["", args.note] if args.note else []),
        END,
    ]
    page = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
    if START in page and END in page:
        before, rest = page.split(START, 1)
        page = before + "\n".join(block) + rest.split(END, 1)[1]
    else:
        page = page.rstrip("\n") + "\n\n" + "\n".join(block) + "\n"
    args.out.write_text(page, encoding="utf-8")
    print("\n".join(block))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
