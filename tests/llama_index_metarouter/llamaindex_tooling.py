"""Test tooling for the LlamaIndex adapter: candidates replaying real RouterBench answers, a
candidate whose provider is down, and instrumentation capture.

Imported by the tests and by conftest.py (a plain module: pytest puts this folder on sys.path).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import AsyncGenerator, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.base import BaseEvent
from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler
from llama_index.core.llms import LLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.mock import MockFunctionCallingLLM
from metarouter.pricing import Price, estimate_tokens

#: RouterBench models used as recorded candidates, with their list prices (USD / 1M tokens)
#: and the catalog model whose capability profile stands in for them.
STRONG = "gpt-4-1106-preview"
CHEAP = "mistralai/mistral-7b-chat"
RECORDED_ARMS = {
    STRONG: {"price": Price(10.0, 30.0), "like": "llama-3.3-nemotron-super-49b-v1"},
    CHEAP: {"price": Price(0.2, 0.2), "like": "mistral-7b-instruct-v0.3"},
}


# -- the LLM entry points ------------------------------------------------------------------
VARIANTS = list(itertools.product(["chat", "complete"], ["sync", "async"], [False, True]))
IDS = [f"{api}-{mode}-{'stream' if stream else 'plain'}" for api, mode, stream in VARIANTS]


async def call(
    llm: Any, api: str, mode: str, stream: bool, text: str, **kwargs: Any
) -> tuple[str, ChatResponse | CompletionResponse, int]:
    """Run one entry point; returns (answer text, last response, number of chunks).

    For streams the answer is the concatenated deltas.
    """
    messages = [ChatMessage(role="user", content=text)]
    if api == "chat":
        if mode == "sync":
            out = (
                list(llm.stream_chat(messages, **kwargs))
                if stream
                else [llm.chat(messages, **kwargs)]
            )
        else:
            out = (
                [c async for c in await llm.astream_chat(messages, **kwargs)]
                if stream
                else [await llm.achat(messages, **kwargs)]
            )
        final = out[-1].message.content or ""
    else:
        if mode == "sync":
            out = (
                list(llm.stream_complete(text, **kwargs))
                if stream
                else [llm.complete(text, **kwargs)]
            )
        else:
            out = (
                [c async for c in await llm.astream_complete(text, **kwargs)]
                if stream
                else [await llm.acomplete(text, **kwargs)]
            )
        final = out[-1].text
    if stream:  # what a streaming consumer shows: the deltas, in order
        final = "".join(c.delta or "" for c in out)
    return final, out[-1], len(out)


@contextmanager
def restored_settings() -> Iterator[Any]:
    """``llama_index.core.Settings``, restored on exit (the ``settings`` fixture uses it)."""
    from llama_index.core import Settings

    saved = dict(vars(Settings))
    try:
        yield Settings
    finally:
        for key in list(vars(Settings)):
            if key not in saved:
                delattr(Settings, key)
        for key, value in saved.items():
            setattr(Settings, key, value)


def method_name(api: str, mode: str, stream: bool) -> str:
    name = ("stream_" if stream else "") + api
    return "a" + name if mode == "async" else name


# -- recorded RouterBench answers --------------------------------------------------------------
@dataclass(frozen=True)
class RecordedAnswers:
    """Real RouterBench responses: ``answers[model][prompt]`` plus the prompts, in order."""

    prompts: tuple[str, ...]
    answers: dict[str, dict[str, str]]
    quality: dict[str, dict[str, float]]


class RecordedLLM(LLM):
    """A candidate that answers with a real model's recorded RouterBench responses.

    A known prompt gets that model's real answer; any other prompt (LlamaIndex builds its own
    prompts in pipelines) gets one of the model's recorded answers, picked deterministically.
    Chat and completion, sync and async (really awaiting), streaming word by word. Token usage
    is reported the way the OpenAI integration does (``additional_kwargs`` on the response, on
    the last chunk of a stream).
    """

    recorded_model: str = Field(description="RouterBench model whose answers are replayed.")
    window: int = Field(default=8192, description="Context window reported in metadata.")
    _answers: dict[str, str] = PrivateAttr()
    _pool: list[str] = PrivateAttr()
    calls: list[str] = Field(default_factory=list, exclude=True)
    conversations: list[list[ChatMessage]] = Field(default_factory=list, exclude=True)

    def __init__(self, recorded_model: str, answers: dict[str, str], **kwargs: Any) -> None:
        super().__init__(recorded_model=recorded_model, **kwargs)
        self._answers = dict(answers)
        self._pool = [answers[k] for k in sorted(answers)]

    @classmethod
    def class_name(cls) -> str:
        return "RecordedLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.window,
            num_output=512,
            is_chat_model=True,
            model_name=self.recorded_model,
        )

    def answer(self, prompt: str) -> str:
        if prompt in self._answers:
            return self._answers[prompt]
        digest = int(hashlib.sha256(prompt.encode()).hexdigest(), 16)
        return self._pool[digest % len(self._pool)]

    @staticmethod
    def _prompt(messages: Sequence[ChatMessage]) -> str:
        users = [m.content or "" for m in messages if m.role == MessageRole.USER]
        return users[-1] if users else "\n".join(m.content or "" for m in messages)

    def _usage(self, prompt: str, text: str) -> dict[str, int]:
        return {
            "prompt_tokens": estimate_tokens(prompt),
            "completion_tokens": estimate_tokens(text),
        }

    def _pieces(self, text: str) -> list[str]:
        words = text.split(" ")
        return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]

    # chat
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        prompt = self._prompt(messages)
        self.calls.append("chat")
        self.conversations.append(list(messages))
        text = self.answer(prompt)
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
            additional_kwargs=self._usage(prompt, text),
        )

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        await asyncio.sleep(0)
        prompt = self._prompt(messages)
        self.calls.append("achat")
        self.conversations.append(list(messages))
        text = self.answer(prompt)
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
            additional_kwargs=self._usage(prompt, text),
        )

    def _chat_chunks(self, prompt: str) -> Iterator[ChatResponse]:
        text = self.answer(prompt)
        pieces = self._pieces(text)
        so_far = ""
        for i, piece in enumerate(pieces):
            so_far += piece
            last = i == len(pieces) - 1
            yield ChatResponse(
                message=ChatMessage(role=MessageRole.ASSISTANT, content=so_far),
                delta=piece,
                additional_kwargs=self._usage(prompt, text) if last else {},
            )

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        prompt = self._prompt(messages)
        self.calls.append("stream_chat")
        self.conversations.append(list(messages))

        def gen() -> Generator[ChatResponse, None, None]:
            yield from self._chat_chunks(prompt)

        return gen()

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        prompt = self._prompt(messages)
        self.calls.append("astream_chat")
        self.conversations.append(list(messages))

        async def gen() -> AsyncGenerator[ChatResponse, None]:
            for chunk in self._chat_chunks(prompt):
                await asyncio.sleep(0)
                yield chunk

        return gen()

    # completion
    def _completion_chunks(self, prompt: str) -> Iterator[CompletionResponse]:
        text = self.answer(prompt)
        pieces = self._pieces(text)
        so_far = ""
        for i, piece in enumerate(pieces):
            so_far += piece
            last = i == len(pieces) - 1
            yield CompletionResponse(
                text=so_far,
                delta=piece,
                additional_kwargs=self._usage(prompt, text) if last else {},
            )

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.calls.append("complete")
        text = self.answer(prompt)
        return CompletionResponse(text=text, additional_kwargs=self._usage(prompt, text))

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        await asyncio.sleep(0)
        self.calls.append("acomplete")
        text = self.answer(prompt)
        return CompletionResponse(text=text, additional_kwargs=self._usage(prompt, text))

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        self.calls.append("stream_complete")
        return self._completion_chunks(prompt)  # type: ignore[return-value]

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        self.calls.append("astream_complete")

        async def gen() -> AsyncGenerator[CompletionResponse, None]:
            for chunk in self._completion_chunks(prompt):
                await asyncio.sleep(0)
                yield chunk

        return gen()


class BrokenLLM(MockFunctionCallingLLM):
    """A function-calling candidate whose provider is down: every call raises at once.

    With ``fail_after`` set, streams yield that many chunks and then raise (a connection
    dropped mid-answer).
    """

    fail_after: int | None = None
    attempts: int = 0

    def _fail(self) -> None:
        self.attempts += 1
        raise ConnectionError("provider unavailable (HTTP 503)")

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        self._fail()
        raise AssertionError("unreachable")

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        self._fail()
        raise AssertionError("unreachable")

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        def gen() -> Generator[ChatResponse, None, None]:
            for i in range(self.fail_after or 0):
                yield ChatResponse(message=ChatMessage(content=f"part{i} "), delta=f"part{i} ")
            self._fail()

        return gen()

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        async def gen() -> AsyncGenerator[ChatResponse, None]:
            for i in range(self.fail_after or 0):
                yield ChatResponse(message=ChatMessage(content=f"part{i} "), delta=f"part{i} ")
            self._fail()

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._fail()
        raise AssertionError("unreachable")

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        self._fail()
        raise AssertionError("unreachable")

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        def gen() -> Generator[CompletionResponse, None, None]:
            self._fail()
            yield CompletionResponse(text="")

        return gen()

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        async def gen() -> AsyncGenerator[CompletionResponse, None]:
            self._fail()
            yield CompletionResponse(text="")

        return gen()


# -- instrumentation --------------------------------------------------------------------------
class EventLog(BaseEventHandler):
    """Collects every instrumentation event."""

    events: list[BaseEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "EventLog"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@dataclass
class Trace:
    events: EventLog
    spans: SimpleSpanHandler

    def span_parents(self) -> dict[str, str | None]:
        """``span id -> parent span id`` of every finished or dropped span."""
        spans = [*self.spans.completed_spans, *self.spans.dropped_spans]
        return {s.id_: s.parent_id for s in spans}
