"""``MetaRouterLLM``: a LlamaIndex LLM that sends each call to the candidate fitting the user.

The adapter is thin: it converts a LlamaIndex call (messages or prompt, tools, user, forced
model) into the core's :class:`~metarouter.dispatch.CallRequest`, lets the core's
:class:`~metarouter.dispatch.CallFlow` route it, try the candidates in order and book the
outcome, calls the chosen candidate LLM for real, and hands its response back with the routing
data attached (plus LlamaIndex instrumentation events). Learning from feedback is the core's.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar, cast

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
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.span import active_span_id
from llama_index.core.llms import LLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.prompts import BasePromptTemplate
from metarouter.budgets import Budgets
from metarouter.dispatch import Call, CallFlow, CallRequest, check_user_id
from metarouter.errors import ConfigError, UnknownArmError
from metarouter.feedback import default_feedback_user
from metarouter.text import Turn, question_from_variables, routing_text

from llama_index_metarouter.candidates import (
    CandidateLike,
    can_call_tools,
    dispatched_llm,
    merged_metadata,
    resolve_candidates,
)
from llama_index_metarouter.events import (
    FeedbackRecordedEvent,
    RoutingCompletedEvent,
    RoutingDecisionEvent,
    RoutingFallbackEvent,
)
from llama_index_metarouter.feedback import ComparePair, FeedbackItem, RoutedCall, as_feedback_item
from llama_index_metarouter.scope import (
    RoutingScope,
    active_scopes,
    pop_scope,
    push_scope,
    scopes_in_other_threads,
)
from llama_index_metarouter.utils import (
    ROUTING_KEY,
    pending_tool_call_ids,
    query_text,
    routing_info,
    tool_calls_from_blocks,
    usage_of,
)

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool
    from metarouter.router import MetaRouter
    from metarouter.service import ArmSpec, FeedbackListener, RoutingService
    from metarouter.store.base import PreferenceStore
    from metarouter.store.records import ComparisonRecord, ComparisonSource
    from metarouter.types import Preference

__all__ = ["MODEL_KWARG", "USER_KWARG", "MetaRouterLLM"]

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)

#: Per-call keyword naming the user (``llm.chat(messages, user_id="alice")``).
USER_KWARG = "user_id"
#: Per-call keyword forcing a candidate (``llm.chat(messages, model="gemma-2-9b-it")``).
MODEL_KWARG = "model"
#: Chat keyword carrying a tool request from ``_prepare_chat_with_tools`` to the dispatch.
_TOOLS_KWARG = "metarouter_tool_request"

#: The tool-calling twin of each chat entry point of a candidate.
_WITH_TOOLS = {
    "chat": "chat_with_tools",
    "achat": "achat_with_tools",
    "stream_chat": "stream_chat_with_tools",
    "astream_chat": "astream_chat_with_tools",
}
#: The user's question while ``predict()``/``stream()``/... fill a prompt template with it.
_QUESTION: ContextVar[str | None] = ContextVar("metarouter_question", default=None)

_R = TypeVar("_R", bound=ChatResponse | CompletionResponse)
_T = TypeVar("_T")


@dataclass(frozen=True)
class _ToolRequest:
    """The tools of a ``chat_with_tools`` call, to be prepared by whichever candidate answers."""

    tools: tuple[BaseTool, ...]
    verbose: bool
    allow_parallel_tool_calls: bool
    tool_required: bool
    extra: dict[str, Any]

    def arguments(self, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any]) -> Any:
        """Keyword arguments of a candidate's ``*chat_with_tools`` for this request."""
        return {
            "tools": list(self.tools),
            "chat_history": list(messages),
            "verbose": self.verbose,
            "allow_parallel_tool_calls": self.allow_parallel_tool_calls,
            "tool_required": self.tool_required,
            **self.extra,
            **kwargs,
        }


@dataclass(frozen=True)
class _Plan:
    """A call as the core sees it, plus what the candidate will be called with."""

    request: CallRequest
    tools: _ToolRequest | None
    kwargs: dict[str, Any]


@dataclass
class _Route:
    """A decided call on its way through the candidates."""

    plan: _Plan
    call: Call
    span_id: str | None
    scopes: list[RoutingScope] = field(default_factory=list)

    @property
    def info(self) -> dict[str, Any]:
        """The routing data (one dict, updated in place; streamed chunks share it)."""
        return self.call.data


