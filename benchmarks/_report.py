"""Targets, the Markdown report, the plot and the raw JSON of a benchmark run."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

TARGETS = {
    "overhead": "Total routing overhead, short query, p50 <= 1.3x the bare embedding call",
    "adapt6": "Adaptation from 6 comparisons: p50 < 5 ms",
    "throughput": "Batched throughput >= 400 routed queries/s",
    "rss": "Peak RSS of the one-call process < 700 MB",
    "baselines": "MetaRouter's per-call overhead <= 1.5x the fastest learned baseline's",
    "b_overhead": "Issue 16: routing overhead (lookup + embedding + policy), short prompt, "
    "p50 <= 2 ms",
    "b_throughput": "Issue 16: batched routing (`route_batch`, policy included) >= 2,000 "
    "routes/s on the bundled prompts (mixed lengths)",
    "b_first_call": "Issue 16: first call in a fresh process <= 1.5 s after import",
    "b_rss": "Issue 16: peak RSS of a one-call process < 500 MB",
}

#: The backend the bundled router is trained for (the default), per the run's results.
_DEFAULT = "default_backend"


def _backend_figures(entry: dict[str, Any]) -> dict[str, float]:
    """Per-backend headline figures from the run's ``backends`` section."""
    calls = entry["process"]
    size = entry["batch_size"]
    return {
        "total": entry["per_call"]["routing_total"]["p50_ms"],
        "total_p95": entry["per_call"]["routing_total"]["p95_ms"],
        "lookup": entry["per_call"]["lookup"]["p50_ms"],
        "embedding": entry["per_call"]["embedding"]["p50_ms"],
        "policy": entry["per_call"]["policy"]["p50_ms"],
        "qps": size / (entry["batch"]["p50_ms"] / 1e3),
        "import": statistics.median(r["import_s"] for r in calls),
        "construct": statistics.median(r["construct_s"] for r in calls),
        "first_call": statistics.median(r["first_call_s"] for r in calls),
        "second_call": statistics.median(r["second_call_s"] for r in calls),
        "rss": max(r["peak_rss_mb"] for r in calls),
        "torch": any(r.get("torch_after_first_call") for r in calls),
        "st": any(r.get("sentence_transformers_after_first_call") for r in calls),
    }


def _get(results: dict[str, Any], *path: str) -> Any:
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _qps(results: dict[str, Any], kind: str) -> float | None:
    p50 = _get(results, "throughput", kind, "p50_ms")
    size = _get(results, "throughput", "batch_size")
    return size / (p50 / 1e3) if p50 and size else None


