"""``MetaRouterChat`` inside real LangChain compositions: a chain, structured output, an agent."""

from __future__ import annotations

import asyncio

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, AIMessageChunk, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from langchain_core.tracers.context import collect_runs
from lc_scripted_models import ScriptedChatModel, TextOnlyChatModel
from lc_setup import BIG, CHEAP, MID
from pydantic import BaseModel, Field

from langchain_metarouter import MetaRouterChat
from langchain_metarouter._utils import CANDIDATE_TAG


@tool
def get_weather(city: str) -> str:
    """Get the weather in a city."""
    return f"It is sunny in {city}."


PROMPT = ChatPromptTemplate.from_messages(
    [("system", "You answer in one line."), ("human", "Explain {topic} briefly.")]
)


def test_prompt_router_parser_chain(candidates, service):
    router = MetaRouterChat(candidates=candidates, service=service)
    chain = PROMPT | router | StrOutputParser()

    with collect_runs() as collector:
        text = chain.invoke(
            {"topic": "photosynthesis"}, config={"configurable": {"user_id": "ann"}}
        )
    (root,) = collector.traced_runs
    llm = next(r for r in root.child_runs if r.name == "MetaRouterChat")
    message = llm.outputs["generations"][0][0]["message"]
    metadata = getattr(message, "response_metadata", None) or message["kwargs"]["response_metadata"]
    chosen = metadata["model_name"]
    assert text == f"[{chosen}-v1] Explain photosynthesis briefly."
    assert llm.extra["metadata"]["user_id"] == "ann"
    assert [c.name for c in llm.child_runs] == ["ScriptedChatModel"]

    streamed = "".join(chain.stream({"topic": "photosynthesis"}))
    assert streamed == text
    assert asyncio.run(chain.ainvoke({"topic": "photosynthesis"})) == text
    assert chain.batch(
        [{"topic": "a"}, {"topic": "b"}], config={"configurable": {"user_id": "ann"}}
    )[1].endswith("Explain b briefly.")


class Joke(BaseModel):
    """A joke."""

    setup: str = Field(description="the question")
    punchline: str = Field(description="the answer")


def test_structured_output_chain_passes_through_the_chosen_candidate(candidates, service):
    router = MetaRouterChat(candidates=candidates, service=service)
    chain = PROMPT | router.with_structured_output(Joke, include_raw=True)
    out = chain.invoke({"topic": "cats"})
    assert isinstance(out["parsed"], Joke) and out["parsing_error"] is None
    assert out["raw"].response_metadata["model_name"] in candidates


def test_structured_output_leaves_out_candidates_that_cannot_force_a_tool_call(service):
    text_only = TextOnlyChatModel(model_name="no-tools")
    no_forcing = ScriptedChatModel(model_name="no-forcing", profile={"tool_choice": False})
    able = ScriptedChatModel(model_name="able")
    router = MetaRouterChat(
        candidates={CHEAP: text_only, MID: no_forcing, BIG: able}, service=service
    )
    assert router.profile["tool_calling"] is False and router.profile["tool_choice"] is False

    out = (PROMPT | router.with_structured_output(Joke, include_raw=True)).invoke({"topic": "cats"})

    assert isinstance(out["parsed"], Joke)
    data = out["raw"].response_metadata["metarouter"]
    assert data["model"] == BIG
    assert list(service.store.get_decision(data["decision_id"]).candidates) == [BIG]
    assert text_only.calls == [] and no_forcing.calls == []


def test_create_agent_with_the_router_as_its_model(candidates, service):
    router = MetaRouterChat(candidates=candidates, service=service, user_id="ann")
    agent = create_agent(model=router, tools=[get_weather], system_prompt="Use tools.")

    out = agent.invoke({"messages": [("user", "What is the weather in 'Rome'?")]})

    ai = [m for m in out["messages"] if isinstance(m, AIMessage)]
    assert ai[0].tool_calls[0]["args"] == {"city": "Rome"}
    assert any(isinstance(m, ToolMessage) and "sunny in Rome" in m.text for m in out["messages"])
    assert ai[-1].text == "The tool get_weather returned: It is sunny in Rome."
    assert all(m.response_metadata["metarouter"]["user_id"] == "ann" for m in ai)


@pytest.mark.parametrize("policy", ["tracers", "all"])
def test_agent_stream_mode_messages_yields_each_token_once(candidates, service, policy):
    # The candidate's tokens reach the app through the router's run only, whichever handlers
    # see the candidate's nested run. (A forced arm would need the middleware's
    # model_settings: create_agent calls bind_tools, which starts from the unbound model.)
    router = MetaRouterChat(candidates=candidates, service=service, candidate_callbacks=policy)
    agent = create_agent(model=router, tools=[get_weather])

    streamed = list(agent.stream({"messages": [("user", "Just say hi.")]}, stream_mode="messages"))
    final = agent.invoke({"messages": [("user", "Just say hi.")]})["messages"][-1]

    chosen = final.response_metadata["model_name"]
    pieces = [chunk.text for chunk, _ in streamed if isinstance(chunk, AIMessageChunk)]
    assert pieces == [f"[{chosen}-v1] ", "Just ", "say ", "hi.", ""]
    assert "".join(pieces) == final.text
    assert all(meta["langgraph_node"] == "model" for _, meta in streamed)
    assert not any(CANDIDATE_TAG in (meta.get("tags") or []) for _, meta in streamed)
