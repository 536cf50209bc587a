"""Performance benchmark of MetaRouter's hot path against the embedding floor and the baselines.

Measures, in one run on this machine (issue 8):

* routing overhead per call, short and long queries: embedding, adaptation lookup (the user's
  cached preference), policy, total; the bare embedding call alone (the floor); and
  ``RoutingService.decide`` end to end (which also writes the decision to the store);
* adaptation time from 6 and from 50 comparisons;
* batched routing throughput;
* peak RSS and import time of a fresh process that imports ``langchain_metarouter`` and routes
  one call through ``MetaRouterChat`` (scripted candidates, no network);
* meta-training time of the default router (the real ``metarouter train``);
* the same per-call overhead for the evaluation harness's learned baselines, as ratios.

Usage::

    python benchmarks/bench_routing.py [--quick] [--out docs/benchmarks.md]

Writes the Markdown report, ``<out dir>/benchmarks/results.json`` (raw figures) and
``<out dir>/benchmarks/overhead.png``. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _report import summary_of, write_report  # noqa: E402
from _timing import Series, Stopwatch, load_average, machine, timed  # noqa: E402

SECTIONS = (
    "per_call",
    "adaptation",
    "throughput",
    "process",
    "training",
    "baselines",
    "backends",
)
K5 = (
    "gemma-2-9b-it",
    "llama-3.1-8b-instruct",
    "mistral-7b-instruct-v0.3",
    "llama-3.3-nemotron-super-49b-v1",
    "llama-3.1-nemotron-51b-instruct",
)
USER = "bench-user"


class Plan:
    """How many calls each section makes (``--quick`` for a smoke run)."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.warmup = 5 if quick else 20
        self.calls_short = 40 if quick else 300
        self.calls_long = 30 if quick else 200
        self.calls_adapt = 50 if quick else 300
        self.calls_baselines = 40 if quick else 300
        self.batch = 256
        self.batches_mixed = 2 if quick else 8
        self.batches_short = 1 if quick else 4
        self.import_repeats = 3 if quick else 7
        self.process_repeats = 1 if quick else 3
        self.train_steps = 50 if quick else 1500
        self.agreement_rows = 60 if quick else 200
        self.backend_calls = 40 if quick else 300
        self.backend_batches = 2 if quick else 8
        self.backend_processes = 1 if quick else 3
        self.thread_calls = 15 if quick else 60
        #: Embedding backends the ``backends`` section measures (``--backends``).
        self.backends: tuple[str, ...] = ()


# -- setup ----------------------------------------------------------------------------------------


class Bench:
    """Shared state: data, embeddings, routers, the routing service and the simulated user."""

    def __init__(self, plan: Plan, workdir: Path, progress: Any) -> None:
        from metarouter.data import load_dataset
        from metarouter.embeddings import Embedder, embedding_text
        from metarouter.evaluation.settings import build_settings, default_plans
        from metarouter.router import MetaRouter

        self.plan = plan
        self.workdir = workdir
        self.progress = progress
        self.rng = np.random.default_rng(0)
        task = progress.add_task("setup: data, embeddings, routers", total=None)
        self.matrix = load_dataset("llmrouter").to_matrix()
        # dataset embeddings (for fitting the baselines) come from the on-disk cache
        data_emb = Embedder(cache=True).encode(list(self.matrix.queries))
        settings = build_settings(
            self.matrix, data_emb, default_plans()["llmrouter"], splits=("ID",), ksets=("K2", "K5")
        )
        self.settings = {s.kset: s for s in settings}
        # distinct prompts by the text actually embedded, split into short and long
        prepared: dict[str, str] = {}
        for q in self.matrix.queries:
            prepared.setdefault(embedding_text(q), q)
        texts = list(prepared.values())
        self.rng.shuffle(texts)
        lengths = {q: len(embedding_text(q)) for q in texts}
        self.short = [q for q in texts if 20 <= lengths[q] <= 100]
        self.long = [q for q in texts if 800 <= lengths[q] <= 1500]
        self.mixed = texts
        # every call embeds: the per-call figures are for prompts the router has not seen
        self.router = MetaRouter.default(embedder=Embedder(memory_cache_size=0))
        self.router.embedder.encode_one("load the model")
        self.model = self.router.embedder.model
        self.service = self._service()
        progress.update(task, total=1, completed=1)

    def _service(self) -> Any:
        return self._service_for(self.router)

    def _service_for(self, router: Any) -> Any:
        """A routing service over K5 with one user who made 6 comparisons (cached, as in an app)."""
        from metarouter.evaluation.feedback import draw_feedback
        from metarouter.profiles import LinearProfile
        from metarouter.service import Response, RoutingService
        from metarouter.store.sql import SQLStore

        store = SQLStore(self.workdir / f"preferences-{router.config.embedder}-{id(router)}.db")
        service = RoutingService(list(K5), router=router, store=store)
        s = self.settings["K5"]
        fb = draw_feedback(s, LinearProfile(0.5), 6, np.arange(len(s.test)), rng=self.rng)
        for r, w, lo, cw, cl in zip(
            fb.rows, fb.win, fb.lose, fb.win_cost, fb.lose_cost, strict=True
        ):
            service.record_preference(
                Response(s.models[w], float(cw)),
                Response(s.models[lo], float(cl)),
                user_id=USER,
                query=s.test.queries[r],
            )
        service.preference(USER)  # cached from here on, as in a running app
        return service

    def take(self, pool: str, n: int) -> list[str]:
        """The next ``n`` unused prompts of a pool (every measured call gets a new prompt)."""
        items: list[str] = getattr(self, pool)
        if len(items) < n:
            raise RuntimeError(f"only {len(items)} {pool} prompts left, {n} needed")
        out, rest = items[:n], items[n:]
        setattr(self, pool, rest)
        return out


