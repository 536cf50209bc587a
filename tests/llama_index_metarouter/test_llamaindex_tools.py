"""Tool calling passed through to the chosen candidate: chat_with_tools, predict_and_call,
get_tool_calls_from_response, streaming tool calls, structured output, and tool loops kept on the
model that issued the calls."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.llms.mock import MockFunctionCallingLLM, MockLLM
from llama_index.core.tools import FunctionTool
from metarouter.errors import ConfigError
from pydantic import BaseModel, Field

from llama_index_metarouter import ROUTING_KEY

A, B = "gemma-2-9b-it", "qwen2.5-7b-instruct"


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


class Seen:
    """What a scripted candidate was asked."""

    def __init__(self) -> None:
        self.tool_names: list[list[str]] = []
        self.kwargs: list[dict[str, Any]] = []


def tool_caller(name: str, seen: Seen) -> MockFunctionCallingLLM:
    """A function-calling candidate that calls the first tool it is given with a=6, b=7, and
    answers in text once it has the tool's result."""

    def respond(messages, **kwargs):
        tools = kwargs.get("tools") or []
        seen.tool_names.append([t.metadata.name for t in tools])
        seen.kwargs.append({k: v for k, v in kwargs.items() if k != "tools"})
        results = [m for m in messages if m.role == MessageRole.TOOL]
        if results:
            return ChatMessage(
                role="assistant", content=f"{name}: the answer is {results[-1].content}"
            )
        if not tools:
            return ChatMessage(role="assistant", content=f"{name}: no tools")
        return ChatMessage(
            role="assistant",
            blocks=[
                ToolCallBlock(
                    tool_call_id=f"call-{name}-{len(seen.kwargs)}",
                    tool_name=tools[0].metadata.name,
                    tool_kwargs={"a": 6, "b": 7},
                )
            ],
        )

    return MockFunctionCallingLLM(response_generator=respond)


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def tool_router(make_router, seen):
    return make_router({A: tool_caller(A, seen), B: tool_caller(B, seen)})


TOOL = FunctionTool.from_defaults(fn=multiply)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_chat_with_tools_reaches_the_candidate_and_tool_calls_parse(tool_router, seen, mode):
    if mode == "sync":
        response = tool_router.chat_with_tools([TOOL], user_msg="What is 6 x 7?")
    else:
        response = await tool_router.achat_with_tools([TOOL], user_msg="What is 6 x 7?")
    assert seen.tool_names == [["multiply"]]
    calls = tool_router.get_tool_calls_from_response(response)
    assert [(c.tool_name, c.tool_kwargs) for c in calls] == [("multiply", {"a": 6, "b": 7})]
    assert response.additional_kwargs[ROUTING_KEY]["model"] in (A, B)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_stream_chat_with_tools_carries_tool_calls(tool_router, mode):
    if mode == "sync":
        chunks = list(tool_router.stream_chat_with_tools([TOOL], user_msg="What is 6 x 7?"))
    else:
        stream = await tool_router.astream_chat_with_tools([TOOL], user_msg="What is 6 x 7?")
        chunks = [c async for c in stream]
    calls = tool_router.get_tool_calls_from_response(chunks[-1], error_on_no_tool_call=False)
    assert [c.tool_name for c in calls] == ["multiply"]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_predict_and_call_runs_the_tool(tool_router, mode):
    if mode == "sync":
        result = tool_router.predict_and_call([TOOL], user_msg="What is 6 x 7?")
    else:
        result = await tool_router.apredict_and_call([TOOL], user_msg="What is 6 x 7?")
    assert result.response == "42"
    assert result.sources[0].tool_name == "multiply"


class PreparingCaller(MockFunctionCallingLLM):
    """A function-calling candidate that records what its tool preparation receives."""

    prepared: list[dict[str, Any]] = Field(default_factory=list)

    def _prepare_chat_with_tools(
        self,
        tools,
        user_msg=None,
        chat_history=None,
        verbose=False,
        allow_parallel_tool_calls=False,
        tool_required=False,
        **kwargs,
    ):
        self.prepared.append({"tool_required": tool_required, **kwargs})
        return super()._prepare_chat_with_tools(tools, user_msg, chat_history, **kwargs)


