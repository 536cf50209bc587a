"""``MetaRouterChat``: a LangChain chat model that routes each call to one of its candidates.

The adapter is thin: it converts the call (messages, tools, user, run) into the core's
:class:`~metarouter.dispatch.CallRequest`, lets the core's :class:`~metarouter.dispatch.CallFlow`
route it, try the candidates in order and book the outcome, and converts back: the chosen
candidate chat model is called for real (async, streaming, tools passed through) and its answer
carries the routing data in ``response_metadata["metarouter"]``. Feedback goes back to the same
:class:`~metarouter.service.RoutingService`.
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
from langchain_core.runnables.config import run_in_executor
from langchain_core.runnables.utils import coro_with_context
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.utils import LC_ID_PREFIX
from metarouter.budgets import Budgets
from metarouter.dispatch import Call, CallFlow, check_user_id
from metarouter.errors import ConfigError, MetaRouterError
from metarouter.feedback import Pair, default_feedback_user
from metarouter.router import MetaRouter
from metarouter.service import ArmSpec, FeedbackListener, RoutingService
from metarouter.store.base import PreferenceStore
from metarouter.store.records import ComparisonRecord, ComparisonSource
from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)
from typing_extensions import Self

from langchain_metarouter._utils import (
    METADATA_KEY,
    USER_ID_KEY,
    CandidateCallbacks,
    call_request,
    candidate_context,
    child_callbacks,
    finished_message,
    needed_capabilities,
    query_text,
    routed_chunk,
    supports,
    to_chunk,
    user_id_from_config,
)
from langchain_metarouter.feedback import ComparePair, FeedbackItem, as_feedback_item

__all__ = ["MetaRouterChat"]

logger = logging.getLogger(__name__)

#: Sampling parameters copied onto candidates that declare a field of the same name.
_FORWARDED = ("temperature", "max_tokens")
#: Keyword marking the two calls of ``compare()`` (popped before the candidate is called).
_COMPARE_KWARG = "metarouter_compare"
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
    list_content: bool = False
    tool_call_ids: list[str] = field(default_factory=list)

    def take(self, raw: BaseMessage) -> ChatGenerationChunk:
        """Count a candidate chunk and return it as the router's chunk."""
        piece, seen = routed_chunk(to_chunk(raw))
        self.provider = self.provider or seen
        if piece.usage_metadata:
            self.usage = add_usage(self.usage, piece.usage_metadata)
        self.list_content = not isinstance(piece.content, str)
        self.tool_call_ids.extend(c["id"] or "" for c in piece.tool_call_chunks)
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
_END = object()


