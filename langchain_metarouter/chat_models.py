"""``MetaRouterChat``: a LangChain chat model that routes each call to one of its candidates.

The adapter is thin: it turns the call's messages into a routing text, asks the core
:class:`~metarouter.service.RoutingService` for a decision (per user), dispatches the call to the
chosen candidate chat model (real async, real streaming, tools passed through), falls back to
the next-best candidate if it raises, and reports what happened in the answer's
``response_metadata``. Feedback goes back to the same service.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, cast

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    BaseCallbackHandler,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput, ModelProfile
from langchain_core.language_models.chat_models import generate_from_stream
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata, add_usage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import (
    Runnable,
    RunnableConfig,
    RunnableParallel,
    ensure_config,
)
from langchain_core.runnables.config import run_in_executor, set_config_context
from langchain_core.runnables.utils import coro_with_context
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.utils import LC_ID_PREFIX
from metarouter.errors import ConfigError, DispatchError, MetaRouterError
from metarouter.router import MetaRouter
from metarouter.service import ArmSpec, Decision, FeedbackListener, RoutingService
from metarouter.store.base import PreferenceStore
from metarouter.store.records import ComparisonRecord, ComparisonSource, validate_user_id
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, model_validator
from typing_extensions import Self

from langchain_metarouter._utils import (
    METADATA_KEY,
    USER_ID_KEY,
    CandidateCallbacks,
    child_callbacks,
    lacking_capabilities,
    needed_capabilities,
    query_text,
    routed_chunk,
    routed_message,
    supports,
    to_chunk,
    user_id_from_config,
)
from langchain_metarouter.feedback import ComparePair, FeedbackItem, as_feedback_item

__all__ = ["MetaRouterChat"]

logger = logging.getLogger(__name__)

#: Sampling parameters copied onto candidates that declare a field of the same name.
_FORWARDED = ("temperature", "max_tokens")
#: Profile flags reported as True only when every candidate reports True.
_PROFILE_FLAGS = (
    "text_inputs",
    "image_inputs",
    "image_url_inputs",
    "pdf_inputs",
    "audio_inputs",
    "video_inputs",
    "image_tool_message",
    "pdf_tool_message",
    "tool_choice",
    "tool_call_streaming",
    "structured_output",
)
_PROFILE_LIMITS = ("max_input_tokens", "max_output_tokens")


# -- per-call state -----------------------------------------------------------------------------


@dataclass
class _RunInfo:
    """What the router knows about its own run when dispatching."""

    run_id: uuid.UUID | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    handlers: Sequence[BaseCallbackHandler] = ()
    tags: Sequence[str] = ()
    inheritable_metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class _StreamTally:
    """What one candidate's stream has produced so far (for its final routing chunk)."""

    usage: UsageMetadata | None = None
    provider: str | None = None
    sent: int = 0
    list_content: bool = False

    def take(self, raw: BaseMessage) -> ChatGenerationChunk:
        """Count a candidate chunk and return it as the router's chunk."""
        piece, seen = routed_chunk(to_chunk(raw))
        self.provider = self.provider or seen
        if piece.usage_metadata:
            self.usage = add_usage(self.usage, piece.usage_metadata)
        self.list_content = not isinstance(piece.content, str)
        self.sent += 1
        return ChatGenerationChunk(message=piece)


@dataclass
class _PendingStream:
    """Handed from ``stream()``/``astream()`` to ``_stream``/``_astream``.

    LangChain calls ``_stream`` without the run manager it created for the call; the router
    needs the run id (to key the decision and nest the candidate's run) and the call's config.
    """

    owner: MetaRouterChat
    run_id: uuid.UUID
    config: RunnableConfig
    claimed: bool = False


_PENDING: ContextVar[_PendingStream | None] = ContextVar("metarouter_pending_stream", default=None)


@dataclass
class _Call:
    """One routed call: the decision and how to dispatch it."""

    decision: Decision
    order: list[str]
    tools: list[dict[str, Any]] | None
    kwargs: dict[str, Any]
    stop: list[str] | None
    run: _RunInfo
    failures: list[tuple[str, BaseException]] = field(default_factory=list)