def test_tool_keywords_reach_the_candidates_tool_preparation(make_router):
    router = make_router({A: PreparingCaller(), B: PreparingCaller()})
    router.chat_with_tools(
        [TOOL], user_msg="6 x 7?", tool_choice="multiply", tool_required=True, model=A
    )
    (prepared,) = router.candidates[A].prepared
    assert prepared["tool_choice"] == "multiply" and prepared["tool_required"] is True
    assert "model" not in prepared and "user_id" not in prepared, "routing keywords are consumed"
    assert router.candidates[B].prepared == []


def test_candidates_that_cannot_call_tools_are_excluded_for_tool_calls(make_router, seen):
    router = make_router({A: MockLLM(), B: tool_caller(B, seen)})
    for _ in range(3):
        response = router.chat_with_tools([TOOL], user_msg="What is 6 x 7?")
        info = response.additional_kwargs[ROUTING_KEY]
        assert info["model"] == B
        assert set(info["scores"]) == {B}, "the non-function-calling candidate is not scored"
    with pytest.raises(ConfigError, match=r"override 'gemma.*' lacks \['tool_calling'\]"):
        router.chat_with_tools([TOOL], user_msg="What is 6 x 7?", model=A)


def test_no_tool_capable_candidate_is_a_clear_error(make_router):
    router = make_router({A: MockLLM(), B: MockLLM()})
    with pytest.raises(ConfigError, match=r"no candidate can take this call.*tool_calling.*Fix"):
        router.chat_with_tools([TOOL], user_msg="What is 6 x 7?")


def test_tool_loop_stays_on_the_model_that_issued_the_calls(tool_router):
    history = [ChatMessage(role="user", content="What is 6 x 7?")]
    for first in (A, B):
        response = tool_router.chat_with_tools([TOOL], chat_history=list(history), model=first)
        call = tool_router.get_tool_calls_from_response(response)[0]
        turn = [
            *history,
            response.message,
            ChatMessage(
                role="tool", content="42", additional_kwargs={"tool_call_id": call.tool_id}
            ),
        ]
        follow_up = tool_router.chat_with_tools([TOOL], chat_history=turn)
        info = follow_up.additional_kwargs[ROUTING_KEY]
        assert (info["model"], info["reason"]) == (first, "tool_loop")
        assert follow_up.message.content == f"{first}: the answer is 42"
        # a new user turn after the loop is routed afresh
        fresh = tool_router.chat_with_tools(
            [TOOL],
            chat_history=[*turn, follow_up.message, ChatMessage(role="user", content="Thanks!")],
        )
        assert fresh.additional_kwargs[ROUTING_KEY]["reason"] == "routed"


def test_responses_without_routing_data_are_read_from_their_blocks(tool_router):
    from llama_index.core.base.llms.types import ChatResponse

    foreign = ChatResponse(
        message=ChatMessage(
            role="assistant",
            blocks=[ToolCallBlock(tool_call_id="x", tool_name="multiply", tool_kwargs='{"a": 2}')],
        )
    )
    calls = tool_router.get_tool_calls_from_response(foreign)
    assert [(c.tool_id, c.tool_kwargs) for c in calls] == [("x", {"a": 2})]
    with pytest.raises(ValueError, match="at least one tool call"):
        tool_router.get_tool_calls_from_response(ChatResponse(message=ChatMessage(content="hi")))


class Person(BaseModel):
    """A person."""

    name: str
    age: int


def test_structured_predict_uses_the_candidates_function_calling(make_router):
    from llama_index.core.prompts import PromptTemplate

    def respond(messages, **kwargs):
        tool = kwargs["tools"][0]
        return ChatMessage(
            role="assistant",
            blocks=[
                ToolCallBlock(
                    tool_call_id="p1",
                    tool_name=tool.metadata.name,
                    tool_kwargs={"name": "Ada", "age": 36},
                )
            ],
        )

    router = make_router(
        {
            A: MockFunctionCallingLLM(response_generator=respond),
            B: MockFunctionCallingLLM(response_generator=respond),
        }
    )
    person = router.structured_predict(Person, PromptTemplate("Describe {who}."), who="Ada")
    assert person == Person(name="Ada", age=36)