@dataclass
class _Dispatch:
    """One routed call and how to call a candidate for it."""

    call: Call
    messages: list[BaseMessage]
    tools: list[dict[str, Any]] | None
    kwargs: dict[str, Any]
    stop: list[str] | None
    run: _RunInfo


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
      ``forced=True``; a forced model never falls back.
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
    """Try the next-best candidate when the chosen one raises one of ``fallback_on`` or
    overruns ``timeout`` (never for a forced model)."""

    fallback_on: tuple[type[BaseException], ...] = (Exception,)
    """Exception types that make the router fall back (rate limits, timeouts, provider
    errors are all ``Exception``); anything else propagates at once."""

    max_fallbacks: int | None = None
    """How many next-best candidates to try after the chosen one fails (None: all)."""

    candidate_callbacks: CandidateCallbacks = "tracers"
    """Which of the call's handlers also see the chosen candidate's nested run: ``"tracers"``
    (LangSmith and other tracers; other handlers, including those registered by context
    managers such as ``get_usage_metadata_callback()``, see the router's run only, which carries
    the same tokens and usage, so nothing is counted twice) or ``"all"``."""

    temperature: float | None = None
    """Sampling temperature set on every candidate that has a ``temperature`` field (a copy is
    made; the objects you passed are not changed). None keeps each candidate's own."""

    max_tokens: int | None = None
    """Output token limit set on every candidate that has a ``max_tokens`` field."""

    stop: list[str] | None = None
    """Default stop sequences, passed to the candidate on every call that gives none."""

    timeout: float | None = None
    """Seconds one candidate may take to answer (for a stream: to its first chunk), its own
    retries included, before the router falls back to the next one (None: no limit beyond the
    candidate's own)."""

    max_retries: int | None = None
    """Accepted for LangChain's standard parameters but not applied: retries are settings of
    each candidate's client, and they run inside one attempt, before any fallback. With
    fallback on, give candidates few retries (e.g. ``ChatOpenAI(max_retries=0)``) and a
    ``timeout`` here."""

    streaming: bool = False
    """Stream from the chosen candidate even on ``invoke`` (token callbacks fire)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    _configured: dict[str, BaseChatModel] = PrivateAttr(default_factory=dict)
    _flow: CallFlow | None = PrivateAttr(default=None)

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
            check_user_id(self.user_id)
        # the fallback fields are read on every call: changing them later takes effect
        self._flow = CallFlow(self.service, names, policy=self, integration="langchain")
        return self

    @property
    def flow(self) -> CallFlow:
        """The core's per-call policy for this router (shared with ``MetaRouterMiddleware``)."""
        if self._flow is None:  # pragma: no cover - set by the validator
            raise ConfigError("MetaRouterChat has no routing service.")
        return self._flow

    @property
    def _service(self) -> RoutingService:
        return self.flow.service

    def warm_up(self, user_id: str | None = None) -> float:
        """Load the embedding model, the policy and the store now; returns the seconds taken.

        Call it at start-up: otherwise the first routed call of the process pays for it
        (several seconds on a CPU). Nothing is recorded.
        """
        return self.flow.warm_up(user_id if user_id is not None else self.user_id)

    # -- LangChain identity ---------------------------------------------------------------------
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

    @classmethod
    def is_lc_serializable(cls) -> bool:
        """False: ``dumps(router)`` writes ``not_implemented``, on purpose.

        The router is configuration *plus live state*: a preference store (a database
        connection, maybe shared with other processes), a loaded router model and a routing
        service other adapters may share. A LangChain manifest can only rebuild an object from
        constructor arguments; rebuilding this one from defaults would silently route with
        another store (other users' preferences) and another model. Build the router in code
        (or a factory function) instead; its candidates serialise on their own.
        """
        return False

    # -- candidates -----------------------------------------------------------------------------
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
            # ask for usage in streams (OpenAI-compatible servers send none unless asked), so
            # that a streamed call has a real cost; an explicit False is kept
            if "stream_usage" in fields and getattr(model, "stream_usage", False) is None:
                update["stream_usage"] = True
            hit = model.model_copy(update=update) if update else model
            self._configured[name] = hit
        return hit

    def _first_candidate(self) -> BaseChatModel:
        return self.candidate(next(iter(self.candidates)))

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` by the first candidate's tokenizer (the router has none)."""
        return self._first_candidate().get_token_ids(text)

    def get_num_tokens(self, text: str) -> int:
        """Tokens in ``text`` as the first candidate counts them."""
        return self._first_candidate().get_num_tokens(text)

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """Tokens in ``messages`` as the first candidate counts them."""
        return self._first_candidate().get_num_tokens_from_messages(messages, tools=tools)

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

    def _prime(self, inputs: Sequence[LanguageModelInput]) -> None:
        """Embed the routing texts of a batch in one embedding batch (see ``batch``)."""
        try:
            texts = [query_text(self._convert_input(i).to_messages()) for i in inputs]
        except Exception:  # a bad input fails in its own call, with its own error
            logger.debug("batch inputs not primed", exc_info=True)
            return
        self._service.prime(texts)

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:
        """Route and call many inputs: their routing texts are embedded in one batch first."""
        self._prime(inputs)
        return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:
        """Async :meth:`batch` (the one embedding batch runs in an executor)."""
        await run_in_executor(None, self._prime, inputs)
        return await super().abatch(inputs, config, return_exceptions=return_exceptions, **kwargs)

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

    def _start(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: Mapping[str, Any],
        run: _RunInfo,
    ) -> _Dispatch:
        kwargs = dict(kwargs)
        forced = kwargs.pop("model", None)
        compare = bool(kwargs.pop(_COMPARE_KWARG, False))
        for key in ("stream", "ls_structured_output_format", "structured_output_format"):
            kwargs.pop(key, None)
        tools = kwargs.pop("tools", None) or None
        if not tools:
            kwargs.pop("tool_choice", None)
        needed = needed_capabilities(
            messages, tools=bool(tools), tool_choice=kwargs.get("tool_choice")
        )
        request = call_request(
            self.candidates,
            messages,
            needed=needed,
            forced=forced,
            compare=compare,
            user_id=self._user_for(run.metadata),
            run_id=run.run_id,
        )
        call = self.flow.start(request)
        return _Dispatch(
            call, messages, tools, kwargs, stop if stop is not None else self.stop, run
        )

    def _target(self, dispatch: _Dispatch, name: str) -> tuple[Runnable[Any, Any], dict[str, Any]]:
        """The runnable to call for candidate ``name`` and the call kwargs."""
        model = self.candidate(name)
        extra: dict[str, Any] = {"stop": dispatch.stop} if dispatch.stop is not None else {}
        if dispatch.tools:
            return model.bind_tools(dispatch.tools, **dispatch.kwargs), extra
        return model, {**dispatch.kwargs, **extra}

    def _config_for(self, dispatch: _Dispatch, name: str) -> RunnableConfig:
        manager = child_callbacks(
            parent_run_id=dispatch.run.run_id,
            handlers=dispatch.run.handlers,
            tags=dispatch.run.tags,
            metadata=dispatch.run.inheritable_metadata,
            policy=self.candidate_callbacks,
            extra_metadata={
                "metarouter_decision_id": dispatch.call.decision.decision_id,
                "metarouter_candidate": name,
            },
        )
        return {"callbacks": manager, "tags": [], "metadata": {}, "configurable": {}}

    # -- calling one candidate, in its own context (see candidate_context) ----------------------
    def _invoke(self, dispatch: _Dispatch, name: str) -> BaseMessage:
        runnable, kwargs = self._target(dispatch, name)
        config = self._config_for(dispatch, name)
        with candidate_context(config, self.candidate_callbacks) as context:
            return cast(
                "BaseMessage", context.run(runnable.invoke, dispatch.messages, config, **kwargs)
            )

    async def _ainvoke(self, dispatch: _Dispatch, name: str) -> BaseMessage:
        runnable, kwargs = self._target(dispatch, name)
        config = self._config_for(dispatch, name)
        with candidate_context(config, self.candidate_callbacks) as context:
            return cast(
                "BaseMessage",
                await coro_with_context(
                    runnable.ainvoke(dispatch.messages, config, **kwargs), context
                ),
            )

    def _open_stream(self, dispatch: _Dispatch, name: str) -> tuple[Any, Iterator[BaseMessage]]:
        """Open candidate ``name``'s stream and pull its first chunk (inside the attempt)."""
        stream = self._candidate_stream(dispatch, name)
        return next(stream, _END), stream

    def _candidate_stream(self, dispatch: _Dispatch, name: str) -> Iterator[BaseMessage]:
        runnable, kwargs = self._target(dispatch, name)
        config = self._config_for(dispatch, name)
        with candidate_context(config, self.candidate_callbacks) as context:
            iterator = context.run(runnable.stream, dispatch.messages, config, **kwargs)
            while (item := context.run(next, iterator, _END)) is not _END:
                yield cast("BaseMessage", item)

    async def _aopen_stream(
        self, dispatch: _Dispatch, name: str
    ) -> tuple[Any, AsyncIterator[BaseMessage]]:
        stream = self._acandidate_stream(dispatch, name)
        return await anext(stream, _END), stream

    async def _acandidate_stream(
        self, dispatch: _Dispatch, name: str
    ) -> AsyncIterator[BaseMessage]:
        runnable, kwargs = self._target(dispatch, name)
        config = self._config_for(dispatch, name)
        with candidate_context(config, self.candidate_callbacks) as context:
            iterator = context.run(runnable.astream, dispatch.messages, config, **kwargs)
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
            return self._with_llm_output(generate_from_stream(iter(chunks)))
        dispatch = self._start(messages, stop, kwargs, self._run_info(run_manager))
        message, name = self.flow.attempt(dispatch.call, lambda n: self._invoke(dispatch, n))
        return self._result(dispatch, name, message)

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
            return self._with_llm_output(generate_from_stream(iter(chunks)))
        run = self._run_info(run_manager)
        dispatch = await run_in_executor(None, self._start, messages, stop, kwargs, run)
        message, name = await self.flow.aattempt(
            dispatch.call, lambda n: self._ainvoke(dispatch, n)
        )
        return await run_in_executor(None, self._result, dispatch, name, message)

    def _result(self, dispatch: _Dispatch, name: str, message: BaseMessage) -> ChatResult:
        answer = finished_message(self.flow, dispatch.call, name, message)
        return self._with_llm_output(ChatResult(generations=[ChatGeneration(message=answer)]))

    @staticmethod
    def _with_llm_output(result: ChatResult) -> ChatResult:
        """Fill ``llm_output`` as provider chat models do (token usage, the model that answered).

        Handlers reading ``LLMResult.llm_output`` (cost trackers written for ChatOpenAI) then
        see the routed call's usage and the candidate's name rather than nothing.
        """
        message = result.generations[0].message
        usage = message.usage_metadata if isinstance(message, AIMessage) else None
        output: dict[str, Any] = {
            "model_name": message.response_metadata.get("model_name"),
            METADATA_KEY: message.response_metadata.get(METADATA_KEY),
        }
        if usage:
            output["token_usage"] = {
                "prompt_tokens": usage["input_tokens"],
                "completion_tokens": usage["output_tokens"],
                "total_tokens": usage["total_tokens"],
            }
        result.llm_output = output
        return result

    def _combine_llm_outputs(self, llm_outputs: list[dict[str, Any] | None]) -> dict[str, Any]:
        totals: dict[str, int] = {}
        names = set()
        for output in llm_outputs:
            if not output:
                continue
            names.add(output.get("model_name"))
            for key, value in (output.get("token_usage") or {}).items():
                totals[key] = totals.get(key, 0) + int(value)
        combined: dict[str, Any] = {"token_usage": totals}
        if len(names) == 1:
            combined["model_name"] = names.pop()
        return combined

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

    def _final_chunk(
        self, dispatch: _Dispatch, name: str, tally: _StreamTally
    ) -> ChatGenerationChunk:
        usage = tally.usage
        data = self.flow.finish(
            dispatch.call,
            name,
            input_tokens=usage.get("input_tokens") if usage else None,
            output_tokens=usage.get("output_tokens") if usage else None,
            provider_model=tally.provider,
        )
        self.flow.remember_tool_calls(name, tally.tool_call_ids)
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content=[] if tally.list_content else "",
                response_metadata={"model_name": name, METADATA_KEY: dict(data)},
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
        dispatch = self._start(messages, stop, kwargs, run)
        (first, rest), name = self.flow.attempt(
            dispatch.call, lambda n: self._open_stream(dispatch, n)
        )
        tally = _StreamTally()
        if first is not _END:
            yield tally.take(first)
            for raw in self.flow.relay(dispatch.call, rest):
                yield tally.take(raw)
        yield self._final_chunk(dispatch, name, tally)

    async def _astream_call(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run: _RunInfo,
        kwargs: Mapping[str, Any],
    ) -> AsyncIterator[ChatGenerationChunk]:
        dispatch = await run_in_executor(None, self._start, messages, stop, kwargs, run)
        (first, rest), name = await self.flow.aattempt(
            dispatch.call, lambda n: self._aopen_stream(dispatch, n)
        )
        tally = _StreamTally()
        if first is not _END:
            yield tally.take(first)
            async for raw in self.flow.arelay(dispatch.call, rest):
                yield tally.take(raw)
        yield await run_in_executor(None, self._final_chunk, dispatch, name, tally)

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
        sides = (as_feedback_item(winner), as_feedback_item(loser))
        return self._service.record_preference(
            *sides,
            user_id=user_id if user_id is not None else default_feedback_user(sides, self.user_id),
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

    def _pair_runnable(
        self, input: LanguageModelInput, config: RunnableConfig | None, user_id: str | None
    ) -> tuple[RunnableConfig, list[BaseMessage], str | None]:
        config = self._with_user(config, user_id)
        messages = self._convert_input(input).to_messages()
        return config, messages, self._user_for(config.get("metadata") or {})

    def _pair_calls(self, first: str, second: str) -> Runnable[Any, dict[str, Any]]:
        return RunnableParallel(
            first=self.bind(model=first, **{_COMPARE_KWARG: True}),
            second=self.bind(model=second, **{_COMPARE_KWARG: True}),
        ).with_config(run_name="MetaRouterChat.compare")

    def compare(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        user_id: str | None = None,
    ) -> ComparePair:
        """Answer ``input`` with two candidates, for the user to say which was worth it.

        The pair is the router's suggestion for this user and query
        (:meth:`~metarouter.dispatch.CallFlow.pair`), chosen so that the user's answer says most
        about their cost-vs-quality trade-off. Both calls run in parallel, are recorded as
        forced decisions and carry routing data; pass the pair's choice to
        :meth:`ComparePair.prefer` (or both answers to :meth:`record_preference`).

        Args:
            input: What to answer (any chat model input).
            config: Runnable config (callbacks, tags, ``configurable.user_id``).
            user_id: The user (overrides the config's).
        """
        config, messages, uid = self._pair_runnable(input, config, user_id)
        first, second = self.flow.pair(query_text(messages), uid)
        out = self._pair_calls(first, second).invoke(input, config)
        return self._pair(out["first"], out["second"], messages)

    async def acompare(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        user_id: str | None = None,
    ) -> ComparePair:
        """Async :meth:`compare` (both candidates called concurrently)."""
        config, messages, uid = self._pair_runnable(input, config, user_id)
        first, second = await run_in_executor(None, self.flow.pair, query_text(messages), uid)
        out = await self._pair_calls(first, second).ainvoke(input, config)
        return self._pair(out["first"], out["second"], messages)

    def _pair(
        self, first: AIMessage, second: AIMessage, messages: list[BaseMessage]
    ) -> ComparePair:
        data = (first.response_metadata[METADATA_KEY], second.response_metadata[METADATA_KEY])
        pair = Pair(
            query=query_text(messages),
            user_id=data[0]["user_id"],
            models=(data[0]["model"], data[1]["model"]),
            decision_ids=(data[0]["decision_id"], data[1]["decision_id"]),
        )
        return ComparePair(pair=pair, answers=(first, second), recorder=self.record_preference)

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

    @property
    def budgets(self) -> Budgets:
        """Spend budgets of this router's store (see docs/budgets.md).

        ``set``, ``get``, ``reset``, ``set_team``, ``states``, ``report``: see
        :class:`metarouter.budgets.Budgets`. Example: ``llm.budgets.set(50, user="alice")``.
        """
        return self._service.budgets

    def preference(self, user_id: str | None = None) -> Any:
        """The user's current preference (``quality_weight`` in [0, 1], ``n_comparisons``)."""
        return self._service.preference(user_id if user_id is not None else self.user_id)
