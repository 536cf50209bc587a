"""Embedding backends side by side, interleaved: bare embedding time per call and per batch.

A quick check that needs no router, store or training (the ``backends`` section of
``bench_routing.py`` measures whole routed calls): each backend embeds the same new short
prompts (20-100 characters, as embedded) one at a time, and the same batches of bundled
LLMRouter prompts as they come (mixed lengths), the backends taking turns prompt by prompt and
batch by batch, so that load from other processes falls on all of them alike.

Usage::

    METAROUTER_NUM_THREADS=1 python benchmarks/bench_embedders.py \\
        [--backends minilm-torch,minilm-onnx,minilm-onnx-int8] [--calls 100] [--batches 2]

Prints one JSON object: p50/p95 per call in ms, texts/s per batch, ratios to the first backend,
and how far each backend's vectors of the batched prompts are from the first backend's (max
absolute difference, cosine min and mean).
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="minilm-torch,minilm-onnx,minilm-onnx-int8")
    parser.add_argument("--calls", type=int, default=100, help="short prompts, one per call")
    parser.add_argument("--batches", type=int, default=2, help="batches of --batch-size prompts")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)

    from metarouter.data import load_dataset
    from metarouter.embeddings import Embedder, embedding_text

    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    embedders = {n: Embedder(n, memory_cache_size=0) for n in names}
    for embedder in embedders.values():
        embedder.warm_up()
    texts = list(
        dict.fromkeys(embedding_text(q) for q in load_dataset("llmrouter").to_matrix().queries)
    )
    rng = np.random.default_rng(0)
    rng.shuffle(texts)
    short = [t for t in texts if 20 <= len(t) <= 100][: args.calls + 5]
    mixed = texts[: args.batches * args.batch_size]
    calls: dict[str, list[float]] = {n: [] for n in names}
    for i, text in enumerate(short):
        for n in rng.permutation(names):
            start = time.perf_counter()
            embedders[n].encode([text], prepare=False)
            if i >= 5:  # warm-up
                calls[n].append((time.perf_counter() - start) * 1e3)
    rates: dict[str, list[float]] = {n: [] for n in names}
    vectors: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for b in range(args.batches):
        batch = mixed[b * args.batch_size : (b + 1) * args.batch_size]
        for n in rng.permutation(names):
            start = time.perf_counter()
            vectors[n].append(embedders[n].encode(batch, prepare=False))
            rates[n].append(len(batch) / (time.perf_counter() - start))
    ref = names[0]
    out: dict[str, Any] = {
        "threads": os.environ.get("METAROUTER_NUM_THREADS", "1 (default)"),
        "load_average": os.getloadavg(),
        "calls": args.calls,
        "batches": f"{args.batches} x {args.batch_size}",
    }
    for n in names:
        p50 = statistics.median(calls[n])
        out[n] = {
            "per_call_p50_ms": round(p50, 3),
            "per_call_p95_ms": round(float(np.percentile(calls[n], 95)), 3),
            "batched_texts_per_s": round(statistics.median(rates[n]), 1),
            "per_call_speedup_vs_" + ref: round(statistics.median(calls[ref]) / p50, 2),
            "batched_speedup_vs_" + ref: round(
                statistics.median(rates[n]) / statistics.median(rates[ref]), 2
            ),
        }
        mine, theirs = np.concatenate(vectors[n]), np.concatenate(vectors[ref])
        if mine.shape == theirs.shape:  # vectors of the batched prompts against the first's
            cosine = (mine * theirs).sum(axis=1)
            out[n] |= {
                "max_abs_diff_vs_" + ref: float(np.abs(mine - theirs).max()),
                "cosine_vs_" + ref: {"min": float(cosine.min()), "mean": float(cosine.mean())},
            }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
