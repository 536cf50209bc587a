"""Plots (PNG) and the Markdown report of an evaluation run."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metarouter.evaluation.protocol import EvalRun
from metarouter.evaluation.settings import kset_label

__all__ = ["write_markdown", "write_plots"]

_KEY_METHODS = (
    "MetaRouter",
    "MetaRouter (encoder read-out)",
    "kNN (fitted alpha)",
    "Avengers-Pro (fitted alpha)",
    "BaRP (fitted alpha)",
    "LinUCB",
    "from scratch (N comparisons)",
    "random",
    "BaRP (true alpha)",
    "kNN (true alpha)",
    "MetaRouter (true alpha)",
    "oracle",
)
_STYLE: dict[str, dict[str, Any]] = {
    "MetaRouter": dict(color="C3", lw=2.2),
    "MetaRouter (encoder read-out)": dict(color="C3", ls="--", lw=1.2),
    "MetaRouter (true alpha)": dict(color="C3", ls=":"),
    "oracle": dict(color="k", ls="--"),
    "BaRP (true alpha)": dict(color="C2", ls=":"),
    "kNN (true alpha)": dict(color="C1", ls=":"),
}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(runs: Sequence[EvalRun], results: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write fronts.png, regret_vs_n.png, id_vs_ood.png, k2_vs_k5.png into ``out``."""
    plt = _plt()
    paths: dict[str, Path] = {}
    main = [r for r in runs if 6 in r.n_values]
    if main:
        cols = min(3, len(main))
        rows = (len(main) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 4 * rows), squeeze=False)
        for ax, run in zip(axes.flat, main, strict=False):
            for m in _KEY_METHODS:
                if m in run.methods and run.points[m][6]:
                    f = run.front(m, 6)
                    ax.plot(
                        f[:, 0], f[:, 1], marker="o", ms=2.5, label=m, **_STYLE.get(m, dict(lw=1))
                    )
            for seed_pts in list(run.single_points.values())[:1]:
                lo, hi = run.setting.cost_bounds
                ax.scatter(
                    (seed_pts[:, 0] - lo) / (hi - lo),
                    seed_pts[:, 1],
                    marker="s",
                    color="grey",
                    zorder=5,
                    label="single models",
                )
            ax.set(
                title=f"{run.setting.name} (N=6)",
                xlabel="normalised cost",
                ylabel="quality",
                xlim=(-0.05, 1.05),
            )
        for ax in list(axes.flat)[len(main) :]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=6)
        fig.tight_layout()
        paths["fronts"] = out / "fronts.png"
        fig.savefig(paths["fronts"], dpi=100)
        plt.close(fig)

    sweep = [r for r in runs if len(r.n_values) > 2]
    if sweep:
        cols = min(3, len(sweep))
        rows = (len(sweep) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
        for ax, run in zip(axes.flat, sweep, strict=False):
            summ = results["settings"][run.setting.name]["metrics"]
            for m in _KEY_METHODS:
                if m == "oracle" or m not in summ:
                    continue
                ys = [summ[m][str(n)]["regret"] for n in run.n_values]
                if any(y is None for y in ys):
                    continue
                ax.plot(
                    run.n_values,
                    [y["mean"] for y in ys],
                    marker="o",
                    ms=3,
                    label=m,
                    **_STYLE.get(m, dict(lw=1)),
                )
            ax.set(
                title=run.setting.name,
                xlabel="comparisons N",
                ylabel="utility regret",
                xscale="symlog",
            )
        for ax in list(axes.flat)[len(sweep) :]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=6)
        fig.tight_layout()
        paths["regret"] = out / "regret_vs_n.png"
        fig.savefig(paths["regret"], dpi=100)
        plt.close(fig)

    for fname, pair, label in (
        ("id_vs_ood.png", ("ID", "OOD"), "split"),
        ("k2_vs_k5.png", ("K2", "K5"), "kset"),
    ):
        groups = _bar_groups(results, pair, label)
        if not groups:
            continue
        fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 3.8), squeeze=False)
        for ax, (title, bars) in zip(axes.flat, groups.items(), strict=True):
            methods = [m for m in _KEY_METHODS if all(m in b for b in bars.values())]
            width = 0.8 / len(bars)
            for i, (group, vals) in enumerate(bars.items()):
                ax.bar(
                    [j + i * width for j in range(len(methods))],
                    [vals[m] for m in methods],
                    width,
                    label=group,
                )
            ax.set_xticks([j + 0.4 - width / 2 for j in range(len(methods))])
            ax.set_xticklabels(methods, rotation=45, ha="right", fontsize=7)
            ax.set(title=f"{title}: HV at N=6", ylabel="hypervolume")
            ax.legend(fontsize=7)
        fig.tight_layout()
        paths[fname] = out / fname
        fig.savefig(paths[fname], dpi=100)
        plt.close(fig)
    return paths