def _bare_embedding(model: Any) -> Callable[[str], np.ndarray]:
    """The floor: tokenize, forward, normalise one prepared text (nothing else)."""
    import torch

    def embed(text: str) -> np.ndarray:
        with torch.inference_mode():
            out = model(model.preprocess([text]))["sentence_embedding"]
            return torch.nn.functional.normalize(out, p=2, dim=1).numpy()

    return embed


# -- sections -------------------------------------------------------------------------------------


def per_call(b: Bench) -> dict[str, Any]:
    """Per-call overhead of routing, short and long prompts, against the embedding floor."""
    from metarouter.embeddings import Embedder, embedding_text
    from metarouter.router import MetaRouter

    router, service = b.router, b.service
    arms = [service.descriptors[n] for n in K5]
    floor = _bare_embedding(b.model)
    out: dict[str, Any] = {}
    for kind, n in (("short", b.plan.calls_short), ("long", b.plan.calls_long)):
        prompts = b.take(kind, b.plan.warmup + n)
        series = {
            k: Series()
            for k in (
                "floor",
                "st_encode",
                "embedding",
                "lookup",
                "policy",
                "routing_total",
                "decide",
            )
        }
        task = b.progress.add_task(f"per-call overhead, {kind} prompts", total=len(prompts))
        for i, q in enumerate(prompts):
            rec = series if i >= b.plan.warmup else {k: Series() for k in series}
            text = embedding_text(q)
            steps: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = [
                (timed, (rec["floor"], floor, text), {}),
                (
                    timed,
                    (rec["st_encode"], b.model.encode, [text]),
                    {"convert_to_numpy": True, "normalize_embeddings": True},
                ),
                (_routing_steps, (b, router, q, arms, rec), {}),
                (timed, (rec["decide"], service.decide, q, USER), {}),
            ]
            for j in b.rng.permutation(len(steps)):  # no fixed order: no systematic cache bias
                fn, args, kwargs = steps[j]
                fn(*args, **kwargs)
            b.progress.advance(task)
        out[kind] = series

    # repeated prompt: served by the embedder's in-memory LRU
    cached = MetaRouter.default(embedder=Embedder())
    q = b.take("short", 1)[0]
    cached.embedder.encode_one(q)
    rep = {k: Series() for k in ("lookup", "embedding", "policy", "routing_total")}
    task = b.progress.add_task(
        "per-call overhead, repeated prompt", total=b.plan.warmup + b.plan.calls_short
    )
    for i in range(b.plan.warmup + b.plan.calls_short):
        _routing_steps(b, cached, q, arms, rep if i >= b.plan.warmup else None)
        b.progress.advance(task)
    out["repeated"] = rep
    out["threads"] = _thread_sweep(b, floor, arms)
    return out