class MetaRouterLLM(FunctionCallingLLM):
    """A LlamaIndex LLM that routes each call to the candidate fitting the user's taste.

    Every call is routed by the meta-learned router to one of the candidate LLMs, given the
    user's cost-vs-quality preference learned from their pairwise feedback, then dispatched to
    that candidate for real (chat, completion, streaming, async, tools). If the chosen
    candidate raises, the next-best one is tried (never for a forced model). The routing data
    (decision id, scores, chosen model, user id, cost in USD) is in the response's
    ``additional_kwargs["metarouter"]``, and a :class:`RoutingDecisionEvent` is dispatched to
    LlamaIndex's instrumentation for every decision.

    Args:
        candidates: ``name -> LLM`` or ``name -> Candidate(llm, price=..., like=...)``. Names in
            the router's catalog need no description; others need a price and ``like`` or
            ``quality`` (see :class:`~llama_index_metarouter.Candidate`).
        arms: Alternatively, the descriptions as core ``ArmSpec(name, price=..., like=...)``
            (as the LangChain adapter takes them), for plain-LLM candidates.
        service: A ready :class:`~metarouter.service.RoutingService` (e.g. shared with the
            LangChain adapter) whose arms include every candidate name. Excludes ``router``
            and ``store``.
        router: The router (default: the bundled one, ``MetaRouter.default()``).
        store: The preference store, or a SQLite file path (default:
            ``$METAROUTER_STORE`` or ``~/.local/share/metarouter/preferences.db``).
        user_id: The user of this instance's calls (per call: ``user_id=`` keyword, or
            :meth:`scope`; default: the service's default user).
        fallback: Try the next-best candidate when the chosen one fails.
        fallback_on: Exception types that make the router fall back (default: any).
        max_fallbacks: How many next-best candidates to try after the chosen one fails
            (None: all of them; 0: none).
        timeout: Seconds one candidate may take (for a stream: to its first chunk), its own
            retries included, before the router falls back (None: no limit of its own).
        callback_manager: LlamaIndex callback manager.
        **kwargs: Other :class:`~llama_index.core.llms.LLM` fields (e.g. ``system_prompt``).

    Raises:
        ConfigError: No candidates, a value that is not a LlamaIndex LLM, a description that
            conflicts with ``service``, or candidates missing from the service.
        UnknownArmError: A candidate outside the router's catalog has no description.

    Example:
        >>> from llama_index.core import Settings
        >>> Settings.llm = MetaRouterLLM(
        ...     {"gemma-2-9b-it": gemma, "gpt-4o": Candidate(gpt4o, price=(2.5, 10), like=...)},
        ...     user_id="alice",
        ... )  # doctest: +SKIP
    """

    user_id: str | None = Field(
        default=None, description="User of this instance's calls (None: the default user)."
    )
    """User of this instance's calls (None: the service's default user)."""
    fallback: bool = Field(
        default=True, description="Try the next-best candidate when the chosen one fails."
    )
    """Try the next-best candidate when the chosen one fails (never for a forced model)."""
    fallback_on: tuple[type[BaseException], ...] = Field(
        default=(Exception,), description="Exception types that make the router fall back."
    )
    """Exception types that make the router fall back; anything else propagates at once."""
    max_fallbacks: int | None = Field(
        default=None,
        ge=0,
        description="Next-best candidates to try after the chosen one fails (None: all).",
    )
    """Next-best candidates to try after the chosen one fails (None: all)."""
    timeout: float | None = Field(
        default=None,
        gt=0,
        description="Seconds one candidate attempt may take before the router falls back.",
    )
    """Seconds one candidate may take (its own retries included) before the router falls
    back; for a stream, the time to its first chunk (None: no limit of the router's own)."""

    _flow: CallFlow = PrivateAttr()
    _llms: dict[str, LLM] = PrivateAttr()
    _dispatched: dict[str, LLM] = PrivateAttr()

    def __init__(
        self,
        candidates: Mapping[str, CandidateLike],
        *,
        arms: Sequence[ArmSpec] = (),
        service: RoutingService | None = None,
        router: MetaRouter | None = None,
        store: PreferenceStore | str | os.PathLike[str] | None = None,
        user_id: str | None = None,
        fallback: bool = True,
        fallback_on: tuple[type[BaseException], ...] = (Exception,),
        max_fallbacks: int | None = None,
        timeout: float | None = None,
        callback_manager: CallbackManager | None = None,
        **kwargs: Any,
    ) -> None:
        llms, specs, described = resolve_candidates(candidates, arms)
        if service is not None:
            if router is not None or store is not None:
                raise ConfigError(
                    "pass either service= or router=/store=, not both: a RoutingService already "
                    "owns its router and store."
                )
            if described:
                raise ConfigError(
                    "candidates are described (price/like/quality) by the RoutingService passed "
                    "as service=; pass plain LLMs and no arms=, or drop service= and let "
                    "MetaRouterLLM build it."
                )
        else:
            from metarouter.service import RoutingService  # torch: loaded on first use

            if isinstance(store, (str, os.PathLike)):
                from metarouter.store.sql import SQLStore

                store = SQLStore(store)
            service = RoutingService(specs, router=router, store=store)
        if user_id is not None:
            check_user_id(user_id)
        super().__init__(
            user_id=user_id,
            fallback=fallback,
            fallback_on=fallback_on,
            max_fallbacks=max_fallbacks,
            timeout=timeout,
            callback_manager=callback_manager or CallbackManager([]),
            **kwargs,
        )
        # the fallback fields are read on every call: changing them later takes effect
        self._flow = CallFlow(service, list(llms), policy=self, integration="llama_index")
        self._llms = llms
        self._dispatched = {name: dispatched_llm(llm) for name, llm in llms.items()}

    # -- identity -------------------------------------------------------------------------------
    @classmethod
    def class_name(cls) -> str:
        """Class name."""
        return "MetaRouterLLM"

    @property
    def service(self) -> RoutingService:
        """The routing core (router, preference store, feedback)."""
        return self._flow.service

    @property
    def _service(self) -> RoutingService:
        return self._flow.service

    @property
    def flow(self) -> CallFlow:
        """The core's per-call policy for this router."""
        return self._flow

    @property
    def candidates(self) -> Mapping[str, LLM]:
        """The candidate LLMs by name (read-only)."""
        return MappingProxyType(self._llms)

    @property
    def metadata(self) -> LLMMetadata:
        """Metadata every candidate satisfies (see :func:`merged_metadata`)."""
        return merged_metadata(self._llms)

    def to_payload(self) -> dict[str, Any]:
        """Observability payload: the merged metadata plus candidate names and user id."""
        return {**super().to_payload(), "candidates": list(self._llms), "user_id": self.user_id}

    def for_user(self, user_id: str) -> MetaRouterLLM:
        """A view of this router whose calls belong to ``user_id`` (shares everything else).

        Handy for pipelines: ``index.as_query_engine(llm=router.for_user("alice"))``.
        """
        check_user_id(user_id)
        return self.model_copy(update={"user_id": user_id})

    def warm_up(self, user_id: str | None = None) -> float:
        """Load the embedding model, the policy and the store now; returns the seconds taken.

        Call it at start-up: otherwise the first routed call of the process pays for it
        (several seconds on a CPU). Nothing is recorded.
        """
        return self.flow.warm_up(user_id if user_id is not None else self.user_id)

    @contextmanager
    def scope(
        self, *, user_id: str | None = None, model: str | None = None
    ) -> Iterator[RoutingScope]:
        """Route every call made inside the block for ``user_id`` (and/or force ``model``).

        The block's routed calls are collected in the returned scope's ``calls``, which is how
        to get decision ids out of a query engine, chat engine or agent for feedback::

            with router.scope(user_id="alice") as scope:
                answer = query_engine.query("...")
            router.record_preference(scope.last, other_answer)

        Scopes follow ``async`` tasks (they live in a context variable) and apply to every
        router sharing this one's routing service. A thread started inside the block does not
        inherit it: run its work with ``contextvars.copy_context().run`` (see docs).
        """
        if user_id is not None:
            check_user_id(user_id)
        if model is not None and model not in self._llms:
            raise UnknownArmError(
                f"model override {model!r} is not a candidate of this router; candidates are "
                f"{list(self._llms)}."
            )
        current = RoutingScope(self._service, user_id, model)
        token = push_scope(current)
        try:
            yield current
        finally:
            pop_scope(current, token)

    # -- the user's question in templated calls --------------------------------------------------
    @contextmanager
    def _question(
        self, prompt: BasePromptTemplate, prompt_args: Mapping[str, Any]
    ) -> Iterator[None]:
        """Route calls made while filling ``prompt`` on the question it names (if any)."""
        variables = {**(getattr(prompt, "kwargs", None) or {}), **prompt_args}
        token = _QUESTION.set(question_from_variables(variables))
        try:
            yield
        finally:
            _QUESTION.reset(token)

    def predict(self, prompt: BasePromptTemplate, **prompt_args: Any) -> str:
        """LlamaIndex ``predict``, routed on the template's question (``query_str``, ...)."""
        with self._question(prompt, prompt_args):
            return super().predict(prompt, **prompt_args)

    async def apredict(self, prompt: BasePromptTemplate, **prompt_args: Any) -> str:
        """Async :meth:`predict`."""
        with self._question(prompt, prompt_args):
            return await super().apredict(prompt, **prompt_args)

    def stream(self, prompt: BasePromptTemplate, **prompt_args: Any) -> Any:
        """LlamaIndex ``stream``, routed on the template's question (``query_str``, ...)."""
        with self._question(prompt, prompt_args):
            return super().stream(prompt, **prompt_args)

    async def astream(self, prompt: BasePromptTemplate, **prompt_args: Any) -> Any:
        """Async :meth:`stream`."""
        with self._question(prompt, prompt_args):
            return await super().astream(prompt, **prompt_args)

    def structured_predict(
        self, output_cls: Any, prompt: Any, *args: Any, **prompt_args: Any
    ) -> Any:
        """LlamaIndex ``structured_predict``, routed on the template's question."""
        with self._question(prompt, prompt_args):
            return super().structured_predict(output_cls, prompt, *args, **prompt_args)

    async def astructured_predict(
        self, output_cls: Any, prompt: Any, *args: Any, **prompt_args: Any
    ) -> Any:
        """Async :meth:`structured_predict`."""
        with self._question(prompt, prompt_args):
            return await super().astructured_predict(output_cls, prompt, *args, **prompt_args)

    # -- planning and routing -------------------------------------------------------------------
    def _resolve_user(self, user_id: str | None, scopes: Sequence[RoutingScope]) -> str | None:
        """The call's user: keyword, innermost scope, instance; never a guess.

        Raises:
            ConfigError: The call names no user while a scope of this router is open in another
                thread (a worker thread does not inherit the scope).
        """
        if user_id is not None:
            return user_id
        for current in scopes:
            if current.user_id is not None:
                return current.user_id
        if self.user_id is not None:
            return self.user_id
        if not scopes and scopes_in_other_threads(self._service):
            raise ConfigError(
                "this call names no user and sees no routing scope, but a scope of this router "
                "is open in another thread: a thread (e.g. a ThreadPoolExecutor worker) does "
                "not inherit the scope, and the router will not guess whose call it is. Fix: "
                "run the work with the caller's context, executor.submit(contextvars."
                "copy_context().run, fn, ...), or pass user_id=..., or use "
                "router.for_user(...)."
            )
        return None

    def _plan(
        self,
        kwargs: Mapping[str, Any],
        text: str,
        messages: Sequence[ChatMessage] | None = None,
        *,
        compare: str | None = None,
        user_id: str | None = None,
    ) -> _Plan:
        rest = dict(kwargs)
        given_user = rest.pop(USER_KWARG, None)
        model = rest.pop(MODEL_KWARG, None)
        tools = rest.pop(_TOOLS_KWARG, None)
        scopes = active_scopes(self._service)
        if model is None and compare is None:
            model = next((s.model for s in scopes if s.model is not None), None)
        lacking: dict[str, list[str]] = {}
        if tools is not None:
            lacking = {
                n: ["tool_calling"] for n, llm in self._llms.items() if not can_call_tools(llm)
            }
        request = CallRequest(
            text=text,
            user_id=user_id if compare is not None else self._resolve_user(given_user, scopes),
            model=compare or model,
            lacking=lacking,
            needs=("tool_calling",) if tools is not None else (),
            pending_tool_calls=pending_tool_call_ids(messages) if messages else (),
            compare=compare is not None,
        )
        return _Plan(request, tools, rest)

    def _decided(self, plan: _Plan, call: Call) -> _Route:
        """The route of a decided call; the decision is announced to instrumentation."""
        decision = call.decision
        dispatcher.event(
            RoutingDecisionEvent(
                decision_id=decision.decision_id,
                user_id=decision.user_id,
                model=decision.model,
                reason=call.reason,
                scores=dict(decision.routing.scores),
                ranking=list(decision.routing.ranking),
                expected_cost_usd=float(decision.routing.expected_costs_usd[decision.model]),
                quality_weight=float(decision.routing.quality_weight),
            )
        )
        return _Route(plan, call, active_span_id.get(), active_scopes(self._service))

    def _route(self, plan: _Plan) -> _Route:
        return self._decided(plan, self.flow.start(plan.request))

    async def _aroute(self, plan: _Plan) -> _Route:
        return self._decided(plan, await asyncio.to_thread(self.flow.start, plan.request))

    def _chat_plan(self, messages: Sequence[ChatMessage], kwargs: Mapping[str, Any]) -> _Plan:
        return self._plan(kwargs, query_text(messages, _QUESTION.get()), messages)

    def _completion_plan(self, prompt: str, kwargs: Mapping[str, Any]) -> _Plan:
        if _TOOLS_KWARG in kwargs:
            raise ConfigError("tools need a chat call: use chat_with_tools(), not a completion.")
        return self._plan(kwargs, routing_text([Turn("user", prompt)], _QUESTION.get()))

    # -- dispatch -------------------------------------------------------------------------------
    def _fallback_hook(self, route: _Route) -> Callable[[str, BaseException, str | None], None]:
        def announce(name: str, exc: BaseException, nxt: str | None) -> None:
            dispatcher.event(
                RoutingFallbackEvent(
                    decision_id=route.call.decision.decision_id,
                    failed_model=name,
                    error=f"{type(exc).__name__}: {exc}",
                    next_model=nxt,
                    span_id=route.span_id,
                )
            )

        return announce

    def _dispatch(self, route: _Route, call: Callable[[LLM], _T]) -> tuple[_T, str]:
        return self.flow.attempt(
            route.call,
            lambda name: call(self._dispatched[name]),
            on_failure=self._fallback_hook(route),
        )

    async def _adispatch(
        self, route: _Route, call: Callable[[LLM], Awaitable[_T]]
    ) -> tuple[_T, str]:
        return await self.flow.aattempt(
            route.call,
            lambda name: call(self._dispatched[name]),
            on_failure=self._fallback_hook(route),
        )

    # Tool calls go through the candidate's public *chat_with_tools, which prepares the tools in
    # its provider's format and validates its own answer.
    def _chat(self, method: str, llm: LLM, route: _Route, messages: Sequence[ChatMessage]) -> Any:
        """Call ``llm.<method>`` (``chat``, ``achat``, ``stream_chat``, ``astream_chat``).

        With tools, its ``*_with_tools`` twin (candidates that cannot call tools are excluded).
        """
        request, kwargs = route.plan.tools, route.plan.kwargs
        if request is None:
            return getattr(llm, method)(messages, **kwargs)
        return getattr(llm, _WITH_TOOLS[method])(**request.arguments(messages, kwargs))

    # -- completion bookkeeping -----------------------------------------------------------------
    def _book(self, route: _Route, usage: tuple[int, int] | None) -> None:
        """Record who answered and what it cost with the core (thread-safe; no events)."""
        in_tokens, out_tokens = usage if usage is not None else (None, None)
        self.flow.finish(
            route.call, route.call.model, input_tokens=in_tokens, output_tokens=out_tokens
        )

    def _announce(self, route: _Route, response: ChatResponse | CompletionResponse | None) -> None:
        """Dispatch the completion event and log the call in the active scopes."""
        info = route.info
        dispatcher.event(
            RoutingCompletedEvent(
                decision_id=route.call.decision.decision_id,
                user_id=route.call.decision.user_id,
                model=info["model"],
                fallbacks=[f["model"] for f in info["fallbacks"]],
                input_tokens=info["input_tokens"],
                output_tokens=info["output_tokens"],
                cost_usd=info["cost_usd"],
                cost_is_estimate=info["cost_is_estimate"],
                span_id=route.span_id,
            )
        )
        if route.scopes:
            call = RoutedCall.from_info(info, response)
            for current in route.scopes:
                current.calls.append(call)

    def _remember_tool_calls(self, route: _Route, response: ChatResponse) -> None:
        """Keep the next turn of a tool loop on the model that issued the tool calls."""
        if route.plan.tools is None:
            return
        model = route.call.model
        try:
            calls = self._tool_calls(self._llms[model], response, error_on_no_tool_call=False)
        except Exception:  # a candidate that cannot parse its own reply: nothing to pin
            logger.debug("could not read tool calls of %r", model, exc_info=True)
            return
        self.flow.remember_tool_calls(model, [c.tool_id for c in calls if c.tool_id])

    @staticmethod
    def _annotate(response: _R, info: dict[str, Any]) -> _R:
        extra = {**response.additional_kwargs, ROUTING_KEY: info}
        return cast(_R, response.model_copy(update={"additional_kwargs": extra}))

    def _settle(self, route: _Route, annotated: _R) -> _R:
        """Keep a finished answer's tool calls for the next turn and announce the call."""
        if isinstance(annotated, ChatResponse):
            self._remember_tool_calls(route, annotated)
        self._announce(route, annotated)
        return annotated

    def _finish(self, route: _Route, response: _R) -> _R:
        self._book(route, usage_of(response))
        return self._settle(route, self._annotate(response, dict(route.info)))

    async def _afinish(self, route: _Route, response: _R) -> _R:
        await asyncio.to_thread(self._book, route, usage_of(response))
        return self._settle(route, self._annotate(response, dict(route.info)))

    @staticmethod
    def _stream_usage(first: Any, last: Any) -> tuple[int, int] | None:
        for chunk in (last, first):
            if chunk is not None:
                usage = usage_of(chunk)
                if usage is not None:
                    return usage
        return None

    def _closed_early(self, route: _Route, first: _R, last: _R) -> None:
        """Book a stream the consumer closed before the end (usage as far as it went)."""
        self._book(route, self._stream_usage(first, last))
        self._announce(route, self._annotate(last, route.info))

    def _relay(
        self, route: _Route, first: _R | None, rest: Iterator[_R]
    ) -> Generator[_R, None, None]:
        """Re-yield a candidate's stream with routing data; book the call once exhausted.

        Every chunk shares one routing dict, so ``cost_usd`` appears on the chunks already
        received once the stream is exhausted. A failure after the first chunk raises
        :class:`~metarouter.errors.DispatchError` (no fallback mid-stream).
        """
        info = route.info
        if first is None:
            self._book(route, None)
            self._announce(route, None)
            return
        last: _R = first
        try:
            yield self._annotate(first, info)
            for chunk in self.flow.relay(route.call, rest):
                last = chunk
                yield self._annotate(chunk, info)
        except GeneratorExit:  # the consumer stopped early: book what was produced
            self._closed_early(route, first, last)
            raise
        self._book(route, self._stream_usage(first, last))
        self._settle(route, self._annotate(last, info))

    async def _arelay(
        self, route: _Route, first: _R | None, rest: AsyncIterator[_R]
    ) -> AsyncGenerator[_R, None]:
        """Async twin of :meth:`_relay`."""
        info = route.info
        if first is None:
            await asyncio.to_thread(self._book, route, None)
            self._announce(route, None)
            return
        last: _R = first
        try:
            yield self._annotate(first, info)
            async for chunk in self.flow.arelay(route.call, rest):
                last = chunk
                yield self._annotate(chunk, info)
        except GeneratorExit:  # closed early: book synchronously (no awaiting while closing)
            self._closed_early(route, first, last)
            raise
        await asyncio.to_thread(self._book, route, self._stream_usage(first, last))
        self._settle(route, self._annotate(last, info))

    # -- LlamaIndex LLM interface ---------------------------------------------------------------
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Route and run a chat call (``user_id=`` / ``model=`` keywords optional)."""
        route = self._route(self._chat_plan(messages, kwargs))
        response, _ = self._dispatch(route, lambda llm: self._chat("chat", llm, route, messages))
        return self._finish(route, response)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async :meth:`chat`, awaiting the candidate's own ``achat``."""
        route = await self._aroute(self._chat_plan(messages, kwargs))
        response, _ = await self._adispatch(
            route, lambda llm: self._chat("achat", llm, route, messages)
        )
        return await self._afinish(route, response)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Route and stream a chat call.

        Falls back to the next-best candidate if the chosen one fails before its first chunk;
        after that, a failure raises ``DispatchError`` (sent chunks cannot be taken back).
        """
        route = self._route(self._chat_plan(messages, kwargs))
        (first, rest), _ = self._dispatch(
            route, lambda llm: _prime(self._chat("stream_chat", llm, route, messages))
        )
        return self._relay(route, first, rest)

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        """Async :meth:`stream_chat`, relaying the candidate's own ``astream_chat``."""
        route = await self._aroute(self._chat_plan(messages, kwargs))

        async def call(llm: LLM) -> tuple[ChatResponse | None, AsyncIterator[ChatResponse]]:
            return await _aprime(await self._chat("astream_chat", llm, route, messages))

        (first, rest), _ = await self._adispatch(route, call)
        return self._arelay(route, first, rest)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Route and run a completion call (``user_id=`` / ``model=`` keywords optional)."""
        route = self._route(self._completion_plan(prompt, kwargs))
        response, _ = self._dispatch(
            route, lambda llm: llm.complete(prompt, formatted=formatted, **route.plan.kwargs)
        )
        return self._finish(route, response)

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        """Async :meth:`complete`, awaiting the candidate's own ``acomplete``."""
        route = await self._aroute(self._completion_plan(prompt, kwargs))

        async def call(llm: LLM) -> CompletionResponse:
            return await llm.acomplete(prompt, formatted=formatted, **route.plan.kwargs)

        response, _ = await self._adispatch(route, call)
        return await self._afinish(route, response)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        """Route and stream a completion (fallback until the first chunk, as for chat)."""
        route = self._route(self._completion_plan(prompt, kwargs))

        def call(llm: LLM) -> tuple[CompletionResponse | None, Iterator[CompletionResponse]]:
            return _prime(llm.stream_complete(prompt, formatted=formatted, **route.plan.kwargs))

        (first, rest), _ = self._dispatch(route, call)
        return self._relay(route, first, rest)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        """Async :meth:`stream_complete`, relaying the candidate's own ``astream_complete``."""
        route = await self._aroute(self._completion_plan(prompt, kwargs))

        async def call(
            llm: LLM,
        ) -> tuple[CompletionResponse | None, AsyncIterator[CompletionResponse]]:
            stream = await llm.astream_complete(prompt, formatted=formatted, **route.plan.kwargs)
            return await _aprime(stream)

        (first, rest), _ = await self._adispatch(route, call)
        return self._arelay(route, first, rest)

    # -- tools ----------------------------------------------------------------------------------
    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Defer tool preparation to whichever candidate answers (tool formats differ).

        Candidates that cannot call tools are excluded from the choice for this call.
        """
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg))
        elif user_msg is not None:
            messages.append(user_msg)
        own = {k: kwargs.pop(k) for k in (USER_KWARG, MODEL_KWARG) if k in kwargs}
        request = _ToolRequest(
            tools=tuple(tools),
            verbose=verbose,
            allow_parallel_tool_calls=allow_parallel_tool_calls,
            tool_required=tool_required,
            extra=kwargs,
        )
        return {"messages": messages, _TOOLS_KWARG: request, **own}

    def _answering_llm(self, response: ChatResponse) -> LLM | None:
        info = routing_info(response)
        return self._llms.get(str(info.get("model"))) if info is not None else None

    @staticmethod
    def _tool_calls(
        llm: LLM | None, response: ChatResponse, error_on_no_tool_call: bool, **kwargs: Any
    ) -> list[ToolSelection]:
        if isinstance(llm, FunctionCallingLLM):
            try:
                return llm.get_tool_calls_from_response(
                    response, error_on_no_tool_call=error_on_no_tool_call, **kwargs
                )
            except NotImplementedError:
                pass
        calls = tool_calls_from_blocks(response)
        if not calls and error_on_no_tool_call:
            raise ValueError(f"Expected at least one tool call, but got {len(calls)} tool calls.")
        return calls

    def get_tool_calls_from_response(
        self,
        response: ChatResponse,
        error_on_no_tool_call: bool = True,
        **kwargs: Any,
    ) -> list[ToolSelection]:
        """Read tool calls with the parser of the candidate that wrote ``response``.

        Responses without routing data are read from their ``ToolCallBlock`` blocks.
        """
        return self._tool_calls(
            self._answering_llm(response), response, error_on_no_tool_call, **kwargs
        )

    # -- pairwise feedback ----------------------------------------------------------------------
    @staticmethod
    def _comparison_input(
        query: str | Sequence[ChatMessage],
    ) -> tuple[Sequence[ChatMessage] | None, str]:
        if isinstance(query, str):
            return None, routing_text([Turn("user", query)])
        seq = query if isinstance(query, Sequence) else ()
        messages = [m for m in seq if isinstance(m, ChatMessage)]
        if messages and len(messages) == len(seq):
            return messages, query_text(messages)
        raise ConfigError(
            f"compare() takes a prompt string or a list of ChatMessage, got {type(query).__name__}."
        )

    def _pair_user(self, user_id: str | None, kwargs: Mapping[str, Any]) -> str | None:
        """The user of a ``compare()`` (resolved in the caller's thread, where its scope is)."""
        if MODEL_KWARG in kwargs:
            raise ConfigError(
                "compare() picks the two models itself; to run one model, call "
                "chat(..., model=...)."
            )
        return self._resolve_user(user_id or kwargs.get(USER_KWARG), active_scopes(self._service))

    def _pair_plans(
        self, query: str | Sequence[ChatMessage], uid: str | None, kwargs: Mapping[str, Any]
    ) -> tuple[Sequence[ChatMessage] | None, str, list[_Plan]]:
        messages, text = self._comparison_input(query)
        rest = {k: v for k, v in kwargs.items() if k != USER_KWARG}
        pair = self.flow.pair(text, uid)
        plans = [self._plan(rest, text, messages, compare=name, user_id=uid) for name in pair]
        return messages, text, plans

    def _pair_answer(
        self, route: _Route, messages: Sequence[ChatMessage] | None, text: str
    ) -> Callable[[LLM], ChatResponse | CompletionResponse]:
        if messages is not None:
            return lambda llm: self._chat("chat", llm, route, messages)
        return lambda llm: llm.complete(text, **route.plan.kwargs)

    @dispatcher.span
    def compare(
        self,
        query: str | Sequence[ChatMessage],
        *,
        user_id: str | None = None,
        **kwargs: Any,
    ) -> ComparePair:
        """Answer ``query`` with two candidates worth comparing, for the user to choose from.

        The pair is the router's suggestion (:meth:`~metarouter.dispatch.CallFlow.pair`),
        chosen so that the user's choice says most about their cost-vs-quality taste. About six
        such choices personalise routing.

        Args:
            query: A prompt (answered with ``complete``) or chat messages (``chat``).
            user_id: Whose comparison (default: scope, then instance user).
            **kwargs: Passed to both candidates.

        Returns:
            The two answers; call ``.prefer(0 or 1)`` with the better one.
        """
        messages, text, plans = self._pair_plans(query, self._pair_user(user_id, kwargs), kwargs)
        answers = []
        for plan in plans:
            route = self._route(plan)
            response, _ = self._dispatch(route, self._pair_answer(route, messages, text))
            answers.append(RoutedCall.from_response(self._finish(route, response)))
        return ComparePair.of(text, (answers[0], answers[1]), self)

    @dispatcher.span
    async def acompare(
        self,
        query: str | Sequence[ChatMessage],
        *,
        user_id: str | None = None,
        **kwargs: Any,
    ) -> ComparePair:
        """Async :meth:`compare`: both candidates run concurrently."""
        uid = self._pair_user(user_id, kwargs)
        messages, text, plans = await asyncio.to_thread(self._pair_plans, query, uid, kwargs)

        async def one(plan: _Plan) -> RoutedCall:
            route = await self._aroute(plan)

            async def call(llm: LLM) -> ChatResponse | CompletionResponse:
                if messages is not None:
                    return await self._chat("achat", llm, route, messages)
                return await llm.acomplete(text, **route.plan.kwargs)

            response, _ = await self._adispatch(route, call)
            return RoutedCall.from_response(await self._afinish(route, response))

        first, second = await asyncio.gather(one(plans[0]), one(plans[1]))
        return ComparePair.of(text, (first, second), self)

    def _known_user(self) -> str | None:
        """The scope's or this instance's user, without refusing (for feedback defaults)."""
        scopes = active_scopes(self._service)
        return next((s.user_id for s in scopes if s.user_id is not None), self.user_id)

    def record_preference(
        self,
        winner: FeedbackItem,
        loser: FeedbackItem,
        *,
        user_id: str | None = None,
        query: str | None = None,
        source: ComparisonSource | None = None,
    ) -> ComparisonRecord:
        """Record that ``winner``'s answer was worth it over ``loser``'s, for the same query.

        The user's preference is re-estimated at once: their next call (through this adapter,
        the LangChain one, or any process sharing the store) is routed with it. Other users'
        routing is untouched.

        Args:
            winner: A response this router returned, a :class:`RoutedCall` (e.g.
                ``scope.last``), a decision id, or an answer the router did not produce as
                ``Response(model=..., cost_usd=..., text=...)`` (from ``metarouter.service``)
                or a dict with those keys.
            loser: Same kinds.
            user_id: The user (default: the decisions' user; for two external answers, the
                scope's or this instance's user).
            query: The query text; required when neither answer came from the router.
            source: How the comparison was collected (default: chosen by the core).

        Raises:
            FeedbackError: See :meth:`RoutingService.record_preference`.
        """
        sides = (as_feedback_item(winner), as_feedback_item(loser))
        if user_id is None:
            user_id = default_feedback_user(sides, self._known_user())
        record = self._service.record_preference(
            *sides, user_id=user_id, query=query, source=source
        )
        pref = self._service.preference(record.user_id)
        dispatcher.event(
            FeedbackRecordedEvent(
                user_id=record.user_id,
                comparison_id=record.comparison_id,
                winner=record.winner,
                loser=record.loser,
                source=record.source,
                quality_weight=float(pref.quality_weight),
                n_comparisons=int(pref.n_comparisons),
            )
        )
        return record

    async def arecord_preference(
        self,
        winner: FeedbackItem,
        loser: FeedbackItem,
        *,
        user_id: str | None = None,
        query: str | None = None,
        source: ComparisonSource | None = None,
    ) -> ComparisonRecord:
        """Async :meth:`record_preference` (the store is written in a worker thread)."""
        return await asyncio.to_thread(
            functools.partial(
                self.record_preference, winner, loser, user_id=user_id, query=query, source=source
            )
        )

    @property
    def budgets(self) -> Budgets:
        """Spend budgets of this router's store (see docs/budgets.md).

        ``set``, ``get``, ``reset``, ``set_team``, ``states``, ``report``: see
        :class:`metarouter.budgets.Budgets`. Example: ``llm.budgets.set(50, user="alice")``.
        """
        return self._service.budgets

    def preference(self, user_id: str | None = None) -> Preference:
        """The user's current preference (``quality_weight`` in [0, 1], ``n_comparisons``).

        Default user: the scope's, else this instance's, else the service's default.
        """
        return self._service.preference(user_id if user_id is not None else self._known_user())

    def add_feedback_listener(self, listener: FeedbackListener) -> FeedbackListener:
        """Call ``listener(event)`` whenever feedback is recorded or a preference re-estimated.

        ``event`` is a :class:`metarouter.store.records.FeedbackEvent`
        (``comparison_recorded`` / ``preference_updated``). Shared with every adapter using the
        same routing service. Returns the listener, so it works as a decorator.
        """
        return self._service.add_listener(listener)

    def remove_feedback_listener(self, listener: FeedbackListener) -> None:
        """Stop calling ``listener``."""
        self._service.remove_listener(listener)


def _prime(stream: Iterator[_R]) -> tuple[_R | None, Iterator[_R]]:
    """Pull the first chunk now, so a failing candidate fails inside the fallback loop."""
    iterator = iter(stream)
    try:
        return next(iterator), iterator
    except StopIteration:
        return None, iterator


async def _aprime(stream: AsyncIterator[_R]) -> tuple[_R | None, AsyncIterator[_R]]:
    """Async :func:`_prime`."""
    try:
        return await stream.__anext__(), stream
    except StopAsyncIteration:
        return None, stream