def _bar_groups(
    results: dict[str, Any], pair: tuple[str, str], label: str
) -> dict[str, dict[str, dict[str, float]]]:
    groups: dict[str, dict[str, dict[str, float]]] = {}
    for entry in results["settings"].values():
        if entry[label] not in pair:
            continue
        other = "K5" if label == "split" else "ID"
        if entry["kset" if label == "split" else "split"] != other:
            continue
        hv = {
            m: v["6"]["hv"]["mean"]
            for m, v in entry["metrics"].items()
            if "6" in v and v["6"].get("hv")
        }
        kset = kset_label(entry["kset"], len(entry["models"]))
        shown, bar = (kset, entry["split"]) if label == "split" else (other, kset)
        groups.setdefault(f"{entry['dataset']} ({shown})", {})[bar] = hv
    return {k: v for k, v in groups.items() if len(v) == 2}


def _fmt(cell: dict[str, float] | None, digits: int = 3) -> str:
    if not cell:
        return "n/a"
    return f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}"


def write_markdown(
    results: dict[str, Any], path: str | Path, *, plots_dir: str | Path, command: str
) -> Path:
    """Write the Markdown report (tables, target check, plots) to ``path``."""
    path = Path(path)
    rel = os.path.relpath(Path(plots_dir), path.parent)
    cfg = results["config"]
    lines = [
        "# Evaluation results",
        "",
        f"Generated by `{command}` in {results['seconds'] / 60:.1f} min. Do not edit by hand.",
        "",
        f"Protocol: docs/method.md. Seeds {cfg['seeds']}; simulated users: alpha grid "
        f"0..1 step 0.05 (linear) plus a non-linear family (budget caps, quality floors) "
        f"never seen in training; Bradley-Terry T = {cfg['bt_temperature']}, no label flips; "
        "comparisons drawn from each test set's adaptation pool (25% of its queries, disjoint "
        "from the scored queries), the same for every method. HV/IGD: "
        f"{cfg['normalisation']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in cfg["versions"].items())
        + ".",
        "",
        "Methods marked † are told the user's true preference (upper references).",
        "",
    ]
    lines += _summary_section(results)
    lines += _active_section(results)
    lines += _n_curve_section(results)
    lines += _limits_section(results)
    for name, entry in results["settings"].items():
        lines += _setting_table(name, entry)
    if results.get("variant_train_comparisons"):
        lines += [
            "## Variant: comparisons drawn from training queries (N = 6)",
            "",
            "| setting | MetaRouter HV | best baseline without true alpha | its HV |",
            "|---|---|---|---|",
        ]
        for name, entry in results["variant_train_comparisons"].items():
            met = entry["metrics"]
            meta = met.get("MetaRouter", {}).get("6", {}).get("hv")
            best = _best_baseline(met)
            lines.append(f"| {name} | {_fmt(meta)} | {best[0]} | {best[1]:.3f} |")
        lines.append("")
    lines += ["## Plots", ""]
    for fname, title in (
        ("fronts.png", "Cost-quality fronts at N = 6 (seed-averaged)"),
        ("regret_vs_n.png", "Utility regret vs number of comparisons"),
        ("id_vs_ood.png", "ID vs OOD hypervolume (all pool models: K = 5, fewer on a small table)"),
        ("k2_vs_k5.png", "K = 2 vs all pool models: hypervolume (ID)"),
    ):
        if (Path(plots_dir) / fname).is_file():
            lines += [f"### {title}", "", f"![{title}]({rel}/{fname})", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


_TRUE = (
    "oracle",
    "best single model per user (oracle)",
    "BaRP (true alpha)",
    "kNN (true alpha)",
    "MetaRouter (true alpha)",
)
#: MetaRouter and its ablations: not counted as competitors of MetaRouter.
_SELF = ("MetaRouter", "MetaRouter (encoder read-out)")
#: A win: the best mean, or within this of it (HV, regret).
_TOL = {"hv": 0.002, "regret": 0.001}


def _best_baseline(metrics: dict[str, Any], key: str = "hv", n: str = "6") -> tuple[str, float]:
    best = ("n/a", float("-inf") if key == "hv" else float("inf"))
    for m, v in metrics.items():
        if m in (*_TRUE, *_SELF, "single-model front") or m.startswith("single:"):
            continue
        cell = v.get(n, {}).get(key)
        if not cell:
            continue
        val = cell["mean"]
        if (key == "hv" and val > best[1]) or (key != "hv" and val < best[1]):
            best = (m, val)
    return best


def _setting_table(name: str, entry: dict[str, Any]) -> list[str]:
    met = entry["metrics"]
    lines = [
        f"## {name}",
        "",
        f"Candidates: {', '.join(entry['models'])}"
        + (f" (held out of training: {entry['held_out_model']})" if entry["held_out_model"] else "")
        + f". tau = ${entry['tau_usd']:.6f}; {entry['n_train_queries']:,} training and "
        f"{entry['n_test_queries']:,} test queries. N = 6 comparisons.",
        "",
        "| method | HV ↑ | IGD ↓ | regret ↓ | gap recovered ↑ | regret, non-linear ↓ | "
        "mean cost (USD) | mean quality |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = sorted(met, key=lambda m: -(met[m].get("6", {}).get("hv") or {"mean": -1})["mean"])
    for m in order:
        cell = met[m].get("6", {})
        if m == "single-model front":
            lines.append(f"| single-model front | {_fmt(cell.get('hv'))} | | | | | | |")
            continue
        mark = " †" if m in _TRUE else ""
        cost = cell.get("mean_cost_usd")
        lines.append(
            f"| {m}{mark} | {_fmt(cell.get('hv'))} | {_fmt(cell.get('igd'))} | "
            f"{_fmt(cell.get('regret'), 4)} | {_fmt(cell.get('gap_recovered'), 2)} | "
            f"{_fmt(cell.get('regret_nonlinear'), 4)} | "
            f"{cost['mean']:.6f} | {_fmt(cell.get('mean_quality'))} |"
            if cost
            else f"| {m}{mark} | n/a | | | | | | |"
        )
    lines.append("")
    return lines


def _others(metrics: dict[str, Any], key: str, n: str = "6") -> list[tuple[str, float]]:
    """Methods not told the preference (single models included), best first."""
    out = []
    for m, v in metrics.items():
        if m in (*_TRUE, *_SELF, "single-model front"):
            continue
        cell = v.get(n, {}).get(key)
        if cell:
            out.append((m, float(cell["mean"])))
    return sorted(out, key=lambda t: -t[1] if key == "hv" else t[1])


def scoreboard(metrics: dict[str, Any], n: str = "6") -> dict[str, Any] | None:
    """MetaRouter against the methods not told the preference, in one setting.

    A win is the best mean or within 0.002 HV / 0.001 regret of it; single models count as
    competitors. Also: HV below the single-model front, regret worse than the best single model.
    """
    meta = metrics.get("MetaRouter", {}).get(n, {})
    if not meta.get("hv") or not meta.get("regret"):
        return None
    out: dict[str, Any] = {"hv": meta["hv"]["mean"], "regret": meta["regret"]["mean"]}
    for key in ("hv", "regret"):
        others = _others(metrics, key, n)
        best = others[0] if others else ("none", float("nan"))
        out[f"best_{key}"] = best
        mine = out[key]
        out[f"{key}_win"] = not others or (
            mine >= best[1] - _TOL[key] if key == "hv" else mine <= best[1] + _TOL[key]
        )
    front = metrics.get("single-model front", {}).get(n, {}).get("hv")
    singles = [
        v[n]["regret"]["mean"]
        for m, v in metrics.items()
        if m.startswith("single:") and v.get(n, {}).get("regret")
    ]
    out["front"] = front["mean"] if front else None
    out["best_single_regret"] = min(singles) if singles else None
    out["below_front"] = front is not None and out["hv"] < front["mean"] - _TOL["hv"]
    out["worse_than_single"] = bool(singles) and out["regret"] > min(singles) + _TOL["regret"]
    return out


def _summary_section(results: dict[str, Any]) -> list[str]:
    """Plain sentences: per setting, where MetaRouter ranks and whom it loses to."""
    lines = ["## Where MetaRouter wins and where it loses (N = 6)", ""]
    counts = {"hv_win": 0, "regret_win": 0, "below_front": 0, "worse_than_single": 0}
    total = 0
    for name, entry in results["settings"].items():
        met = entry["metrics"]
        board = scoreboard(met)
        if board is None:
            continue
        total += 1
        for key in counts:
            counts[key] += bool(board[key])
        parts = []
        for key, label, d in (("hv", "HV", 3), ("regret", "utility regret", 4)):
            mine = board[key]
            others = _others(met, key)
            better = [(m, v) for m, v in others if (v > mine if key == "hv" else v < mine)]
            if not better:
                runner = others[0] if others else ("none", float("nan"))
                parts.append(f"best {label} ({mine:.{d}f}; next {runner[0]} {runner[1]:.{d}f})")
            else:
                names = ", ".join(f"{m} {v:.{d}f}" for m, v in better[:4])
                tie = " (a win within the tolerance)" if board[f"{key}_win"] else ""
                parts.append(f"{label} {mine:.{d}f} behind {names}{tie}")
        if board["front"] is not None:
            rel = "**below**" if board["below_front"] else "not below"
            parts.append(f"HV {rel} the single-model front ({board['front']:.3f})")
        lines.append(f"- **{name}**: " + "; ".join(parts) + ".")
    lines += [
        "",
        "Among methods not told the user's preference (single models included; a win is the "
        f"best mean or within {_TOL['hv']} HV / {_TOL['regret']} regret of it), MetaRouter has "
        f"the lowest utility regret in {counts['regret_win']} of {total} settings and the "
        f"highest HV in {counts['hv_win']} of {total}; its HV is below the single-model front "
        f"in {counts['below_front']} and its regret worse than the best single model's in "
        f"{counts['worse_than_single']}.",
        "",
    ]
    return lines


def _active_section(results: dict[str, Any]) -> list[str]:
    """The active track against the standard track."""
    active = results.get("active") or {}
    rows, better = [], 0
    for name, entry in active.items():
        std = results["settings"].get(name, {}).get("metrics", {})
        act = entry["metrics"]
        mine_std = std.get("MetaRouter", {}).get("6", {})
        mine_act = act.get("MetaRouter", {}).get("6", {})
        if not (mine_std.get("regret") and mine_act.get("regret")):
            continue
        r_std, r_act = mine_std["regret"]["mean"], mine_act["regret"]["mean"]
        better += r_act < r_std
        b_std, b_act, h_std = _others(std, "regret"), _others(act, "regret"), _others(std, "hv")
        rows.append(
            f"| {name} | {r_std:.4f} | **{r_act:.4f}** | {b_std[0][1]:.4f} ({b_std[0][0]}) | "
            f"{b_act[0][1]:.4f} ({b_act[0][0]}) | {mine_std['hv']['mean']:.3f} | "
            f"**{mine_act['hv']['mean']:.3f}** | {h_std[0][1]:.3f} ({h_std[0][0]}) |"
        )
    if not rows:
        return []
    return [
        "## Active track: MetaRouter picks its comparisons (N = 6)",
        "",
        "In use, the adapters' `compare()` lets the router choose what to ask: which of the "
        "user's recent queries and which two answers to show. Here the router picks each of the "
        "6 comparisons from the adaptation pool by expected value of information for the user's "
        "routing (after adapting to the answers so far); the simulated user answers as in the "
        "standard track. *Best other, random* is what users of the other systems get (random "
        "comparisons, the standard track); *best other, MetaRouter's comparisons* is the best "
        "other method given the comparisons MetaRouter chose.",
        "",
        "| setting | MetaRouter regret, random | MetaRouter regret, active | best other, random | "
        "best other, MetaRouter's comparisons | MetaRouter HV, random | MetaRouter HV, active | "
        "best other HV, random |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Active comparisons lower MetaRouter's regret in {better} of {len(rows)} settings.",
        "",
    ]


def _n_curve_section(results: dict[str, Any]) -> list[str]:
    """Regret against N, and the N from which MetaRouter beats the best single model."""
    rows = []
    n_all: list[int] = []
    for name, entry in results["settings"].items():
        met = entry["metrics"]
        mine = met.get("MetaRouter", {})
        ns = sorted(int(k) for k in mine if mine[k].get("regret"))
        if len(ns) < 3:
            continue
        n_all = ns
        single = {
            n: min(
                v[str(n)]["regret"]["mean"]
                for m, v in met.items()
                if m.startswith("single:") and v.get(str(n), {}).get("regret")
            )
            for n in ns
        }
        reg = {n: mine[str(n)]["regret"]["mean"] for n in ns}
        first = next((n for n in ns if all(reg[m] < single[m] for m in ns if m >= n)), None)
        cells = " | ".join(f"{reg[n]:.4f}" for n in ns)
        since = str(first) if first is not None else f"not up to N = {ns[-1]}"
        rows.append(f"| {name} | {cells} | {single[ns[0]]:.4f} | {since} |")
    if not rows:
        return []
    return [
        "## Regret against the number of comparisons",
        "",
        "MetaRouter's utility regret at each N (standard track), the best single model's "
        "regret (it needs no comparisons), and the smallest N from which MetaRouter's regret "
        "stays below it.",
        "",
        "| setting | "
        + " | ".join(f"N = {n}" for n in n_all)
        + " | best single model | below it from N = |",
        "|---|" + "---|" * len(n_all) + "---|---|",
        *rows,
        "",
    ]


def _limits_section(results: dict[str, Any]) -> list[str]:
    """MetaRouter against its ablation and its own estimates given the true alpha."""
    rows = []
    for name, entry in results["settings"].items():
        met = entry["metrics"]
        meta = met.get("MetaRouter", {}).get("6", {})
        ref = met.get("MetaRouter (true alpha)", {}).get("6", {})
        enc = met.get("MetaRouter (encoder read-out)", {}).get("6", {})
        if not (meta.get("hv") and ref.get("hv") and enc.get("hv")):
            continue
        best = _best_baseline(met, "hv")
        rows.append(
            f"| {name} | {meta['hv']['mean']:.3f} | {enc['hv']['mean']:.3f} | "
            f"{ref['hv']['mean']:.3f} | {best[1]:.3f} ({best[0]}) | "
            f"{meta['regret']['mean']:.4f} | {enc['regret']['mean']:.4f} | "
            f"{ref['regret']['mean']:.4f} |"
        )
    if not rows:
        return []
    return [
        "## What limits MetaRouter (N = 6)",
        "",
        "MetaRouter (true alpha) † routes with MetaRouter's own quality and cost estimates (no "
        "comparisons) and the user's true alpha. The gap between it and MetaRouter is what "
        "learning the preference from 6 comparisons loses (where MetaRouter is better, the "
        "comparisons also corrected the estimates for the user's traffic); the gap between it "
        "and the oracle is what the estimates lose. MetaRouter (encoder read-out) is an "
        "ablation of the same trained router: the meta-trained neural context encoder and "
        "policy network route instead of the user posterior. Neither is counted as a competitor.",
        "",
        "| setting | MetaRouter HV | encoder read-out HV | true alpha † HV | "
        "best other HV (method) | MetaRouter regret | encoder read-out regret | "
        "true alpha † regret |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
