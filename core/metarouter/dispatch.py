"""One routed call, from decision to outcome: the per-call policy every adapter follows.

The adapters (LangChain, LlamaIndex, the agent middleware) only convert: their framework's call
into a :class:`CallRequest`, a candidate into a function :meth:`CallFlow.attempt` can call, and
the routing data back into their response. Everything a call does in between is here, once::

    call = flow.start(request)                          # route and record the decision
    answer, model = flow.attempt(call, call_candidate)  # candidates in order, with fallback
    data = flow.finish(call, model, input_tokens=..., output_tokens=...)  # outcome, cost

The policy:

* **Routing text**: what the adapter gives, built with :func:`metarouter.text.routing_text`.
* **Candidates**: those of the adapter; candidates lacking a capability the call needs (tools,
  images, ...) are left out of this call. A forced model that lacks one is refused.
* **Order**: the chosen model, then the rest of the ranking, best first.
* **Fallback**: when a candidate raises one of ``policy.on`` (default: any ``Exception``) or
  gives no answer within ``policy.timeout`` seconds, the next candidate is tried (at most
  ``policy.max_fallbacks`` of them). It never applies to a **forced** model (``model=``, a
  scope's model, a ``compare()`` side): the caller asked for that model, so its failure is
  reported as :class:`~metarouter.errors.DispatchError` instead of being answered by another.
  A **tool loop** (the call carries the results of tool calls a candidate issued) goes back to
  the candidate that issued them, and does fall back: finishing the loop matters more than
  which model finishes it.
* **Streams** fall back until their first chunk only; a failure after it raises
  :class:`~metarouter.errors.DispatchError` (chunks already sent cannot be taken back, and two
  answers must not be mixed).
* **Retries and timeouts**: a candidate's own client retries (e.g. ``max_retries`` of OpenAI
  clients) happen *inside* one attempt, before the router falls back; ``policy.timeout`` bounds
  the whole attempt, retries included. With fallback on, set the candidates' retries low.
* **Outcome**: who answered, the candidates that failed first, and the cost: from the usage
  the candidate reported and its price, else the router's expected cost for the call, marked
  ``cost_is_estimate``. If the store cannot record the outcome, the failure is logged and the
  answer is still returned.
* **Routing data**: one dict, the same keys in every adapter (:meth:`Call.data`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from metarouter.errors import (
    AttemptTimeoutError,
    ConfigError,
    DispatchError,
    FeedbackError,
    MetaRouterError,
    UnknownArmError,
)

if TYPE_CHECKING:
    from metarouter.service import Decision, RoutingService

__all__ = [
    "Call",
    "CallFlow",
    "CallRequest",
    "FailureHook",
    "FallbackPolicy",
    "FallbackSettings",
    "Reason",
    "check_user_id",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Why a call went to its model: the router's choice, a forced model, the model that issued the
#: pending tool calls, or one side of a ``compare()``.
Reason = Literal["routed", "override", "tool_loop", "compare"]
#: Called when a candidate fails: ``hook(failed_model, error, next_model or None)``.
FailureHook = Callable[[str, BaseException, "str | None"], None]

#: Tool-call ids remembered to keep a tool loop on the model that issued the calls.
MAX_TOOL_PINS = 10_000


def check_user_id(user_id: object) -> str:
    """Validate the user id of a call; a bad one is a :class:`ConfigError` (no feedback here).

    Any non-empty string of at most 128 characters without control characters is accepted
    (see :func:`metarouter.store.records.validate_user_id`).
    """
    from metarouter.store.records import validate_user_id  # the store package loads SQLAlchemy

    try:
        return validate_user_id(user_id)
    except FeedbackError as exc:
        raise ConfigError(str(exc)) from None


@dataclass(frozen=True)
class FallbackPolicy:
    """When a call moves on to the next candidate.

    Attributes:
        enabled: Fall back at all (False: the chosen candidate answers or the call fails).
        on: Exception types that make the router fall back; anything else propagates at once.
        max_fallbacks: Next-best candidates to try after the chosen one (None: all of them).
        timeout: Seconds one candidate attempt may take (its own retries included) before the
            router gives up on it and falls back (None: wait as long as the candidate does).
            For a stream, the time to its first chunk.
    """

    enabled: bool = True
    on: tuple[type[BaseException], ...] = (Exception,)
    max_fallbacks: int | None = None
    timeout: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.on, type):
            object.__setattr__(self, "on", (self.on,))
        if not all(isinstance(t, type) and issubclass(t, BaseException) for t in self.on):
            raise ConfigError(
                f"fallback_on must be exception types, e.g. (Exception,), got {self.on!r}."
            )
        if self.max_fallbacks is not None and (
            isinstance(self.max_fallbacks, bool)
            or not isinstance(self.max_fallbacks, int)
            or self.max_fallbacks < 0
        ):
            raise ConfigError(
                f"max_fallbacks must be an integer >= 0 or None, got {self.max_fallbacks!r}."
            )
        if self.timeout is not None and (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, (int, float))
            or not self.timeout > 0
            or self.timeout == float("inf")
        ):
            raise ConfigError(
                f"timeout must be a number of seconds > 0 or None, got {self.timeout!r}."
            )


class FallbackSettings(Protocol):
    """An adapter whose fields set the fallback rules (read on every call, so they can change)."""

    @property
    def fallback(self) -> bool: ...  # noqa: D102
    @property
    def fallback_on(self) -> tuple[type[BaseException], ...]: ...  # noqa: D102
    @property
    def max_fallbacks(self) -> int | None: ...  # noqa: D102
    @property
    def timeout(self) -> float | None: ...  # noqa: D102


@dataclass(frozen=True)
class CallRequest:
    """What an adapter knows about a call before it is routed.

    Attributes:
        text: The routing text (:func:`metarouter.text.routing_text`).
        user_id: Whose call (None: the service's default user).
        model: A candidate the caller forces (None: route).
        lacking: Candidates that lack what this call needs, with what they lack; they are left
            out of this call.
        needs: What the call needs (tools, image input, ...), recorded with the decision.
        pending_tool_calls: Ids of the tool calls whose results the call carries (a tool
            loop), most recent first.
        compare: The call is one side of a ``compare()`` (``model`` is then required).
        run_id: The framework's run id, to find the decision by.
        metadata: Extra JSON-able data stored with the decision.
    """

    text: str
    user_id: str | None = None
    model: str | None = None
    lacking: Mapping[str, Sequence[str]] = field(default_factory=dict)
    needs: Sequence[str] = ()
    pending_tool_calls: Sequence[str] = ()
    compare: bool = False
    run_id: str | uuid.UUID | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Call:
    """One routed call on its way through the candidates.

    Attributes:
        decision: The recorded routing decision.
        reason: Why the first candidate was chosen (:data:`Reason`).
        order: Candidates to try, in order.
        policy: The fallback rules the call runs under.
        limited: Whether ``max_fallbacks`` cut candidates from ``order``.
        failures: Candidates that failed, with their errors, in order.
        data: The routing data, one dict updated in place (streamed chunks share it). Keys:
            ``decision_id``, ``run_id``, ``user_id``, ``chosen_model``, ``model`` (who
            answered), ``forced``, ``reason``, ``scores``, ``ranking``, ``predicted_quality``,
            ``expected_costs_usd``, ``expected_cost_usd``, ``quality_weight``, ``fallbacks``
            (``[{"model", "error"}]``), ``input_tokens``, ``output_tokens``, ``cost_usd``,
            ``cost_is_estimate``, ``provider_model_name``, ``budget`` (what spend budgets did to
            the call, see :attr:`metarouter.service.Decision.budget`; None without a budget).
    """

    decision: Decision
    reason: Reason
    order: tuple[str, ...]
    policy: FallbackPolicy
    limited: bool = False
    failures: list[tuple[str, BaseException]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> str:
        """The candidate that answered (the chosen one until the call finishes)."""
        return str(self.data.get("model") or self.decision.model)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().rstrip(".")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class CallFlow:
    """The per-call policy of one adapter instance (see the module docstring).

    Args:
        service: The routing service (router, store, feedback).
        candidates: Names of the candidates this adapter can call (a subset of the service's
            arms), in configuration order.
        policy: The fallback rules, or an object whose ``fallback``, ``fallback_on``,
            ``max_fallbacks`` and ``timeout`` fields set them (read on every call).
        integration: The adapter's name, stored with each decision (``langchain``, ...).
    """

    def __init__(
        self,
        service: RoutingService,
        candidates: Sequence[str],
        *,
        policy: FallbackPolicy | FallbackSettings | None = None,
        integration: str,
    ) -> None:
        names = list(candidates)
        unknown = [n for n in names if n not in service.specs]
        if not names or unknown:
            raise ConfigError(
                f"candidates {unknown or names} are not arms of the routing service (its arms: "
                f"{service.arm_names}). Fix: name the candidates after the service's arms."
            )
        self.service = service
        self.candidates: tuple[str, ...] = tuple(names)
        self._policy = policy or FallbackPolicy()
        self.integration = integration
        self._pins: OrderedDict[str, str] = OrderedDict()
        self._pins_lock = threading.Lock()

    @property
    def policy(self) -> FallbackPolicy:
        """The fallback rules in effect."""
        source = self._policy
        if isinstance(source, FallbackPolicy):
            return source
        return FallbackPolicy(
            enabled=source.fallback,
            on=source.fallback_on,
            max_fallbacks=source.max_fallbacks,
            timeout=source.timeout,
        )

    # -- routing --------------------------------------------------------------------------------
    def _check_forced(self, forced: object, lacking: Mapping[str, Sequence[str]]) -> str:
        if not isinstance(forced, str):
            raise ConfigError(f"model= must be a candidate name, got {type(forced).__name__}.")
        if forced not in self.candidates:
            raise UnknownArmError(
                f"model override {forced!r} is not a candidate; candidates are "
                f"{list(self.candidates)}."
            )
        if forced in lacking:
            able = [n for n in self.candidates if n not in lacking]
            raise ConfigError(
                f"model override {forced!r} lacks {list(lacking[forced])}, which this call "
                f"needs. Fix: force one of {able}."
            )
        return forced

    def _choose(self, request: CallRequest) -> tuple[str | None, Reason]:
        lacking = request.lacking
        if request.compare:
            if request.model is None:
                raise ConfigError("a compare() side needs its model.")
            return self._check_forced(request.model, lacking), "compare"
        if request.model is not None:
            return self._check_forced(request.model, lacking), "override"
        pinned = self.pinned(request.pending_tool_calls)
        if pinned is not None and pinned not in lacking:
            return pinned, "tool_loop"
        return None, "routed"

    def start(self, request: CallRequest) -> Call:
        """Route a call and record the decision (blocking: embedding and store I/O).

        Raises:
            ConfigError: A bad user id, a forced model that lacks what the call needs, or no
                candidate able to take the call.
            UnknownArmError: A forced model that is not a candidate.
        """
        uid = check_user_id(request.user_id) if request.user_id is not None else None
        lacking = {n: list(m) for n, m in request.lacking.items() if n in self.candidates}
        if len(lacking) == len(self.candidates):
            detail = "; ".join(f"{n!r} lacks {m}" for n, m in lacking.items())
            raise ConfigError(
                f"no candidate can take this call, which needs {sorted(request.needs)}: "
                f"{detail}. Fix: add a candidate with these capabilities or drop them from the "
                "call."
            )
        forced, reason = self._choose(request)
        metadata: dict[str, Any] = {"integration": self.integration, "reason": reason}
        if request.needs:
            metadata["needs"] = sorted(request.needs)
        metadata.update(request.metadata)
        decision = self.service.decide(
            request.text,
            uid,
            exclude=list(lacking),
            only=self.candidates,
            forced=forced,
            run_id=request.run_id,
            metadata=metadata,
        )
        order = [m for m in decision.fallback_order if m in self.candidates and m not in lacking]
        policy = self.policy
        limit = len(order)
        if reason in ("override", "compare") or not policy.enabled:
            limit = 1
        elif policy.max_fallbacks is not None:
            limit = 1 + policy.max_fallbacks
        call = Call(decision, reason, tuple(order[:limit]), policy, limited=limit < len(order))
        routing = decision.routing
        call.data.update(
            decision.metadata(),
            run_id=decision.run_id,
            model=decision.model,
            forced=reason in ("override", "compare"),  # a tool-loop pin is not the caller's
            reason=reason,
            predicted_quality=dict(routing.predicted_quality),
            expected_costs_usd=dict(routing.expected_costs_usd),
            fallbacks=[],
            input_tokens=None,
            output_tokens=None,
            cost_usd=None,
            cost_is_estimate=False,
            provider_model_name=None,
        )
        return call

    # -- candidates, in order -------------------------------------------------------------------
    def _failed(
        self,
        call: Call,
        index: int,
        exc: BaseException,
        passthrough: tuple[type[BaseException], ...],
        hook: FailureHook | None,
    ) -> None:
        """Log candidate ``index``'s failure, or re-raise what must not fall back."""
        if isinstance(exc, passthrough) or not isinstance(
            exc, (AttemptTimeoutError, *call.policy.on)
        ):
            raise exc
        name = call.order[index]
        call.failures.append((name, exc))
        call.data["fallbacks"] = [{"model": n, "error": _describe(e)} for n, e in call.failures]
        nxt = call.order[index + 1] if index + 1 < len(call.order) else None
        logger.warning(
            "candidate %r failed for decision %s (%s); %s",
            name,
            call.decision.decision_id,
            _describe(exc),
            f"falling back to {nxt!r}" if nxt else "no candidate left",
        )
        if hook is not None:
            try:
                hook(name, exc, nxt)
            except Exception:
                logger.exception(
                    "the fallback hook failed for decision %s", call.decision.decision_id
                )

    @staticmethod
    def _answered(call: Call, name: str, result: _T) -> tuple[_T, str]:
        call.data["model"] = name
        return result, name

    @staticmethod
    def _timed_out(call: Call, name: str) -> AttemptTimeoutError:
        return AttemptTimeoutError(
            f"candidate {name!r} gave no answer within timeout={call.policy.timeout} s"
        )

    def _run_bounded(self, call: Call, fn: Callable[[str], _T], name: str) -> _T:
        """``fn(name)``, given up on after the call's ``timeout`` seconds.

        Without a timeout the attempt runs in the caller's thread. With one, it runs in a
        worker thread with a copy of the caller's context (framework callbacks, scopes); when
        it overruns, the router moves on and the abandoned attempt finishes on its own (its
        result is dropped), bounded by the candidate's own client timeout.
        """
        timeout = call.policy.timeout
        if timeout is None:
            return fn(name)
        context = contextvars.copy_context()
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                outcome["value"] = context.run(fn, name)
            except BaseException as exc:  # handed to the caller's thread
                outcome["error"] = exc
            finally:
                done.set()

        threading.Thread(target=work, name=f"metarouter-attempt:{name}", daemon=True).start()
        if not done.wait(timeout):
            raise self._timed_out(call, name)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    async def _arun_bounded(self, call: Call, fn: Callable[[str], Awaitable[_T]], name: str) -> _T:
        """Async ``fn(name)``, cancelled after the call's ``timeout`` seconds."""
        if call.policy.timeout is None:
            return await fn(name)
        try:
            return await asyncio.wait_for(fn(name), call.policy.timeout)
        except asyncio.TimeoutError as exc:
            raise self._timed_out(call, name) from exc

    def attempt(
        self,
        call: Call,
        fn: Callable[[str], _T],
        *,
        passthrough: tuple[type[BaseException], ...] = (),
        on_failure: FailureHook | None = None,
    ) -> tuple[_T, str]:
        """Call ``fn(candidate)`` for each candidate in order until one returns.

        Args:
            call: The routed call.
            fn: Calls one candidate (for a stream: opens it and returns its first chunk).
            passthrough: Exceptions that always propagate (e.g. a graph interrupt).
            on_failure: Told about each failed candidate.

        Returns:
            ``(fn's result, the candidate that answered)``.

        Raises:
            DispatchError: Every candidate tried failed (the first error is chained).
        """
        for index, name in enumerate(call.order):
            try:
                return self._answered(call, name, self._run_bounded(call, fn, name))
            except BaseException as exc:
                self._failed(call, index, exc, passthrough, on_failure)
        raise self.dispatch_error(call) from call.failures[0][1]

    async def aattempt(
        self,
        call: Call,
        fn: Callable[[str], Awaitable[_T]],
        *,
        passthrough: tuple[type[BaseException], ...] = (),
        on_failure: FailureHook | None = None,
    ) -> tuple[_T, str]:
        """Async :meth:`attempt` (``timeout`` cancels an overrunning attempt)."""
        for index, name in enumerate(call.order):
            try:
                return self._answered(call, name, await self._arun_bounded(call, fn, name))
            except BaseException as exc:
                self._failed(call, index, exc, passthrough, on_failure)
        raise self.dispatch_error(call) from call.failures[0][1]

    def dispatch_error(self, call: Call) -> DispatchError:
        """The error for a call no candidate answered, naming each failure and the fix."""
        tried = "; ".join(f"{n!r} raised {_describe(e)}" for n, e in call.failures)
        if call.reason == "override":
            why = "the model was forced with model=, and a forced model never falls back"
        elif call.reason == "compare":
            why = "each compare() answer comes from its own model, without fallback"
        elif not call.policy.enabled:
            why = "fallback is off"
        elif call.limited:
            why = f"max_fallbacks={call.policy.max_fallbacks} limited the candidates tried"
        else:
            why = "every eligible candidate was tried"
        return DispatchError(
            f"no candidate answered (decision {call.decision.decision_id}, user "
            f"{call.decision.user_id!r}; {why}): {tried}. Fix: check these candidates' "
            "credentials, endpoints and rate limits, raise timeout= for slow ones, or narrow "
            "fallback_on to let other errors through."
        )

    # -- streams --------------------------------------------------------------------------------
    def mid_stream_error(self, call: Call, exc: BaseException) -> DispatchError:
        """The error for a candidate that failed after sending part of its answer."""
        call.failures.append((call.model, exc))
        call.data["fallbacks"] = [{"model": n, "error": _describe(e)} for n, e in call.failures]
        logger.warning(
            "candidate %r failed mid-stream for decision %s (%s); chunks already sent cannot "
            "be taken back, so there is no fallback",
            call.model,
            call.decision.decision_id,
            _describe(exc),
        )
        return DispatchError(
            f"candidate {call.model!r} failed mid-stream after sending part of its answer "
            f"(decision {call.decision.decision_id}); not falling back, so as not to mix two "
            f"answers: {_describe(exc)}."
        )

    def relay(self, call: Call, chunks: Iterator[_T]) -> Iterator[_T]:
        """Re-yield a candidate's stream; a failure in it becomes :class:`DispatchError`."""
        try:
            yield from chunks
        except GeneratorExit:
            raise
        except Exception as exc:
            raise self.mid_stream_error(call, exc) from exc

    async def arelay(self, call: Call, chunks: AsyncIterator[_T]) -> AsyncIterator[_T]:
        """Async :meth:`relay`."""
        try:
            async for chunk in chunks:
                yield chunk
        except GeneratorExit:
            raise
        except Exception as exc:
            raise self.mid_stream_error(call, exc) from exc

    # -- outcome --------------------------------------------------------------------------------
    def finish(
        self,
        call: Call,
        model: str,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        provider_model: str | None = None,
    ) -> dict[str, Any]:
        """Record who answered and what it cost; return the routing data (``call.data``).

        The cost is the candidate's reported usage at its price; without either, the router's
        expected cost for this call, with ``cost_is_estimate=True``. A store that cannot record
        the outcome is logged, never raised: the answer is returned either way.
        """
        real = self.service.cost_of(model, input_tokens, output_tokens)
        cost: float | None = real
        if real is None:
            expected = call.decision.routing.expected_costs_usd.get(model)
            cost = float(expected) if expected is not None else None
        failed = [name for name, _ in call.failures]
        try:
            self.service.complete(
                call.decision,
                model=model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=real,
                fallbacks=failed,
            )
        except MetaRouterError:
            logger.warning(
                "could not store the outcome of decision %s; the answer is returned anyway",
                call.decision.decision_id,
                exc_info=True,
            )
        call.data.update(
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost,
            cost_is_estimate=real is None,
            provider_model_name=provider_model,
        )
        return call.data

    # -- tool loops -----------------------------------------------------------------------------
    def pinned(self, tool_call_ids: Sequence[str]) -> str | None:
        """The candidate that issued the first of these tool calls, if remembered."""
        if not tool_call_ids:
            return None
        with self._pins_lock:
            for tool_id in tool_call_ids:
                owner = self._pins.get(tool_id)
                if owner is not None:
                    return owner
        return None

    def remember_tool_calls(self, model: str, tool_call_ids: Sequence[str]) -> None:
        """Keep the next turn of a tool loop on ``model``, which issued these tool calls."""
        with self._pins_lock:
            for tool_id in tool_call_ids:
                if tool_id:
                    self._pins[tool_id] = model
                    self._pins.move_to_end(tool_id)
            while len(self._pins) > MAX_TOOL_PINS:
                self._pins.popitem(last=False)

    # -- compare, warm-up -----------------------------------------------------------------------
    def pair(self, text: str, user_id: str | None) -> tuple[str, str]:
        """The two candidates a ``compare()`` of ``text`` asks, for this user.

        The router's :meth:`~metarouter.router.MetaRouter.suggest_pair` (through the service)
        picks them; this is the one place the adapters ask it.
        """
        uid = check_user_id(user_id) if user_id is not None else None
        foreign = [n for n in self.service.arm_names if n not in self.candidates]
        return self.service.suggest_pair(text, uid, exclude=foreign)

    def warm_up(self, user_id: str | None = None) -> float:
        """Load everything the first routed call would (seconds it took).

        The first call of a process otherwise pays for loading the embedding model and the
        policy, the first inference and the store connection (several seconds on a CPU).
        This routes one throw-away query for ``user_id`` (nothing is recorded).
        """
        began = time.perf_counter()
        uid = check_user_id(user_id) if user_id is not None else None
        preference = self.service.preference(uid)
        arms = [self.service.descriptors[n] for n in self.candidates]
        self.service.router.route("warm-up query", arms, preference)
        took = time.perf_counter() - began
        logger.info("routing warmed up in %.2f s", took)
        return took
