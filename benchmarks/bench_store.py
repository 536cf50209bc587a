"""Load test of the preference store: many threads routing for many users on one SQLite file.

Issue 15's bar: 8 threads x 10,000 routed calls for 1,000 users on SQLite, with 0 errors, every
decision stored, and the latency per call. Each call is what an adapter does per request:
``RoutingService.decide`` (the user's version read from the store, the preference from the
in-memory cache or recomputed, the policy, the decision written durably) then
``RoutingService.complete`` (the answering model and its real cost written). One call in 20 also
records a comparison (the routed answer against another model's), so preferences are recomputed
all along, as in an app whose users give feedback.

**Embeddings are precomputed** (to spare this shared 2-core machine 80,000 embedding-model
calls, ~20 ms each): the router's embedder is replaced by a table of real all-MiniLM-L6-v2
embeddings of the bundled LLMRouter prompts, looked up per call. Everything else is real: the
policy, the store (SQLite, WAL, ``synchronous=FULL``), its transactions and its locking. The
latency figures therefore leave out the embedding (see the per-call section of
docs/benchmarks.md for that).

It also measures the store's size per routed call and after ``prune`` + ``vacuum``.

Usage::

    python benchmarks/bench_store.py [--threads 8] [--calls 10000] [--users 1000]

Writes ``docs/benchmarks/store_load.json``, the "Store under load" section of
docs/benchmarks.md and the size table of docs/store.md (each between its markers; the rest of
the pages is left as is). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _timing import load_average, machine  # noqa: E402
from bench_routing import K5  # noqa: E402 - the same five candidates as the routing figures

START, END = "<!-- store-load:start -->", "<!-- store-load:end -->"
SIZES = ("<!-- store-sizes:start -->", "<!-- store-sizes:end -->")
FEEDBACK_EVERY = 20


class PrecomputedEmbedder:
    """Looks each prompt's real embedding up in a table (see the module docstring)."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table

    def encode_one(self, text: str) -> np.ndarray:
        return self.table[text]


def _prompts() -> tuple[list[str], np.ndarray]:
    from metarouter.data import load_dataset
    from metarouter.embeddings import Embedder

    queries = list(dict.fromkeys(load_dataset("llmrouter").to_matrix().queries))
    return queries, Embedder(cache=True).encode(queries)


