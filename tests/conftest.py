"""Session-wide fixtures: the shared datasets folder and one embedding model per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path | None:
    env = os.environ.get("METAROUTER_DATA")
    if env:
        path = Path(env)
        if not path.is_dir():
            raise RuntimeError(f"METAROUTER_DATA={env} is not a folder")
        return path
    default = ROOT.parent / "shared" / "data"
    return default if default.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder with routerbench_subset/, llmrouter_9llm/, routerdc_7llm/ (../shared/data)."""
    path = _shared_data_dir()
    if path is None:
        pytest.skip("shared datasets not found: set METAROUTER_DATA or place ../shared/data")
    return path


@pytest.fixture(scope="session")
def embedder():
    """One real all-MiniLM-L6-v2 embedder for the whole session."""
    from metarouter.embeddings import Embedder

    return Embedder()


@pytest.fixture(scope="session")
def router_embedder():
    """The embedder the bundled router was trained for (``ROUTER_EMBEDDER``), one per session."""
    from metarouter.embeddings import ROUTER_EMBEDDER, Embedder

    return Embedder(ROUTER_EMBEDDER)


def pytest_report_header(config):
    """Print the resolved versions of the key packages at the top of every run (CI reads them)."""
    from importlib.metadata import PackageNotFoundError, version

    names = [
        "metarouter",
        "torch",
        "sentence-transformers",
        "langchain-core",
        "langchain-tests",
        "langchain-openai",
        "llama-index-core",
        "sqlalchemy",
        "psycopg",
        "vcrpy",
        "numpy",
        "pydantic",
    ]
    found = []
    for name in names:
        try:
            found.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return "key packages: " + ", ".join(found)


@pytest.fixture(autouse=True, scope="session")
def _isolated_default_store(tmp_path_factory):
    """Keep tests from writing to the user's default preference store."""
    import os

    path = tmp_path_factory.mktemp("default-store") / "preferences.db"
    old = os.environ.get("METAROUTER_STORE")
    os.environ["METAROUTER_STORE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("METAROUTER_STORE", None)
    else:
        os.environ["METAROUTER_STORE"] = old


#: When set, the run writes its outcome counts here as JSON (``.ci/run`` checks the skip count).
OUTCOME_REPORT_ENV = "METAROUTER_TEST_OUTCOMES"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Write the run's pass/fail/skip counts and each skip's reason for the CI check."""
    import json

    path = os.environ.get(OUTCOME_REPORT_ENV)
    if not path:
        return
    stats = terminalreporter.stats
    skipped = [
        {"test": r.nodeid, "reason": str(r.longrepr[-1]) if isinstance(r.longrepr, tuple) else ""}
        for r in stats.get("skipped", [])
    ]
    counts = {key: len(stats.get(key, [])) for key in ("passed", "failed", "error", "xfailed")}
    Path(path).write_text(
        json.dumps({**counts, "skipped": len(skipped), "skips": skipped}, indent=2) + "\n"
    )
