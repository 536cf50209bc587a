"""``RoutingService``: the framework-free engine both adapters are thin wrappers around.

It owns the candidate arms, the router and the preference store, and does per-user work:

* :meth:`RoutingService.decide` embeds the query, looks up the user's preference (cached,
  versioned), routes among the eligible candidates and records the decision;
* :meth:`RoutingService.complete` records which model answered and what it really cost;
* :meth:`RoutingService.record_preference` turns "this answer was worth it over that one" into
  a stored comparison (from decision ids, framework run ids, or answers the router did not
  produce), re-estimates the user's preference and notifies feedback listeners.

Feedback takes effect on the user's next decision, in every process sharing the store, and
never touches another user's routing.
"""

from __future__ import annotations

import hashlib
import logging
import numbers
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metarouter.arms import ArmDescriptor
from metarouter.budgets import (
    BudgetCheck,
    Budgets,
    Pacing,
    exhausted_message,
    pacing_penalty,
    policy_choice,
)
from metarouter.errors import (
    BudgetExceededError,
    ChargeError,
    ConfigError,
    FeedbackError,
    StoreError,
    UnknownArmError,
)
from metarouter.novelty import RECENT_TRAFFIC
from metarouter.pricing import DEFAULT_OUTPUT_TOKENS, Price, estimate_tokens
from metarouter.router import MetaRouter
from metarouter.store.base import PreferenceStore
from metarouter.store.pending import PendingWrites, StoreHealth
from metarouter.store.records import (
    ComparisonRecord,
    ComparisonSource,
    DecisionRecord,
    FeedbackEvent,
    RecentQuery,
    check_text,
    check_usd,
    new_id,
    query_hash,
    validate_decision_id,
    validate_user_id,
)
from metarouter.types import BilledCall, Comparison, Preference, RoutingDecision
from metarouter.validation import excerpt

__all__ = [
    "STORE_ENV",
    "ArmSpec",
    "Decision",
    "FeedbackListener",
    "Response",
    "RoutingService",
    "as_answer",
    "default_store_path",
]

logger = logging.getLogger(__name__)

#: Queries of a user's last comparisons that stand for their traffic when choosing a pair.
_TRAFFIC_SAMPLE = 32

#: Environment variable overriding the default SQLite store location.
STORE_ENV = "METAROUTER_STORE"

FeedbackListener = Callable[[FeedbackEvent], None]


