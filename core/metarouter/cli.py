"""The ``metarouter`` command line (Typer).

Subcommands: data, train, demo, eval, embedder, store, budget.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from metarouter.embedding_backends import ROUTER_EMBEDDER
from metarouter.errors import MetaRouterError
from metarouter.validation import excerpt

if TYPE_CHECKING:
    from metarouter.config import MetaRouterConfig, TrainingConfig
    from metarouter.store import SQLStore

app = typer.Typer(
    name="metarouter",
    help="Route LLM calls to the model that fits each user's cost-vs-quality taste.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect routing datasets and outcome logs.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()

EmbedderOption = Annotated[
    str,
    typer.Option(
        "--embedder",
        help="Embedding backend the router is trained for: static (the default: a table "
        "distilled from all-MiniLM-L6-v2, routes without torch in under a millisecond), "
        "minilm-torch (the model itself on torch), minilm-onnx (the model on onnxruntime, the "
        "same vectors as minilm-torch) or minilm-onnx-int8 (its int8 weights); the onnx ones "
        "need pip install metarouter[onnx]. See docs/benchmarks.md.",
    ),
]

DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Folder holding the datasets (e.g. ../shared/data) or one outcome file "
        "(.parquet/.csv/.jsonl). Default: $METAROUTER_DATA, then the bundled LLMRouter data.",
    ),
]


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
    )


@data_app.command("summary")
def data_summary(
    data: DataOption = None,
    skip_nan_quality: Annotated[
        bool, typer.Option(help="Drop NaN-quality rows of an outcome file (logged).")
    ] = False,
) -> None:
    """Print rows, mean quality and mean cost per dataset and model."""
    from tqdm.auto import tqdm

    from metarouter.data import DATASETS, find_data_dir, load_dataset, load_outcomes

    root = find_data_dir(data)
    if root is not None and root.is_file():
        tables = [load_outcomes(root, skip_nan_quality=skip_nan_quality)]
    else:
        names = [
            n
            for n, info in DATASETS.items()
            if n == "llmrouter" or (root is not None and (root / info.folder).is_dir())
        ]
        if root is not None and not any((root / i.folder).is_dir() for i in DATASETS.values()):
            from metarouter.errors import ConfigError

            raise ConfigError(
                f"{root} holds none of the datasets (expected folders "
                f"{sorted(i.folder for i in DATASETS.values())}). Fix: point --data at the "
                "folder that holds them (e.g. ../shared/data) or at one outcome file; leave "
                "--data out (and METAROUTER_DATA unset) for the bundled LLMRouter data."
            )
        tables = [load_dataset(n, root) for n in tqdm(names, desc="loading datasets", leave=False)]
    for table in tables:
        matrix = table.to_matrix()
        per_model = table.summary()
        best_single = float(matrix.quality.mean(axis=0).max())
        title = (
            f"{table.name}: {table.n_queries:,} queries x {len(table.models)} models "
            f"({table.source})"
        )
        grid = Table(title=title, title_justify="left")
        grid.add_column("model")
        grid.add_column("rows", justify="right")
        grid.add_column("mean quality", justify="right")
        grid.add_column("mean cost (USD)", justify="right")
        for model, row in per_model.iterrows():
            cost = f"{row['mean_cost_usd']:.6f}" + (" (est.)" if row["cost_is_estimate"] else "")
            grid.add_row(str(model), f"{int(row['rows']):,}", f"{row['mean_quality']:.3f}", cost)
        console.print(grid)
        splits = table.frame.drop_duplicates("query_id")["split"].value_counts().to_dict()
        console.print(
            f"splits {splits}; tasks {len(table.tasks)}; over {len(matrix):,} queries with all "
            f"models: oracle quality {matrix.quality.max(axis=1).mean():.3f}, best single model "
            f"{best_single:.3f}\n"
        )


@app.command("train")
def train(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the trained router to.")],
    data: DataOption = None,
    dataset: Annotated[
        str,
        typer.Option(
            help="Dataset name (llmrouter, routerbench, routerdc) when --data is a folder."
        ),
    ] = "llmrouter",
    splits: Annotated[
        list[str] | None, typer.Option("--split", help="Training split(s) (repeatable).")
    ] = None,
    exclude_tasks: Annotated[
        list[str] | None, typer.Option("--exclude-task", help="Task families to leave out.")
    ] = None,
    models: Annotated[
        list[str] | None, typer.Option("--model", help="Arms to train on (default: all).")
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(help="Maximum optimisation steps (default 1500; 300 for fine-tuning)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    feedback: Annotated[str, typer.Option(help="bandit (default) or full (ablation).")] = "bandit",
    skip_nan_quality: Annotated[bool, typer.Option(help="Drop NaN-quality rows.")] = False,
    from_feedback: Annotated[
        Path | None,
        typer.Option(
            "--from-feedback",
            help="Fine-tune on live feedback instead: a file from `metarouter store export`.",
        ),
    ] = None,
    init: Annotated[
        Path | None,
        typer.Option(
            "--init", help="With --from-feedback: router to start from (default: bundled)."
        ),
    ] = None,
    embedder: EmbedderOption = ROUTER_EMBEDDER,
) -> None:
    """Meta-train a router on an outcome log and write it with a training report.

    With --from-feedback FILE (written by `metarouter store export`), fine-tune an existing
    router (--init, default the bundled one) on the users' recorded comparisons instead
    (--steps default 300 then).
    """
    if from_feedback is not None:
        _finetune(from_feedback, out, init, steps=steps or 300, learning_rate=3e-4, seed=seed)
        return
    steps = steps or 1500
    import shlex
    import sys

    from metarouter.config import TrainingConfig
    from metarouter.data import (
        DATASETS,
        find_data_dir,
        llmrouter_prices,
        load_dataset,
        load_outcomes,
    )
    from metarouter.embeddings import Embedder
    from metarouter.report import write_training_report
    from metarouter.training import train_router

    root = find_data_dir(data)
    if root is not None and root.is_file():
        table = load_outcomes(root, skip_nan_quality=skip_nan_quality)
    else:
        if dataset not in DATASETS:
            raise typer.BadParameter(f"unknown dataset {dataset!r}; known: {sorted(DATASETS)}")
        table = load_dataset(dataset, root)
    table = table.filter(splits=splits or ["train"], exclude_tasks=exclude_tasks, models=models)
    matrix = table.to_matrix()
    training = TrainingConfig(steps=steps, seed=seed, feedback=feedback)
    _check_training_size(len(matrix), list(matrix.models), table.source, training)
    console.print(
        f"training on {table.name}: {len(matrix):,} queries x {len(matrix.models)} models"
    )
    encoder = Embedder(embedder, cache=True)
    embeddings = encoder.encode(list(matrix.queries), progress=True)
    command = "metarouter " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    prices = llmrouter_prices() if table.name == "llmrouter" else None
    result = train_router(
        matrix,
        embeddings,
        training=training,
        prices=prices,
        description=f"{table.name} {sorted(set(matrix.splits))}; {command}",
        embedder=encoder.spec,
    )
    result.router.save_pretrained(out)
    paths = write_training_report(
        result,
        out,
        extra={
            "command": command,
            "dataset": table.name,
            "queries": len(matrix),
            "models": list(matrix.models),
            "seed": seed,
            "steps": steps,
            "embedder": encoder.spec.name,
        },
    )
    best = min(result.history["val_regret"])
    console.print(
        f"saved to {out} in {result.seconds:.0f}s; best validation regret {best:.4f} "
        f"at step {result.best_step}; report {paths['plot']}"
    )
    if result.adaptation is not None:
        fam, nov = result.adaptation.familiar, result.adaptation.novel
        console.print(
            f"adaptation prior (from {result.adaptation.groups} task groups): familiar traffic "
            f"shift/arm sd {fam['shared_sd']:.2f}/{fam['arm_sd']:.2f}, novel traffic "
            f"{nov['shared_sd']:.2f}/{nov['arm_sd']:.2f}, outcome coupling "
            f"{result.adaptation.coupling:.2f}, binary share {result.adaptation.binary_share:.2f}"
        )


#: Queries ``train_router`` holds out for early stopping, at least.
_MIN_VALIDATION_QUERIES = 16


def minimum_training_queries(
    training: TrainingConfig, model: MetaRouterConfig | None = None
) -> int:
    """Fewest queries (each answered by every model) ``metarouter train`` can learn from.

    ``train_router`` holds out ``max(validation_share x n, 16)`` queries for early stopping
    and places ``n_prototypes`` prototypes (k-means) on the rest, so it needs at least that
    many left.
    """
    from metarouter.config import MetaRouterConfig

    prototypes = (model or MetaRouterConfig()).n_prototypes
    n = prototypes + _MIN_VALIDATION_QUERIES
    while n - max(round(training.validation_share * n), _MIN_VALIDATION_QUERIES) < prototypes:
        n += 1
    return n


def _check_training_size(
    n_queries: int, models: list[str], source: str, training: TrainingConfig
) -> None:
    from metarouter.errors import DataError

    needed = minimum_training_queries(training)
    if n_queries < needed:
        raise DataError(
            f"{source}: {n_queries} queries have an outcome for every model {models} in the "
            f"training split(s); training needs at least {needed} (the query-space prototypes "
            "plus the queries held out for early stopping). Fix: add queries, each answered by "
            "every model, or fine-tune the bundled router on your users' recorded feedback "
            "instead (`metarouter store finetune`)."
        )


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for demo.png.")] = Path(
        "metarouter-demo"
    ),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    random_pairs: Annotated[
        bool, typer.Option(help="Compare random pairs instead of the ones the router asks for.")
    ] = False,
) -> None:
    """Three simulated users teach the bundled router their taste with six comparisons each."""
    from metarouter.demo import run_demo

    console.print(
        "[bold]MetaRouter demo[/]: the bundled router (trained on LLMRouter data) "
        "meets three users with hidden cost-vs-quality tastes.\n"
    )
    result = run_demo(out=out, seed=seed, active=not random_pairs)
    for user in result.users:
        console.rule(f"user '{user.name}' (hidden weight on quality: {user.alpha})")
        shown = Table(title="their six comparisons (the winner was worth it)", title_justify="left")
        shown.add_column("query")
        shown.add_column("winner (cost)")
        shown.add_column("loser (cost)")
        for query, win, lose, cw, cl in user.comparisons:
            snippet = " ".join(query.split())[:60] + ("..." if len(query) > 60 else "")
            shown.add_row(snippet, f"{win} (${cw:.6f})", f"{lose} (${cl:.6f})")
        console.print(shown)
        pref = user.preference
        console.print(
            f"inferred weight on quality: [bold]{pref.quality_weight:.2f}[/] "
            f"(hidden: {user.alpha}); traffic: "
            + ", ".join(f"{m} {s:.0%}" for m, s in user.traffic.items() if s > 0)
        )
        grid = Table(
            title=f"routing {result.n_scored} held-out queries for this user", title_justify="left"
        )
        for col in ("policy", "mean cost (USD)", "mean quality", "user's utility"):
            grid.add_column(col, justify="left" if col == "policy" else "right")
        rows = [("MetaRouter", user.metarouter), *user.baselines.items()]
        for label, o in rows:
            style = "bold" if label == "MetaRouter" else None
            grid.add_row(
                label, f"{o.cost:.6f}", f"{o.quality:.3f}", f"{o.utility:.3f}", style=style
            )
        console.print(grid)
    console.print(f"\nplot: {result.plot}")


@app.command("eval")
def evaluate(
    out: Annotated[Path, typer.Option("--out", help="Folder for results.json, plots, routers.")],
    data: DataOption = None,
    quick: Annotated[
        bool, typer.Option(help="CI-sized run on the bundled data (< 3 min).")
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(help="Also write the Markdown report here (e.g. docs/results.md)."),
    ] = None,
    dataset: Annotated[
        list[str] | None, typer.Option("--dataset", help="Datasets (repeatable).")
    ] = None,
    seeds: Annotated[int, typer.Option(help="Number of seeds.")] = 5,
    steps: Annotated[int, typer.Option(help="Meta-training steps per router.")] = 1500,
    workers: Annotated[
        int,
        typer.Option(
            help="Processes that train routers and score settings side by side "
            "(0: one per CPU core, at most 4). Results do not depend on it."
        ),
    ] = 0,
    ood_task: Annotated[
        list[str] | None,
        typer.Option(
            "--ood-task",
            help="With --data FILE: task families left out of training for the OOD split.",
        ),
    ] = None,
    embedder: EmbedderOption = ROUTER_EMBEDDER,
    active: Annotated[
        bool,
        typer.Option(
            help="Also run the active track (MetaRouter picks its comparisons; about a third "
            "of the scoring time)."
        ),
    ] = True,
    train_variant: Annotated[
        bool,
        typer.Option(help="Also score the variant with comparisons drawn from training queries."),
    ] = True,
) -> None:
    """Evaluate MetaRouter against the baselines (docs/method.md protocol).

    --data is the folder of the shared datasets, or one outcome file of your own (Parquet,
    CSV or JSONL, docs/data.md) with train and test splits: candidates, the held-out model of
    the swap test and tau are then chosen from it (see metarouter.evaluation.plan_for_table).
    """
    import dataclasses
    import shlex
    import sys

    from metarouter.evaluation.report import write_markdown
    from metarouter.evaluation.runner import EvalConfig, run_evaluation

    cfg = EvalConfig.quick() if quick else EvalConfig(seeds=tuple(range(seeds)), train_steps=steps)
    if dataset:
        cfg = dataclasses.replace(cfg, datasets=tuple(dataset))
    # --no-active / --no-train-variant switch a track off; neither switches one on (--quick)
    cfg = dataclasses.replace(
        cfg,
        embedder=embedder,
        active=cfg.active and active,
        train_variant=cfg.train_variant and train_variant,
    )
    if workers < 0:
        raise typer.BadParameter("--workers must be >= 0 (0: one per CPU core, at most 4).")
    cfg = dataclasses.replace(cfg, workers=workers or min(4, os.cpu_count() or 1))
    if data is not None and Path(data).is_file():  # a user's own outcome table
        cfg = dataclasses.replace(
            cfg, datasets=(str(data),), ood_tasks=tuple(ood_task or ()), splits=("ID", "OOD")
        )
        data = None
    results = run_evaluation(cfg, out, data=data)
    command = "metarouter " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    md = write_markdown(results, out / "report.md", plots_dir=out, command=command)
    if report is not None:
        assets = _report_assets(out, report)
        write_markdown(results, report, plots_dir=assets, command=command)
        md = report
    console.print(f"evaluation finished in {results['seconds'] / 60:.1f} min; report {md}")


# -- embedders ----------------------------------------------------------------------------------
embedder_app = typer.Typer(
    help="Embedding backends: export all-MiniLM-L6-v2 to ONNX for the minilm-onnx embedders.",
    no_args_is_help=True,
)
app.add_typer(embedder_app, name="embedder")


@embedder_app.command("export-onnx")
def embedder_export_onnx(
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Export folder (use it with Embedder('minilm-onnx', model_path=DIR)). Default: "
            "the cache the minilm-onnx embedders read ($METAROUTER_CACHE/onnx/...).",
        ),
    ] = None,
    fp32_only: Annotated[
        bool, typer.Option("--fp32-only", help="Skip the int8 quantized graph.")
    ] = False,
) -> None:
    """Export the packaged all-MiniLM-L6-v2 to ONNX (fp32 and int8), offline.

    The minilm-onnx embedders also export on first use when the files are missing; run this
    ahead of time (needs torch and metarouter[onnx]) so that no process has to.
    """
    from metarouter.onnx_export import export_onnx

    variants = ("fp32",) if fp32_only else ("fp32", "int8")
    folder = export_onnx(directory, variants=variants)
    console.print(f"exported all-MiniLM-L6-v2 to ONNX ({', '.join(variants)}) in {folder}")


# -- the preference store ---------------------------------------------------------------------
store_app = typer.Typer(
    help="The preference store: row counts, export or delete a user's data, fine-tune a router "
    "on the recorded feedback (docs/store.md).",
    no_args_is_help=True,
)
app.add_typer(store_app, name="store")

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="SQLite file or database URL (postgresql+psycopg://user@host/db). Default: "
        "$METAROUTER_STORE, then ~/.local/share/metarouter/preferences.db.",
    ),
]


def _store_location(target: str | None) -> str:
    """``target`` or the default store; a SQLite file that does not exist is an error."""
    from metarouter.errors import ConfigError
    from metarouter.service import default_store_path

    location = target or str(default_store_path())
    if "://" not in location and not Path(location).expanduser().is_file():
        raise ConfigError(
            f"no preference store at {location}. Fix: pass --store with the SQLite file or the "
            "database URL your application uses (or set METAROUTER_STORE)."
        )
    return location


ForceOption = Annotated[
    bool, typer.Option("--force", help="Replace OUT if it exists (never the store itself).")
]


def _open_store(target: str | None, *, read_only: bool = False) -> SQLStore:
    """The existing store (never created; read-only opens refuse anything but a store)."""
    from metarouter.store import SQLStore

    return SQLStore(_store_location(target), read_only=read_only, create=False)


@store_app.command("stats")
def store_stats(
    store: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Print the backend, schema version and row counts (opens the store read-only)."""
    import json

    with _open_store(store, read_only=True) as opened:
        stats = opened.stats()
    if as_json:
        typer.echo(json.dumps(stats))
        return
    grid = Table(title=f"preference store {stats.pop('url')}", title_justify="left")
    grid.add_column("")
    grid.add_column("value", justify="right")
    for key, value in stats.items():
        grid.add_row(key.replace("_", " "), f"{value:,}" if isinstance(value, int) else str(value))
    console.print(grid)


