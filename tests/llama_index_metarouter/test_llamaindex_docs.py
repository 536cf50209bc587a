"""docs/llamaindex.md runs as written: its ``python`` blocks are executed in order, offline, in
one namespace (``python notest`` blocks need provider packages and are only shown)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from llama_index.core.instrumentation import get_dispatcher

DOC = Path(__file__).resolve().parents[2] / "docs" / "llamaindex.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def test_the_page_has_runnable_blocks_and_only_marked_ones_are_skipped():
    text = DOC.read_text()
    fences = re.findall(r"^```(\S*)(.*)$", text, re.MULTILINE)
    marked = {info.strip() for lang, info in fences if lang == "python"}
    assert marked <= {"", "notest"}, "python blocks are either run or marked notest"
    assert len(_BLOCK.findall(text)) >= 10


def test_the_examples_run_and_do_what_the_page_says(
    meta_router, tmp_path, monkeypatch, settings, capsys
):
    from metarouter.router import MetaRouter

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("METAROUTER_STORE", str(tmp_path / "default.db"))
    # the page builds routers with the bundled default: reuse the session's loaded one
    monkeypatch.setattr(MetaRouter, "default", classmethod(lambda cls, embedder=None: meta_router))
    choices = itertools.cycle(["1", "0"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(choices))
    root = get_dispatcher()
    handlers = list(root.event_handlers)
    namespace: dict = {"__name__": "docs_llamaindex"}
    try:
        for index, block in enumerate(_BLOCK.findall(DOC.read_text())):
            try:
                exec(compile(block, f"{DOC.name}[block {index}]", "exec"), namespace)
            except Exception as exc:  # name the failing block in the report
                pytest.fail(f"block {index} of {DOC.name} failed: {exc!r}\n{block}")
    finally:
        root.event_handlers = handlers
    out = capsys.readouterr().out

    router = namespace["router"]
    assert settings.llm is router
    assert (tmp_path / "preferences.db").exists()
    assert namespace["same_router"].service.specs["my-finetune"].like == "qwen2.5-7b-instruct"
    assert namespace["call"].user_id == "carol" and namespace["call"].text
    assert {c.user_id for c in namespace["scope"].calls} == {"carol"}
    # six compare() choices, the record_preference examples (2) and the handler's; the
    # listener's example judges the routed pair again, which replaces that judgement
    alice = router.preference("alice")
    assert alice.n_comparisons == 6 + 2 + 1
    assert namespace["feedback_handler"].records[-1].user_id == "alice"
    assert namespace["output"].response == "Sunny in Paris"
    assert "Sunny in Paris" in out
    # the mocks report no usage: the expected cost, as an estimate
    assert namespace["data"]["cost_is_estimate"] is True and namespace["data"]["cost_usd"] > 0
    assert namespace["costs"].total_usd > 0
    assert router.preference("bob").n_comparisons == 0
    # the worker thread got the scope; RAG is routed on the question; warm-up
    assert namespace["scope"].last.user_id == "carol"
    assert "True\n" in out and namespace["decision"].user_id == "carol"
    assert "routing ready in" in out and namespace["seconds"] > 0
