"""Conversions: routing text from messages, reported token usage, pending tool calls."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    ToolCallBlock,
)

from llama_index_metarouter.utils import pending_tool_call_ids, query_text, usage_of


def test_routing_text_is_the_last_user_message_or_the_templates_question():
    messages = [
        ChatMessage(role="system", content="Be brief. Context: capybaras eat grass."),
        ChatMessage(role="user", content="Hi there."),
        ChatMessage(role="assistant", blocks=[ToolCallBlock(tool_name="f", tool_call_id="1")]),
        ChatMessage(role="user", content="What is 2 + 2?"),
    ]
    assert query_text(messages) == "What is 2 + 2?"
    rag = [ChatMessage(role="user", content="Context: a long passage.\nQuery: What is 2 + 2?")]
    assert query_text(rag, question="What is 2 + 2?") == "What is 2 + 2?"
    assert query_text([ChatMessage(role="system", content="Only a system prompt.")]) == (
        "Only a system prompt."
    )


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        # OpenAI integration: counts in additional_kwargs, raw = the SDK object with .usage
        (
            ChatResponse(
                message=ChatMessage(content="x"),
                additional_kwargs={"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
            ),
            (11, 7),
        ),
        (
            CompletionResponse(
                text="x",
                raw=SimpleNamespace(usage=SimpleNamespace(prompt_tokens=5, completion_tokens=3)),
            ),
            (5, 3),
        ),
        # Anthropic: raw["usage"] with input/output tokens
        (
            ChatResponse(
                message=ChatMessage(content="x"),
                raw={"usage": {"input_tokens": 20, "output_tokens": 9}},
            ),
            (20, 9),
        ),
        # Gemini: usage_metadata
        (
            CompletionResponse(
                text="x",
                raw={"usage_metadata": {"prompt_token_count": 4, "candidates_token_count": 2}},
            ),
            (4, 2),
        ),
        # Ollama: counters at the top level of raw
        (
            ChatResponse(
                message=ChatMessage(content="x"), raw={"prompt_eval_count": 12, "eval_count": 30}
            ),
            (12, 30),
        ),
        # nothing reported, or only half of it
        (ChatResponse(message=ChatMessage(content="x")), None),
        (CompletionResponse(text="x", additional_kwargs={"prompt_tokens": 3}), None),
    ],
    ids=["openai", "openai-raw", "anthropic", "gemini", "ollama", "none", "partial"],
)
def test_usage_is_read_where_integrations_report_it(response, expected):
    assert usage_of(response) == expected


def test_pending_tool_calls_are_those_awaiting_results_only():
    call = ChatMessage(
        role="assistant",
        blocks=[
            ToolCallBlock(tool_name="f", tool_call_id="c1"),
            ToolCallBlock(tool_name="g", tool_call_id="c2"),
        ],
    )
    result = ChatMessage(role="tool", content="1", additional_kwargs={"tool_call_id": "c2"})
    user = ChatMessage(role="user", content="hi")
    # the result's id first, then the calls still waiting; an id that is both comes once
    assert pending_tool_call_ids([user, call, result]) == ["c2", "c1"]
    assert pending_tool_call_ids([user, call, result, ChatMessage(role="user", content="ok")]) == []
    assert pending_tool_call_ids([user]) == []
    assert pending_tool_call_ids([]) == []