@store_app.command("export")
def store_export(
    out: Annotated[Path, typer.Option("--out", help="JSONL file to write (a new file).")],
    store: StoreOption = None,
    user: Annotated[
        str | None,
        typer.Option("--user", help="Export everything about this user (a data-access request)."),
    ] = None,
    include_metadata: Annotated[
        bool,
        typer.Option(help="Dataset export: also write decisions' run ids and free-form metadata."),
    ] = False,
    force: ForceOption = False,
) -> None:
    """Export the feedback dataset (all decisions and comparisons), or one user's data.

    Opens the store read-only. OUT must be a new file (or --force), never the store itself.
    """
    from metarouter.store.maintenance import check_output_path

    with _open_store(store, read_only=True) as opened:
        out = check_output_path(out, opened.files(), force=force)
        if user is not None:
            rows = opened.export_user_jsonl(user, out)
            console.print(f"wrote {rows:,} rows about user {excerpt(user)} to {out}")
            return
        counts = opened.export_comparisons(out, include_metadata=include_metadata)
    if counts.get("unreadable"):
        Console(stderr=True).print(
            f"[yellow]warning:[/] {counts['unreadable']:,} stored rows could not be read and "
            "were left out (see the log above)."
        )
    console.print(
        f"wrote {counts['decisions']:,} decisions and {counts['comparisons']:,} comparisons to "
        f"{out}; fine-tune on it with `metarouter store finetune --feedback {out} --out DIR`"
    )


