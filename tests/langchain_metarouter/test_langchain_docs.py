"""docs/langchain.md runs as written: its ``python`` blocks are executed in order, in one
namespace, with real ``ChatOpenAI`` candidates talking to an OpenAI-compatible server on
loopback (``OPENAI_BASE_URL``); every other host stays blocked."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from openai_loopback import OpenAILoopback

DOC = Path(__file__).resolve().parents[2] / "docs" / "langchain.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def _answer(model: str, prompt: str) -> str:
    return f"({model}) A short answer to: {prompt}"


def test_the_page_has_a_runnable_block_per_feature_and_only_marked_ones_are_skipped():
    text = DOC.read_text()
    fences = re.findall(r"^```(\S*)(.*)$", text, re.MULTILINE)
    marked = {info.strip() for lang, info in fences if lang == "python"}
    assert marked <= {"", "notest"}, "python blocks are either run or marked notest"
    code = "\n".join(_BLOCK.findall(text))
    for feature in (
        "| llm |",  # a chain
        '"configurable": {"user_id"',
        "model=",
        "run_id",
        ".stream(",
        ".astream(",
        ".ainvoke(",
        ".batch(",
        "bind_tools",
        "with_structured_output",
        "compare(",
        ".prefer(",
        "record_preference",
        "Response(",
        "add_feedback_listener",
        "MetaRouterFeedbackHandler",
        "create_agent",
        "MetaRouterMiddleware",
        "DispatchError",
        "warm_up(",
        "timeout=",
        "query_text(",
        "get_usage_metadata_callback",
        "dumps(",
    ):
        assert feature in code, feature


@pytest.mark.enable_socket  # even under --disable-socket: the stand-in server is on loopback
@pytest.mark.block_network(allowed_hosts=["127.0.0.1"])  # ... and only loopback is reachable
def test_the_examples_run_and_do_what_the_page_says(lc_router, tmp_path, monkeypatch, capsys):
    from metarouter.router import MetaRouter

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("METAROUTER_STORE", str(tmp_path / "preferences.db"))
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    # the page builds routers with the bundled default: reuse the session's loaded one
    monkeypatch.setattr(MetaRouter, "default", classmethod(lambda cls, embedder=None: lc_router))
    namespace: dict[str, Any] = {"__name__": "docs_langchain"}
    with OpenAILoopback({}, default=_answer) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        for index, block in enumerate(_BLOCK.findall(DOC.read_text())):
            try:
                exec(compile(block, f"{DOC.name}[block {index}]", "exec"), namespace)
            except Exception as exc:  # name the failing block in the report
                pytest.fail(f"block {index} of {DOC.name} failed: {exc!r}\n{block}")
        requests = list(server.requests)
    out = capsys.readouterr().out
    llm = namespace["llm"]

    assert "(gpt-4o" in out and "A short answer to: Explain entropy." in out
    assert len(requests) > 30 and {r["model"] for r in requests} == {"gpt-4o", "gpt-4o-mini"}
    routing = namespace["routing"]
    assert routing["user_id"] == "alice" and routing["cost_usd"] > 0
    assert namespace["answer"].response_metadata["metarouter"]["user_id"] == "dave"
    # tools and structured output
    assert namespace["call"].tool_calls[0]["args"] == {"city": "Paris"}
    verdict = namespace["verdict"]
    assert verdict.claim == "water boils at 100 C at sea level" and verdict.true is True
    # the provider that is down was chosen, and gpt-4o answered instead
    assert "gpt-4o [{'model': 'gpt-4o-mini', 'error': 'OpenAIConnectionError" in out
    assert "no candidate answered" in out and "a forced model never falls back" in out
    # warm-up, the routing text, usage counted once, serialisation
    assert "routing ready in" in out and namespace["seconds"] > 0
    assert "Explain entropy.\n" in out
    usage = namespace["usage"].usage_metadata
    (model,) = usage  # one model: the router's run only
    assert usage[model]["total_tokens"] == namespace["counted"].usage_metadata["total_tokens"]
    assert "not_implemented\n" in out
    # six comparisons moved carol's routing, and no one else's
    assert llm.preference("carol").n_comparisons == 6
    assert llm.preference("carol").quality_weight > llm.preference("dave").quality_weight
    assert llm.preference("dave").n_comparisons == 0
    for user, model in (("carol", "gpt-4o"), ("dave", "gpt-4o-mini")):
        answer = llm.invoke(
            "Design a distributed rate limiter.", config={"configurable": {"user_id": user}}
        )
        assert answer.response_metadata["metarouter"]["model"] == model
    # record_preference (3 pairs: the second call judges the first pair again and replaces
    # it), the listener's compare (1); the callback handler's event judges the first pair once
    # more (dear over cheap this time), which replaces that judgement again
    assert llm.preference("erin").n_comparisons == 3 + 1
    assert [(c.winner, c.source) for c in llm.service.store.comparisons("erin")][-1] == (
        "gpt-4o",
        "callback",
    )
    assert namespace["events"] == [("comparison_recorded", "erin"), ("preference_updated", "erin")]
    assert namespace["handler"].records[-1].winner == "gpt-4o"
    # agents: the tool ran, and every model call was routed
    final = namespace["result"]["messages"][-1]
    assert final.text.endswith("It is sunny in Oslo.")
    assert final.response_metadata["metarouter"]["user_id"] == "alice"
    assert "gpt-4o" in out and "sunny in Rome" in out
