"""``MetaRouterLLM``: a LlamaIndex LLM that sends each call to the candidate fitting the user.

The adapter is thin: it turns LlamaIndex messages into the text the core routes on, asks
:class:`metarouter.service.RoutingService` for a decision, dispatches the call to the chosen
candidate LLM (falling back to the next-best one if it raises), records who answered and what
it cost, and hands the candidate's response back with the routing data attached. Learning from
feedback is the core's job.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from collections import OrderedDict
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
from dataclasses import dataclass, field, replace
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
from metarouter.errors import (
    ConfigError,
    DispatchError,
    StoreError,
    UnknownArmError,
)
from metarouter.store.records import validate_user_id

from llama_index_metarouter.candidates import (
    CandidateLike,
    can_call_tools,
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
from llama_index_metarouter.scope import RoutingScope, active_scopes, pop_scope, push_scope
from llama_index_metarouter.utils import (
    ROUTING_KEY,
    messages_text,
    pending_tool_call_ids,
    routing_info,
    tool_calls_from_blocks,
    usage_of,
)

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool
    from metarouter.router import MetaRouter
    from metarouter.service import ArmSpec, Decision, FeedbackListener, RoutingService
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
#: Tool-call ids remembered to keep a tool loop on the model that issued the calls.
_MAX_TOOL_OWNERS = 10_000

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


@dataclass(frozen=True)
class _Plan:
    """Everything about a call decided before routing (no I/O)."""

    user_id: str | None
    forced: str | None
    reason: str
    exclude: tuple[str, ...]
    tools: _ToolRequest | None
    kwargs: dict[str, Any]


@dataclass
class _Route:
    """A decided call on its way through the candidates."""

    plan: _Plan
    decision: Decision
    order: tuple[str, ...]
    info: dict[str, Any]
    span_id: str | None
    scopes: list[RoutingScope] = field(default_factory=list)


class MetaRouterLLM(FunctionCallingLLM):
    """A LlamaIndex LLM that routes each call to the candidate fitting the user's taste.

    Every call is routed by the meta-learned router to one of the candidate LLMs, given the
    user's cost-vs-quality preference learned from their pairwise feedback, then dispatched to
    that candidate for real (chat, completion, streaming, async, tools). If the chosen
    candidate raises, the next-best one is tried. The routing data (decision id, scores, chosen
    model, user id, cost in USD from the reported token usage) is in the response's
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
        max_fallbacks: How many next-best candidates to try after the chosen one fails
            (None: all of them; 0: none).
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
    max_fallbacks: int | None = Field(
        default=None,
        ge=0,
        description="Next-best candidates to try after the chosen one fails (None: all).",
    )
    """Next-best candidates to try after the chosen one fails (None: all)."""

    _service: RoutingService = PrivateAttr()
    _llms: dict[str, LLM] = PrivateAttr()
    _tool_owners: OrderedDict[str, str] = PrivateAttr(default_factory=OrderedDict)
    _owners_lock: Any = PrivateAttr(default_factory=threading.Lock)

    def __init__(
        self,
        candidates: Mapping[str, CandidateLike],
        *,
        arms: Sequence[ArmSpec] = (),
        service: RoutingService | None = None,
        router: MetaRouter | None = None,
        store: PreferenceStore | str | os.PathLike[str] | None = None,
        user_id: str | None = None,
        max_fallbacks: int | None = None,
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
            missing = [name for name in llms if name not in service.specs]
            if missing:
                raise ConfigError(
                    f"candidates {missing} are not arms of the given RoutingService (its arms: "
                    f"{service.arm_names}). Fix: name the candidates after the service's arms."
                )
        else:
            from metarouter.service import RoutingService  # torch: loaded on first use

            if isinstance(store, (str, os.PathLike)):
                from metarouter.store.sql import SQLStore

                store = SQLStore(store)
            service = RoutingService(specs, router=router, store=store)
        if user_id is not None:
            validate_user_id(user_id)
        super().__init__(
            user_id=user_id,
            max_fallbacks=max_fallbacks,
            callback_manager=callback_manager or CallbackManager([]),
            **kwargs,
        )
        self._service = service
        self._llms = llms

    # -- identity -------------------------------------------------------------------------------
    @classmethod
    def class_name(cls) -> str:
        """Class name."""
        return "MetaRouterLLM"

    @property
    def service(self) -> RoutingService:
        """The routing core (router, preference store, feedback)."""
        return self._service

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
        validate_user_id(user_id)
        return self.model_copy(update={"user_id": user_id})

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
        router sharing this one's routing service.
        """
        if user_id is not None:
            validate_user_id(user_id)
        if model is not None:
            self._check_model(model)
        current = RoutingScope(self._service, user_id, model)
        token = push_scope(current)
        try:
            yield current
        finally:
            pop_scope(token)

    # -- planning and routing -------------------------------------------------------------------
    def _check_model(self, model: str) -> None:
        if model not in self._llms:
            raise UnknownArmError(
                f"model override {model!r} is not a candidate of this router; candidates are "
                f"{list(self._llms)}."
            )

    def _resolve_user(self, user_id: str | None, scopes: Sequence[RoutingScope]) -> str | None:
        if user_id is not None:
            return user_id
        for current in scopes:
            if current.user_id is not None:
                return current.user_id
        return self.user_id

    def _pinned(self, messages: Sequence[ChatMessage] | None) -> str | None:
        if not messages:
            return None
        ids = pending_tool_call_ids(messages)
        if not ids:
            return None
        with self._owners_lock:
            for tool_id in ids:
                owner = self._tool_owners.get(tool_id)
                if owner is not None:
                    return owner
        return None

    def _plan(
        self,
        kwargs: Mapping[str, Any],
        messages: Sequence[ChatMessage] | None = None,
        *,
        reason: str | None = None,
        forced: str | None = None,
    ) -> _Plan:
        rest = dict(kwargs)
        user_id = rest.pop(USER_KWARG, None)
        model = rest.pop(MODEL_KWARG, None)
        tools = rest.pop(_TOOLS_KWARG, None)
        scopes = active_scopes(self._service)
        if forced is not None:
            model, why = forced, reason or "override"
        elif model is not None:
            why = "override"
        else:
            model = next((s.model for s in scopes if s.model is not None), None)
            why = "override"
            if model is None:
                model, why = self._pinned(messages), "tool_loop"
            if model is None:
                why = "routed"
        if model is not None:
            self._check_model(model)
        exclude: tuple[str, ...] = ()
        if tools is not None:
            exclude = tuple(n for n, llm in self._llms.items() if not can_call_tools(llm))
            if model in exclude:
                raise ConfigError(
                    f"model {model!r} cannot call tools (it is not a function-calling "
                    "LlamaIndex LLM); force a candidate that can, or call without tools."
                )
            if len(exclude) == len(self._llms):
                raise ConfigError(
                    f"none of the candidates {list(self._llms)} can call tools (none is a "
                    "function-calling LlamaIndex LLM). Fix: add a function-calling candidate, "
                    "or use a ReActAgent, which prompts for tools in text."
                )
        return _Plan(
            user_id=self._resolve_user(user_id, scopes),
            forced=model,
            reason=why,
            exclude=exclude,
            tools=tools,
            kwargs=rest,
        )

    def _decide(self, plan: _Plan, query: str) -> Decision:
        return self._service.decide(
            query,
            plan.user_id,
            exclude=plan.exclude,
            only=list(self._llms),
            forced=plan.forced,
            metadata={"framework": "llama_index", "reason": plan.reason},
        )

    def _open(self, plan: _Plan, decision: Decision) -> _Route:
        order = [m for m in decision.fallback_order if m in self._llms and m not in plan.exclude]
        if plan.reason == "compare":
            order = order[:1]
        elif self.max_fallbacks is not None:
            order = order[: 1 + self.max_fallbacks]
        info: dict[str, Any] = {
            **decision.metadata(),
            "reason": plan.reason,
            "model": decision.model,
            "fallbacks": [],
            "cost_usd": None,
            "input_tokens": None,
            "output_tokens": None,
        }
        route = _Route(
            plan,
            decision,
            tuple(order),
            info,
            active_span_id.get(),
            active_scopes(self._service),
        )
        dispatcher.event(
            RoutingDecisionEvent(
                decision_id=decision.decision_id,
                user_id=decision.user_id,
                model=decision.model,
                reason=plan.reason,
                scores=dict(decision.routing.scores),
                ranking=list(decision.routing.ranking),
                expected_cost_usd=float(decision.routing.expected_costs_usd[decision.model]),
                quality_weight=float(decision.routing.quality_weight),
            )
        )
        return route

    def _route(
        self, query: str, kwargs: Mapping[str, Any], messages: Sequence[ChatMessage] | None = None
    ) -> _Route:
        plan = self._plan(kwargs, messages)
        return self._open(plan, self._decide(plan, query))

    async def _aroute(
        self, query: str, kwargs: Mapping[str, Any], messages: Sequence[ChatMessage] | None = None
    ) -> _Route:
        plan = self._plan(kwargs, messages)
        decision = await asyncio.to_thread(self._decide, plan, query)
        return self._open(plan, decision)

    # -- dispatch -------------------------------------------------------------------------------
    def _failed(self, route: _Route, index: int, name: str, exc: Exception) -> None:
        nxt = route.order[index + 1] if index + 1 < len(route.order) else None
        logger.warning(
            "candidate %r failed for decision %s (%s: %s); %s",
            name,
            route.decision.decision_id,
            type(exc).__name__,
            exc,
            f"falling back to {nxt!r}" if nxt else "no candidate left",
        )
        dispatcher.event(
            RoutingFallbackEvent(
                decision_id=route.decision.decision_id,
                failed_model=name,
                error=f"{type(exc).__name__}: {exc}",
                next_model=nxt,
                span_id=route.span_id,
            )
        )

    def _succeeded(self, route: _Route, name: str, failed: list[tuple[str, Exception]]) -> None:
        route.info["model"] = name
        route.info["fallbacks"] = [n for n, _ in failed]

    def _exhausted(self, route: _Route, failed: list[tuple[str, Exception]]) -> DispatchError:
        detail = "; ".join(f"{n!r} raised {type(e).__name__}: {e}" for n, e in failed)
        limit = ""
        if len(route.order) < len(self._llms) and route.plan.reason != "compare":
            limit = f" (max_fallbacks={self.max_fallbacks} limited the candidates tried)"
        return DispatchError(
            f"every candidate tried for this call failed{limit}, decision "
            f"{route.decision.decision_id}, user {route.decision.user_id!r}: {detail}. Fix: check "
            "those providers' credentials, quotas and network (the first error is chained "
            "below), or force a working candidate with model=..."
        )

    def _dispatch(self, route: _Route, call: Callable[[LLM], _T]) -> tuple[_T, str]:
        failed: list[tuple[str, Exception]] = []
        for index, name in enumerate(route.order):
            try:
                result = call(self._llms[name])
            except Exception as exc:
                failed.append((name, exc))
                self._failed(route, index, name, exc)
                continue
            self._succeeded(route, name, failed)
            return result, name
        raise self._exhausted(route, failed) from failed[0][1]

    async def _adispatch(
        self, route: _Route, call: Callable[[LLM], Awaitable[_T]]
    ) -> tuple[_T, str]:
        failed: list[tuple[str, Exception]] = []
        for index, name in enumerate(route.order):
            try:
                result = await call(self._llms[name])
            except Exception as exc:
                failed.append((name, exc))
                self._failed(route, index, name, exc)
                continue
            self._succeeded(route, name, failed)
            return result, name
        raise self._exhausted(route, failed) from failed[0][1]

    def _chat_kwargs(
        self, llm: LLM, route: _Route, messages: Sequence[ChatMessage]
    ) -> dict[str, Any]:
        request = route.plan.tools
        if request is None:
            return {**route.plan.kwargs, "messages": messages}
        assert isinstance(llm, FunctionCallingLLM)  # others are excluded by _plan
        prepared = llm._prepare_chat_with_tools_compat(
            list(request.tools),
            user_msg=None,
            chat_history=list(messages),
            verbose=request.verbose,
            allow_parallel_tool_calls=request.allow_parallel_tool_calls,
            tool_required=request.tool_required,
            **request.extra,
        )
        return {**route.plan.kwargs, **prepared}

    # -- completion bookkeeping -----------------------------------------------------------------
    def _record(self, route: _Route, usage: tuple[int, int] | None) -> None:
        """Store who answered and what it cost (thread-safe; no events)."""
        model = route.info["model"]
        in_tokens, out_tokens = usage if usage is not None else (None, None)
        try:
            cost = self._service.complete(
                route.decision,
                model=model,
                input_tokens=in_tokens,
                output_tokens=out_tokens,
                fallbacks=route.info["fallbacks"],
            )
        except StoreError:
            logger.warning(
                "could not store the outcome of decision %s; the answer is returned anyway",
                route.decision.decision_id,
                exc_info=True,
            )
            cost = self._service.cost_of(model, in_tokens, out_tokens)
        route.info.update(cost_usd=cost, input_tokens=in_tokens, output_tokens=out_tokens)

    def _announce(self, route: _Route, response: ChatResponse | CompletionResponse | None) -> None:
        """Dispatch the completion event and log the call in the active scopes."""
        info = route.info
        dispatcher.event(
            RoutingCompletedEvent(
                decision_id=route.decision.decision_id,
                user_id=route.decision.user_id,
                model=info["model"],
                fallbacks=list(info["fallbacks"]),
                input_tokens=info["input_tokens"],
                output_tokens=info["output_tokens"],
                cost_usd=info["cost_usd"],
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
        model = route.info["model"]
        try:
            calls = self._tool_calls(self._llms[model], response, error_on_no_tool_call=False)
        except Exception:  # a candidate that cannot parse its own reply: nothing to pin
            logger.debug("could not read tool calls of %r", model, exc_info=True)
            return
        with self._owners_lock:
            for call in calls:
                if call.tool_id:
                    self._tool_owners[call.tool_id] = model
                    self._tool_owners.move_to_end(call.tool_id)
            while len(self._tool_owners) > _MAX_TOOL_OWNERS:
                self._tool_owners.popitem(last=False)

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
        self._record(route, usage_of(response))
        return self._settle(route, self._annotate(response, dict(route.info)))

    async def _afinish(self, route: _Route, response: _R) -> _R:
        await asyncio.to_thread(self._record, route, usage_of(response))
        return self._settle(route, self._annotate(response, dict(route.info)))

    def _stream_usage(self, first: Any, last: Any) -> tuple[int, int] | None:
        for chunk in (last, first):
            if chunk is not None:
                usage = usage_of(chunk)
                if usage is not None:
                    return usage
        return None

    def _closed_early(self, route: _Route, first: _R, last: _R) -> None:
        """Book a stream the consumer closed before the end (usage as far as it went)."""
        self._record(route, self._stream_usage(first, last))
        self._announce(route, self._annotate(last, route.info))

    @staticmethod
    def _warn_mid_stream(route: _Route) -> None:
        logger.warning(
            "candidate %r failed mid-stream for decision %s; chunks already sent cannot be "
            "retracted, so there is no fallback",
            route.info["model"],
            route.decision.decision_id,
        )

    def _relay(
        self, route: _Route, first: _R | None, rest: Iterator[_R]
    ) -> Generator[_R, None, None]:
        """Re-yield a candidate's stream with routing data; book the call once exhausted.

        Every chunk shares one routing dict, so ``cost_usd`` appears on the chunks already
        received once the stream is exhausted.
        """
        info = route.info
        if first is None:
            self._record(route, None)
            self._announce(route, None)
            return
        last: _R = first
        try:
            yield self._annotate(first, info)
            for chunk in rest:
                last = chunk
                yield self._annotate(chunk, info)
        except GeneratorExit:  # the consumer stopped early: book what was produced
            self._closed_early(route, first, last)
            raise
        except Exception:
            self._warn_mid_stream(route)
            raise
        self._record(route, self._stream_usage(first, last))
        self._settle(route, self._annotate(last, info))

    async def _arelay(
        self, route: _Route, first: _R | None, rest: AsyncIterator[_R]
    ) -> AsyncGenerator[_R, None]:
        """Async twin of :meth:`_relay`."""
        info = route.info
        if first is None:
            await asyncio.to_thread(self._record, route, None)
            self._announce(route, None)
            return
        last: _R = first
        try:
            yield self._annotate(first, info)
            async for chunk in rest:
                last = chunk
                yield self._annotate(chunk, info)
        except GeneratorExit:  # closed early: book synchronously (no awaiting while closing)
            self._closed_early(route, first, last)
            raise
        except Exception:
            self._warn_mid_stream(route)
            raise
        await asyncio.to_thread(self._record, route, self._stream_usage(first, last))
        self._settle(route, self._annotate(last, info))

    # -- LlamaIndex LLM interface ---------------------------------------------------------------
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Route and run a chat call (``user_id=`` / ``model=`` keywords optional)."""
        route = self._route(messages_text(messages), kwargs, messages)
        response, _ = self._dispatch(
            route, lambda llm: llm.chat(**self._chat_kwargs(llm, route, messages))
        )
        return self._finish(route, response)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async :meth:`chat`, awaiting the candidate's own ``achat``."""
        route = await self._aroute(messages_text(messages), kwargs, messages)

        async def call(llm: LLM) -> ChatResponse:
            return await llm.achat(**self._chat_kwargs(llm, route, messages))

        response, _ = await self._adispatch(route, call)
        return await self._afinish(route, response)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Route and stream a chat call.

        Falls back to the next-best candidate if the chosen one fails before its first chunk;
        after that, errors propagate (sent chunks cannot be taken back).
        """
        route = self._route(messages_text(messages), kwargs, messages)

        def call(llm: LLM) -> tuple[ChatResponse | None, Iterator[ChatResponse]]:
            return _prime(llm.stream_chat(**self._chat_kwargs(llm, route, messages)))

        (first, rest), _ = self._dispatch(route, call)
        return self._relay(route, first, rest)

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        """Async :meth:`stream_chat`, relaying the candidate's own ``astream_chat``."""
        route = await self._aroute(messages_text(messages), kwargs, messages)

        async def call(llm: LLM) -> tuple[ChatResponse | None, AsyncIterator[ChatResponse]]:
            return await _aprime(await llm.astream_chat(**self._chat_kwargs(llm, route, messages)))

        (first, rest), _ = await self._adispatch(route, call)
        return self._arelay(route, first, rest)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Route and run a completion call (``user_id=`` / ``model=`` keywords optional)."""
        route = self._route(prompt, _no_tools(kwargs))
        response, _ = self._dispatch(
            route, lambda llm: llm.complete(prompt, formatted=formatted, **route.plan.kwargs)
        )
        return self._finish(route, response)

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        """Async :meth:`complete`, awaiting the candidate's own ``acomplete``."""
        route = await self._aroute(prompt, _no_tools(kwargs))

        async def call(llm: LLM) -> CompletionResponse:
            return await llm.acomplete(prompt, formatted=formatted, **route.plan.kwargs)

        response, _ = await self._adispatch(route, call)
        return await self._afinish(route, response)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        """Route and stream a completion (fallback until the first chunk, as for chat)."""
        route = self._route(prompt, _no_tools(kwargs))

        def call(llm: LLM) -> tuple[CompletionResponse | None, Iterator[CompletionResponse]]:
            return _prime(llm.stream_complete(prompt, formatted=formatted, **route.plan.kwargs))

        (first, rest), _ = self._dispatch(route, call)
        return self._relay(route, first, rest)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        """Async :meth:`stream_complete`, relaying the candidate's own ``astream_complete``."""
        route = await self._aroute(prompt, _no_tools(kwargs))

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

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[BaseTool],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        """Let the candidate that answered validate its own tool-call response."""
        llm = self._answering_llm(response)
        if not isinstance(llm, FunctionCallingLLM):
            return response
        extra = {k: v for k, v in kwargs.items() if k not in (USER_KWARG, MODEL_KWARG)}
        checked = llm._validate_chat_with_tools_response(
            response, tools, allow_parallel_tool_calls=allow_parallel_tool_calls, **extra
        )
        info = routing_info(response)
        if routing_info(checked) is None and info is not None:
            checked = self._annotate(checked, info)
        return checked

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
    def _comparison_input(
        self, query: str | Sequence[ChatMessage]
    ) -> tuple[Sequence[ChatMessage] | None, str]:
        if isinstance(query, str):
            return None, query
        seq = query if isinstance(query, Sequence) else ()
        messages = [m for m in seq if isinstance(m, ChatMessage)]
        if messages and len(messages) == len(seq):
            return messages, messages_text(messages)
        raise ConfigError(
            f"compare() takes a prompt string or a list of ChatMessage, got {type(query).__name__}."
        )

    def _pair_plans(
        self, text: str, user_id: str | None, kwargs: Mapping[str, Any]
    ) -> tuple[str, list[_Plan]]:
        if MODEL_KWARG in kwargs:
            raise ConfigError(
                "compare() picks the two models itself; to run one model, call "
                "chat(..., model=...)."
            )
        rest = {k: v for k, v in kwargs.items() if k != USER_KWARG}
        scopes = active_scopes(self._service)
        uid = self._service.user(self._resolve_user(user_id or kwargs.get(USER_KWARG), scopes))
        foreign = [n for n in self._service.arm_names if n not in self._llms]
        pair = self._service.suggest_pair(text, uid, exclude=foreign)
        return uid, [self._plan(rest, reason="compare", forced=name) for name in pair]

    def _pair_call(
        self, route: _Route, messages: Sequence[ChatMessage] | None, text: str
    ) -> Callable[[LLM], ChatResponse | CompletionResponse]:
        if messages is not None:
            return lambda llm: llm.chat(**self._chat_kwargs(llm, route, messages))
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

        The pair is the router's current choice and the candidate whose expected cost differs
        most from it (:meth:`RoutingService.suggest_pair`), so the user's choice says most about
        their cost-vs-quality taste. About six such choices personalise routing.

        Args:
            query: A prompt (answered with ``complete``) or chat messages (``chat``).
            user_id: Whose comparison (default: scope, then instance user).
            **kwargs: Passed to both candidates.

        Returns:
            The two answers; call ``.prefer(0 or 1)`` with the better one.
        """
        messages, text = self._comparison_input(query)
        uid, plans = self._pair_plans(text, user_id, kwargs)
        answers = []
        for plan in plans:
            route = self._open(plan, self._decide(replace(plan, user_id=uid), text))
            response, _ = self._dispatch(route, self._pair_call(route, messages, text))
            answers.append(RoutedCall.from_response(self._finish(route, response)))
        return ComparePair(text, uid, (answers[0], answers[1]), self)

    @dispatcher.span
    async def acompare(
        self,
        query: str | Sequence[ChatMessage],
        *,
        user_id: str | None = None,
        **kwargs: Any,
    ) -> ComparePair:
        """Async :meth:`compare`: both candidates run concurrently."""
        messages, text = self._comparison_input(query)
        uid, plans = await asyncio.to_thread(self._pair_plans, text, user_id, kwargs)

        async def one(plan: _Plan) -> RoutedCall:
            decision = await asyncio.to_thread(self._decide, replace(plan, user_id=uid), text)
            route = self._open(plan, decision)

            async def call(llm: LLM) -> ChatResponse | CompletionResponse:
                if messages is not None:
                    return await llm.achat(**self._chat_kwargs(llm, route, messages))
                return await llm.acomplete(text, **route.plan.kwargs)

            response, _ = await self._adispatch(route, call)
            return RoutedCall.from_response(await self._afinish(route, response))

        first, second = await asyncio.gather(one(plans[0]), one(plans[1]))
        return ComparePair(text, uid, (first, second), self)

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
        from metarouter.service import Response

        win, lose = as_feedback_item(winner), as_feedback_item(loser)
        if user_id is None and all(
            isinstance(x, Response) and x.decision_id is None for x in (win, lose)
        ):
            user_id = self._resolve_user(None, active_scopes(self._service))
        record = self._service.record_preference(
            win, lose, user_id=user_id, query=query, source=source
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

    def preference(self, user_id: str | None = None) -> Preference:
        """The user's current preference (``quality_weight`` in [0, 1], ``n_comparisons``).

        Default user: the scope's, else this instance's, else the service's default.
        """
        return self._service.preference(self._resolve_user(user_id, active_scopes(self._service)))

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


def _no_tools(kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    if _TOOLS_KWARG in kwargs:
        raise ConfigError("tools need a chat call: use chat_with_tools(), not a completion.")
    return kwargs


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
