"""Conversions between LlamaIndex objects and what the routing core needs.

Nothing here routes or learns: it turns messages into the turns of the core's routing-text
rule (:mod:`metarouter.text`), reads the token usage a candidate reports, finds tool-call ids in
a conversation, and reads the routing data that :class:`~llama_index_metarouter.MetaRouterLLM`
attaches to responses.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    MessageRole,
    ToolCallBlock,
)
from llama_index.core.llms.llm import ToolSelection
from metarouter.text import Role, Turn, routing_text

__all__ = [
    "ROUTING_KEY",
    "pending_tool_call_ids",
    "query_text",
    "routing_info",
    "to_turns",
    "tool_calls_from_blocks",
    "usage_of",
]

#: Key of the routing data in ``ChatResponse.additional_kwargs`` /
#: ``CompletionResponse.additional_kwargs``.
ROUTING_KEY = "metarouter"

_INPUT_KEYS = ("prompt_tokens", "input_tokens", "prompt_token_count", "prompt_eval_count")
_OUTPUT_KEYS = ("completion_tokens", "output_tokens", "candidates_token_count", "eval_count")

LLMResponse = ChatResponse | CompletionResponse


_ROLES: dict[MessageRole, Role] = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.USER: "user",
    MessageRole.TOOL: "tool",
    MessageRole.FUNCTION: "tool",
}


def to_turns(messages: Sequence[ChatMessage]) -> list[Turn]:
    """The messages as the core's routing-text rule sees them (role and text)."""
    return [Turn(_ROLES.get(m.role, "assistant"), m.content or "") for m in messages]


def query_text(messages: Sequence[ChatMessage], question: str | None = None) -> str:
    """The text the router embeds for a chat call: :func:`metarouter.text.routing_text`.

    ``question`` is the user's question when a prompt template named it (``query_str``, ...):
    then retrieved context in the same message does not enter the routing text.
    """
    return routing_text(to_turns(messages), question)


def _as_mapping(value: Any) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return value
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            dumped = dump()
        except Exception:  # a foreign object whose dump fails is simply not a usage record
            return None
        return dumped if isinstance(dumped, Mapping) else None
    if hasattr(value, "__dict__"):
        return vars(value)
    return None


def _tokens(usage: Mapping[str, Any]) -> tuple[int, int] | None:
    found_in = next((usage[k] for k in _INPUT_KEYS if isinstance(usage.get(k), int)), None)
    found_out = next((usage[k] for k in _OUTPUT_KEYS if isinstance(usage.get(k), int)), None)
    if found_in is None or found_out is None:
        return None
    return int(found_in), int(found_out)


def _usage_candidates(response: LLMResponse) -> Iterator[Mapping[str, Any]]:
    raw = _as_mapping(response.raw)
    if raw is not None:
        for key in ("usage", "usage_metadata"):
            usage = _as_mapping(raw.get(key))
            if usage is not None:
                yield usage
        yield raw  # e.g. Ollama: prompt_eval_count / eval_count at the top level
    yield response.additional_kwargs  # e.g. OpenAI: prompt_tokens / completion_tokens


def usage_of(response: LLMResponse) -> tuple[int, int] | None:
    """``(input_tokens, output_tokens)`` a candidate reported for a call, or None.

    Looks where LlamaIndex integrations put usage (the same places as LlamaIndex's
    ``TokenCountingHandler``): ``raw["usage"]`` / ``raw["usage_metadata"]`` (OpenAI, Anthropic,
    Gemini), top-level ``raw`` counters (Ollama), then ``additional_kwargs``.
    """
    for usage in _usage_candidates(response):
        tokens = _tokens(usage)
        if tokens is not None:
            return tokens
    return None


def routing_info(response: Any) -> dict[str, Any] | None:
    """The routing data attached to a response by ``MetaRouterLLM`` (None if it has none)."""
    kwargs = getattr(response, "additional_kwargs", None)
    if not isinstance(kwargs, Mapping):
        return None
    info = kwargs.get(ROUTING_KEY)
    return info if isinstance(info, dict) else None


def pending_tool_call_ids(messages: Sequence[ChatMessage]) -> list[str]:
    """Ids of the tool calls a conversation is waiting on (empty if it waits on none).

    A conversation waits on tool calls when it ends with tool-result messages: their
    ``additional_kwargs["tool_call_id"]`` and the :class:`ToolCallBlock` ids of the assistant
    message before them are returned, most recent first, each once.
    """
    ids: list[str] = []
    index = len(messages) - 1
    while index >= 0 and messages[index].role == MessageRole.TOOL:
        tool_id = messages[index].additional_kwargs.get("tool_call_id")
        if isinstance(tool_id, str) and tool_id:
            ids.append(tool_id)
        index -= 1
    if index == len(messages) - 1:
        return []
    if index >= 0 and messages[index].role == MessageRole.ASSISTANT:
        ids.extend(
            block.tool_call_id
            for block in messages[index].blocks
            if isinstance(block, ToolCallBlock) and block.tool_call_id
        )
    return list(dict.fromkeys(ids))


def tool_calls_from_blocks(response: ChatResponse) -> list[ToolSelection]:
    """Tool calls read from the response message's :class:`ToolCallBlock` blocks.

    The provider-neutral reading used when a response carries no routing data (so the
    candidate that wrote it is unknown).
    """
    selections = []
    for block in response.message.blocks:
        if not isinstance(block, ToolCallBlock):
            continue
        kwargs: Any = block.tool_kwargs
        if isinstance(kwargs, str):
            try:
                kwargs = json.loads(kwargs) if kwargs.strip() else {}
            except ValueError:
                kwargs = {}
        selections.append(
            ToolSelection(
                tool_id=block.tool_call_id or "",
                tool_name=block.tool_name,
                tool_kwargs=kwargs if isinstance(kwargs, dict) else {},
            )
        )
    return selections