def _thread_sweep(b: Bench, floor: Callable[[str], np.ndarray], arms: list[Any]) -> dict[str, Any]:
    """Floor and routing total with one torch thread vs the process default, interleaved."""
    import torch
    from metarouter.embeddings import embedding_text
    from metarouter.pricing import estimate_tokens

    default = torch.get_num_threads()
    counts = sorted({1, default})
    n = 15 if b.plan.quick else 80
    out: dict[str, Any] = {"default_threads": default}
    task = b.progress.add_task("torch threads: 1 vs default", total=2 * (b.plan.warmup + n))
    try:
        for kind in ("short", "long"):
            series = {t: {"floor": Series(), "routing_total": Series()} for t in counts}
            for i, q in enumerate(b.take(kind, b.plan.warmup + n)):
                text = embedding_text(q)
                for t in b.rng.permutation(counts):
                    torch.set_num_threads(int(t))
                    rec = (
                        series[int(t)]
                        if i >= b.plan.warmup
                        else {"floor": Series(), "routing_total": Series()}
                    )
                    timed(rec["floor"], floor, text)
                    watch = Stopwatch()
                    pref = b.service.preference(USER)
                    emb = b.router.embedder.encode_one(q)
                    b.router.route_embeddings(
                        emb[None, :], np.asarray([estimate_tokens(q)], float), arms, pref
                    )
                    rec["routing_total"].add(*watch.lap())
                b.progress.advance(task)
            out[kind] = {str(t): v for t, v in series.items()}
    finally:
        torch.set_num_threads(default)
    return out


def _routing_steps(
    b: Bench, router: Any, q: str, arms: list[Any], rec: dict[str, Series] | None
) -> None:
    """Lookup, embedding and policy of one routed prompt, each timed (not kept when rec=None)."""
    from metarouter.pricing import estimate_tokens

    watch = Stopwatch()
    pref = b.service.preference(USER)
    lookup = watch.lap()
    emb = router.embedder.encode_one(q)
    embed = watch.lap()
    router.route_embeddings(emb[None, :], np.asarray([estimate_tokens(q)], float), arms, pref)
    policy = watch.lap()
    if rec is not None:
        rec["lookup"].add(*lookup)
        rec["embedding"].add(*embed)
        rec["policy"].add(*policy)
        rec["routing_total"].add(*np.add(np.add(lookup, embed), policy))


def adaptation(b: Bench) -> dict[str, Any]:
    """``MetaRouter.adapt`` from N stored comparisons (with embeddings), as the service does."""
    from metarouter.evaluation.feedback import draw_feedback
    from metarouter.profiles import LinearProfile

    s = b.settings["K5"]
    arms = [b.router.catalog[m] for m in s.models]
    out: dict[str, Any] = {}
    for n in (6, 50):
        users = []
        for u in range(20):
            fb = draw_feedback(
                s, LinearProfile(u / 19), n, np.arange(len(s.test)), rng=b.rng, source="test"
            )
            users.append(fb.comparisons(s))
        series = Series()
        task = b.progress.add_task(f"adaptation from {n} comparisons", total=b.plan.calls_adapt)
        for i in range(b.plan.warmup + b.plan.calls_adapt):
            comps = users[i % len(users)]
            if i < b.plan.warmup:
                b.router.adapt(comps, arms=arms)
                continue
            timed(series, b.router.adapt, comps, arms=arms)
            b.progress.advance(task)
        out[f"n{n}"] = series
    # a user not in the service's memory (e.g. a new process): read from the store's cache
    cold = Series()
    for _ in range(5 if b.plan.quick else 50):
        b.service._cache.clear()
        timed(cold, b.service.preference, USER)
    out["lookup_from_store"] = cold
    return out


def throughput(b: Bench) -> dict[str, Any]:
    """Batched routing: ``route_batch`` of 256 prompts (embedding + policy), queries per second."""
    from metarouter.pricing import estimate_tokens

    pref = b.service.preference(USER)
    out: dict[str, Any] = {}
    for kind, batches in (("mixed", b.plan.batches_mixed), ("short", b.plan.batches_short)):
        prompts = b.take(kind, b.plan.batch * (batches + 1))
        chunks = [prompts[i : i + b.plan.batch] for i in range(0, len(prompts), b.plan.batch)]
        series = Series()
        task = b.progress.add_task(f"batched routing, {kind} prompts", total=len(chunks))
        for i, chunk in enumerate(chunks):
            if i == 0:
                b.router.route_batch(chunk, list(K5), pref)  # warm-up batch
            else:
                timed(series, b.router.route_batch, chunk, list(K5), pref)
            b.progress.advance(task)
        out[kind] = series
        if kind == "mixed":
            emb = b.router.embedder.encode(chunks[1])
            tok = np.asarray([estimate_tokens(q) for q in chunks[1]], float)
            policy = Series()
            for i in range(25):
                timed(
                    policy if i >= 5 else Series(),
                    b.router.route_embeddings,
                    emb,
                    tok,
                    list(K5),
                    pref,
                )
            out["policy_only"] = policy
    out["batch_size"] = b.plan.batch
    return out