class MetaRouterChat(BaseChatModel):
    """A chat model routing every call to the candidate that fits the user's cost-vs-quality taste.

    Swap it in wherever a chat model goes (chains, agents, ``with_structured_output``): each
    call is routed by a meta-learned router, for the calling user, among ``candidates``, then
    dispatched to the chosen candidate. The answer is the candidate's answer, with
    ``response_metadata["model_name"]`` set to the chosen candidate's name and
    ``response_metadata["metarouter"]`` holding the decision id, per-candidate scores, the user
    id and the call's cost in USD (from the real token usage and the candidate's price).

    Per-call options:

    * ``config={"configurable": {"user_id": "alice"}}`` (or ``metadata``): whose taste routes
      the call; one instance serves many users. Default: ``user_id``, else the service's
      default user.
    * ``model="<candidate>"``: force a candidate (exploration, A/B tests); reported with
      ``forced=True``; no fallback then.
    * ``config={"run_id": uuid}``: the decision is stored under this run id, so feedback can
      name the call before it even returns.

    Feedback: :meth:`record_preference`, :meth:`compare`, :meth:`add_feedback_listener`, and
    :class:`~langchain_metarouter.MetaRouterFeedbackHandler` for the app's own events. It
    changes the next decision for that user only.

    Example:
        .. code-block:: python

            from langchain_openai import ChatOpenAI
            from langchain_metarouter import ArmSpec, MetaRouterChat, Price

            router = MetaRouterChat(
                candidates={
                    "gpt-4o-mini": ChatOpenAI(model="gpt-4o-mini"),
                    "gpt-4o": ChatOpenAI(model="gpt-4o"),
                },
                arms=[
                    ArmSpec("gpt-4o-mini", price=Price(0.15, 0.6), like="qwen2.5-7b-instruct"),
                    ArmSpec("gpt-4o", price=Price(2.5, 10.0),
                            like="llama-3.1-nemotron-51b-instruct"),
                ],
                user_id="alice",
            )
            answer = router.invoke("Prove that sqrt(2) is irrational.")
            answer.response_metadata["metarouter"]["cost_usd"]
    """

    candidates: dict[str, BaseChatModel]
    """Candidate chat models by name. The names are what the router chooses between and
    reports; catalog names (``MetaRouter.default().catalog``) need no description."""

    arms: list[ArmSpec] = Field(default_factory=list)
    """How candidates are known to the router: ``ArmSpec(name, price=Price(in, out),
    like=<catalog model> | quality=<0..1>)``. Needed for names outside the router's catalog;
    give a price for any candidate whose real cost in USD should be reported."""

    service: RoutingService | None = Field(default=None, exclude=True)
    """A ready routing service (shared with other adapters or processes). Default: one built
    from ``arms``, ``router`` and ``store``."""

    router: MetaRouter | None = Field(default=None, exclude=True)
    """The router when no ``service`` is given (default: the bundled one)."""

    store: PreferenceStore | None = Field(default=None, exclude=True)
    """The preference store when no ``service`` is given (default: the SQLite file at
    ``$METAROUTER_STORE`` or ``~/.local/share/metarouter/preferences.db``)."""

    user_id: str | None = None
    """The user whose taste routes calls that name none (default: the service's default)."""

    fallback: bool = True
    """Try the next-best candidate when the chosen one raises one of ``fallback_on``."""

    fallback_on: tuple[type[BaseException], ...] = (Exception,)
    """Exception types that make the router fall back (rate limits, timeouts, provider
    errors are all ``Exception``); anything else propagates at once."""

    candidate_callbacks: CandidateCallbacks = "tracers"
    """Which of the call's handlers also see the chosen candidate's nested run: ``"tracers"``
    (LangSmith and other tracers; other handlers see the router's run, which carries the same
    tokens and usage, so nothing is counted twice) or ``"all"``."""

    temperature: float | None = None
    """Sampling temperature set on every candidate that has a ``temperature`` field (a copy is
    made; the objects you passed are not changed). None keeps each candidate's own."""

    max_tokens: int | None = None
    """Output token limit set on every candidate that has a ``max_tokens`` field."""

    stop: list[str] | None = None
    """Default stop sequences, passed to the candidate on every call that gives none."""

    timeout: float | None = None
    """Accepted for LangChain's standard parameters but not applied: timeouts are HTTP client
    settings of each candidate (set them there)."""

    max_retries: int | None = None
    """Accepted for LangChain's standard parameters but not applied: retries are client
    settings of each candidate; the router itself falls back to the next candidate."""

    streaming: bool = False
    """Stream from the chosen candidate even on ``invoke`` (token callbacks fire)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    _configured: dict[str, BaseChatModel] = PrivateAttr(default_factory=dict)

    # -- construction ---------------------------------------------------------------------------
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().__init__(*args, **kwargs)
        except ValidationError as exc:  # surface our own errors (ConfigError, ...) unwrapped
            for error in exc.errors():
                original = (error.get("ctx") or {}).get("error")
                if isinstance(original, MetaRouterError):
                    raise original from None
            raise

    @model_validator(mode="before")
    @classmethod
    def _warn_unknown_arguments(cls, values: Any) -> Any:
        if isinstance(values, dict):
            unknown = sorted(
                k for k in values if k not in cls.model_fields and k != "callback_manager"
            )
            if unknown:
                logger.warning(
                    "MetaRouterChat ignores the arguments %s: it makes no requests itself. Set "
                    "credentials and client options on each candidate chat model instead.",
                    unknown,
                )
        return values

    @model_validator(mode="after")
    def _build_service(self) -> Self:
        if not self.candidates:
            raise ConfigError(
                "MetaRouterChat needs at least one candidate: candidates={'name': chat_model}."
            )
        for name, model in self.candidates.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"candidate names must be non-empty strings, got {name!r}.")
            if not isinstance(model, BaseChatModel):
                raise ConfigError(
                    f"candidate {name!r} is a {type(model).__name__}; candidates must be "
                    "LangChain chat models (BaseChatModel), e.g. ChatOpenAI(model=...)."
                )
        names = list(self.candidates)
        specs = {spec.name: spec for spec in self.arms}
        stray = sorted(set(specs) - set(names))
        if stray:
            raise ConfigError(
                f"arms {stray} describe no candidate; candidates are {names}. Fix: use the "
                "same names in candidates= and arms=."
            )
        if self.service is None:
            self.service = RoutingService(
                [specs.get(n, n) for n in names], router=self.router, store=self.store
            )
        else:
            if self.router is not None or self.store is not None or self.arms:
                raise ConfigError(
                    "give either service= or router=/store=/arms= (they build the service), "
                    "not both."
                )
            if sorted(self.service.arm_names) != sorted(names):
                raise ConfigError(
                    f"the service routes between {sorted(self.service.arm_names)} but the "
                    f"candidates are {sorted(names)}. Fix: build the RoutingService with the "
                    "same candidate names."
                )
        if self.user_id is not None:
            validate_user_id(self.user_id)
        if self.timeout is not None or self.max_retries is not None:
            logger.debug(
                "MetaRouterChat(timeout=..., max_retries=...) are not applied; set them on "
                "each candidate."
            )
        return self

    @property
    def _service(self) -> RoutingService:
        if self.service is None:  # pragma: no cover - set by the validator
            raise ConfigError("MetaRouterChat has no routing service.")
        return self.service

    def _resolve_model_profile(self) -> ModelProfile | None:
        """What the router offers: a capability only when every candidate has it."""
        models = list(self.candidates.values())
        if not models:
            return None
        profile: dict[str, Any] = {"tool_calling": all(supports(m, "tool_calling") for m in models)}
        for key in _PROFILE_FLAGS:
            values = [supports(m, key) for m in models]
            if all(v is True for v in values):
                profile[key] = True
            elif any(v is False for v in values):
                profile[key] = False
        for key in _PROFILE_LIMITS:
            limits = [(m.profile or {}).get(key) for m in models]
            if limits and all(isinstance(v, int) for v in limits):
                profile[key] = min(cast("list[int]", limits))
        return cast("ModelProfile", profile)

    @property
    def _llm_type(self) -> str:
        return "metarouter"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "candidates": list(self.candidates),
            "user_id": self.user_id,
            "fallback": self.fallback,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop if stop is not None else self.stop, **kwargs)
        params["ls_provider"] = "metarouter"
        model = kwargs.get("model")
        params["ls_model_name"] = model if isinstance(model, str) else "metarouter"
        if self.temperature is not None:
            params["ls_temperature"] = self.temperature
        if self.max_tokens is not None:
            params["ls_max_tokens"] = self.max_tokens
        return params

    def candidate(self, name: str) -> BaseChatModel:
        """The candidate chat model ``name`` as dispatched (with ``temperature``/``max_tokens``)."""
        if name not in self.candidates:
            raise ConfigError(
                f"unknown candidate {name!r}; candidates are {list(self.candidates)}."
            )
        hit = self._configured.get(name)
        if hit is None:
            model = self.candidates[name]
            fields = type(model).model_fields
            update = {
                k: getattr(self, k)
                for k in _FORWARDED
                if getattr(self, k) is not None and k in fields
            }
            hit = model.model_copy(update=update) if update else model
            self._configured[name] = hit
        return hit

    # -- tools ----------------------------------------------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools; they are passed to the chosen candidate's own ``bind_tools``.

        Candidates without tool calling are left out of the choice for calls with tools.

        Args:
            tools: Tools in any form ``convert_to_openai_tool`` accepts.
            tool_choice: ``"auto"``, ``"any"``/``"required"``, a tool name, ``True`` or a dict,
                as the candidates accept it.
            **kwargs: Passed on to the candidate's ``bind_tools`` (e.g. ``parallel_tool_calls``,
                ``strict``).

        Raises:
            ConfigError: No candidate supports tool calling.
        """
        able = [n for n, m in self.candidates.items() if supports(m, "tool_calling")]
        if not able:
            raise ConfigError(
                f"none of the candidates {list(self.candidates)} supports tool calling. Fix: add "
                "a candidate whose chat model implements bind_tools."
            )
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)

    # -- per-call config (user id, run id) ------------------------------------------------------
    @staticmethod
    def _with_user(config: RunnableConfig | None, user_id: str | None = None) -> RunnableConfig:
        """The config with the call's user id copied into its metadata (where runs see it)."""
        config = ensure_config(config)
        uid = user_id if user_id is not None else user_id_from_config(config)
        if uid is not None:
            config["metadata"] = {**(config.get("metadata") or {}), USER_ID_KEY: uid}
        return config

    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        """Route and call; see the class docstring for per-call options."""
        return super().invoke(input, self._with_user(config), stop=stop, **kwargs)

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        """Async :meth:`invoke` (routing and the store run in an executor)."""
        return await super().ainvoke(input, self._with_user(config), stop=stop, **kwargs)

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        """Route, then stream the chosen candidate; the last chunk carries the routing data."""
        config = self._with_user(config)
        run_id = config.get("run_id") or uuid.uuid4()
        config["run_id"] = run_id
        token = _PENDING.set(_PendingStream(self, run_id, config))
        try:
            yield from super().stream(input, config, stop=stop, **kwargs)
        finally:
            with contextlib.suppress(ValueError):  # closed from another context
                _PENDING.reset(token)

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        """Async :meth:`stream`."""
        config = self._with_user(config)
        run_id = config.get("run_id") or uuid.uuid4()
        config["run_id"] = run_id
        token = _PENDING.set(_PendingStream(self, run_id, config))
        try:
            async for chunk in super().astream(input, config, stop=stop, **kwargs):
                yield chunk
        finally:
            with contextlib.suppress(ValueError):
                _PENDING.reset(token)

    def _should_stream(
        self,
        *,
        async_api: bool,
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> bool:
        # invoke()/ainvoke() ask with their run manager: answer "no" so that LangChain calls
        # _generate/_agenerate, which keep the run manager (to nest the candidate's run) and
        # stream the candidate themselves when streaming was asked for (see _wants_stream).
        if run_manager is not None:
            return False
        return super()._should_stream(async_api=async_api, **kwargs)

    def _wants_stream(
        self,
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
        async_api: bool,
        kwargs: Mapping[str, Any],
    ) -> bool:
        return super()._should_stream(async_api=async_api, run_manager=run_manager, **kwargs)

    def _run_info(
        self, run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None
    ) -> _RunInfo:
        if run_manager is not None:
            return _RunInfo(
                run_manager.run_id,
                dict(run_manager.metadata),
                list(run_manager.inheritable_handlers),
                list(run_manager.inheritable_tags),
                dict(run_manager.inheritable_metadata),
            )
        pending = _PENDING.get()
        if pending is None or pending.owner is not self or pending.claimed:
            logger.debug("MetaRouterChat._stream called outside stream(): no run to nest under")
            return _RunInfo()
        pending.claimed = True
        config = pending.config
        manager = CallbackManager.configure(
            config.get("callbacks"),
            self.callbacks,
            self.verbose,
            config.get("tags"),
            self.tags,
            config.get("metadata"),
            self.metadata,
        )
        return _RunInfo(
            pending.run_id,
            dict(manager.metadata),
            list(manager.inheritable_handlers),
            list(manager.inheritable_tags),
            dict(manager.inheritable_metadata),
        )

    # -- routing --------------------------------------------------------------------------------
    def _user_for(self, metadata: Mapping[str, Any]) -> str | None:
        uid = metadata.get(USER_ID_KEY)
        return str(uid) if uid is not None else self.user_id

    def _plan(
        self,
        messages: Sequence[BaseMessage],
        *,
        needed: set[str],
        forced: Any,
        user_id: str | None,
        run_id: uuid.UUID | None,
        metadata: Mapping[str, Any] | None = None,
    ) -> tuple[Decision, list[str]]:
        """Decide for one call; returns the decision and the candidates to try, in order."""
        lacking = {
            name: missing
            for name, model in self.candidates.items()
            if (missing := lacking_capabilities(model, needed))
        }
        if forced is not None:
            if not isinstance(forced, str):
                raise ConfigError(f"model= must be a candidate name, got {type(forced).__name__}.")
            if forced in lacking:
                raise ConfigError(
                    f"model override {forced!r} lacks {lacking[forced]}, which this call needs. "
                    f"Fix: force one of {[n for n in self.candidates if n not in lacking]}."
                )
        if len(lacking) == len(self.candidates):
            detail = "; ".join(f"{n!r} lacks {m}" for n, m in lacking.items())
            raise ConfigError(
                f"no candidate can take this call, which needs {sorted(needed)}: {detail}. Fix: "
                "add a candidate with these capabilities or drop them from the call."
            )
        decision = self._service.decide(
            query_text(messages),
            user_id,
            exclude=list(lacking),
            forced=forced,
            run_id=run_id,
            metadata={"integration": "langchain", **(metadata or {})},
        )
        if forced is not None or not self.fallback:
            order = [decision.model]
        else:
            order = [m for m in decision.fallback_order if m not in lacking]
        return decision, order

    def _start(
        self,
        messages: Sequence[BaseMessage],
        stop: list[str] | None,
        kwargs: Mapping[str, Any],
        run: _RunInfo,
    ) -> _Call:
        kwargs = dict(kwargs)
        forced = kwargs.pop("model", None)
        for key in ("stream", "ls_structured_output_format", "structured_output_format"):
            kwargs.pop(key, None)
        tools = kwargs.pop("tools", None) or None
        if not tools:
            kwargs.pop("tool_choice", None)
        needed = needed_capabilities(
            messages, tools=bool(tools), tool_choice=kwargs.get("tool_choice")
        )
        decision, order = self._plan(
            messages,
            needed=needed,
            forced=forced,
            user_id=self._user_for(run.metadata),
            run_id=run.run_id,
            metadata={"needs": sorted(needed)} if needed else None,
        )
        return _Call(decision, order, tools, kwargs, stop if stop is not None else self.stop, run)

    def _target(self, call: _Call, name: str) -> tuple[Runnable[Any, Any], dict[str, Any]]:
        """The runnable to call for candidate ``name`` and the call kwargs."""
        model = self.candidate(name)
        extra: dict[str, Any] = {"stop": call.stop} if call.stop is not None else {}
        if call.tools:
            return model.bind_tools(call.tools, **call.kwargs), extra
        return model, {**call.kwargs, **extra}

    def _config_for(self, call: _Call, name: str) -> RunnableConfig:
        manager = child_callbacks(
            parent_run_id=call.run.run_id,
            handlers=call.run.handlers,
            tags=call.run.tags,
            metadata=call.run.inheritable_metadata,
            policy=self.candidate_callbacks,
            extra_metadata={
                "metarouter_decision_id": call.decision.decision_id,
                "metarouter_candidate": name,
            },
        )
        return {"callbacks": manager, "tags": [], "metadata": {}, "configurable": {}}

    def _routing_data(
        self,
        call: _Call,
        answered_by: str,
        usage: UsageMetadata | None,
        provider_model: str | None,
    ) -> dict[str, Any]:
        """Record the outcome with the service; return ``response_metadata["metarouter"]``."""
        failed = [name for name, _ in call.failures]
        cost = self._service.complete(
            call.decision,
            model=answered_by,
            input_tokens=usage.get("input_tokens") if usage else None,
            output_tokens=usage.get("output_tokens") if usage else None,
            fallbacks=failed,
        )
        data = call.decision.metadata()
        data.update(
            model=answered_by,
            cost_usd=cost,
            predicted_quality=dict(call.decision.routing.predicted_quality),
            expected_costs_usd=dict(call.decision.routing.expected_costs_usd),
            fallbacks=[
                {"model": name, "error": f"{type(exc).__name__}: {exc}"}
                for name, exc in call.failures
            ],
            provider_model_name=provider_model,
            run_id=str(call.run.run_id) if call.run.run_id is not None else None,
        )
        return data

    def _failed(self, call: _Call, name: str, exc: BaseException) -> None:
        call.failures.append((name, exc))
        rest = [n for n in call.order if n not in {f for f, _ in call.failures}]
        logger.warning(
            "candidate %r failed (%s: %s)%s",
            name,
            type(exc).__name__,
            exc,
            f"; falling back to {rest[0]!r}" if rest else "",
        )

    def _dispatch_error(self, call: _Call, *, partial: str | None = None) -> DispatchError:
        tried = "; ".join(
            f"{n!r} raised {type(e).__name__}: {str(e).rstrip('.')}" for n, e in call.failures
        )
        if partial is not None:
            return DispatchError(
                f"candidate {partial!r} failed mid-stream after sending part of its answer "
                f"(decision {call.decision.decision_id}); not falling back, so as not to mix two "
                f"answers. {tried}."
            )
        hint = (
            "the model was forced with model=, so no other candidate was tried"
            if call.decision.forced
            else "fallback is off"
            if not self.fallback
            else "every eligible candidate was tried"
        )
        return DispatchError(
            f"MetaRouterChat: no candidate answered (decision {call.decision.decision_id}, user "
            f"{call.decision.user_id!r}; {hint}): {tried}. Fix: check these candidates' "
            "credentials, endpoints and rate limits; narrow fallback_on to let other errors "
            "through."
        )

    # -- calling a candidate in its own config context ------------------------------------------
    # LangChain merges a runnable's explicit config with the *ambient* one (the parent chain's,
    # from a context variable) when a binding is invoked; the candidate's calls therefore run
    # in a context whose ambient config is the candidate's own, so its run nests under the
    # router's run and nowhere else.
    @staticmethod
    def _invoke_candidate(
        runnable: Runnable[Any, Any],
        messages: list[BaseMessage],
        config: RunnableConfig,
        kwargs: dict[str, Any],
    ) -> BaseMessage:
        with set_config_context(config) as context:
            return cast("BaseMessage", context.run(runnable.invoke, messages, config, **kwargs))

    @staticmethod
    async def _ainvoke_candidate(
        runnable: Runnable[Any, Any],
        messages: list[BaseMessage],
        config: RunnableConfig,
        kwargs: dict[str, Any],
    ) -> BaseMessage:
        with set_config_context(config) as context:
            return cast(
                "BaseMessage",
                await coro_with_context(runnable.ainvoke(messages, config, **kwargs), context),
            )

    @staticmethod
    def _stream_candidate(
        runnable: Runnable[Any, Any],
        messages: list[BaseMessage],
        config: RunnableConfig,
        kwargs: dict[str, Any],
    ) -> Iterator[BaseMessage]:
        with set_config_context(config) as context:
            iterator = context.run(runnable.stream, messages, config, **kwargs)
            done = object()
            while (item := context.run(next, iterator, done)) is not done:
                yield cast("BaseMessage", item)

    @staticmethod
    async def _astream_candidate(
        runnable: Runnable[Any, Any],
        messages: list[BaseMessage],
        config: RunnableConfig,
        kwargs: dict[str, Any],
    ) -> AsyncIterator[BaseMessage]:
        with set_config_context(config) as context:
            iterator = context.run(runnable.astream, messages, config, **kwargs)
            while True:
                try:
                    item = await coro_with_context(anext(iterator), context)
                except StopAsyncIteration:
                    return
                yield cast("BaseMessage", item)

    # -- dispatch: invoke -----------------------------------------------------------------------
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self._wants_stream(run_manager, False, kwargs):
            chunks: list[ChatGenerationChunk] = []
            run_id = f"{LC_ID_PREFIX}-{run_manager.run_id}" if run_manager else None
            for chunk in self._stream_call(messages, stop, self._run_info(run_manager), kwargs):
                if run_manager is not None:
                    if chunk.message.id is None:
                        chunk.message.id = run_id
                    run_manager.on_llm_new_token(cast("str", chunk.message.content), chunk=chunk)
                chunks.append(chunk)
            return generate_from_stream(iter(chunks))
        call = self._start(messages, stop, kwargs, self._run_info(run_manager))
        for name in call.order:
            runnable, call_kwargs = self._target(call, name)
            try:
                message = self._invoke_candidate(
                    runnable, messages, self._config_for(call, name), call_kwargs
                )
            except self.fallback_on as exc:
                self._failed(call, name, exc)
                continue
            return self._result(call, name, message)
        raise self._dispatch_error(call)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self._wants_stream(run_manager, True, kwargs):
            chunks: list[ChatGenerationChunk] = []
            run_id = f"{LC_ID_PREFIX}-{run_manager.run_id}" if run_manager else None
            async for chunk in self._astream_call(
                messages, stop, self._run_info(run_manager), kwargs
            ):
                if run_manager is not None:
                    if chunk.message.id is None:
                        chunk.message.id = run_id
                    await run_manager.on_llm_new_token(
                        cast("str", chunk.message.content), chunk=chunk
                    )
                chunks.append(chunk)
            return generate_from_stream(iter(chunks))
        run = self._run_info(run_manager)
        call = await run_in_executor(None, self._start, messages, stop, kwargs, run)
        for name in call.order:
            runnable, call_kwargs = self._target(call, name)
            try:
                message = await self._ainvoke_candidate(
                    runnable, messages, self._config_for(call, name), call_kwargs
                )
            except self.fallback_on as exc:
                self._failed(call, name, exc)
                continue
            return await run_in_executor(None, self._result, call, name, message)
        raise self._dispatch_error(call)

    def _result(self, call: _Call, name: str, message: BaseMessage) -> ChatResult:
        provider = message.response_metadata.get("model_name")
        usage = message.usage_metadata if isinstance(message, AIMessage) else None
        data = self._routing_data(call, name, usage, provider)
        return ChatResult(generations=[ChatGeneration(message=routed_message(message, name, data))])

    # -- dispatch: stream -----------------------------------------------------------------------
    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield from self._stream_call(messages, stop, self._run_info(run_manager), kwargs)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for chunk in self._astream_call(messages, stop, self._run_info(run_manager), kwargs):
            yield chunk

    @staticmethod
    def _final_chunk(name: str, data: dict[str, Any], list_content: bool) -> ChatGenerationChunk:
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content=[] if list_content else "",
                response_metadata={"model_name": name, METADATA_KEY: data},
                chunk_position="last",
            )
        )

    def _stream_call(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run: _RunInfo,
        kwargs: Mapping[str, Any],
    ) -> Iterator[ChatGenerationChunk]:
        call = self._start(messages, stop, kwargs, run)
        for name in call.order:
            runnable, call_kwargs = self._target(call, name)
            tally = _StreamTally()
            try:
                for raw in self._stream_candidate(
                    runnable, messages, self._config_for(call, name), call_kwargs
                ):
                    yield tally.take(raw)
            except self.fallback_on as exc:
                self._failed(call, name, exc)
                if tally.sent:
                    raise self._dispatch_error(call, partial=name) from exc
                continue
            data = self._routing_data(call, name, tally.usage, tally.provider)
            yield self._final_chunk(name, data, tally.list_content)
            return
        raise self._dispatch_error(call)

    async def _astream_call(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run: _RunInfo,
        kwargs: Mapping[str, Any],
    ) -> AsyncIterator[ChatGenerationChunk]:
        call = await run_in_executor(None, self._start, messages, stop, kwargs, run)
        for name in call.order:
            runnable, call_kwargs = self._target(call, name)
            tally = _StreamTally()
            try:
                async for raw in self._astream_candidate(
                    runnable, messages, self._config_for(call, name), call_kwargs
                ):
                    yield tally.take(raw)
            except self.fallback_on as exc:
                self._failed(call, name, exc)
                if tally.sent:
                    raise self._dispatch_error(call, partial=name) from exc
                continue
            data = await run_in_executor(
                None, self._routing_data, call, name, tally.usage, tally.provider
            )
            yield self._final_chunk(name, data, tally.list_content)
            return
        raise self._dispatch_error(call)

    # -- feedback -------------------------------------------------------------------------------
    def record_preference(
        self,
        winner: FeedbackItem,
        loser: FeedbackItem,
        *,
        user_id: str | None = None,
        query: str | None = None,
        source: ComparisonSource | None = None,
    ) -> ComparisonRecord:
        """Record that ``winner``'s answer was worth its cost over ``loser``'s, for one query.

        Each side may be: an ``AIMessage`` returned by this router; a decision id
        (``response_metadata["metarouter"]["decision_id"]``); a LangChain run id given as
        ``config={"run_id": ...}``; or an answer the router did not produce, as
        ``Response(model=..., cost_usd=..., text=...)`` or a dict with those keys (then pass
        ``query=``, unless the other side is a routed answer to the same query).

        The user's next routing decision uses it (in every process sharing the store); other
        users are not affected.

        Args:
            winner: The preferred answer.
            loser: The other answer (same query).
            user_id: The user (default: the decisions' owner, else ``user_id``).
            query: The query text, needed when neither answer was routed.
            source: How the comparison was collected (stored with it).

        Raises:
            FeedbackError: Unknown ids, the same model twice, different users or queries.
        """
        return self._service.record_preference(
            as_feedback_item(winner),
            as_feedback_item(loser),
            user_id=user_id if user_id is not None else self._feedback_user(winner, loser),
            query=query,
            source=source,
        )

    async def arecord_preference(
        self,
        winner: FeedbackItem,
        loser: FeedbackItem,
        *,
        user_id: str | None = None,
        query: str | None = None,
        source: ComparisonSource | None = None,
    ) -> ComparisonRecord:
        """Async :meth:`record_preference` (the store is written in an executor)."""
        return await run_in_executor(
            None,
            lambda: self.record_preference(
                winner, loser, user_id=user_id, query=query, source=source
            ),
        )

    def _feedback_user(self, *items: FeedbackItem) -> str | None:
        """The instance's user for external answers only (routed answers name their owner)."""
        if any(isinstance(i, (BaseMessage, str, uuid.UUID, Decision)) for i in items):
            return None
        if any(isinstance(i, Mapping) and "decision_id" in i for i in items):
            return None
        return self.user_id

    def compare(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        user_id: str | None = None,
    ) -> ComparePair:
        """Answer ``input`` with two candidates, for the user to say which was worth it.

        The pair is the service's suggestion for this user and query (the routed choice and the
        candidate whose cost differs most from it), so the user's answer says most about their
        cost-vs-quality trade-off. Both calls run in parallel, are recorded as forced decisions
        and carry routing data; pass the pair's choice to :meth:`ComparePair.prefer` (or both
        answers to :meth:`record_preference`).

        Args:
            input: What to answer (any chat model input).
            config: Runnable config (callbacks, tags, ``configurable.user_id``).
            user_id: The user (overrides the config's).
        """
        config = self._with_user(config, user_id)
        messages = self._convert_input(input).to_messages()
        uid = self._user_for(config.get("metadata") or {})
        first, second = self._service.suggest_pair(query_text(messages), uid)
        both = RunnableParallel(first=self.bind(model=first), second=self.bind(model=second))
        out = both.with_config(run_name="MetaRouterChat.compare").invoke(input, config)
        return self._pair(out["first"], out["second"], messages)

    async def acompare(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        user_id: str | None = None,
    ) -> ComparePair:
        """Async :meth:`compare` (both candidates called concurrently)."""
        config = self._with_user(config, user_id)
        messages = self._convert_input(input).to_messages()
        uid = self._user_for(config.get("metadata") or {})
        first, second = await run_in_executor(
            None, self._service.suggest_pair, query_text(messages), uid
        )
        both = RunnableParallel(first=self.bind(model=first), second=self.bind(model=second))
        out = await both.with_config(run_name="MetaRouterChat.compare").ainvoke(input, config)
        return self._pair(out["first"], out["second"], messages)

    def _pair(
        self, first: AIMessage, second: AIMessage, messages: list[BaseMessage]
    ) -> ComparePair:
        data = (first.response_metadata[METADATA_KEY], second.response_metadata[METADATA_KEY])
        return ComparePair(
            query=query_text(messages),
            user_id=data[0]["user_id"],
            answers=(first, second),
            models=(data[0]["model"], data[1]["model"]),
            decision_ids=(data[0]["decision_id"], data[1]["decision_id"]),
            recorder=self.record_preference,
        )

    def add_feedback_listener(self, listener: FeedbackListener) -> FeedbackListener:
        """Call ``listener(event)`` whenever feedback is recorded or a preference re-estimated.

        ``event`` is a :class:`metarouter.store.records.FeedbackEvent` (``kind`` is
        ``"comparison_recorded"`` or ``"preference_updated"``, plus ``user_id``, ``version``,
        the comparison or the new ``quality_weight``). Errors in listeners are logged, never
        raised. Returns ``listener`` (usable as a decorator).
        """
        return self._service.add_listener(listener)

    def remove_feedback_listener(self, listener: FeedbackListener) -> None:
        """Stop calling ``listener``."""
        self._service.remove_listener(listener)

    def preference(self, user_id: str | None = None) -> Any:
        """The user's current preference (``quality_weight`` in [0, 1], ``n_comparisons``)."""
        return self._service.preference(user_id if user_id is not None else self.user_id)
