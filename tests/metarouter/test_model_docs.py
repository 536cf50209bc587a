"""docs/model.md runs as written: its ``python`` blocks are executed in order, in one namespace,
with the bundled router (the session's loaded copy)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "model.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def test_the_examples_run_and_do_what_the_page_says(default_router, tmp_path, monkeypatch):
    from metarouter.router import MetaRouter

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        MetaRouter, "default", classmethod(lambda cls, embedder=None: default_router)
    )
    blocks = _BLOCK.findall(DOC.read_text())
    assert any("from metarouter import" in block for block in blocks)
    namespace: dict[str, Any] = {"__name__": "docs_model"}
    for index, block in enumerate(blocks):
        try:
            exec(compile(block, f"{DOC.name}[block {index}]", "exec"), namespace)
        except Exception as exc:  # name the failing block in the report
            pytest.fail(f"block {index} of {DOC.name} failed: {exc!r}\n{block}")

    assert 0.0 <= namespace["preference"].quality_weight <= 1.0
    assert namespace["preference"].n_comparisons == 1
    assert namespace["decision"].user_id == "alice"
    service = namespace["service"]
    assert service.store.get_decision(namespace["decision"].decision_id).user_id == "alice"
    service.store.close()
