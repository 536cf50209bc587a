"""Evaluation harness: MetaRouter against the baselines, ID and OOD (docs/evaluation.md).

Python API (imported lazily, so ``import metarouter.evaluation`` is cheap)::

    from metarouter.evaluation import EvalConfig, run_evaluation, write_markdown

    results = run_evaluation(EvalConfig.quick(), "eval-out")
    write_markdown(results, "eval-out/report.md", plots_dir="eval-out", command="python ...")

A user's own outcome file works too: ``EvalConfig(datasets=("my_log.parquet",),
ood_tasks=("code",))``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "DatasetPlan",
    "EvalConfig",
    "default_plans",
    "gap_recovered",
    "hypervolume",
    "igd",
    "pareto_front",
    "plan_for_table",
    "run_evaluation",
    "write_markdown",
    "write_plots",
]

_WHERE = {
    "DatasetPlan": "settings",
    "default_plans": "settings",
    "plan_for_table": "settings",
    "EvalConfig": "runner",
    "run_evaluation": "runner",
    "write_markdown": "report",
    "write_plots": "report",
    "gap_recovered": "metrics",
    "hypervolume": "metrics",
    "igd": "metrics",
    "pareto_front": "metrics",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"metarouter.evaluation.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'metarouter.evaluation' has no attribute {name!r}")
