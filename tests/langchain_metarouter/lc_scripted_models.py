"""Deterministic candidate chat models for the adapter tests (no network, no randomness).

``ScriptedChatModel`` behaves like a small real provider integration:

* answers with a fixed text (``replies[prompt]`` or ``"[<model_name>] <prompt>"``), cut at stop
  sequences;
* really emits tool calls when tools are bound: when ``tool_choice`` forces a call, or when the
  prompt names a tool (or says "use the tool"), it calls the tool with arguments synthesised
  from the tool's JSON schema and the prompt (integers from the prompt in order, quoted text for
  strings); after a tool result it answers in text;
* reports ``usage_metadata`` (one chunk carries input tokens), ``model_name`` (last chunk) and
  ``model_provider`` on every chunk, like langchain-openai;
* streams word by word, with native async (``_agenerate``/``_astream``);
* can be told to fail (``fail_with``) before or after its first chunk, and counts its calls.

``TextOnlyChatModel`` is the same without tool calling (``bind_tools`` not implemented).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from openai_loopback import tool_arguments, tool_named_in
from pydantic import Field, PrivateAttr

_FORCING = {"any", "required", True}


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _last_human(messages: Sequence[BaseMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return message.text
    return messages[-1].text if messages else ""


class TextOnlyChatModel(BaseChatModel):
    """A deterministic chat model without tool calling (see the module docstring)."""

    model_name: str = "scripted"
    """Name reported in ``response_metadata["model_name"]``."""
    replies: dict[str, str] = Field(default_factory=dict)
    """Exact prompt -> answer text; other prompts get ``"[<model_name>] <prompt>"``."""
    fail_with: BaseException | None = None
    """Raise this instead of answering."""
    fail_after_chunks: int | None = None
    """With ``fail_with``: raise after streaming this many chunks (None: before any)."""
    temperature: float | None = None
    """Accepted like a real provider's sampling parameter (recorded, not used)."""
    max_tokens: int | None = None
    """Accepted like a real provider's output limit (recorded, not used)."""

    _calls: list[list[BaseMessage]] = PrivateAttr(default_factory=list)
    _async_calls: int = PrivateAttr(default=0)

    @property
    def calls(self) -> list[list[BaseMessage]]:
        """Messages of every call received, oldest first."""
        return self._calls

    @property
    def async_calls(self) -> int:
        """How many calls came through the native async hooks."""
        return self._async_calls

    @property
    def _llm_type(self) -> str:
        return "scripted-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    # -- the script -----------------------------------------------------------------------------
    def _answer(
        self, messages: Sequence[BaseMessage], stop: list[str] | None, **kwargs: Any
    ) -> AIMessage:
        self._calls.append(list(messages))
        tools: list[dict[str, Any]] = kwargs.get("tools") or []
        call = self._tool_call(messages, tools, kwargs.get("tool_choice"))
        prompt = _last_human(messages)
        if call is not None:
            text = ""
        elif isinstance(messages[-1], ToolMessage):
            text = f"The tool {messages[-1].name or 'call'} returned: {messages[-1].text}"
        else:
            text = self.replies.get(prompt) or f"[{self.model_name}] {prompt or 'hello'}"
        for s in stop or []:
            if s and s in text:
                text = text[: text.index(s)] or text
        usage = {
            "input_tokens": sum(_tokens(m.text) for m in messages),
            "output_tokens": _tokens(text or json.dumps(call or {})),
        }
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        return AIMessage(
            content=text,
            tool_calls=[call] if call else [],
            usage_metadata=usage,  # type: ignore[arg-type]
            response_metadata={
                "model_name": self.model_name,
                "model_provider": "scripted",
                "finish_reason": "tool_calls" if call else "stop",
            },
        )

    def _tool_call(
        self, messages: Sequence[BaseMessage], tools: list[dict[str, Any]], tool_choice: Any
    ) -> dict[str, Any] | None:
        if not tools or isinstance(messages[-1], ToolMessage) or tool_choice == "none":
            return None
        by_name = {t["function"]["name"]: t["function"] for t in tools}
        prompt = _last_human(messages)
        chosen: dict[str, Any] | None = None
        if isinstance(tool_choice, str) and tool_choice in by_name:
            chosen = by_name[tool_choice]
        elif isinstance(tool_choice, dict):
            name = tool_choice.get("function", {}).get("name") or tool_choice.get("name")
            chosen = by_name.get(name) if name else None
        if chosen is None:
            named = tool_named_in(prompt, by_name)
            chosen = by_name[named] if named is not None else None
            if chosen is None and (tool_choice in _FORCING or "tool" in prompt.lower()):
                chosen = next(iter(by_name.values()))
        if chosen is None:
            return None
        return {
            "name": chosen["name"],
            "args": self._arguments(chosen.get("parameters") or {}, prompt),
            "id": f"call_{len(self._calls)}_{chosen['name']}",
            "type": "tool_call",
        }

    @staticmethod
    def _arguments(schema: dict[str, Any], prompt: str) -> dict[str, Any]:
        return tool_arguments(schema, prompt, lambda name: f"{name} for: {prompt[:60]}")

    # -- LangChain hooks ------------------------------------------------------------------------
    def _fail_now(self, sent: int) -> None:
        if self.fail_with is not None and (
            self.fail_after_chunks is None or sent >= self.fail_after_chunks
        ):
            raise self.fail_with

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._fail_now(0)
        return ChatResult(
            generations=[ChatGeneration(message=self._answer(messages, stop, **kwargs))]
        )

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        await asyncio.sleep(0)
        self._async_calls += 1
        return self._generate(messages, stop, **kwargs)

    def _chunks(self, message: AIMessage) -> Iterator[AIMessageChunk]:
        assert isinstance(message.content, str)
        words = re.findall(r"\S+\s*", message.content) or [""]
        provider = {"model_provider": "scripted"}
        for word in words[:-1]:
            yield AIMessageChunk(content=word, response_metadata=provider)
        calls = message.tool_calls
        for i, call in enumerate(calls):
            args = json.dumps(call["args"], ensure_ascii=False)
            half = len(args) // 2
            yield AIMessageChunk(
                content="",
                response_metadata=provider,
                tool_call_chunks=[
                    tool_call_chunk(name=call["name"], args=args[:half], id=call["id"], index=i)
                ],
            )
            yield AIMessageChunk(
                content="",
                response_metadata=provider,
                tool_call_chunks=[tool_call_chunk(name=None, args=args[half:], id=None, index=i)],
            )
        yield AIMessageChunk(
            content=words[-1],
            usage_metadata=message.usage_metadata,
            response_metadata={**message.response_metadata},
            chunk_position="last",
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        self._fail_now(0)
        message = self._answer(messages, stop, **kwargs)
        for sent, chunk in enumerate(self._chunks(message)):
            if sent:
                self._fail_now(sent)
            yield ChatGenerationChunk(message=chunk)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        self._async_calls += 1
        for chunk in self._stream(messages, stop, **kwargs):
            await asyncio.sleep(0)
            yield chunk


class ScriptedChatModel(TextOnlyChatModel):
    """A deterministic chat model with tool calling (see the module docstring)."""

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> Any:
        """Bind tools in OpenAI format (as langchain-openai does)."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)