def _fastest_baseline(results: dict[str, Any]) -> tuple[str, float] | None:
    rows = [
        (name, entry["total"]["p50_ms"])
        for name, entry in (results.get("baselines") or {}).items()
        if not name.startswith("MetaRouter")
    ]
    return min(rows, key=lambda r: r[1]) if rows else None


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 8 with its measured value and whether it is met."""
    out: list[dict[str, Any]] = []
    others = results.get("after_runs") or []

    def add(key: str, value: str, met: bool | None, note: str = "") -> None:
        out.append(
            {"key": key, "target": TARGETS[key], "measured": value, "met": met, "note": note}
        )

    def elsewhere(fmt: str, get: Any) -> str:
        values = [get(r) for r in others]
        values = [v for v in values if v is not None]
        if not values:
            return ""
        return "; the other runs of this code (before/after section): " + ", ".join(
            fmt.format(v) for v in values
        )

    def ratio(r: dict[str, Any]) -> float | None:
        t = _get(r, "per_call", "short", "routing_total", "p50_ms")
        f = _get(r, "per_call", "short", "floor", "p50_ms")
        return t / f if t and f else None

    total = _get(results, "per_call", "short", "routing_total", "p50_ms")
    floor = _get(results, "per_call", "short", "floor", "p50_ms")
    if total and floor:
        decide = _get(results, "per_call", "short", "decide", "p50_ms")
        note = (
            f"`RoutingService.decide` end to end, which also writes the decision durably to "
            f"SQLite: {decide:.2f} ms = {decide / floor:.2f}x"
            if decide
            else ""
        ) + elsewhere("{:.2f}x", ratio)
        add(
            "overhead",
            f"{total:.2f} ms vs floor {floor:.2f} ms = {total / floor:.2f}x",
            total / floor <= 1.3,
            note,
        )
    adapt = _get(results, "adaptation", "n6", "p50_ms")
    if adapt is not None:
        add(
            "adapt6",
            f"{adapt:.2f} ms (p95 {_get(results, 'adaptation', 'n6', 'p95_ms'):.2f})",
            adapt < 5,
            elsewhere("{:.2f} ms", lambda r: _get(r, "adaptation", "n6", "p50_ms")).lstrip("; "),
        )
    mixed, short = _qps(results, "mixed"), _qps(results, "short")
    if mixed is not None:
        add(
            "throughput",
            f"{mixed:.0f} q/s on mixed-length prompts"
            + (f"; {short:.0f} q/s on short prompts" if short else ""),
            mixed >= 400,
            "mixed = the bundled LLMRouter prompts as they come; the embedding model is nearly "
            "all of the time, see the throughput section"
            + elsewhere("{:.0f} q/s", lambda r: _qps(r, "mixed")),
        )
    rss = _get(results, "process", "peak_rss_mb_max")
    if rss is not None:
        add(
            "rss",
            f"{rss:.0f} MB (max of {len(results['process']['one_call'])} processes)",
            rss < 700,
        )
    b = results.get("backends")
    if b and b.get(_DEFAULT, "minilm-torch") in b["backends"]:  # --backends may leave it out
        default = b.get(_DEFAULT, "minilm-torch")
        figs = {n: _backend_figures(b[n]) for n in b["backends"]}
        d = figs[default]

        def per(fmt: str, key: str) -> str:
            return "; ".join(f"{n}: {fmt.format(f[key])}" for n, f in figs.items())

        add(
            "b_overhead",
            f"{d['total']:.2f} ms with the default backend ({default})",
            d["total"] <= 2.0,
            "per backend: " + per("{:.2f} ms", "total"),
        )
        add(
            "b_throughput",
            f"{d['qps']:,.0f} routes/s with the default backend ({default})",
            d["qps"] >= 2000,
            "per backend: " + per("{:,.0f}/s", "qps"),
        )
        first = d["construct"] + d["first_call"]
        add(
            "b_first_call",
            f"{first:.2f} s with the default backend ({default}): building `MetaRouterChat` "
            f"{d['construct']:.2f} s + first call {d['first_call']:.2f} s",
            first <= 1.5,
            "per backend (build + first call): "
            + "; ".join(f"{n}: {f['construct'] + f['first_call']:.2f} s" for n, f in figs.items()),
        )
        add(
            "b_rss",
            f"{d['rss']:.0f} MB with the default backend ({default})",
            d["rss"] < 500,
            "per backend: " + per("{:.0f} MB", "rss"),
        )
    fastest = _fastest_baseline(results)
    meta = _get(results, "baselines", "MetaRouter (K5)", "total", "p50_ms")
    if fastest and meta:
        name, value = fastest
        add(
            "baselines",
            f"MetaRouter (K5) {meta:.2f} ms vs {name} {value:.2f} ms = {meta / value:.2f}x",
            meta / value <= 1.5,
            "per call = embedding + decision, short prompts; decision-only ratios are in the "
            "baselines table",
        )
    return out


def _ms(entry: dict[str, Any] | None, key: str = "p50_ms") -> str:
    return f"{entry[key]:.2f}" if entry else "n/a"


def _per_call_table(results: dict[str, Any]) -> list[str]:
    rows = [
        ("floor", "Bare embedding call (floor): tokenize + forward + normalise"),
        ("st_encode", "`SentenceTransformer.encode([text])` (for reference)"),
        ("lookup", "Adaptation lookup: `RoutingService.preference(user)` (cached)"),
        ("embedding", "Embedding: `Embedder.encode_one` (new prompt)"),
        ("policy", "Policy: `MetaRouter.route_embeddings` (5 candidates)"),
        ("routing_total", "**Total routing overhead** (lookup + embedding + policy)"),
        ("decide", "`RoutingService.decide` end to end (+ decision written to SQLite)"),
    ]
    pc = results["per_call"]
    out = [
        "| Step | short p50 | short p95 | short CPU p50 | long p50 | long p95 | long CPU p50 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in rows:
        s, lg = pc["short"].get(key), pc["long"].get(key)
        out.append(
            f"| {label} | {_ms(s)} | {_ms(s, 'p95_ms')} | {_ms(s, 'cpu_p50_ms')} | {_ms(lg)} | "
            f"{_ms(lg, 'p95_ms')} | {_ms(lg, 'cpu_p50_ms')} |"
        )
    fs, fl = pc["short"]["floor"]["p50_ms"], pc["long"]["floor"]["p50_ms"]
    ts, tl = pc["short"]["routing_total"]["p50_ms"], pc["long"]["routing_total"]["p50_ms"]
    ds, dl = pc["short"]["decide"]["p50_ms"], pc["long"]["decide"]["p50_ms"]
    out.append(f"| Total / floor | {ts / fs:.2f}x | | | {tl / fl:.2f}x | | |")
    out.append(f"| `decide` / floor | {ds / fs:.2f}x | | | {dl / fl:.2f}x | | |")
    rep = pc.get("repeated")
    if rep:
        out += [
            "",
            "Repeated prompt (the embedder's in-memory LRU serves the vector):",
            "",
            "| Step | p50 | p95 |",
            "|---|---:|---:|",
        ]
        for key, label in rows:
            if key in rep:
                label = label.replace("(new prompt)", "(LRU hit)")
                out.append(f"| {label} | {_ms(rep[key])} | {_ms(rep[key], 'p95_ms')} |")
    return out


def _thread_table(results: dict[str, Any]) -> list[str]:
    th = _get(results, "per_call", "threads")
    if not th or len(th["short"]) < 2:
        return []
    default = th["default_threads"]
    out = [
        f"Torch threads: the same steps with 1 intra-op thread and with the default {default} "
        "(interleaved, new prompts):",
        "",
        "| | threads | short p50 | short p95 | long p50 | long p95 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, label in (("floor", "bare embedding (floor)"), ("routing_total", "routing total")):
        for t in sorted(th["short"], key=int):
            s, lg = th["short"][t][key], th["long"][t][key]
            out.append(
                f"| {label} | {t} | {_ms(s)} | {_ms(s, 'p95_ms')} | {_ms(lg)} | "
                f"{_ms(lg, 'p95_ms')} |"
            )
    return [*out, ""]


def _baseline_table(results: dict[str, Any]) -> list[str]:
    bl = results["baselines"]
    fastest = _fastest_baseline(results)
    out = [
        "| Router (candidates) | embedding p50 | decision p50 | decision p95 | total p50 | "
        "total p95 | total / fastest baseline | agrees with harness |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, e in bl.items():
        ratio = f"{e['total']['p50_ms'] / fastest[1]:.2f}x" if fastest else "n/a"
        agree = e.get("agreement_with_harness")
        out.append(
            f"| {name} | {_ms(e['embedding'])} | {e['decision']['p50_ms']:.3f} | "
            f"{e['decision']['p95_ms']:.3f} | {_ms(e['total'])} | {_ms(e['total'], 'p95_ms')} | "
            f"{ratio} | {agree:.0%} |"
        )
    return out


def _to_first_call(results: dict[str, Any]) -> float | None:
    calls = _get(results, "process", "one_call")
    if not calls:
        return None
    return statistics.median(c["import_s"] + c["construct_s"] + c["first_call_s"] for c in calls)


def _median(values: list[Any]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if len(vals) == len(values) and vals else None


def _compare_table(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[str]:
    """Medians over runs of each figure, before and after (per-call: also x own floor)."""
    per_call = [
        ("Bare embedding (floor), short", "short", "floor"),
        ("Embedding step, short", "short", "embedding"),
        ("Embedding step, long", "long", "embedding"),
        ("Adaptation lookup, short", "short", "lookup"),
        ("Policy, short", "short", "policy"),
        ("Total routing overhead, short", "short", "routing_total"),
        ("Total routing overhead, long", "long", "routing_total"),
        ("`decide`, short", "short", "decide"),
    ]

    def ratio(r: dict[str, Any], kind: str, key: str) -> float | None:
        v = _get(r, "per_call", kind, key, "p50_ms")
        f = _get(r, "per_call", kind, "floor", "p50_ms")
        return v / f if v is not None and f else None

    out = [
        "| Per call (p50) | before | after | after / before | before, x floor | after, x floor |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, kind, key in per_call:
        b = _median([_get(r, "per_call", kind, key, "p50_ms") for r in before])
        a = _median([_get(r, "per_call", kind, key, "p50_ms") for r in after])
        bf = _median([ratio(r, kind, key) for r in before])
        af = _median([ratio(r, kind, key) for r in after])
        if None in (b, a, bf, af):
            continue
        assert b is not None and a is not None
        out.append(f"| {label} | {b:.2f} ms | {a:.2f} ms | {a / b:.2f} | {bf:.2f} | {af:.2f} |")

    def at(*path: str) -> Any:
        return lambda r: _get(r, *path)

    other: list[tuple[str, Any, str]] = [
        ("Adaptation, 6 comparisons", at("adaptation", "n6", "p50_ms"), "ms"),
        ("Adaptation, 50 comparisons", at("adaptation", "n50", "p50_ms"), "ms"),
        ("Batched routing, 256 mixed prompts", at("throughput", "mixed", "p50_ms"), "ms"),
        ("Policy only, batch of 256", at("throughput", "policy_only", "p50_ms"), "ms"),
        ("Import of `langchain_metarouter`", at("process", "import_median_s"), "s"),
        ("Import + build `MetaRouterChat` + first call", _to_first_call, "s"),
        ("Peak RSS, one-call process", at("process", "peak_rss_mb_max"), "MB"),
    ]
    out += ["", "| Other (p50) | before | after | after / before |", "|---|---:|---:|---:|"]
    for label, get, unit in other:
        b, a = _median([get(r) for r in before]), _median([get(r) for r in after])
        if b is None or a is None:
            continue
        out.append(f"| {label} | {b:.2f} {unit} | {a:.2f} {unit} | {a / b:.2f} |")
    return out


def summary_of(run: dict[str, Any]) -> dict[str, Any]:
    """A run's figures without the raw samples (kept beside another run for comparison)."""
    keys = ("started", "load_average_start", "load_average_end", "machine")
    out = {k: run.get(k) for k in keys}
    for section in ("per_call", "adaptation", "throughput", "process"):
        if section in run:
            out[section] = _strip_raw(run[section])
    return out


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in ("per_call", "baselines") if p in results]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.6), squeeze=False)
    ax_iter = iter(axes[0])
    if "per_call" in results:
        ax = next(ax_iter)
        keys = [
            ("floor", "bare embedding (floor)"),
            ("routing_total", "routing total"),
            ("decide", "decide() incl. store write"),
        ]
        for offset, (kind, color) in enumerate((("short", "#4C72B0"), ("long", "#DD8452"))):
            entries = [results["per_call"][kind][k] for k, _ in keys]
            ys = [i * 3 + offset for i in range(len(keys))]
            p50 = [e["p50_ms"] for e in entries]
            err = [[0] * len(entries), [e["p95_ms"] - e["p50_ms"] for e in entries]]
            ax.barh(ys, p50, xerr=err, color=color, label=f"{kind} prompt", capsize=3)
        ax.set_yticks([i * 3 + 0.5 for i in range(len(keys))], [label for _, label in keys])
        ax.invert_yaxis()
        ax.set_xlabel("ms per call (bar: p50, whisker: p95)")
        ax.set_title("MetaRouter per-call overhead")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=2, frameon=False)
    if "baselines" in results:
        ax = next(ax_iter)
        names = list(results["baselines"])
        emb = [results["baselines"][n]["embedding"]["p50_ms"] for n in names]
        dec = [results["baselines"][n]["decision"]["p50_ms"] for n in names]
        ax.barh(names, emb, color="#8C8C8C", label="embedding")
        ax.barh(names, dec, left=emb, color="#C44E52", label="decision")
        ax.invert_yaxis()
        ax.set_xlabel("ms per call, short prompt (p50)")
        ax.set_title("Per-call overhead: MetaRouter and baselines")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _backends_section(results: dict[str, Any]) -> list[str]:
    """The per-backend table (issue 16) and the thread table under load."""
    b = results["backends"]
    figs = {n: _backend_figures(b[n]) for n in b["backends"]}
    names = list(figs)
    lines = [
        "## Embedding backends (issue 16)",
        "",
        "Each backend in the same run: a router trained for it (the bundled one for the "
        "default backend and for a backend giving its vectors, `minilm-onnx`; for the others "
        "a router trained 30 steps on the bundled LLMRouter "
        "training split, for timing only: same architecture, same work per call), one user "
        "with 6 comparisons cached by the `RoutingService`, five candidates (K5). Per call: "
        "new short prompts (20-100 characters). Batched: `route_batch` on batches of "
        f"{b[names[0]]['batch_size']} bundled LLMRouter prompts as they come (mixed lengths). "
        "Fresh processes: `import langchain_metarouter`, build `MetaRouterChat` over two "
        "scripted candidates (loads the router and the store), route one call "
        "([`benchmarks/_one_call.py`](../benchmarks/_one_call.py)); peak RSS is `VmHWM`.",
        "",
        "| | " + " | ".join(f"`{n}`" for n in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    rows = (
        ("vector size", lambda n, f: str(b[n]["dim"])),
        ("router", lambda n, f: b[n]["router"]),
        ("per call: preference lookup p50 (ms)", lambda n, f: f"{f['lookup']:.3f}"),
        ("per call: embedding p50 (ms)", lambda n, f: f"{f['embedding']:.3f}"),
        ("per call: policy p50 (ms)", lambda n, f: f"{f['policy']:.3f}"),
        ("**per call: routing total p50 (ms)**", lambda n, f: f"**{f['total']:.3f}**"),
        ("per call: routing total p95 (ms)", lambda n, f: f"{f['total_p95']:.3f}"),
        ("**batched: routes/s (p50 batch)**", lambda n, f: f"**{f['qps']:,.0f}**"),
        ("fresh process: import of `langchain_metarouter` (s)", lambda n, f: f"{f['import']:.2f}"),
        ("fresh process: build `MetaRouterChat` (s)", lambda n, f: f"{f['construct']:.2f}"),
        ("fresh process: first call (s)", lambda n, f: f"{f['first_call']:.2f}"),
        ("fresh process: second call (s)", lambda n, f: f"{f['second_call']:.3f}"),
        ("**fresh process: peak RSS (MB, max)**", lambda n, f: f"**{f['rss']:.0f}**"),
        ("torch loaded by then", lambda n, f: "yes" if f["torch"] else "no"),
        ("sentence-transformers loaded by then", lambda n, f: "yes" if f["st"] else "no"),
    )
    for label, cell in rows:
        lines.append(f"| {label} | " + " | ".join(cell(n, figs[n]) for n in names) + " |")
    if len(names) > 1:
        ref, *others = names
        for n in others:
            lines += [
                "",
                f"`{n}` against `{ref}` in this run: routing total "
                f"{figs[ref]['total'] / figs[n]['total']:.0f}x faster per call, "
                f"{figs[n]['qps'] / figs[ref]['qps']:.0f}x the batched throughput, first call "
                f"{figs[ref]['first_call'] / max(figs[n]['first_call'], 1e-9):.0f}x sooner, "
                f"peak RSS {figs[n]['rss'] - figs[ref]['rss']:+.0f} MB.",
            ]
    t = b.get("threads")
    if t:
        counts = [c for c in t["idle"]]
        lines += [
            "",
            "Threads (`minilm-torch`, bare embedding of a new short prompt, 1 torch thread "
            f"against {t['default_threads']}, torch's default here; interleaved), on the machine "
            "as it was and beside a process that keeps one core busy:",
            "",
            "| load | " + " | ".join(f"{c} thread(s) p50 / p95 ms" for c in counts) + " |",
            "|---|" + "---:|" * len(counts),
        ]
        for load in ("idle", "one busy core"):
            lines.append(
                f"| {load} | "
                + " | ".join(
                    f"{t[load][c]['p50_ms']:.2f} / {t[load][c]['p95_ms']:.2f}" for c in counts
                )
                + " |"
            )
        lines += [
            "",
            "The library now sets one intra-op thread for torch when it loads the "
            "`minilm-torch` model, unless `METAROUTER_NUM_THREADS` says otherwise (0 keeps "
            "torch's own setting); the `static` backend does not use torch to embed.",
        ]
    return lines


def _status(met: bool | None) -> str:
    return "MET" if met else ("NOT MET" if met is not None else "n/a")


def write_report(results: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write ``out`` (Markdown), ``<out dir>/benchmarks/results.json`` and ``overhead.png``.

    ``results["before_runs"]`` (runs of the code before a change) and ``results["after_runs"]``
    (further runs of the current code), when present, give the before/after table: medians
    over the runs, this run counted among the "after" ones.
    """
    folder = out.parent / "benchmarks"
    folder.mkdir(parents=True, exist_ok=True)
    json_path, plot_path = folder / "results.json", folder / "overhead.png"
    results["targets"] = targets(results)
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    _plot(results, plot_path)

    m = results["machine"]
    rel_plot = plot_path.relative_to(out.parent).as_posix()
    lines = [
        "# Benchmarks",
        "",
        "How much a routed call costs on top of the model call, measured by "
        "[`benchmarks/bench_routing.py`](../benchmarks/bench_routing.py) (issue 8). "
        "All figures below come from **one run** of that script; per-call figures are medians "
        "(p50) and 95th percentiles over many calls, each call on a prompt not seen before "
        "(unless said otherwise), warm-up calls excluded. Wall-clock milliseconds unless "
        "marked CPU (process CPU time, all threads).",
        "",
        "> The machine is **shared**: other work may have run beside the benchmark (load "
        f"average {results['load_average_start']} at the start, {results['load_average_end']} "
        "at the end). Treat single figures as indicative; ratios measured in the same run "
        "(interleaved calls) are more robust than absolute times.",
        "",
        *(
            [
                "> Not re-measured in this run, copied from the run of "
                f"{results['carried_over']['from']}: the "
                + ", ".join(f"`{n}`" for n in results["carried_over"]["sections"])
                + " sections (and their targets).",
                "",
            ]
            if (results.get("carried_over") or {}).get("sections")
            else []
        ),
        "## Targets",
        "",
        "| Target | Measured | Status |",
        "|---|---|---|",
    ]
    for t in results["targets"]:
        note = f" ({t['note']})" if t["note"] else ""
        lines.append(f"| {t['target']} | {t['measured']}{note} | **{_status(t['met'])}** |")
    if "backends" in results:
        lines += ["", *_backends_section(results)]
    lines += [
        "",
        "## Machine and command",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {m['cpu']} |",
        f"| Cores | {m['logical_cpus']} logical ({m['affinity_cpus']} usable) |",
        f"| RAM | {m['ram_gib']} GiB |",
        f"| OS | {m['os']} |",
        f"| Python | {m['python']} |",
        f"| torch | {m['torch']} ({m['torch_threads']} intra-op threads, "
        f"{m['torch_interop_threads']} inter-op; OMP_NUM_THREADS="
        f"{m['omp_num_threads_env'] or 'unset'}, METAROUTER_NUM_THREADS="
        f"{m['metarouter_num_threads_env'] or 'unset'}) |",
        "| Packages | " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + " |",
        f"| Commit | {m['git_commit'] or 'n/a'} |",
        f"| Run | {results['started']}, {results['seconds']:.0f} s in all |",
        "",
        "Reproduce (from the repository root, with the `dev` extra installed):",
        "",
        "```bash",
        results["command"],
        "```",
        "",
        "`--quick` makes few calls and trains for 50 steps only (a smoke test, not figures to "
        "quote). `--sections` runs a subset; `--compare-to A.json [B.json ...]` (runs of the "
        "code before a change) and `--also-after C.json ...` (more runs of the current code) "
        "add the before/after table; `--render results.json` rewrites this page from stored "
        "figures.",
        "",
    ]
    if "per_call" in results:
        lines += [
            "## Routing overhead per call",
            "",
            "One user with 6 stored comparisons; their preference is cached by the "
            "`RoutingService`, as in a running app. Five candidates (the LLMRouter K5 set). "
            "Short prompts: 20-100 characters as embedded; long: 800-1,500 characters (at the "
            "embedding model's 256-word-piece limit). Each iteration runs the floor, "
            "`SentenceTransformer.encode`, the routing steps and `decide()` on the same new "
            "prompt, in random order. The floor is the embedding model alone on the already "
            "prepared text: what any embedding-based router must pay.",
            "",
            *_per_call_table(results),
            "",
            "The target counts the routing steps (lookup, embedding, policy). `decide()` also "
            "records the decision for later feedback: one SQLite transaction with "
            "`synchronous=FULL`, the store's default (a commit survives power loss; "
            '`SQLStore(path, synchronous="NORMAL")` is faster and survives crashes only). '
            "It is reported as measured, beside the target.",
            "",
            f"![Per-call overhead]({rel_plot})",
            "",
            *_thread_table(results),
        ]
    if "adaptation" in results:
        a = results["adaptation"]
        lines += [
            "## Adaptation",
            "",
            "`MetaRouter.adapt(comparisons, arms=...)`: one encoder forward pass, from stored "
            "comparisons that carry their query embeddings (as `RoutingService` re-estimates a "
            "user after feedback). 20 simulated users per N, cycled.",
            "",
            "| | p50 ms | p95 ms | CPU p50 ms | calls |",
            "|---|---:|---:|---:|---:|",
        ]
        for key, label in (
            ("n6", "6 comparisons"),
            ("n50", "50 comparisons"),
            ("lookup_from_store", "user not in memory: preference read from the store's cache"),
        ):
            e = a[key]
            lines.append(
                f"| {label} | {e['p50_ms']:.2f} | {e['p95_ms']:.2f} | {e['cpu_p50_ms']:.2f} | "
                f"{e['n']} |"
            )
        lines.append("")
    if "throughput" in results:
        t = results["throughput"]
        size = t["batch_size"]
        lines += [
            "## Batched throughput",
            "",
            f"`MetaRouter.route_batch(prompts, candidates, preference)` on batches of {size} "
            "new prompts (one embedding batch, one policy pass), five candidates.",
            "",
            "| Prompts | batch p50 ms | batch p95 ms | queries/s (p50) | batches |",
            "|---|---:|---:|---:|---:|",
        ]
        for key, label in (
            ("mixed", "bundled LLMRouter prompts, mixed lengths"),
            ("short", "short prompts (20-100 characters)"),
            ("policy_only", "policy only (embeddings given), mixed"),
        ):
            e = t[key]
            lines.append(
                f"| {label} | {e['p50_ms']:.1f} | {e['p95_ms']:.1f} | "
                f"{size / (e['p50_ms'] / 1e3):,.0f} | {e['n']} |"
            )
        lines += [
            "",
            "The router's own part (policy only) handles tens of thousands of queries per "
            "second; the rest of the batch time is all-MiniLM-L6-v2 on this machine's two cores. "
            "The 400 queries/s target is out of reach here without a cheaper embedding (a "
            "smaller or quantised model, another runtime), which would change the vectors the "
            "router was trained on; that is a retraining decision, not an optimisation, and was "
            "not made. One cheap option was tried during development (not in this run): "
            "PyTorch dynamic int8 quantisation of the embedding model's linear layers was "
            "1.3-1.6x faster on batches of 256 short prompts, still short of 400 queries/s, "
            "and its vectors had cosine similarity 0.956 on average (0.90 at worst) with the "
            "float32 ones the router was trained on.",
            "",
        ]
    if "process" in results:
        p = results["process"]
        lines += [
            "## LangChain adapter process",
            "",
            "Fresh Python processes ([`benchmarks/_one_call.py`](../benchmarks/_one_call.py)): "
            "`import langchain_metarouter` alone, and a process that imports it, builds a "
            "`MetaRouterChat` over two scripted `FakeListChatModel` candidates (no network) and "
            "routes one call. Peak RSS is the process's high-water mark (`VmHWM`).",
            "",
            "| | |",
            "|---|---|",
            f"| Import time of `langchain_metarouter` (median of {len(p['import_s'])}) | "
            f"{p['import_median_s']:.2f} s (runs: "
            + ", ".join(f"{v:.2f}" for v in p["import_s"])
            + ") |",
            f"| torch imported by that import | {'yes' if p['torch_after_import'] else 'no'} |",
            f"| Peak RSS after the import | {p['rss_after_import_mb']:.0f} MB |",
            "| Building `MetaRouterChat` (loads router + store) | "
            f"{p['construct_median_s']:.2f} s (peak RSS then "
            f"{statistics.median(r['rss_after_construct_mb'] for r in p['one_call']):.0f} MB) |",
            f"| First routed call (loads the embedding model) | {p['first_call_median_s']:.2f} s |",
            f"| Peak RSS of the one-call process | {p['peak_rss_mb_median']:.0f} MB median, "
            f"{p['peak_rss_mb_max']:.0f} MB max of {len(p['one_call'])} |",
            "",
            "Importing the adapter no longer loads torch; torch now loads when the router is "
            "built (`MetaRouterChat(...)`), and sentence-transformers with the embedding model "
            "on the first routed call, so the time to the first answer is not shorter, only "
            "the import. What remains of the import is mostly `langchain_core` and the "
            "store's SQLAlchemy (`python -X importtime -c 'import langchain_metarouter'`). "
            "Most of the peak RSS is torch and sentence-transformers' own imports (transformers, "
            "scikit-learn, SciPy, pandas), not the router's weights (measured during "
            "development, not in this run: importing torch ~220 MB, then sentence-transformers "
            "~260 MB more, then the embedding model and a first forward ~100 MB).",
            "",
        ]
    if "training" in results:
        tr = results["training"]
        lines += [
            "## Meta-training time",
            "",
            f"The real CLI, `{tr['command']}`, on the bundled LLMRouter training split "
            f"({tr['queries']:,} queries); embedding cache: {tr['embedding_cache']} (with a "
            "cold cache, embedding the queries is part of the wall time). The bundled default "
            "was trained with "
            f"`{tr['bundled_command']}` (training loop {tr['bundled_training_loop_s']} s "
            "on its machine).",
            "",
            "| Steps | wall time (whole command) | training loop | best step |",
            "|---:|---:|---:|---:|",
            f"| {tr['steps']} | {tr['wall_s']:.0f} s | {tr['training_loop_s']} s | "
            f"{tr['best_step']} |",
            "",
        ]
        if results.get("quick"):
            lines += [
                "(A `--quick` run: a short training run, not the default's 1,500 steps.)",
                "",
            ]
    if "baselines" in results:
        lines += [
            "## Against the evaluation harness's baselines",
            "",
            "Each method routes a new short prompt for one user whose state is ready (6 "
            "comparisons, in memory): the same `Embedder.encode_one` call, then its decision. "
            "Baselines are fitted as `metarouter.evaluation` fits them on the bundled LLMRouter "
            "ID split (see [`benchmarks/_baselines.py`](../benchmarks/_baselines.py)); "
            '"agrees with harness" is the share of held-out test queries on which the '
            "per-query version picks what the harness's `choose` picks. RouteLLM only routes "
            "two candidates, so it runs on K2 beside MetaRouter on K2. Calls are interleaved "
            "in random order.",
            "",
            *_baseline_table(results),
            "",
            "The embedding is almost all of every method's per-call cost. MetaRouter's decision "
            "(a small network over each candidate) is slower than a table lookup or a linear "
            "model, but stays far below the embedding.",
            "",
        ]
    before = results.get("before_runs") or []
    if before:
        after = [results, *(results.get("after_runs") or [])]
        lines += [
            "## Before and after the optimisations",
            "",
            f"The same script (sections per_call, adaptation, throughput, process) on the code "
            f"before the changes listed below ({len(before)} runs) and on the code measured "
            f"above ({len(after)} runs: this one and {len(after) - 1} more), alternating "
            "before/after runs on the same machine within the hour; each figure is the median "
            "over runs. On a shared machine, single runs differ by 10-20% even where the code "
            'did not change (long-prompt and batched embedding): the "x floor" columns, '
            "each run against its own floor, are the robust reading of the per-call changes.",
            "",
            *([f"Before: {results['before_code']}."] if results.get("before_code") else []),
            *(
                [f"The other runs of the current code: {results['after_code']}."]
                if results.get("after_code")
                else []
            ),
            "",
            *_compare_table(before, after),
            "",
        ]
    lines += [
        "## What was optimised (issue 8, item 2)",
        "",
        "* **Embedding, one text** (`Embedder`): a single prompt skips "
        "`SentenceTransformer.encode`'s per-call bookkeeping (device resolution over every "
        "parameter, `eval()`, length sorting) and runs tokenize, forward, normalise under "
        "`torch.inference_mode`. The vectors are bit-identical; this is checked against "
        "`encode` when the model loads, and `encode` is used if the check fails (another "
        "sentence-transformers version).",
        "* **Repeated prompts**: `Embedder.encode_one` keeps a bounded in-memory LRU "
        "(`memory_cache_size`, default 4,096 vectors, read-only arrays).",
        "* **Policy** (`MetaRouter.score_embeddings`): the candidates' tensors and the user's "
        "preference tensors are built once and kept in small LRUs (64 entries each) instead "
        "of on every call; inference runs under `torch.inference_mode`.",
        "* **Adaptation** (`MetaRouter.adapt`): the per-comparison features (computed three "
        "times before), the quality head's beliefs and the Bradley-Terry posterior (twice "
        "before) are computed once per call, under `torch.inference_mode` unless refinement "
        "steps need gradients. Same numbers, bit for bit.",
        "* **Preference per user**: `RoutingService` keeps each user's preference in memory "
        "and re-reads only the user's version number from the store per call (so feedback "
        "from another process takes effect on the next call); the router and the embedding "
        "model are loaded once per process.",
        "* **Lazy imports**: `metarouter.router` no longer imports torch at module import, so "
        "`import langchain_metarouter` does not load torch; it loads with the first router "
        "(building `MetaRouterChat`).",
        "* **Threads** (changed in issue 16): the library sets one torch intra-op thread when "
        "the `minilm-torch` model first loads, unless `METAROUTER_NUM_THREADS` says otherwise "
        "(0 keeps torch's own setting); see the thread table of the backends section.",
        "",
        "## What was optimised (issue 16)",
        "",
        "* **Embedding backends**: `static`, a token table distilled offline from the packaged "
        "all-MiniLM-L6-v2 with model2vec and mapped linearly onto the model's own vectors of "
        "the LLMRouter training queries (256-d, float16, 15 MB, shipped in the package, "
        "rebuilt by `scripts/build_static_embedder.py --fit-teacher llmrouter`): a prompt is "
        "the normalised mean of "
        "its word pieces' rows, in numpy, without torch or sentence-transformers. A router "
        "records the embedder it was trained for (`config.json`: `embedder`, "
        "`embedder_fingerprint`); using it with another is an `EmbedderMismatchError`.",
        "* **Policy** (`metarouter.inference.QualityHead`): the quality head's routing pass "
        "in numpy, with what depends only on the weights (the prior evidence through the "
        "first layer) computed once per router and what depends only on the candidates once "
        "per candidate set; the same logits as the torch network to float32 rounding "
        "(tested, with identical decisions). This replaced ~40 small torch operators per call.",
        "* **Batches**: `route_batch` embeds a batch in one call; LangChain's `batch`/`abatch` "
        "embed all inputs' routing texts in one batch first (`Embedder.prime`), so each "
        "call's embedding is an LRU hit.",
        "* **Start-up**: `MetaRouter.warm_up()` and the adapters' `warm_up()` load the "
        "embedder and run one query before the first call.",
        "* **Torch-free routers** (`static`): `MetaRouter.from_pretrained` reads a static "
        "router's weights with `safetensors.numpy` into the numpy quality head (the prior "
        "evidence computed in numpy), and the per-user cost calibration and the service's "
        "router fingerprint are numpy too, so building the router or `MetaRouterChat` and "
        "routing import neither torch nor sentence-transformers (tested in a fresh process, "
        "with the torch network's decisions). The torch network is built on first use of "
        "`router.model` (training, fine-tuning, saving). `minilm-torch` routers load as before.",
        "",
        "The raw figures of this run (every sample) are in "
        f"[`{json_path.relative_to(out.parent).as_posix()}`]"
        f"({json_path.relative_to(out.parent).as_posix()}).",
        "",
    ]
    out.write_text("\n".join(lines) + _other_sections(out))
    return json_path, plot_path


def _other_sections(page: Path) -> str:
    """Sections kept in the page across runs (bench_store.py's, backend_quality.py's, the
    ONNX backends' quick check)."""
    text = page.read_text(encoding="utf-8") if page.exists() else ""
    kept = []
    for name in ("store-load", "backend-quality", "onnx-backends"):
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        if start in text and end in text:
            kept.append(start + text.split(start, 1)[1].split(end, 1)[0] + end + "\n")
    return "".join("\n" + block for block in kept)


def _strip_raw(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_raw(v) for k, v in node.items() if k != "raw"}
    return node
