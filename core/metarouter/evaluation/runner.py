"""``metarouter eval``: train what is needed, run every setting, write results and the report."""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from metarouter.config import TrainingConfig
from metarouter.data import OutcomeMatrix, llmrouter_prices, load_dataset, load_outcomes
from metarouter.embeddings import DEFAULT_EMBEDDER, ROUTER_EMBEDDER, Embedder
from metarouter.errors import ConfigError
from metarouter.evaluation.active import ActiveFeedback
from metarouter.evaluation.baselines import (
    AvengersPro,
    BaRP,
    BestSingleForUser,
    FromScratch,
    KNNRouter,
    LinUCB,
    MetaRouterMethod,
    Method,
    Oracle,
    RandomRouter,
    RouteLLM,
    SingleModel,
)
from metarouter.evaluation.protocol import ALPHA_GRID, N_SWEEP, EvalRun, run_setting
from metarouter.evaluation.settings import (
    DatasetPlan,
    Setting,
    build_settings,
    default_plans,
    plan_for_table,
    split_rows,
)
from metarouter.router import MetaRouter

__all__ = ["EvalConfig", "run_evaluation"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate.

    Attributes:
        datasets: Dataset names (see :func:`default_plans`).
        seeds: Seeds per setting.
        n_values: Comparison counts for the sweep (all settings).
        train_steps: Meta-training steps per trained router.
        max_train: Cap on training queries per split (None: all).
        max_test: Cap on test queries per setting (None: all).
        splits: ``ID`` and/or ``OOD``.
        ksets: ``K2``, ``K5`` (all the pool's models, up to five; reported as ``K3`` or ``K4``
            on a table of that many), ``swap``.
        train_variant: Also run the variant with comparisons drawn from training queries
            (N = 6, K2 and K5).
        ood_tasks: For a user's outcome file in ``datasets``: task families left out of
            training for the OOD split (empty: ID only).
        active: Also run the active track (N = 6): MetaRouter picks its comparisons from the
            adaptation pool (:class:`~metarouter.evaluation.active.ActiveFeedback`), and every
            method is scored on those comparisons too.
        threads: torch intra-op and BLAS threads while scoring the methods (0: leave the
            libraries' settings). Per-user routing works on small arrays, where one thread is
            about 1.5x faster than two on this project's 2-core reference machine, and several
            workers with a BLAS thread per core each oversubscribe the cores (about 3x slower
            with two workers); router training in this process keeps the libraries' settings.
        workers: Processes that train routers and score settings side by side (1: all in
            this process). Each worker uses one torch and one BLAS thread; results do not
            depend on the number of workers (every setting's draws come from its own seeds).
        embedder: The embedding backend (queries, trained routers and the baselines' vectors);
            trained routers are cached per backend.
    """

    datasets: tuple[str, ...] = ("routerbench", "llmrouter")
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    n_values: tuple[int, ...] = N_SWEEP
    train_steps: int = 1500
    max_train: int | None = None
    max_test: int | None = None
    splits: tuple[str, ...] = ("ID", "OOD")
    ksets: tuple[str, ...] = ("K2", "K5", "swap")
    train_variant: bool = True
    ood_tasks: tuple[str, ...] = ()
    threads: int = 1
    active: bool = True
    workers: int = 1
    embedder: str = ROUTER_EMBEDDER

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"EvalConfig.workers must be >= 1, got {self.workers}.")

    @classmethod
    def quick(cls) -> EvalConfig:
        """A CI-sized run: bundled LLMRouter data, ID, two seeds, short training."""
        return cls(
            datasets=("llmrouter",),
            seeds=(0, 1),
            n_values=(0, 6),
            train_steps=150,
            max_train=1200,
            max_test=240,
            splits=("ID",),
            ksets=("K2", "K5", "swap"),
            train_variant=False,
        )


def _methods(routers: dict[str, MetaRouter]) -> list[Method]:
    return [
        Oracle(),
        BestSingleForUser(),
        RandomRouter(),
        MetaRouterMethod(routers),
        MetaRouterMethod(routers, readout="encoder"),
        MetaRouterMethod(routers, readout="true alpha"),
        KNNRouter(true_alpha=False),
        KNNRouter(true_alpha=True),
        AvengersPro(alpha=None),
        AvengersPro(alpha=0.5),
        BaRP(true_alpha=False),
        BaRP(true_alpha=True),
        RouteLLM(),
        LinUCB(),
        FromScratch(),
    ]


def _router_folder(out: Path, s: Setting) -> Path:
    return out / "routers" / s.train_key.replace("/", "-")


def _embedder_stamp(name: str) -> str:
    spec = Embedder(name).spec
    return f"{spec.name}:{spec.dim}:{spec.fingerprint}"


def _stamp(s: Setting, cfg: EvalConfig) -> dict[str, Any]:
    return {
        "queries": len(s.train),
        "models": list(s.train.models),
        "tau": s.tau,
        "steps": cfg.train_steps,
        "format": 3,  # routers of earlier training code retrain
        "embedder": _embedder_stamp(cfg.embedder),
    }


def _is_trained(folder: Path, stamp: dict[str, Any]) -> bool:
    stamp_file = folder / "eval_stamp.json"
    if not stamp_file.is_file():
        return False
    stored = json.loads(stamp_file.read_text())
    if isinstance(stored, dict) and "embedder" not in stored:
        # stamps written before embedder backends existed: routers of minilm-torch
        stored["embedder"] = _embedder_stamp(DEFAULT_EMBEDDER)
    return bool(stored == stamp)


def _train_one(s: Setting, cfg: EvalConfig, folder: Path, progress: bool, threads: int) -> float:
    """Train the router of one setting's training split and save it with its stamp."""
    from metarouter.report import write_training_report
    from metarouter.training import cpu_threads, train_router

    prices = llmrouter_prices() if s.dataset == "llmrouter" else None
    with cpu_threads(threads):
        result = train_router(
            s.train,
            s.train_emb,
            tau=s.tau,
            prices=prices,
            training=TrainingConfig(steps=cfg.train_steps),
            progress=progress,
            description=f"metarouter eval: {s.train_key}",
            embedder=Embedder(cfg.embedder).spec,
        )
    result.router.save_pretrained(folder)
    write_training_report(result, folder)
    (folder / "eval_stamp.json").write_text(json.dumps(_stamp(s, cfg)))
    return round(result.seconds, 1)


def _train_routers(
    settings: list[Setting], cfg: EvalConfig, out: Path, progress: bool
) -> tuple[dict[str, MetaRouter], dict[str, Any]]:
    """Train (or reuse, by stamp) one router per training split; ``cfg.workers`` at a time."""
    todo: dict[str, Setting] = {}
    for s in settings:
        if s.train_key not in todo:
            todo[s.train_key] = s
    info: dict[str, Any] = {}
    missing = []
    for key, s in todo.items():
        folder = _router_folder(out, s)
        if _is_trained(folder, _stamp(s, cfg)):
            logger.info("reusing trained router %s", folder)
            info[key] = json.loads((folder / "training.json").read_text())["seconds"]
        else:
            missing.append(s)
    if cfg.workers > 1 and len(missing) > 1:
        with _pool(min(cfg.workers, len(missing))) as pool:
            futures = {
                pool.submit(_train_one, s, cfg, _router_folder(out, s), False, 1): s
                for s in missing
            }
            for fut in _progress(as_completed(futures), len(futures), "training routers", progress):
                info[futures[fut].train_key] = fut.result()
    else:
        for s in missing:
            info[s.train_key] = _train_one(s, cfg, _router_folder(out, s), progress, 0)
    routers = {key: MetaRouter.from_pretrained(_router_folder(out, s)) for key, s in todo.items()}
    return routers, info


def _pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes, started fresh (``spawn``: no inherited torch thread pools)."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def _progress(items: Any, total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc=desc, disable=not enabled)


def _score_setting(
    s: Setting, routers: dict[str, MetaRouter], cfg: EvalConfig, progress: bool
) -> tuple[EvalRun, dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]:
    """Every method on one setting: standard track, training-comparisons variant, active track."""
    from metarouter.training import cpu_threads

    with cpu_threads(cfg.threads):
        methods = _methods(routers) + [SingleModel(k, m) for k, m in enumerate(s.models)]
        run = run_setting(s, methods, seeds=cfg.seeds, n_values=cfg.n_values, progress=progress)
        variant_entry = None
        if cfg.train_variant and s.kset in ("K2", "K5"):
            variant = run_setting(
                s,
                _methods(routers),
                seeds=cfg.seeds,
                n_values=(6,),
                source="train",
                progress=progress,
            )
            variant_entry = _setting_entry(s, variant)
        active_entry = None
        if cfg.active:
            active = run_setting(
                s,
                methods,
                seeds=cfg.seeds,
                n_values=(6,),
                progress=progress,
                feedback=ActiveFeedback(routers),
            )
            active_entry = _setting_entry(s, active)
    return run, _setting_entry(s, run), variant_entry, active_entry


def _score_in_worker(
    s: Setting, folder: Path, cfg: EvalConfig
) -> tuple[EvalRun, dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]:
    """:func:`_score_setting` in a worker process, with the router loaded from its folder."""
    return _score_setting(s, {s.train_key: MetaRouter.from_pretrained(folder)}, cfg, False)


def _dataset(
    name: str,
    data: str | Path | None,
    plans: dict[str, DatasetPlan],
    ood_tasks: tuple[str, ...],
) -> tuple[OutcomeMatrix, DatasetPlan]:
    """A shared dataset by name (with its plan), or a user's outcome file (plan derived)."""
    if name in plans:
        return load_dataset(name, data).to_matrix(), plans[name]
    path = Path(name)
    if path.is_file():
        matrix = load_outcomes(path).to_matrix()
        return matrix, plan_for_table(matrix, path.stem, ood_tasks=ood_tasks)
    raise ConfigError(
        f"unknown dataset {name!r}: give one of {sorted(plans)} or the path of an outcome file "
        "(Parquet, CSV or JSONL; see docs/data.md)."
    )


def _versions() -> dict[str, str]:
    out = {}
    for name in ("metarouter", "torch", "sentence-transformers", "numpy", "scikit-learn"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def run_evaluation(
    cfg: EvalConfig,
    out: str | Path,
    *,
    data: str | Path | None = None,
    progress: bool = True,
    plans: dict[str, DatasetPlan] | None = None,
) -> dict[str, Any]:
    """Run the evaluation and write ``results.json`` (and return it).

    Args:
        cfg: What to run.
        out: Output folder (trained routers are cached in ``out/routers``).
        data: Folder of the datasets (``llmrouter`` falls back to the bundled copy).
        progress: Progress bars.
        plans: Dataset plans (default :func:`default_plans`).
    """
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plans = plans or default_plans()
    embedder = Embedder(cfg.embedder, cache=True)
    settings: list[Setting] = []
    for name in cfg.datasets:
        matrix, plan = _dataset(name, data, plans, cfg.ood_tasks)
        needed = np.unique(
            np.concatenate(
                [
                    np.concatenate(
                        split_rows(
                            matrix,
                            plan,
                            split,
                            max_train=cfg.max_train,
                            max_test=cfg.max_test,
                        )
                    )
                    for split in cfg.splits
                ]
            )
        )
        emb = np.zeros((len(matrix), embedder.dim), np.float32)
        emb[needed] = embedder.encode(list(matrix.queries[needed]), progress=progress)
        settings += build_settings(
            matrix,
            emb,
            plan,
            splits=cfg.splits,
            ksets=cfg.ksets,
            max_train=cfg.max_train,
            max_test=cfg.max_test,
        )
    routers, train_seconds = _train_routers(settings, cfg, out, progress)
    scoring_start = time.perf_counter()
    results: dict[str, Any] = {"settings": {}, "variant_train_comparisons": {}, "active": {}}
    scored: dict[str, tuple[EvalRun, dict[str, Any], Any, Any]] = {}
    if cfg.workers > 1 and len(settings) > 1:
        # largest first, so the last setting to finish is a small one
        order = sorted(settings, key=lambda s: -len(s.test) * len(s.models))
        with _pool(min(cfg.workers, len(settings))) as pool:
            futures = {
                pool.submit(_score_in_worker, s, _router_folder(out, s), cfg): s for s in order
            }
            for fut in _progress(as_completed(futures), len(futures), "scoring settings", progress):
                scored[futures[fut].name] = fut.result()
    else:
        for s in settings:
            scored[s.name] = _score_setting(s, routers, cfg, progress)
    runs: list[EvalRun] = []
    for s in settings:  # the report lists settings in their own order, whoever finished first
        run, entry, variant_entry, active_entry = scored[s.name]
        runs.append(run)
        results["settings"][s.name] = entry
        if variant_entry is not None:
            results["variant_train_comparisons"][s.name] = variant_entry
        if active_entry is not None:
            results["active"][s.name] = active_entry
    scoring_seconds = time.perf_counter() - scoring_start
    results["config"] = {
        "datasets": list(cfg.datasets),
        "seeds": list(cfg.seeds),
        "n_values": list(cfg.n_values),
        "alpha_grid": list(ALPHA_GRID),
        "bt_temperature": 0.05,
        "label_flips": 0.0,
        "adaptation_pool_share": 0.25,
        "active_track": cfg.active,
        "train_steps": cfg.train_steps,
        "max_train": cfg.max_train,
        "max_test": cfg.max_test,
        "router_training_seconds": train_seconds,
        "scoring_seconds": round(scoring_seconds, 1),
        "scoring_threads": cfg.threads,
        "embedder": embedder.spec.name,
        "embedder_fingerprint": embedder.spec.fingerprint,
        "workers": cfg.workers,
        "versions": _versions(),
        "normalisation": "cost scaled by [cheapest, dearest] single-model mean cost on the "
        "setting's test queries, quality by [0, 1], reference point (1, 0); "
        "points clipped to the unit box",
    }
    results["seconds"] = round(time.perf_counter() - start, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=_json) + "\n")
    from metarouter.evaluation.report import write_plots

    write_plots(runs, results, out)
    return results


def _setting_entry(s: Setting, run: EvalRun) -> dict[str, Any]:
    return {
        "dataset": s.dataset,
        "split": s.split,
        "kset": s.kset,
        "models": list(s.models),
        "held_out_model": s.held_out,
        "tau_usd": s.tau,
        "cost_bounds_usd": list(s.cost_bounds),
        "n_train_queries": len(s.train),
        "n_test_queries": len(s.test),
        "metrics": run.summary(),
        "fronts_n6": {
            m: run.front(m, 6).tolist()
            for m in run.methods
            if 6 in run.n_values and run.points[m][6]
        },
    }


def _json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)