@store_app.command("import")
def store_import(
    source: Annotated[
        Path, typer.Argument(help="A file written by `metarouter store export` (either kind).")
    ],
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="SQLite file (created if missing) or database URL to import into. Default: "
            "$METAROUTER_STORE, then ~/.local/share/metarouter/preferences.db.",
        ),
    ] = None,
) -> None:
    """Rebuild a store from an export: add its decisions and comparisons (all or nothing).

    Rows already in the store are skipped, so importing a file twice changes nothing.
    """
    from metarouter.service import default_store_path
    from metarouter.store import SQLStore
    from metarouter.store.export import load_export_records

    records = load_export_records(source)
    location = store or str(default_store_path())
    # a new file or a database URL may get the tables; an existing file must be a store
    create = "://" in location or not Path(location).expanduser().exists()
    with SQLStore(location, create=create) as opened:
        counts = opened.import_records(records)
    console.print(
        f"imported {counts['decisions']:,} decisions and {counts['comparisons']:,} comparisons "
        f"from {source} into {location} ({counts['skipped']:,} already there)"
    )


@store_app.command("backup")
def store_backup(
    out: Annotated[Path, typer.Argument(help="The backup file to write (a new file).")],
    store: StoreOption = None,
    force: ForceOption = False,
) -> None:
    """Copy a live SQLite store, commits still in its write-ahead log included.

    A plain `cp prefs.db` misses those commits; this uses SQLite's online backup API while the
    application keeps running. For PostgreSQL it prints the pg_dump command to use instead.
    """
    with _open_store(store, read_only=True) as opened:
        size = opened.backup(out, force=force)
    console.print(f"backed {opened.url} up to {out} ({size:,} bytes); open it as a store as is")