def default_store_path() -> Path:
    """``$METAROUTER_STORE``, else ``$XDG_DATA_HOME/metarouter/preferences.db``."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "metarouter" / "preferences.db"


@dataclass(frozen=True)
class ArmSpec:
    """How a candidate model is known to the router.

    Attributes:
        name: Model name (as reported in decisions and feedback).
        price: USD per 1M input/output tokens; used for the call's real cost from token usage
            and, for models outside the router's catalog, for the cost model.
        like: A catalog model with a similar capability profile (for a new model).
        quality: A flat expected quality in [0, 1] (for a new model, when no ``like``).
        descriptor: A ready :class:`ArmDescriptor` (overrides the rest).
        output_tokens: Expected answer length for the cost model of a new model.
    """

    name: str
    price: Price | None = None
    like: str | None = None
    quality: float | None = None
    descriptor: ArmDescriptor | None = None
    output_tokens: int = DEFAULT_OUTPUT_TOKENS


@dataclass(frozen=True)
class Decision:
    """A recorded routing decision.

    Attributes:
        decision_id: Id to quote in feedback.
        user_id: Whose call it is.
        routing: The router's decision (scores, ranking, expected costs).
        model: The model to call (the routed choice, or the forced one).
        forced: Whether the caller forced ``model``.
        run_id: Framework run id, if any.
        budget: What the user's spend budgets did to this call (None: no budget applies):
            ``scope``, ``name``, ``usd``, ``spent_usd``, ``period_end`` of the binding budget,
            its pacing ``multiplier`` and the router's ``cost_penalty``, ``exhausted``,
            ``policy`` (``"paced"``, ``"cheapest"``, ``"arm"``, or None when no budget
            acted), ``unbudgeted_model`` (the choice without budgets) and ``changed_choice``.
    """

    decision_id: str
    user_id: str
    routing: RoutingDecision
    model: str
    forced: bool = False
    run_id: str | None = None
    budget: Mapping[str, Any] | None = None

    @property
    def fallback_order(self) -> tuple[str, ...]:
        """Models to try, in order: the chosen one, then the rest of the ranking."""
        return (self.model, *[m for m in self.routing.ranking if m != self.model])

    def metadata(self) -> dict[str, Any]:
        """JSON-ready routing data for response metadata."""
        return {
            "decision_id": self.decision_id,
            "user_id": self.user_id,
            "chosen_model": self.model,
            "forced": self.forced,
            "scores": dict(self.routing.scores),
            "ranking": list(self.routing.ranking),
            "expected_cost_usd": float(self.routing.expected_costs_usd[self.model]),
            "quality_weight": float(self.routing.quality_weight),
            "budget": dict(self.budget) if self.budget is not None else None,
        }


@dataclass(frozen=True)
class Response:
    """An answer to use in a comparison, possibly one the router did not produce.

    Attributes:
        model: The model that wrote it.
        cost_usd: What it cost (USD).
        text: The answer text (optional; checked, not stored).
        decision_id: The decision it came from, if the router produced it.
    """

    model: str
    cost_usd: float
    text: str | None = None
    decision_id: str | None = None


WinnerLike = str | uuid.UUID | Response | Decision


def as_answer(item: object) -> WinnerLike:
    """One side of a comparison, from any framework-free way of naming it.

    Adapters convert their own response types (a routed message or response) to a decision id
    and hand everything else here, so every adapter accepts the same plain forms.

    Args:
        item: What :meth:`RoutingService.record_preference` takes (a decision id, a run id as
            ``str`` or ``UUID``, a :class:`Decision`, a :class:`Response`), or a mapping:
            ``{"decision_id": ...}``, ``{"run_id": ...}``, or ``{"model": str, "cost_usd":
            float, "text": str}`` (``text`` optional) for an answer the router did not produce.

    Returns:
        The item in a form :meth:`RoutingService.record_preference` takes.

    Raises:
        FeedbackError: A mapping naming no answer, or another type.
    """
    if isinstance(item, (str, uuid.UUID, Decision, Response)):
        return item
    if isinstance(item, Mapping):
        for key in ("decision_id", "run_id"):
            if item.get(key) is not None:
                return str(item[key])
        model, cost = item.get("model"), item.get("cost_usd")
        if isinstance(model, str) and isinstance(cost, numbers.Real) and not isinstance(cost, bool):
            return Response(model=model, cost_usd=float(cost), text=item.get("text"))
        raise FeedbackError(
            f"cannot read an answer from {excerpt(dict(item))}: give {{'decision_id': ...}} for a "
            "routed answer, or {'model': str, 'cost_usd': float, 'text': str} for another one."
        )
    raise FeedbackError(
        f"cannot compare a {type(item).__name__}: pass a decision id, a run id, a Decision, or "
        "Response(model=..., cost_usd=..., text=...) (or a dict with those keys) for an answer "
        "the router did not produce."
    )


@dataclass
class _Cached:
    version: int
    preference: Preference
    reads: int = 0  # reads of a new user's (version 0) preference: when to re-read their bills


#: A new user's cost calibration is re-read from their billed calls at the 1st, 2nd, 4th, ...
#: read of their preference in this process, then at every this many reads.
NEW_USER_REFRESH = 32


def _refresh_due(reads: int) -> bool:
    """Whether a new user's preference is recomputed (from their billed calls) at this read."""
    if reads < NEW_USER_REFRESH:
        return reads > 0 and reads & (reads - 1) == 0
    return reads % NEW_USER_REFRESH == 0


def _billed_calls(rows: Sequence[RecentQuery]) -> list[BilledCall]:
    """The user's recent routed calls that were billed (their provider reported usage).

    A record that is not a valid bill (which the store does not write) is skipped.
    """
    out = []
    for q in rows:
        if q.model and q.cost_usd is not None:
            try:
                out.append(BilledCall(q.model, q.prompt_tokens, q.cost_usd))
            except FeedbackError:
                continue
    return out


@dataclass
class _Listeners:
    items: list[FeedbackListener] = field(default_factory=list)