def _worker(
    service: Any,
    worker: int,
    calls: int,
    users: list[str],
    prompts: list[str],
    start: threading.Barrier,
    out: dict[str, Any],
) -> None:
    from metarouter.service import Response

    rng = np.random.default_rng(worker)
    latencies, errors, ids = [], [], []
    start.wait()
    for i in range(calls):
        user = users[int(rng.integers(len(users)))]
        query = prompts[int(rng.integers(len(prompts)))]
        began = time.perf_counter()
        try:
            decision = service.decide(query, user)
            cost = decision.routing.expected_costs_usd[decision.model]
            service.complete(decision, model=decision.model, cost_usd=cost)
            latencies.append(time.perf_counter() - began)
            ids.append(decision.decision_id)
            if i % FEEDBACK_EVERY == FEEDBACK_EVERY - 1:
                other = next(m for m in decision.routing.ranking if m != decision.model)
                better, worse = (
                    (
                        decision.decision_id,
                        Response(other, decision.routing.expected_costs_usd[other]),
                    )
                    if rng.random() < 0.5
                    else (
                        Response(other, decision.routing.expected_costs_usd[other]),
                        decision.decision_id,
                    )
                )
                service.record_preference(better, worse)
        except Exception as exc:  # counted and reported: the bar is 0 errors
            errors.append(f"{type(exc).__name__}: {exc}")
    out[worker] = {"latencies": latencies, "errors": errors, "ids": ids}


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def run(threads: int, calls: int, users: int) -> dict[str, Any]:
    from metarouter.router import MetaRouter
    from metarouter.service import RoutingService
    from metarouter.store import SQLStore
    from metarouter.store.maintenance import Retention

    queries, embeddings = _prompts()
    table = dict(zip(queries, embeddings, strict=True))
    router = MetaRouter.default(embedder=PrecomputedEmbedder(table))  # type: ignore[arg-type]
    user_ids = [f"user-{k:04d}" for k in range(users)]
    results: dict[str, Any] = {
        "threads": threads,
        "calls_per_thread": calls,
        "users": users,
        "feedback_every": FEEDBACK_EVERY,
        "prompts": len(queries),
        "embeddings": "precomputed (all-MiniLM-L6-v2, looked up per call)",
    }
    with tempfile.TemporaryDirectory(prefix="metarouter-store-bench-") as tmp:
        path = Path(tmp) / "prefs.db"
        store = SQLStore(path)
        service = RoutingService(list(K5), router=router, store=store)
        service.decide(queries[0], "warm-up")  # creates the schema, loads torch's kernels
        out: dict[int, Any] = {}
        barrier = threading.Barrier(threads + 1)
        workers = [
            threading.Thread(
                target=_worker,
                args=(service, w, calls, user_ids, queries, barrier, out),
                daemon=True,
            )
            for w in range(threads)
        ]
        for t in workers:
            t.start()
        barrier.wait()
        began = time.perf_counter()
        for t in workers:
            t.join()
        seconds = time.perf_counter() - began
        latencies = np.concatenate([np.asarray(o["latencies"]) for o in out.values()]) * 1e3
        errors = [e for o in out.values() for e in o["errors"]]
        routed = {i for o in out.values() for i in o["ids"]}
        service.flush()
        stored = {r.decision_id for r in store.iter_records() if hasattr(r, "scores")}
        stats = store.stats()
        health = service.store_health()
        size = _size(path)
        store.checkpoint()
        size_checkpointed = path.stat().st_size
        results.update(
            {
                "seconds": round(seconds, 1),
                "calls": int(latencies.size) + len(errors),
                "calls_per_second": round((latencies.size + len(errors)) / seconds, 1),
                "errors": len(errors),
                "error_examples": errors[:5],
                "routed_decisions": len(routed),
                "stored_of_routed": len(routed & stored),
                "missing": len(routed - stored),
                "comparisons": stats["comparisons"],
                "store_health": health.__dict__,
                "latency_ms": {
                    "p50": round(float(np.percentile(latencies, 50)), 2),
                    "p95": round(float(np.percentile(latencies, 95)), 2),
                    "p99": round(float(np.percentile(latencies, 99)), 2),
                    "max": round(float(latencies.max()), 2),
                    "mean": round(float(latencies.mean()), 2),
                },
                "size": {
                    "decisions": stats["decisions"],
                    "bytes_with_wal": size,
                    "bytes_checkpointed": size_checkpointed,
                    "bytes_per_decision": round(size_checkpointed / stats["decisions"]),
                },
            }
        )
        keep = 20
        started = time.perf_counter()
        pruned = store.prune(Retention(max_decisions_per_user=keep))
        store.vacuum()
        results["prune"] = {
            "keep_last_per_user": keep,
            "deleted": pruned,
            "decisions_left": store.stats()["decisions"],
            "comparisons_left": store.stats()["comparisons"],
            "bytes_after_vacuum": path.stat().st_size,
            "seconds": round(time.perf_counter() - started, 1),
        }
        store.close()
    return results