@store_app.command("prune")
def store_prune(
    store: StoreOption = None,
    older_than_days: Annotated[
        float | None,
        typer.Option("--older-than-days", help="Delete routing decisions older than this."),
    ] = None,
    keep_last: Annotated[
        int | None,
        typer.Option("--keep-last", help="Keep only each user's newest N routing decisions."),
    ] = None,
    vacuum: Annotated[
        bool, typer.Option("--vacuum", help="Then give the freed space back to the disk.")
    ] = False,
) -> None:
    """Delete old routing decisions; comparisons (and the decisions they cite) are kept."""
    from metarouter.errors import ConfigError
    from metarouter.store.maintenance import Retention

    if older_than_days is None and keep_last is None:
        raise ConfigError(
            "say what to keep: --older-than-days DAYS (delete older decisions) and/or "
            "--keep-last N (keep each user's newest N)."
        )
    retention = Retention(max_age_days=older_than_days, max_decisions_per_user=keep_last)
    with _open_store(store) as opened:
        before = opened.stats()["decisions"]
        deleted = opened.prune(retention)
        if vacuum:
            opened.vacuum()
    console.print(f"deleted {deleted:,} of {before:,} routing decisions")


@store_app.command("delete")
def store_delete(
    user: Annotated[str, typer.Option("--user", help="The user whose data to delete.")],
    store: StoreOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete everything stored about one user (right to be forgotten), in one transaction."""
    from metarouter.store import validate_user_id

    validate_user_id(user)
    opened = _open_store(store)
    with opened:
        if not yes:
            typer.confirm(
                f"delete every row about user {excerpt(user)} from {opened.url}?", abort=True
            )
        deleted = opened.delete_user(user)
    console.print(f"deleted {deleted:,} rows about user {excerpt(user)}")


@store_app.command("finetune")
def store_finetune(
    feedback: Annotated[
        Path, typer.Option("--feedback", help="A dataset written by `metarouter store export`.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the fine-tuned router to.")],
    init: Annotated[
        Path | None,
        typer.Option("--init", help="Router folder to start from (default: the bundled router)."),
    ] = None,
    steps: Annotated[int, typer.Option(help="Maximum optimisation steps.")] = 300,
    learning_rate: Annotated[float, typer.Option(help="Adam learning rate.")] = 3e-4,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Fine-tune a router on the users' recorded comparisons and save it (closing the loop).

    The same as ``metarouter train --from-feedback FILE``.
    """
    _finetune(feedback, out, init, steps=steps, learning_rate=learning_rate, seed=seed)


def _finetune(
    feedback: Path,
    out: Path,
    init: Path | None,
    *,
    steps: int,
    learning_rate: float,
    seed: int,
) -> None:
    """Fine-tune ``init`` (default: the bundled router) on exported feedback; save to ``out``."""
    import json
    import shlex
    import sys

    from metarouter.router import MetaRouter
    from metarouter.store import load_feedback
    from metarouter.training import finetune_on_comparisons

    by_user = load_feedback(feedback)
    router = MetaRouter.default() if init is None else MetaRouter.from_pretrained(init)
    n = sum(len(v) for v in by_user.values())
    console.print(f"fine-tuning on {n:,} comparisons of {len(by_user):,} users from {feedback}")
    command = "metarouter " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    result = finetune_on_comparisons(
        router,
        by_user,
        steps=steps,
        learning_rate=learning_rate,
        seed=seed,
        progress=True,
        description=f"{feedback.name}; {command}",
    )
    result.router.save_pretrained(out)
    losses = result.history["val_loss"]
    report = {
        "command": command,
        "feedback": str(feedback),
        "init": str(init) if init is not None else "bundled default",
        "users": len(by_user),
        "comparisons": n,
        "steps": steps,
        "seed": seed,
        "best_step": result.best_step,
        "seconds": round(result.seconds, 1),
        "history": result.history,
    }
    (out / "finetuning.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    console.print(
        f"saved to {out} in {result.seconds:.0f}s; held-out users' comparison loss "
        f"{losses[0]:.4f} -> {min(losses):.4f} (kept step {result.best_step})"
    )


def _report_assets(out: Path, report: Path) -> Path:
    """Copy an evaluation's figures and results file beside its report; return that folder.

    The report travels with them (``docs/results.md`` -> ``docs/results/*.png``). When that
    folder is the output folder itself (``--out runs --report runs.md``) nothing is copied.
    """
    import shutil

    assets = report.parent / report.stem
    assets.mkdir(parents=True, exist_ok=True)
    if assets.resolve() != out.resolve():
        for item in [*out.glob("*.png"), out / "results.json"]:
            shutil.copy2(item, assets / item.name)
    return assets


# -- spend budgets ----------------------------------------------------------------------------
budget_app = typer.Typer(
    help="Spend budgets per user, team or app that the router paces against (docs/budgets.md).",
    no_args_is_help=True,
)
app.add_typer(budget_app, name="budget")

UserOption = Annotated[str | None, typer.Option("--user", help="A user's budget.")]
TeamOption = Annotated[str | None, typer.Option("--team", help="A team's budget.")]
AppOption = Annotated[bool, typer.Option("--app", help="The whole app's budget.")]


def _budgets(store: str | None, *, create: bool = False, read_only: bool = False) -> Any:
    from metarouter.budgets import Budgets
    from metarouter.store import SQLStore

    if create:
        from metarouter.service import default_store_path

        return Budgets(SQLStore(store or str(default_store_path())))
    return Budgets(_open_store(store, read_only=read_only))


def _when(text: str | None, what: str) -> float | None:
    """A UTC date or date-time (ISO 8601) as Unix seconds."""
    from datetime import datetime, timezone

    from metarouter.errors import ConfigError

    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(
            f"{what} {text!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)."
        ) from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def _date(ts: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


@budget_app.command("set")
def budget_set(
    usd: Annotated[float, typer.Option("--usd", help="USD the scope may spend per period.")],
    user: UserOption = None,
    team: TeamOption = None,
    app_scope: AppOption = False,
    per: Annotated[
        str, typer.Option("--per", help="day, week, month (UTC calendar) or window (--from/--to).")
    ] = "month",
    start: Annotated[str | None, typer.Option("--from", help="Window start (UTC date).")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Window end (UTC date).")] = None,
    on_exhausted: Annotated[
        str,
        typer.Option(
            "--on-exhausted",
            help="When it is spent: error (refuse calls), cheapest (cheapest candidate "
            "answers), arm (--arm answers).",
        ),
    ] = "error",
    arm: Annotated[
        str | None, typer.Option("--arm", help="The model for --on-exhausted arm.")
    ] = None,
    store: StoreOption = None,
    create: Annotated[
        bool, typer.Option("--create", help="Create the store if it does not exist yet.")
    ] = False,
) -> None:
    """Create or replace a budget: `metarouter budget set --user alice --usd 50 --per month`."""
    opened = _budgets(store, create=create)
    with opened.store:
        budget = opened.set(
            usd,
            user=user,
            team=team,
            app=app_scope,
            per=per,  # checked by Budget
            starts_at=_when(start, "--from"),
            ends_at=_when(end, "--to"),
            on_exhausted=on_exhausted,  # checked by Budget
            arm=arm,
        )
    console.print(
        f"{budget.label()}: {budget.usd:g} USD per {budget.period}, "
        f"on exhausted: {budget.on_exhausted}" + (f" ({budget.arm})" if budget.arm else "")
    )


@budget_app.command("team")
def budget_team(
    name: Annotated[str, typer.Argument(help="The team's name.")],
    members: Annotated[
        str, typer.Option("--members", help="Comma-separated user ids (empty: remove the team).")
    ],
    store: StoreOption = None,
    create: Annotated[
        bool, typer.Option("--create", help="Create the store if it does not exist yet.")
    ] = False,
) -> None:
    """Set the members of a team (its budget is shared by them)."""
    users = [m.strip() for m in members.split(",") if m.strip()]
    opened = _budgets(store, create=create)
    with opened.store:
        opened.set_team(name, users)
    console.print(f"team {excerpt(name)}: {len(users)} members")


@budget_app.command("show")
def budget_show(
    user: Annotated[
        str | None, typer.Option("--user", help="Only the budgets that apply to this user.")
    ] = None,
    store: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show every budget with this period's spend, pace and multiplier (read-only)."""
    import json
    import time

    opened = _budgets(store, read_only=True)
    now = time.time()
    with opened.store:
        states = opened.states(user)
        teams = opened.teams()
    if as_json:
        typer.echo(json.dumps({"budgets": [s.to_dict(now) for s in states], "teams": teams}))
        return
    grid = Table(title="spend budgets (this period)", title_justify="left")
    for col in ("scope", "usd", "period", "spent", "elapsed", "multiplier", "calls", "ends"):
        grid.add_column(col, justify="left" if col == "scope" else "right")
    for s in states:
        b = s.budget
        grid.add_row(
            b.label(),
            f"{b.usd:g}",
            b.period,
            f"{s.spent_usd:.4f} ({100 * s.spent_usd / b.usd:.0f}%)",
            f"{100 * s.elapsed(now):.0f}%",
            f"{s.multiplier:.2f}",
            f"{s.calls:,}" + (f" ({s.estimated_calls:,} est.)" if s.estimated_calls else ""),
            _date(s.period_end),
        )
    console.print(grid)
    for team, members in teams.items():
        console.print(f"team {excerpt(team)}: {', '.join(members)}")


@budget_app.command("reset")
def budget_reset(
    user: UserOption = None,
    team: TeamOption = None,
    app_scope: AppOption = False,
    store: StoreOption = None,
) -> None:
    """Start a budget's current period afresh (the spend ledger keeps the calls)."""
    opened = _budgets(store)
    with opened.store:
        before = opened.reset(user=user, team=team, app=app_scope)
    console.print(f"reset; {before:.4f} USD had been spent this period")


@budget_app.command("delete")
def budget_delete(
    user: UserOption = None,
    team: TeamOption = None,
    app_scope: AppOption = False,
    store: StoreOption = None,
) -> None:
    """Remove a budget (the spend ledger keeps the calls)."""
    opened = _budgets(store)
    with opened.store:
        found = opened.delete(user=user, team=team, app=app_scope)
    console.print("deleted" if found else "there was no such budget")


@budget_app.command("report")
def budget_report(
    user: UserOption = None,
    team: TeamOption = None,
    app_scope: AppOption = False,
    since: Annotated[str | None, typer.Option("--since", help="From (UTC date).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Until (UTC date).")] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write a plot of the spend over time (PNG).")
    ] = None,
    store: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Spend charged to one scope's budget: per day, per model, and a plot over time."""
    import json

    opened = _budgets(store, read_only=True)
    with opened.store:
        report = opened.report(
            user=user,
            team=team,
            app=app_scope,
            since=_when(since, "--since"),
            until=_when(until, "--until"),
            plot=plot,
        )
    if as_json:
        typer.echo(json.dumps(report))
        return
    label = "app" if report["scope"] == "app" else f"{report['scope']} {excerpt(report['name'])}"
    grid = Table(title=f"spend of {label}", title_justify="left")
    for col in ("day (UTC)", "USD", "calls"):
        grid.add_column(col, justify="right")
    for day, usd, calls in report["days"]:
        grid.add_row(day, f"{usd:.6f}", f"{calls:,}")
    console.print(grid)
    models = Table(title="by model", title_justify="left")
    models.add_column("model")
    models.add_column("USD", justify="right")
    for model, usd in report["models"].items():
        models.add_row(model, f"{usd:.6f}")
    console.print(models)
    console.print(
        f"total {report['total_usd']:.6f} USD in {report['calls']:,} calls "
        f"({report['estimated_calls']:,} charged at the router's estimate: no usage reported)"
        + (f"; plot {report['plot']}" if report["plot"] else "")
    )


@budget_app.command("simulate")
def budget_simulate(
    out: Annotated[Path, typer.Option("--out", help="Folder for the table, JSON and plot.")] = Path(
        "docs/budgets"
    ),
    seeds: Annotated[int, typer.Option(help="Seeds (each: every user, two months).")] = 5,
    first_seed: Annotated[
        int, typer.Option(help="First seed (docs/budgets.md: 0 reports, 100 tunes settings).")
    ] = 0,
) -> None:
    """Reproduce docs/budgets.md's evaluation: a simulated month per user under budgets."""
    from metarouter.evaluation.budget_sim import (
        SimConfig,
        bar_check,
        markdown_table,
        run_simulation,
    )

    config = SimConfig(seeds=tuple(range(first_seed, first_seed + seeds)))
    result = run_simulation(config, out=out)
    console.print(markdown_table(result["rows"]))
    for line in bar_check(result["rows"], result["runs"]):
        console.print(line)
    console.print(f"done in {result['seconds']:.0f}s; wrote {out}")


def main() -> None:
    """Console-script entry point: run the app, turning library errors into clean exits."""
    try:
        app()
    except MetaRouterError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}")
        raise SystemExit(2) from exc


if __name__ == "__main__":  # pragma: no cover
    main()