class RoutingService:
    """Per-user routing with durable feedback (see module docstring).

    Args:
        arms: The candidate models: names in the router's catalog, or :class:`ArmSpec`.
        router: The router (default: :meth:`MetaRouter.default`).
        store: The preference store (default: SQLite at :func:`default_store_path`).
        default_user_id: User for calls that name none.
        cache_size: Users whose preference is kept in memory.
        max_pending: Decisions kept in memory while the store cannot be written (see
            :mod:`metarouter.store.pending`: calls are still routed and answered meanwhile).
        pacing: How spend budgets pace routing (see :mod:`metarouter.budgets`).
        enforce_budgets: Honour the spend budgets in the store (pace, apply their exhausted
            policy, charge calls). Needs a SQL store; other stores route without budgets.
        clock: Current Unix time for budgets (tests and simulations pass their own).
    """

    def __init__(
        self,
        arms: Sequence[ArmSpec | str],
        *,
        router: MetaRouter | None = None,
        store: PreferenceStore | None = None,
        default_user_id: str = "default",
        cache_size: int = 10_000,
        max_pending: int = 10_000,
        pacing: Pacing | None = None,
        enforce_budgets: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if len(arms) < 1:
            raise ConfigError("RoutingService needs at least one candidate model.")
        self.router = router or MetaRouter.default()
        if store is None:
            from metarouter.store.sql import SQLStore

            store = SQLStore(default_store_path())
        self.store = store
        self.default_user_id = validate_user_id(default_user_id)
        self.specs: dict[str, ArmSpec] = {}
        self.descriptors: dict[str, ArmDescriptor] = {}
        for arm in arms:
            spec = arm if isinstance(arm, ArmSpec) else ArmSpec(arm)
            if spec.name in self.specs:
                raise ConfigError(f"candidate {spec.name!r} is listed twice.")
            self.specs[spec.name] = spec
            self.descriptors[spec.name] = self._describe(spec)
        self.router_id = self._fingerprint()
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.RLock()
        self._listeners = _Listeners()
        self._writes = PendingWrites(store, max_pending=max_pending)
        self._budgets: Budgets | None = None
        if hasattr(store, "record_spend") and hasattr(store, "budget_states"):
            import time as _time

            self._budgets = Budgets(store, pacing or Pacing(), clock or _time.time)  # type: ignore[arg-type]
        self.enforce_budgets = bool(enforce_budgets) and self._budgets is not None

    @property
    def budgets(self) -> Budgets:
        """Set, read, reset and report spend budgets (see :mod:`metarouter.budgets`).

        Raises:
            ConfigError: The store keeps no budgets (only the SQL store does).
        """
        if self._budgets is None:
            raise ConfigError(
                f"{type(self.store).__name__} keeps no spend budgets. Fix: use SQLStore "
                "(SQLite or PostgreSQL) as the preference store."
            )
        return self._budgets

    # -- arms -----------------------------------------------------------------------------------
    def _describe(self, spec: ArmSpec) -> ArmDescriptor:
        if spec.descriptor is not None:
            return spec.descriptor
        catalog = self.router.catalog
        if spec.like is None and spec.quality is None:
            if spec.name not in catalog:
                raise UnknownArmError(
                    f"candidate {spec.name!r} is not in the router's catalog "
                    f"{sorted(catalog)}. Fix: describe it, e.g. ArmSpec({spec.name!r}, "
                    "price=Price(0.15, 0.6), like='<a catalog model>') or quality=0.7."
                )
            known = catalog[spec.name]
            if spec.price is None:
                return known
            from metarouter.arms import CostModel

            return ArmDescriptor(
                spec.name,
                CostModel.from_price(spec.price, spec.output_tokens),
                known.capability,
                known.source,
            )
        if spec.price is None:
            raise ConfigError(
                f"candidate {spec.name!r}: a model outside the catalog needs its price "
                "(ArmSpec(..., price=Price(input_per_million, output_per_million)))."
            )
        return self.router.describe(spec.name, spec.price, like=spec.like, quality=spec.quality)

    @property
    def arm_names(self) -> list[str]:
        """Candidate names in configuration order."""
        return list(self.specs)

    def cost_of(
        self, model: str, input_tokens: int | None, output_tokens: int | None
    ) -> float | None:
        """Real cost in USD of a call from its token usage (None if usage or price unknown)."""
        spec = self.specs.get(model)
        if spec is None or input_tokens is None or output_tokens is None:
            return None
        if spec.price is not None:
            return spec.price.cost(int(input_tokens), int(output_tokens))
        return None

    def _fingerprint(self) -> str:
        digest = hashlib.sha256()
        for key, value in sorted(self.router.state_arrays().items()):
            digest.update(key.encode())
            digest.update(np.asarray(value).tobytes())
        return digest.hexdigest()[:32]

    def prime(self, queries: Sequence[str]) -> None:
        """Embed many upcoming queries in one batch (their calls then skip the embedding)."""
        self.router.embedder.prime(list(queries))

    # -- preference -----------------------------------------------------------------------------
    def user(self, user_id: str | None) -> str:
        """The validated user id (the default when None)."""
        return validate_user_id(user_id if user_id is not None else self.default_user_id)

    def preference(self, user_id: str | None = None) -> Preference:
        """The user's current preference (recomputed only when their feedback changed).

        Never fails because of stored data: a cached state that cannot be read is recomputed,
        comparisons that cannot be used are skipped, and a preference that cannot be computed
        falls back to the prior, each with a logged warning. When the store cannot be read, the
        preference last seen in this process (else the prior) is used, and the failure counted
        (see :meth:`store_health`).
        """
        uid = self.user(user_id)
        try:
            version = self.store.user_version(uid)
        except StoreError as exc:
            self._writes.failed("read a user's feedback version", exc)
            return self._last_known(uid)
        reads = 0
        with self._lock:
            hit = self._cache.get(uid)
            if hit is not None and hit.version == version:
                hit.reads += 1
                if version != 0 or not _refresh_due(hit.reads):
                    self._cache.move_to_end(uid)
                    return hit.preference
                reads = hit.reads
        if version == 0:
            pref: Preference | None = self._new_user_preference(uid)
        else:
            pref = self._stored_preference(uid, version)
            if pref is None:
                pref, version = self._recompute(uid)
        if pref is None:  # the store could not be read
            return self._last_known(uid)
        with self._lock:
            self._cache[uid] = _Cached(version, pref, reads)
            self._cache.move_to_end(uid)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return pref

    def _last_known(self, uid: str) -> Preference:
        """The preference this process last used for the user, else the prior."""
        with self._lock:
            hit = self._cache.get(uid)
        return hit.preference if hit is not None else self.router.prior()

    def _stored_preference(self, uid: str, version: int) -> Preference | None:
        """The store's cached state at ``version`` if it can be read and fits this router."""
        try:
            stored = self.store.cached_preference(uid, self.router_id)
        except StoreError as exc:
            self._writes.failed("read a cached preference", exc)
            return None
        if stored is None or stored[0] != version:
            return None
        try:
            return Preference.from_dict(stored[1], like=self.router.prior())
        except ConfigError as exc:
            logger.warning(
                "the cached preference of user %s cannot be used (%s); it is recomputed",
                excerpt(uid),
                exc,
            )
            return None

    def _usable(self, uid: str, records: Sequence[ComparisonRecord]) -> list[Comparison]:
        """The comparisons the router can adapt on; the others are skipped with a warning."""
        dim = self.router.config.embedding_dim
        usable = []
        for rec in records:
            try:
                comparison = rec.to_comparison()
                if rec.embedding.shape != (dim,):
                    raise FeedbackError(
                        f"its query embedding has {rec.embedding.shape[0]} numbers, this "
                        f"router's have {dim}"
                    )
            except FeedbackError as exc:
                logger.warning(
                    "skipping stored comparison %s of user %s: %s",
                    rec.comparison_id,
                    excerpt(uid),
                    exc,
                )
                continue
            usable.append(comparison)
        return usable

    def _recent_queries(self, uid: str) -> list[RecentQuery]:
        """The user's last routed queries (their traffic), if readable.

        Only vectors of the router's embedding size are used; a store that cannot be read
        gives none (counted in :meth:`store_health`).
        """
        try:
            rows = self.store.recent_queries(uid, RECENT_TRAFFIC)
        except StoreError as exc:
            self._writes.failed("read a user's recent decisions", exc)
            return []
        dim = self.router.config.embedding_dim
        return [q for q in rows if q.embedding.shape == (dim,) and np.isfinite(q.embedding).all()]

    def _new_user_preference(self, uid: str) -> Preference:
        """The prior, with costs calibrated on the user's billed routed calls (if any).

        A user with no comparisons yet is routed by the prior; the arms' cost models expect a
        typical answer length, and what this user's calls were really billed corrects that from
        their first calls (:meth:`MetaRouter.adapt` with ``billed``). Re-read at the 1st, 2nd,
        4th, ... read of their preference in this process, then every
        :data:`NEW_USER_REFRESH` reads.
        """
        billed = _billed_calls(self._recent_queries(uid))
        if not billed:
            return self.router.prior()
        return self._adapted(uid, [], None, billed) or self.router.prior()

    def _adapted(
        self,
        uid: str,
        comparisons: Sequence[Comparison],
        traffic: np.ndarray | None,
        billed: Sequence[BilledCall],
    ) -> Preference | None:
        """The user's preference over the service's candidates; None (logged) if it fails."""
        try:
            pref = self.router.adapt(
                comparisons, arms=list(self.descriptors.values()), traffic=traffic, billed=billed
            )
            pref.check()
        except (ArithmeticError, IndexError, KeyError, RuntimeError, ValueError) as exc:
            logger.warning(
                "the preference of user %s could not be computed from %d comparisons and %d "
                "billed calls (%s); routing them with the prior until it is next recomputed",
                excerpt(uid),
                len(comparisons),
                len(billed),
                exc,
                exc_info=True,
            )
            return None
        return pref

    def _recompute(self, uid: str) -> tuple[Preference | None, int]:
        """Recompute and cache the user's preference; (None, 0) if the store cannot be read."""
        try:
            version = self.store.user_version(uid)
            rows = self.store.comparisons(uid)
        except StoreError as exc:
            self._writes.failed("read a user's comparisons", exc)
            return None, 0
        comparisons = self._usable(uid, rows)
        recent = self._recent_queries(uid) if comparisons else []
        traffic = np.stack([q.embedding for q in recent]) if recent else None
        pref = self._adapted(uid, comparisons, traffic, _billed_calls(recent))
        if pref is None:
            return self.router.prior(), version
        try:
            self.store.cache_preference(uid, self.router_id, version, pref.to_dict())
        except StoreError as exc:
            self._writes.failed("cache a preference", exc)
        return pref, version

    # -- routing --------------------------------------------------------------------------------
    def eligible(
        self, *, exclude: Iterable[str] = (), only: Iterable[str] | None = None
    ) -> list[str]:
        """Candidates left after excluding some and/or restricting to a subset."""
        excluded = set(exclude)
        allowed = set(only) if only is not None else None
        names = [n for n in self.specs if n not in excluded and (allowed is None or n in allowed)]
        if not names:
            raise ConfigError(
                f"no eligible candidate (excluded {sorted(excluded)}, allowed "
                f"{sorted(allowed) if allowed is not None else 'all'}); candidates are "
                f"{self.arm_names}."
            )
        return names

    def decide(
        self,
        query: str,
        user_id: str | None = None,
        *,
        exclude: Iterable[str] = (),
        only: Iterable[str] | None = None,
        forced: str | None = None,
        run_id: str | uuid.UUID | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Decision:
        """Route ``query`` for a user and record the decision.

        Args:
            query: The prompt text the model will see.
            user_id: Whose call (default: ``default_user_id``).
            exclude: Candidates not to consider (e.g. lacking a needed capability).
            only: Consider only these candidates.
            forced: Call this candidate regardless of the router (exploration, A/B, tests);
                the decision still carries the router's scores and is marked forced.
            run_id: Framework run id to index the decision by.
            metadata: Extra JSON-able data stored with the decision.
        """
        uid = self.user(user_id)
        if not isinstance(query, str):
            raise ConfigError(f"decide() takes the prompt text, got {type(query).__name__}.")
        try:  # a lone surrogate would fail later, in hashing or in the provider's client
            check_text("query", query, max_chars=None)
        except FeedbackError as exc:
            raise ConfigError(str(exc)) from exc
        names = self.eligible(exclude=exclude, only=only)
        if forced is not None:
            if forced not in self.specs:
                raise UnknownArmError(
                    f"model override {excerpt(forced)} is not a candidate; candidates are "
                    f"{self.arm_names}."
                )
            if forced not in names:
                names = [*names, forced]
        check = self._budget_check(uid)
        if (
            check is not None
            and check.exhausted is not None
            and check.exhausted.budget.on_exhausted == "error"
        ):
            raise BudgetExceededError(exhausted_message(check.exhausted))
        pref = self.preference(uid)
        embedding = self.router.embedder.encode_one(query)
        tokens = estimate_tokens(query)
        arms = [self.descriptors[n] for n in names]
        emb, tok = embedding[None, :], np.asarray([tokens], float)
        # one pass of the quality head; a paced call derives its penalised decision from it
        utilities = self.router.utilities_embeddings(emb, tok, arms, pref)
        routing = self.router.decisions(utilities, arms, pref)[0]
        chosen = forced or routing.model
        budget = None
        if check is not None:
            chosen, routing, budget = self._apply_budget(
                check, names, utilities, arms, pref, routing, forced
            )
        decision = Decision(
            new_id(),
            uid,
            routing,
            chosen,
            forced is not None,
            str(run_id) if run_id is not None else None,
            budget,
        )
        if budget is not None:
            metadata = {**(metadata or {}), "budget": budget}
        self._writes.record_decision(  # kept and retried if the store cannot be written
            DecisionRecord(
                decision_id=decision.decision_id,
                user_id=uid,
                query_hash=query_hash(query),
                embedding=embedding,
                prompt_tokens=tokens,
                candidates=tuple(names),
                scores=dict(routing.scores),
                chosen=chosen,
                expected_cost_usd=routing.expected_costs_usd[chosen],
                run_id=decision.run_id,
                forced=decision.forced,
                metadata=dict(metadata or {}),
            )
        )
        logger.debug("user %s -> %s (decision %s)", uid, chosen, decision.decision_id)
        return decision

    def _budget_check(self, uid: str) -> BudgetCheck | None:
        """The user's budgets before a call; a store that cannot be read routes without them."""
        if not self.enforce_budgets or self._budgets is None:
            return None
        try:
            return self._budgets.check(uid)
        except StoreError as exc:
            self._writes.failed("read spend budgets", exc)
            logger.warning(
                "spend budgets of user %s could not be read; routing without them: %s",
                excerpt(uid),
                exc,
            )
            return None

    def _apply_budget(
        self,
        check: BudgetCheck,
        names: Sequence[str],
        utilities: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        arms: Sequence[ArmDescriptor],
        pref: Preference,
        routing: RoutingDecision,
        forced: str | None,
    ) -> tuple[str, RoutingDecision, dict[str, Any]]:
        """Pace (or apply an exhausted budget's policy to) a routed call."""
        unbudgeted = routing.model
        data: dict[str, Any] = {**check.summary(), "cost_penalty": 0.0, "policy": None}
        chosen = forced or routing.model
        if check.exhausted is not None:
            if forced is None:
                chosen, why = policy_choice(
                    check.exhausted.budget, list(names), routing.expected_costs_usd
                )
                data["policy"] = why
        elif check.multiplier > 0:
            util, _, _, costs = utilities
            penalty = pacing_penalty(
                check.multiplier, costs[0].tolist(), util[0].tolist(), self.budgets.pacing
            )
            if penalty > 0:
                routing = self.router.decisions(utilities, arms, pref, cost_penalty=penalty)[0]
                data.update(cost_penalty=penalty, policy="paced")
                chosen = forced or routing.model
        data.update(
            unbudgeted_model=unbudgeted, changed_choice=forced is None and chosen != unbudgeted
        )
        return chosen, routing, data

    def _charge(self, did: str, decision: Decision | None, model: str, cost: float | None) -> None:
        """Charge a finished call to its user's budgets (billed cost, else the estimate)."""
        if self._budgets is None or not self.enforce_budgets:
            return
        if decision is not None:
            if decision.budget is None:
                return
            uid = decision.user_id
            estimate = decision.routing.expected_costs_usd.get(model)
        else:  # only an id: the stored (or kept) decision says whether budgets applied
            rec = self._writes.pending(did)
            try:
                rec = rec or self.store.get_decision(did)
            except (FeedbackError, StoreError):
                logger.warning("decision %s is unknown; its cost is not charged to budgets", did)
                return
            if "budget" not in rec.metadata:
                return
            uid, estimate = rec.user_id, rec.expected_cost_usd
        charge = cost if cost is not None else estimate
        if charge is None:
            logger.warning("no cost known for decision %s; nothing charged to budgets", did)
            return
        try:
            self._budgets.charge(did, uid, model, float(charge), is_estimate=cost is None)
        except ChargeError as exc:  # retried by the store already: the budgets miss this call
            self._writes.failed("charge a call to spend budgets", exc)
            logger.error("decision %s: %s", did, exc)
            raise
        except StoreError as exc:  # e.g. the decision was completed (and charged) before
            self._writes.failed("charge a call to spend budgets", exc)
            logger.error(
                "the cost of decision %s (%.6f USD) could not be charged to the budgets of "
                "user %s: %s",
                did,
                charge,
                excerpt(uid),
                exc,
            )

    def complete(
        self,
        decision: Decision | str,
        *,
        model: str,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cost_usd: float | None = None,
        fallbacks: Sequence[str] = (),
    ) -> float | None:
        """Record the model that answered and the call's real cost; returns the cost in USD.

        If the store cannot be written the outcome is kept and retried like the decision (see
        :mod:`metarouter.store.pending`); it never fails the call for that. A call under a
        spend budget is then charged to it; the store retries a failed charge a few times
        (:meth:`~metarouter.store.sql.SQLStore.record_spend`).

        Raises:
            FeedbackError: A malformed or unknown decision id, or an invalid model or cost.
            ChargeError: The call's cost could not be charged to its budgets (after the
                outcome was recorded); nothing was written for the charge, and the message
                says how to charge it again. The adapters log it and return the answer.
        """
        did = validate_decision_id(
            decision.decision_id if isinstance(decision, Decision) else decision
        )
        cost = (
            cost_usd if cost_usd is not None else self.cost_of(model, input_tokens, output_tokens)
        )
        self._writes.complete_decision(did, chosen=model, cost_usd=cost, fallbacks=tuple(fallbacks))
        self._charge(did, decision if isinstance(decision, Decision) else None, model, cost)
        return cost

    def store_health(self) -> StoreHealth:
        """Counters of store failures this service worked around, and of records kept.

        See :mod:`metarouter.store.pending` for the policy (retry with back-off, bounded, then
        drop). ``failures == 0`` means the store never failed.
        """
        return self._writes.health()

    def flush(self) -> int:
        """Write the decisions kept while the store could not be written; returns how many.

        Call it before a process exits: kept decisions live in memory only.
        """
        return self._writes.flush()

    # -- feedback -------------------------------------------------------------------------------
    def add_listener(self, listener: FeedbackListener) -> FeedbackListener:
        """Call ``listener(event)`` whenever feedback is recorded or a preference re-estimated.

        Listener errors are logged (with traceback) and do not undo the stored feedback.
        Returns the listener, so it can be used as a decorator.
        """
        if not callable(listener):
            raise ConfigError("a feedback listener must be callable: listener(event).")
        with self._lock:
            self._listeners.items.append(listener)
        return listener

    def remove_listener(self, listener: FeedbackListener) -> None:
        """Stop notifying ``listener``."""
        with self._lock:
            self._listeners.items.remove(listener)

    def _emit(self, event: FeedbackEvent) -> None:
        with self._lock:
            listeners = list(self._listeners.items)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("feedback listener %r failed on %s", listener, event.kind)

    def _stored_decision(self, decision_id: str) -> DecisionRecord:
        """The stored decision; one still kept in memory is written first (or StoreError)."""
        if self._writes.pending(decision_id) is not None:
            self._writes.flush()
            if self._writes.pending(decision_id) is not None:
                raise StoreError(
                    f"decision {decision_id} is not in the store yet: the store could not be "
                    f"written ({self._writes.health().last_error}). Nothing was recorded. Fix: "
                    "repair the store (the message above says how), then record the feedback "
                    "again."
                )
        return self.store.get_decision(decision_id)

    def _resolve(self, item: WinnerLike, role: str) -> tuple[DecisionRecord | None, Response]:
        if isinstance(item, Decision):
            item = item.decision_id
        if isinstance(item, Response):
            if not isinstance(item.model, str) or not item.model.strip():
                raise FeedbackError(f"the {role}'s model name must be a non-empty string.")
            check_text(f"the {role}'s text", item.text)
            if item.decision_id is not None:
                return self._stored_decision(validate_decision_id(item.decision_id)), item
            return None, item
        rec: DecisionRecord | None
        if isinstance(item, uuid.UUID) or (isinstance(item, str) and len(item) == 36):
            run = str(item)
            rec = self.store.find_decision(run)
            if rec is None:
                raise FeedbackError(
                    f"no decision was recorded for run id {run} (the {role}). Fix: pass the "
                    "run id given in config={'run_id': ...} of a routed call, or its decision_id."
                )
        elif isinstance(item, str):
            rec = self._stored_decision(validate_decision_id(item))
        else:
            raise FeedbackError(
                f"the {role} must be a decision id, a run id, a Decision or a Response, got "
                f"{type(item).__name__}."
            )
        cost = rec.cost_usd if rec.cost_usd is not None else rec.expected_cost_usd
        return rec, Response(rec.chosen, float(cost), decision_id=rec.decision_id)

    def record_preference(
        self,
        winner: WinnerLike,
        loser: WinnerLike,
        *,
        user_id: str | None = None,
        query: str | None = None,
        source: ComparisonSource | None = None,
    ) -> ComparisonRecord:
        """Record that ``winner``'s answer was worth it over ``loser``'s, for one query.

        One judgement per pair of answers: comparing the same two routed answers again (in
        either order) replaces the earlier comparison, so ``prefer(0)``, ``prefer(0)``,
        ``prefer(1)`` leaves one comparison, the last (see
        :meth:`~metarouter.store.sql.SQLStore.record_comparison`). When this raises, nothing
        was stored.

        Args:
            winner: Decision id, run id, :class:`Decision`, or :class:`Response`.
            loser: Same kinds.
            user_id: The user (default: the decisions' user, else ``default_user_id``).
            query: The query text; required when neither answer came from a decision.
            source: How it was collected (default: ``decisions`` or ``external``).

        Raises:
            FeedbackError: Unknown or malformed ids, the same answer twice, the same model on
                both sides, decisions of another user or of different queries, or invalid
                text. Nothing is stored then.
            StoreError: The store could not be written (or a referenced decision is still
                waiting to be written to it). Nothing is stored then.
        """
        w_rec, w = self._resolve(winner, "winner")
        l_rec, lose = self._resolve(loser, "loser")
        recs = [r for r in (w_rec, l_rec) if r is not None]
        if w_rec is not None and l_rec is not None and w_rec.decision_id == l_rec.decision_id:
            raise FeedbackError("winner and loser are the same decision; compare two answers.")
        if w.model == lose.model:
            raise FeedbackError(
                f"both answers come from {excerpt(w.model)}; a comparison needs two different "
                "models."
            )
        owners = {r.user_id for r in recs}
        if user_id is not None:
            uid = self.user(user_id)
            if owners and owners != {uid}:
                raise FeedbackError(
                    f"the decisions belong to user(s) {sorted(owners)}, not {uid!r}; feedback "
                    "may only reference the same user's decisions."
                )
        elif len(owners) > 1:
            raise FeedbackError(f"the two decisions belong to different users {sorted(owners)}.")
        else:
            uid = owners.pop() if owners else self.user(None)
        query = check_text("query", query)  # bytes are decoded, bad text refused
        hashes = {r.query_hash for r in recs}
        if query is not None:
            hashes.add(query_hash(query))
        if len(hashes) > 1:
            raise FeedbackError(
                "the two answers are for different queries; a comparison is between two "
                "answers to the same query."
            )
        for side in (w, lose):
            check_usd(f"the cost of the answer of {excerpt(side.model)}", side.cost_usd)
        if recs:
            embedding, tokens = recs[0].embedding, recs[0].prompt_tokens
        elif query is not None:
            embedding = self.router.embedder.encode_one(query)
            tokens = estimate_tokens(query)
        else:
            raise FeedbackError(
                "neither answer came from a routed call, so the query text is needed: "
                "record_preference(winner, loser, query='...')."
            )
        record = ComparisonRecord(
            comparison_id=new_id(),
            user_id=uid,
            winner=w.model,
            loser=lose.model,
            winner_cost_usd=float(w.cost_usd),
            loser_cost_usd=float(lose.cost_usd),
            query_hash=hashes.pop(),
            embedding=np.asarray(embedding, np.float32),
            prompt_tokens=int(tokens),
            source=source or ("decisions" if recs else "external"),
            winner_decision_id=w_rec.decision_id if w_rec else None,
            loser_decision_id=l_rec.decision_id if l_rec else None,
        )
        version = self.store.record_comparison(record)
        # stored: from here on nothing may report a failure (a failed call stores nothing)
        self._emit(FeedbackEvent("comparison_recorded", uid, version, comparison=record))
        try:
            pref = self.preference(uid)
        except Exception:
            logger.exception(
                "feedback of user %s was stored, but re-estimating their preference failed; it "
                "is recomputed on their next call",
                excerpt(uid),
            )
            return record
        self._emit(
            FeedbackEvent(
                "preference_updated",
                uid,
                version,
                quality_weight=pref.quality_weight,
                n_comparisons=pref.n_comparisons,
            )
        )
        return record

    def suggest_pair(
        self, query: str, user_id: str | None = None, *, exclude: Iterable[str] = ()
    ) -> tuple[str, str]:
        """Two candidates worth comparing on ``query`` for this user.

        The pair whose answer is expected to improve this user's routing most (expected value
        of information under their posterior, :meth:`MetaRouter.comparison_values`), valued on
        their traffic: this query and their recent ones (see :meth:`suggest_comparison`).
        """
        return self.suggest_comparison([query], user_id, exclude=exclude)[1]

    def suggest_comparison(
        self, queries: Sequence[str], user_id: str | None = None, *, exclude: Iterable[str] = ()
    ) -> tuple[int, tuple[str, str]]:
        """Which of ``queries`` (e.g. the user's recent ones) and which two candidates to compare.

        The comparison with the highest expected value of information for this user's routing,
        valued on their traffic: these queries and the queries of their last 40 routed calls
        (of their last comparisons while they have none).

        Returns:
            ``(index into queries, (model a, model b))``.
        """
        if isinstance(queries, str) or not queries:
            raise ConfigError("suggest_comparison() takes a non-empty list of query texts.")
        names = self.eligible(exclude=exclude)
        if len(names) < 2:
            raise ConfigError("comparing needs at least two eligible candidates.")
        uid = self.user(user_id)
        pref = self.preference(uid)
        emb = self.router.embedder.encode(list(queries))
        tokens = np.asarray([estimate_tokens(q) for q in queries], float)
        # the user's traffic: their last routed queries; a user with none yet (e.g. one who has
        # only compared so far) is read from the queries of their last comparisons
        recent: Sequence[RecentQuery | ComparisonRecord] = self._recent_queries(uid)
        if not recent:
            recent = self.store.comparisons(uid)[-_TRAFFIC_SAMPLE:]
        traffic = (
            np.vstack([emb, *[r.embedding[None, :] for r in recent]]),
            np.concatenate([tokens, [float(r.prompt_tokens) for r in recent]]),
        )
        values, pairs = self.router.comparison_values(
            emb, tokens, [self.descriptors[n] for n in names], pref, traffic=traffic
        )
        q, p = np.unravel_index(int(np.argmax(values)), values.shape)
        a, b = pairs[int(p)]
        return int(q), (names[a], names[b])