def _child_env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([*paths, str(ROOT)])
    env["METAROUTER_STORE"] = str(workdir / "child-preferences.db")
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env.pop("METAROUTER_DATA", None)
    return env


def process(b: Bench) -> dict[str, Any]:
    """Fresh processes: import time of ``langchain_metarouter``; one routed call's peak RSS."""
    env = _child_env(b.workdir)
    script = str(HERE / "_one_call.py")
    total = b.plan.import_repeats + b.plan.process_repeats
    task = b.progress.add_task("fresh processes: import, one routed call", total=total)
    imports, calls = [], []
    for i in range(b.plan.import_repeats):
        store = b.workdir / f"import-{i}.db"
        res = subprocess.run(
            [sys.executable, script, str(store), "import"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
            cwd=b.workdir,
        )
        imports.append(json.loads(res.stdout.strip().splitlines()[-1]))
        b.progress.advance(task)
    for i in range(b.plan.process_repeats):
        store = b.workdir / f"call-{i}.db"
        start = time.perf_counter()
        res = subprocess.run(
            [sys.executable, script, str(store)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
            cwd=b.workdir,
        )
        record = json.loads(res.stdout.strip().splitlines()[-1])
        record["process_wall_s"] = time.perf_counter() - start
        calls.append(record)
        b.progress.advance(task)
    return {
        "import_s": [r["import_s"] for r in imports],
        "import_median_s": statistics.median(r["import_s"] for r in imports),
        "torch_after_import": any(r["torch_after_import"] for r in imports),
        "rss_after_import_mb": statistics.median(r["rss_after_import_mb"] for r in imports),
        "one_call": calls,
        "peak_rss_mb_median": statistics.median(r["peak_rss_mb"] for r in calls),
        "peak_rss_mb_max": max(r["peak_rss_mb"] for r in calls),
        "first_call_median_s": statistics.median(r["first_call_s"] for r in calls),
        "construct_median_s": statistics.median(r["construct_s"] for r in calls),
    }


def training(b: Bench) -> dict[str, Any]:
    """The real ``metarouter train`` with the bundled default's settings (fresh caches)."""
    env = _child_env(b.workdir)
    folder = b.workdir / "trained"
    if b.plan.quick:
        cache_note = "the user's embedding cache (--quick)"
    else:  # cold: embedding the training queries is part of the measured time
        env["METAROUTER_CACHE"] = str(b.workdir / "embedding-cache")
        cache_note = "cold (a fresh $METAROUTER_CACHE)"
    exe = Path(sys.executable).with_name("metarouter")
    cmd = [str(exe), "train", "--out", str(folder), "--steps", str(b.plan.train_steps)]
    task = b.progress.add_task(f"meta-training ({b.plan.train_steps} steps)", total=None)
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=b.workdir)
    wall = time.perf_counter() - start
    b.progress.update(task, total=1, completed=1)
    if res.returncode != 0:
        raise RuntimeError(f"metarouter train failed:\n{res.stderr[-2000:]}")
    report = json.loads((folder / "training.json").read_text())
    bundled = json.loads((ROOT / "core/metarouter/weights/default/training.json").read_text())
    return {
        "command": "metarouter train --out <dir> --steps " + str(b.plan.train_steps),
        "steps": b.plan.train_steps,
        "wall_s": wall,
        "training_loop_s": report.get("seconds"),
        "best_step": report.get("best_step"),
        "queries": report.get("queries"),
        "best_validation_regret": report.get("best_validation_regret"),
        "bundled_command": bundled.get("command"),
        "bundled_training_loop_s": bundled.get("seconds"),
        "embedding_cache": cache_note,
    }


def baselines(b: Bench) -> dict[str, Any]:
    """Per-call overhead (embedding + decision) of MetaRouter and the learned baselines."""
    import _baselines as bl
    from metarouter.evaluation.baselines import Context, MetaRouterMethod
    from metarouter.evaluation.feedback import draw_feedback
    from metarouter.pricing import estimate_tokens
    from metarouter.profiles import LinearProfile

    task = b.progress.add_task("baselines: fitting as the harness does", total=None)
    profile = LinearProfile(0.5)
    routers: dict[str, list[Any]] = {}
    fitted: dict[str, Any] = {}
    for kset, makers in (
        ("K5", (bl.avengers_pro, bl.barp, bl.linucb)),
        ("K2", (bl.routellm,)),
    ):
        s = b.settings[kset]
        ctx = Context(s)
        pool = np.arange(len(s.test) // 4)
        fb = draw_feedback(s, profile, 6, pool, rng=np.random.default_rng(1))
        rows = np.arange(len(s.test) // 4, len(s.test))[: b.plan.agreement_rows]
        arms = [b.router.catalog[m] for m in s.models]
        pref = b.router.adapt(fb.comparisons(s), arms=arms)
        meta = MetaRouterMethod({s.train_key: b.router})
        meta.prepare(ctx)

        def meta_route(emb: np.ndarray, q: str, arms: list[Any] = arms, pref: Any = pref) -> Any:
            return b.router.route_embeddings(
                emb[None, :], np.asarray([estimate_tokens(q)], float), arms, pref
            )[0]

        expected = meta.choose(ctx, fb, rows, profile)
        got = [s.models.index(meta_route(s.test_emb[r], s.test.queries[r]).model) for r in rows]
        entries = [
            {
                "name": f"MetaRouter ({kset})",
                "route": meta_route,
                "agreement": float(np.mean(np.asarray(got) == expected)),
                "learned": True,
            }
        ]
        for make in makers:
            qr = make(ctx, fb)
            entries.append(
                {
                    "name": f"{qr.name} ({kset})",
                    "route": lambda emb, q, qr=qr: qr.route(emb),
                    "agreement": bl.agreement(qr, ctx, fb, profile, rows),
                    "learned": True,
                }
            )
        routers[kset] = entries
    b.progress.update(task, total=1, completed=1)

    prompts = b.take("short", b.plan.warmup + b.plan.calls_baselines)
    everyone = [e for entries in routers.values() for e in entries]
    series = {
        e["name"]: {"embedding": Series(), "decision": Series(), "total": Series()}
        for e in everyone
    }
    task = b.progress.add_task("baselines: per-call overhead, short prompts", total=len(prompts))
    for i, q in enumerate(prompts):
        for j in b.rng.permutation(len(everyone)):
            e = everyone[j]
            watch = Stopwatch()
            emb = b.router.embedder.encode_one(q)
            embed = watch.lap()
            e["route"](emb, q)
            decision = watch.lap()
            if i >= b.plan.warmup:
                rec = series[e["name"]]
                rec["embedding"].add(*embed)
                rec["decision"].add(*decision)
                rec["total"].add(*(np.add(embed, decision)))
        b.progress.advance(task)
    for e in everyone:
        fitted[e["name"]] = {"agreement_with_harness": e["agreement"], **series[e["name"]]}
    return fitted


def _timing_router(b: Bench, backend: str) -> tuple[Any, Path | None]:
    """A router for ``backend``: the bundled one if trained for it, else a short training run.

    Routing speed does not depend on how long a router trained (same architecture, same
    work per call), so a router trained for a few steps times the same as a full one.
    """
    from metarouter.config import TrainingConfig
    from metarouter.data import load_dataset
    from metarouter.embeddings import Embedder
    from metarouter.errors import ConfigError
    from metarouter.router import MetaRouter, default_router_dir
    from metarouter.training import train_router

    try:  # a bundled router for these vectors (minilm-onnx: the MiniLM one)
        return MetaRouter.from_pretrained(default_router_dir(backend)), None
    except ConfigError:  # none bundled: train one for timing
        pass
    train = load_dataset("llmrouter").to_matrix().split("train")
    embedder = Embedder(backend, cache=True)
    result = train_router(
        train,
        embedder.encode(list(train.queries)),
        training=TrainingConfig(steps=30, eval_every=30),
        progress=False,
        embedder=embedder.spec,
        description=f"benchmark timing router for {backend} (30 steps)",
    )
    folder = b.workdir / f"router-{backend}"
    result.router.save_pretrained(folder)
    return MetaRouter.from_pretrained(folder), folder


def _cpu_hog() -> subprocess.Popen[bytes]:
    """A child process that keeps one core busy (other work on the machine)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def backends(b: Bench) -> dict[str, Any]:
    """Each embedding backend: per-call overhead, batched throughput, fresh-process start-up.

    ``--backends`` restricts the backends (default: every one); the thread table under load
    (``minilm-torch`` only) is measured when ``minilm-torch`` is among them.
    """
    from metarouter.embeddings import Embedder
    from metarouter.pricing import estimate_tokens
    from metarouter.router import MetaRouter, default_router_dir

    # the same new prompts for every backend (no backend caches them: memory_cache_size=0)
    short = b.take("short", b.plan.warmup + b.plan.backend_calls)
    chunks = [b.take("mixed", b.plan.batch) for _ in range(b.plan.backend_batches + 1)]
    names = list(b.plan.backends)
    out: dict[str, Any] = {
        "backends": names,
        "default_backend": MetaRouter.from_pretrained(default_router_dir()).config.embedder,
    }
    env = _child_env(b.workdir)
    script = str(HERE / "_one_call.py")
    for backend in names:
        task = b.progress.add_task(f"backend {backend}: router", total=None)
        router, folder = _timing_router(b, backend)
        router.embedder = Embedder(backend, memory_cache_size=0)
        router.warm_up()  # the ONNX backends export into the cache here if they must
        b.progress.update(task, total=1, completed=1)
        service = b._service_for(router)
        arms = [service.descriptors[n] for n in K5]
        bundled = f"bundled ({router.config.embedder})"
        entry: dict[str, Any] = {
            "router": bundled if folder is None else "trained 30 steps for timing",
            "dim": router.embedder.dim,
        }
        # per call, short new prompts: lookup + embedding + policy
        series = {k: Series() for k in ("lookup", "embedding", "policy", "routing_total")}
        prompts = short
        task = b.progress.add_task(f"backend {backend}: per call", total=len(prompts))
        for i, q in enumerate(prompts):
            watch = Stopwatch()
            pref = service.preference(USER)
            lookup = watch.lap()
            emb = router.embedder.encode_one(q)
            embed = watch.lap()
            router.route_embeddings(
                emb[None, :], np.asarray([estimate_tokens(q)], float), arms, pref
            )
            policy = watch.lap()
            if i >= b.plan.warmup:
                series["lookup"].add(*lookup)
                series["embedding"].add(*embed)
                series["policy"].add(*policy)
                series["routing_total"].add(*np.add(np.add(lookup, embed), policy))
            b.progress.advance(task)
        entry["per_call"] = series
        # batched: route_batch of 256 bundled prompts as they come (mixed lengths)
        pref = service.preference(USER)
        batch = Series()
        task = b.progress.add_task(f"backend {backend}: batches", total=len(chunks))
        for i, chunk in enumerate(chunks):
            if i == 0:
                router.route_batch(chunk, list(K5), pref)
            else:
                timed(batch, router.route_batch, chunk, list(K5), pref)
            b.progress.advance(task)
        entry["batch"] = batch
        entry["batch_size"] = b.plan.batch
        # fresh processes: import, build MetaRouterChat, first call, peak RSS
        calls = []
        task = b.progress.add_task(
            f"backend {backend}: fresh processes", total=b.plan.backend_processes
        )
        for i in range(b.plan.backend_processes):
            args = [sys.executable, script, str(b.workdir / f"{backend}-{i}.db")]
            args += [str(folder) if folder is not None else "-", backend]
            res = subprocess.run(
                args, capture_output=True, text=True, env=env, check=True, cwd=b.workdir
            )
            calls.append(json.loads(res.stdout.strip().splitlines()[-1]))
            b.progress.advance(task)
        entry["process"] = calls
        out[backend] = entry
    if "minilm-torch" in names:
        out["threads"] = _threads_under_load(b)
    return out


def _threads_under_load(b: Bench) -> dict[str, Any]:
    """minilm-torch short-prompt embedding with 1 thread vs torch's default, idle and loaded."""
    import torch
    from metarouter.embeddings import Embedder, embedding_text

    embedder = Embedder(memory_cache_size=0)
    embedder.warm_up()
    default = max(2, os.cpu_count() or 2)
    counts = [1, default]
    out: dict[str, Any] = {"default_threads": default}
    before = torch.get_num_threads()
    task = b.progress.add_task("threads: 1 vs default, idle and loaded", total=4)
    try:
        for load in ("idle", "one busy core"):
            hog = _cpu_hog() if load != "idle" else None
            try:
                time.sleep(0.5 if hog else 0)
                series = {t: Series() for t in counts}
                for i, q in enumerate(b.take("short", b.plan.warmup + b.plan.thread_calls)):
                    text = embedding_text(q)
                    for t in b.rng.permutation(counts):
                        torch.set_num_threads(int(t))
                        rec = series[int(t)] if i >= b.plan.warmup else Series()
                        timed(rec, embedder.encode, [text], prepare=False)
                    if i == b.plan.warmup:
                        b.progress.advance(task)
                out[load] = {str(t): v for t, v in series.items()}
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
            b.progress.advance(task)
    finally:
        torch.set_num_threads(before)
    return out


# -- driver ---------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, Series):
        return {**value.summary(), "raw": value.raw()}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few calls, 50 training steps")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)}",
    )
    parser.add_argument(
        "--backends",
        default="",
        help="comma-separated embedders the backends section measures (default: all of "
        "metarouter.embedding_backends.EMBEDDERS)",
    )
    parser.add_argument(
        "--compare-to",
        type=Path,
        nargs="*",
        default=[],
        help="results.json of runs of the code before a change: adds a before/after table",
    )
    parser.add_argument(
        "--also-after",
        type=Path,
        nargs="*",
        default=[],
        help="results.json of further runs of the current code, for the before/after medians",
    )
    parser.add_argument(
        "--before-code", default="", help="what the --compare-to runs measured (for the report)"
    )
    parser.add_argument(
        "--after-code", default="", help="what the --also-after runs measured (for the report)"
    )
    parser.add_argument(
        "--carry-over",
        type=Path,
        default=None,
        help="results.json of an earlier run: sections not run now are copied from it, "
        "marked with that run's date and commit",
    )
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        help="re-write the report from a results.json without measuring anything",
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        stored: dict[str, Any] = json.loads(args.render.read_text())
        stored["command"] = "python benchmarks/bench_routing.py" + (
            " --quick" if stored.get("quick") else ""
        )
        paths = write_report(stored, args.out)
        print("wrote", args.out, *paths)
        return 0
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {list(SECTIONS)}")

    from metarouter.embedding_backends import EMBEDDERS
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    plan = Plan(args.quick)
    plan.backends = tuple(n.strip() for n in args.backends.split(",") if n.strip()) or EMBEDDERS
    if set(plan.backends) - set(EMBEDDERS):
        parser.error(f"unknown backends in {args.backends!r}; choose from {list(EMBEDDERS)}")
    command = "python benchmarks/bench_routing.py" + (" --quick" if args.quick else "")
    if args.sections != ",".join(SECTIONS):
        command += f" --sections {shlex.quote(args.sections)}"
    if args.backends:
        command += f" --backends {shlex.quote(args.backends)}"
    if args.out != ROOT / "docs" / "benchmarks.md":
        command += f" --out {shlex.quote(str(args.out))}"
    results: dict[str, Any] = {
        "command": command,
        "quick": args.quick,
        "machine": machine(),
        "load_average_start": load_average(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    start = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="metarouter-bench-") as tmp,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
        ) as progress,
    ):
        bench = Bench(plan, Path(tmp), progress)
        runners = {
            "per_call": per_call,
            "adaptation": adaptation,
            "throughput": throughput,
            "process": process,
            "training": training,
            "baselines": baselines,
            "backends": backends,
        }
        for name in SECTIONS:
            if name in sections:
                results[name] = _jsonable(runners[name](bench))
    if args.carry_over is not None:
        earlier = json.loads(args.carry_over.read_text())
        stamp = f"{earlier.get('started', '?')}, commit {earlier['machine'].get('git_commit', '?')}"
        carried = [n for n in SECTIONS if n not in sections and n in earlier]
        for name in carried:
            results[name] = earlier[name]
        results["carried_over"] = {"sections": carried, "from": stamp}
    results["load_average_end"] = load_average()
    results["seconds"] = round(time.perf_counter() - start, 1)
    results["before_runs"] = [summary_of(json.loads(f.read_text())) for f in args.compare_to]
    results["after_runs"] = [summary_of(json.loads(f.read_text())) for f in args.also_after]
    results["before_code"], results["after_code"] = args.before_code, args.after_code
    json_path, plot_path = write_report(results, args.out)
    print(f"wrote {args.out}, {json_path}, {plot_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
