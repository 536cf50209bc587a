"""Timing records, summary statistics and the machine description for the benchmarks."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Series:
    """Per-call samples of one measured operation (warm-up calls are never recorded).

    Attributes:
        wall_ms: Wall-clock milliseconds per call.
        cpu_ms: Process CPU milliseconds per call (all threads), robust to other load.
    """

    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)

    def add(self, wall_s: float, cpu_s: float) -> None:
        self.wall_ms.append(wall_s * 1e3)
        self.cpu_ms.append(cpu_s * 1e3)

    @property
    def p50(self) -> float:
        return float(np.median(self.wall_ms))

    @property
    def p95(self) -> float:
        return float(np.percentile(self.wall_ms, 95))

    def summary(self) -> dict[str, float]:
        wall = np.asarray(self.wall_ms)
        cpu = np.asarray(self.cpu_ms)
        return {
            "n": len(wall),
            "p50_ms": float(np.median(wall)),
            "p95_ms": float(np.percentile(wall, 95)),
            "mean_ms": float(wall.mean()),
            "min_ms": float(wall.min()),
            "cpu_p50_ms": float(np.median(cpu)),
        }

    def raw(self) -> dict[str, list[float]]:
        return {
            "wall_ms": [round(v, 4) for v in self.wall_ms],
            "cpu_ms": [round(v, 4) for v in self.cpu_ms],
        }


class Stopwatch:
    """Wall and CPU clocks read together: ``lap()`` returns the time since the last lap."""

    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()

    def lap(self) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        out = (wall - self._wall, cpu - self._cpu)
        self._wall, self._cpu = wall, cpu
        return out


def timed(series: Series, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn(*args, **kwargs)`` once, add its wall and CPU time to ``series``; return it."""
    watch = Stopwatch()
    out = fn(*args, **kwargs)
    series.add(*watch.lap())
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import torch

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gib": _ram_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "metarouter_num_threads_env": os.environ.get("METAROUTER_NUM_THREADS"),
        "packages": {
            name: _version(name)
            for name in (
                "metarouter",
                "sentence-transformers",
                "transformers",
                "numpy",
                "scikit-learn",
                "langchain-core",
                "sqlalchemy",
            )
        },
        "git_commit": commit,
    }
