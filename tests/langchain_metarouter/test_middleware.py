"""``MetaRouterMiddleware``: a ``create_agent`` agent routes its model calls with the router."""

from __future__ import annotations

import asyncio

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from lc_scripted_models import ScriptedChatModel, TextOnlyChatModel
from lc_setup import BIG, CHEAP, MID
from metarouter.errors import DispatchError

from langchain_metarouter import MetaRouterChat, MetaRouterMiddleware

QUESTION = "What is the weather in 'Paris'?"


@tool
def get_weather(city: str) -> str:
    """Get the weather in a city."""
    return f"It is sunny in {city}."


def _agent(router: MetaRouterChat, placeholder=None):
    return create_agent(
        model=placeholder or TextOnlyChatModel(model_name="placeholder"),
        tools=[get_weather],
        middleware=[MetaRouterMiddleware(router)],
    )


def _ai(messages) -> list[AIMessage]:
    return [m for m in messages if isinstance(m, AIMessage)]


@pytest.mark.parametrize("timeout", [None, 30.0], ids=["no-timeout", "timeout"])
def test_agent_model_calls_are_routed_and_the_tool_loop_completes(candidates, service, timeout):
    # with a timeout, each model call runs in a worker thread with the graph's context
    router = MetaRouterChat(candidates=candidates, service=service, timeout=timeout)
    placeholder = TextOnlyChatModel(model_name="placeholder")
    out = _agent(router, placeholder).invoke(
        {"messages": [("user", QUESTION)]}, context={"user_id": "ann"}
    )

    call, final = _ai(out["messages"])
    assert call.tool_calls[0]["name"] == "get_weather" and call.tool_calls[0]["args"] == {
        "city": "Paris"
    }
    assert any(
        isinstance(m, ToolMessage) and m.text == "It is sunny in Paris." for m in out["messages"]
    )
    assert final.text == "The tool get_weather returned: It is sunny in Paris."
    for message in (call, final):
        data = message.response_metadata["metarouter"]
        assert message.response_metadata["model_name"] == data["model"] in candidates
        assert data["user_id"] == "ann" and data["cost_usd"] > 0
        assert service.store.get_decision(data["decision_id"]).chosen == data["model"]
    # both steps are routed on the same question, hence to the same candidate
    assert call.response_metadata["model_name"] == final.response_metadata["model_name"]
    assert placeholder.calls == []


def test_user_id_from_the_run_config_when_the_context_has_none(candidates, service):
    router = MetaRouterChat(candidates=candidates, service=service)
    out = _agent(router).invoke(
        {"messages": [("user", QUESTION)]}, config={"configurable": {"user_id": "bob"}}
    )
    assert {m.response_metadata["metarouter"]["user_id"] for m in _ai(out["messages"])} == {"bob"}


def test_middleware_falls_back_and_leaves_out_candidates_without_tools(service):
    # the ranking is forced: probe which tool-capable candidate the router puts first for this
    # question, then make exactly that one fail, so the call always exercises the fallback
    probe = MetaRouterChat(
        candidates={
            CHEAP: TextOnlyChatModel(model_name="no-tools"),
            MID: ScriptedChatModel(model_name="mid"),
            BIG: ScriptedChatModel(model_name="big"),
        },
        service=service,
    )
    probed = asyncio.run(_agent(probe).ainvoke({"messages": [("user", QUESTION)]}))
    ranking = _ai(probed["messages"])[0].response_metadata["metarouter"]["ranking"]
    assert CHEAP not in ranking  # no tool calling: left out of a call with tools
    down, up = ranking
    models = {
        CHEAP: TextOnlyChatModel(model_name="no-tools"),
        down: ScriptedChatModel(model_name="down", fail_with=RuntimeError("503 from provider")),
        up: ScriptedChatModel(model_name="up"),
    }
    router = MetaRouterChat(candidates=models, service=service)
    out = asyncio.run(_agent(router).ainvoke({"messages": [("user", QUESTION)]}))

    first, *rest = _ai(out["messages"])
    for message in (first, *rest):
        data = message.response_metadata["metarouter"]
        assert data["model"] == up == message.response_metadata["model_name"]
        stored = service.store.get_decision(data["decision_id"])
        assert CHEAP not in stored.candidates
    data = first.response_metadata["metarouter"]
    assert data["chosen_model"] == down
    assert [f["model"] for f in data["fallbacks"]] == [down]
    # the next steps carry the tool results of the fallback: they stay on it (no second try)
    assert rest and all(m.response_metadata["metarouter"]["reason"] == "tool_loop" for m in rest)
    assert all(m.response_metadata["metarouter"]["fallbacks"] == [] for m in rest)
    assert models[CHEAP].calls == []


def test_middleware_error_lists_the_failed_candidates(service):
    models = {
        n: ScriptedChatModel(model_name=n, fail_with=RuntimeError(f"{n} down"))
        for n in (CHEAP, MID, BIG)
    }
    router = MetaRouterChat(candidates=models, service=service)
    with pytest.raises(DispatchError, match="no candidate answered"):
        _agent(router).invoke({"messages": [("user", QUESTION)]})