def render(r: dict[str, Any]) -> str:
    lat, size, prune = r["latency_ms"], r["size"], r["prune"]
    m = r["machine"]
    ok = r["errors"] == 0 and r["missing"] == 0
    lines = [
        START,
        "## Store under load",
        "",
        f"[`benchmarks/bench_store.py`](../benchmarks/bench_store.py) (issue 15): "
        f"**{r['threads']} threads x {r['calls_per_thread']:,} routed calls for "
        f"{r['users']:,} users** on one SQLite store (WAL, `synchronous=FULL`), through one "
        "`RoutingService` as an app process would use it. A call is `decide` (the user's "
        "version read, the preference from memory or recomputed, the policy, the decision "
        "written) then `complete` (the model and cost written); one call in "
        f"{r['feedback_every']} also records a comparison, so preferences are recomputed "
        "throughout. **Embeddings are precomputed** (real all-MiniLM-L6-v2 vectors of the "
        f"{r['prompts']:,} bundled LLMRouter prompts, looked up per call) to spare this shared "
        f"2-core machine {r['calls']:,} embedding-model calls: the latencies below leave the "
        "embedding "
        "out (see the per-call section above for it); the policy and every store write are "
        "real.",
        "",
        "| | |",
        "|---|---|",
        f"| Calls | {r['calls']:,} in {r['seconds']:,} s ({r['calls_per_second']:,} calls/s) |",
        f"| Errors | {r['errors']} |",
        f"| Decisions stored | {r['stored_of_routed']:,} of {r['routed_decisions']:,} routed "
        f"({r['missing']} missing) |",
        f"| Comparisons stored | {r['comparisons']:,} |",
        f"| Store failures worked around | {r['store_health']['failures']} |",
        f"| Latency per call (decide + complete), ms | p50 {lat['p50']}, p95 {lat['p95']}, "
        f"**p99 {lat['p99']}**, max {lat['max']} |",
        f"| Store size | {size['bytes_checkpointed'] / 1e6:.1f} MB for {size['decisions']:,} "
        f"decisions: **{size['bytes_per_decision']:,} bytes per routed call** |",
        f"| After `prune(Retention(max_decisions_per_user={prune['keep_last_per_user']}))` + "
        f"`vacuum()` | {prune['deleted']:,} decisions deleted in {prune['seconds']} s, "
        f"{prune['decisions_left']:,} kept (those cited by comparisons included), "
        f"{prune['comparisons_left']:,} comparisons kept, "
        f"{prune['bytes_after_vacuum'] / 1e6:.1f} MB |",
        "",
        f"The {r['threads']} threads share {m['logical_cpus']} cores (and the GIL) with the "
        "machine's other work, and SQLite has one writer at a time (each call commits twice, "
        "each commit synced to disk): the latency of a call includes its waits for both "
        "(how much of the tail each causes was not measured).",
        "",
        f"Bar (0 errors, every decision stored): **{'MET' if ok else 'NOT MET'}**. Run "
        f"{r['started']} on {m['cpu']} ({m['logical_cpus']} logical CPUs, shared), commit "
        f"{m['git_commit']}; load average {r['load_average_start']} at the start, "
        f"{r['load_average_end']} at the end. Raw figures: "
        "[`docs/benchmarks/store_load.json`](benchmarks/store_load.json). Reproduce: "
        f"`{r['command']}`.",
        END,
    ]
    return "\n".join(lines)


def render_sizes(r: dict[str, Any]) -> str:
    """The size table of docs/store.md's retention section."""
    size, prune = r["size"], r["prune"]
    calls = r["threads"] * r["calls_per_thread"]
    return "\n".join(
        [
            SIZES[0],
            "| | size |",
            "|---|---:|",
            f"| one routed call (its decision row, indexes included) | "
            f"{size['bytes_per_decision']:,} bytes |",
            f"| {calls:,} routed calls of {r['users']:,} users ({size['decisions']:,} decisions, "
            f"{r['comparisons']:,} comparisons) | {size['bytes_checkpointed'] / 1e6:.1f} MB |",
            f"| the same after `prune(Retention(max_decisions_per_user="
            f"{prune['keep_last_per_user']}))` and `vacuum()` ({prune['decisions_left']:,} "
            f"decisions, {prune['comparisons_left']:,} comparisons) | "
            f"{prune['bytes_after_vacuum'] / 1e6:.1f} MB |",
            SIZES[1],
        ]
    )


def write_section(page: Path, section: str, markers: tuple[str, str] = (START, END)) -> None:
    """Replace the page's section between ``markers`` (the section includes them), or append it."""
    start, end = markers
    text = page.read_text(encoding="utf-8") if page.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    page.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--calls", type=int, default=10_000, help="routed calls per thread")
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--render", type=Path, help="re-write the section from a stored JSON")
    args = parser.parse_args(argv)
    if args.render:
        results = json.loads(args.render.read_text())
    else:
        command = "python benchmarks/bench_store.py"
        defaults = {"threads": 8, "calls": 10_000, "users": 1_000}
        for key, default in defaults.items():
            if getattr(args, key) != default:
                command += f" --{key} {getattr(args, key)}"
        results = {
            "command": command,
            "machine": machine(),
            "load_average_start": load_average(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        results.update(run(args.threads, args.calls, args.users))
        results["load_average_end"] = load_average()
        folder = args.out.parent / "benchmarks"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "store_load.json").write_text(json.dumps(results, indent=1) + "\n")
    write_section(args.out, render(results))
    write_section(args.out.parent / "store.md", render_sizes(results), SIZES)
    print(f"wrote {args.out}: {results['errors']} errors, p99 {results['latency_ms']['p99']} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
