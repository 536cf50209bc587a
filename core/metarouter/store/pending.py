"""What happens to routing records when the store cannot be written: kept, retried, or dropped.

Recording a decision must never stop a call from being routed and answered. When the store
fails (a full disk, a read-only folder, a lock held past the busy timeout, a database that is
down), :class:`PendingWrites` keeps the decision in memory and the call goes on. The policy:

* **Retry.** Kept decisions (and the outcomes later reported for them) are written, oldest
  first, before the next decision once the store has had time to recover: after a failure the
  store is left alone for 1 s, then 2 s, 4 s... up to 60 s between attempts, so a broken store
  does not slow every call down by its timeout. :meth:`PendingWrites.flush` retries at once.
* **Drop.** At most ``max_pending`` decisions are kept (default 10,000); beyond that the oldest
  is dropped and counted. Kept decisions live in this process only: they are lost if it exits
  before the store recovers (call ``flush()`` on shutdown to try once more).
* **Count.** Every failure is counted and the first of an outage is logged as a warning (with
  the store's message saying what to fix); later ones at debug level, recovery at warning. The
  counters are in :meth:`PendingWrites.health`.

Feedback (comparisons) is never kept this way: it is written at once, or the call recording it
raises and nothing is stored.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from metarouter.errors import FeedbackError, StoreError
from metarouter.store.base import PreferenceStore
from metarouter.store.records import DecisionRecord

__all__ = ["PendingWrites", "StoreHealth"]

logger = logging.getLogger(__name__)

#: Seconds the store is left alone after a failure: doubled per failure, up to the second value.
BACKOFF_SECONDS = (1.0, 60.0)


@dataclass(frozen=True)
class StoreHealth:
    """Counters of store trouble seen by one routing service (since it was created).

    Attributes:
        failures: Store operations that failed (writes and reads); each was worked around.
        pending: Decisions kept in memory, waiting to be written.
        pending_outcomes: Outcomes (answering model, cost) of stored decisions, waiting.
        retried: Decisions and outcomes written late, after a failure.
        dropped: Decisions and outcomes given up because too many were waiting.
        last_error: The latest failure's message (None if the store never failed).
    """

    failures: int
    pending: int
    pending_outcomes: int
    retried: int
    dropped: int
    last_error: str | None


@dataclass(frozen=True)
class _Outcome:
    chosen: str
    cost_usd: float | None
    fallbacks: tuple[str, ...]


class PendingWrites:
    """Writes decisions to a store, keeping them in memory while it cannot be written.

    Args:
        store: The preference store.
        max_pending: Most decisions kept while the store is failing (oldest dropped first).
    """

    def __init__(self, store: PreferenceStore, *, max_pending: int = 10_000) -> None:
        self.store = store
        self.max_pending = int(max_pending)
        self._decisions: OrderedDict[str, DecisionRecord] = OrderedDict()
        self._outcomes: OrderedDict[str, _Outcome] = OrderedDict()
        self._dropped_ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._retry_at = 0.0
        self._backoff = 0.0
        self._failures = 0
        self._retried = 0
        self._dropped = 0
        self._last_error: str | None = None

    # -- state ----------------------------------------------------------------------------------
    def health(self) -> StoreHealth:
        """The counters (see :class:`StoreHealth`)."""
        with self._lock:
            return StoreHealth(
                failures=self._failures,
                pending=len(self._decisions),
                pending_outcomes=len(self._outcomes),
                retried=self._retried,
                dropped=self._dropped,
                last_error=self._last_error,
            )

    def pending(self, decision_id: str) -> DecisionRecord | None:
        """The kept decision with this id (not yet in the store), if any."""
        with self._lock:
            return self._decisions.get(decision_id)

    def failed(self, action: str, exc: Exception) -> None:
        """Count a failed store operation and back off before the next write attempt."""
        with self._lock:
            first = self._backoff == 0.0
            self._failures += 1
            self._last_error = str(exc)
            low, high = BACKOFF_SECONDS
            self._backoff = low if first else min(self._backoff * 2, high)
            self._retry_at = time.monotonic() + self._backoff
            kept = len(self._decisions)
        log = logger.warning if first else logger.debug
        log(
            "the preference store failed to %s; routing goes on (%d decisions kept in memory, "
            "next attempt in %.0f s): %s",
            action,
            kept,
            self._backoff,
            exc,
        )

    def _recovered(self) -> None:
        with self._lock:
            was_down = self._backoff > 0.0
            self._backoff = 0.0
            self._retry_at = 0.0
        if was_down:
            logger.warning("the preference store can be written again")

    def _waiting(self) -> bool:
        with self._lock:
            return time.monotonic() < self._retry_at

    def _keep(self, record: DecisionRecord) -> None:
        with self._lock:
            self._decisions[record.decision_id] = record
            while len(self._decisions) > self.max_pending:
                old, _ = self._decisions.popitem(last=False)
                self._outcomes.pop(old, None)
                self._note_dropped(old)

    def _note_dropped(self, decision_id: str) -> None:
        self._dropped += 1
        self._dropped_ids[decision_id] = None
        while len(self._dropped_ids) > self.max_pending:
            self._dropped_ids.popitem(last=False)
        logger.debug("dropped decision %s: too many waiting for the store", decision_id)

    # -- writes ---------------------------------------------------------------------------------
    def record_decision(self, record: DecisionRecord) -> bool:
        """Store ``record``, or keep it for later if the store cannot be written.

        Returns:
            Whether it is in the store now.

        Raises:
            FeedbackError: The record is invalid (nothing is kept then).
        """
        if self._waiting():
            self._validate(record)
            self._keep(record)
            return False
        self.flush()
        try:
            self.store.record_decision(record)
        except StoreError as exc:
            self._keep(record)
            self.failed("record a routing decision", exc)
            return False
        self._recovered()
        return True

    def complete_decision(
        self,
        decision_id: str,
        *,
        chosen: str,
        cost_usd: float | None,
        fallbacks: tuple[str, ...] = (),
    ) -> bool:
        """Record a decision's outcome, or keep it for later (see :meth:`record_decision`).

        Returns:
            Whether it is in the store now.

        Raises:
            FeedbackError: Invalid values, or an id that was never recorded.
        """
        outcome = _Outcome(chosen, cost_usd, tuple(fallbacks))
        with self._lock:
            kept = self._decisions.get(decision_id)
            if kept is not None:
                self._decisions[decision_id] = dataclasses.replace(
                    kept, chosen=chosen, cost_usd=cost_usd, fallbacks=outcome.fallbacks
                )
                return False
            if decision_id in self._dropped_ids:
                return False
        if not self._waiting():
            try:
                self.store.complete_decision(
                    decision_id, chosen=chosen, cost_usd=cost_usd, fallbacks=outcome.fallbacks
                )
            except StoreError as exc:
                self.failed("record a call's outcome", exc)
            else:
                self._recovered()
                return True
        with self._lock:
            self._outcomes[decision_id] = outcome
            while len(self._outcomes) > self.max_pending:
                old, _ = self._outcomes.popitem(last=False)
                self._note_dropped(old)
        return False

    def flush(self) -> int:
        """Write what is kept, oldest first, until the store fails again; returns how many.

        Only one thread flushes at a time (the others go on routing).
        """
        if not self._flushing.acquire(blocking=False):
            return 0
        written = 0
        try:
            while True:
                with self._lock:
                    if not self._decisions:
                        break
                    did, record = next(iter(self._decisions.items()))
                if not self._retry(
                    functools.partial(self.store.record_decision, record), did, inserted=True
                ):
                    return written
                with self._lock:
                    self._decisions.pop(did, None)
                    self._retried += 1
                written += 1
            while True:
                with self._lock:
                    if not self._outcomes:
                        break
                    did, outcome = next(iter(self._outcomes.items()))
                write = functools.partial(
                    self.store.complete_decision,
                    did,
                    chosen=outcome.chosen,
                    cost_usd=outcome.cost_usd,
                    fallbacks=outcome.fallbacks,
                )
                done = self._retry(write, did, inserted=False)
                if not done:
                    return written
                with self._lock:
                    self._outcomes.pop(did, None)
                    self._retried += 1
                written += 1
        finally:
            self._flushing.release()
        if written:
            self._recovered()
            logger.info("wrote %d decisions or outcomes kept while the store failed", written)
        return written

    def _retry(self, write: Callable[[], object], decision_id: str, *, inserted: bool) -> bool:
        """Run one kept write; True when it is done (or can never be done and was dropped).

        ``inserted``: the write inserts the decision, so an attempt that reported a failure
        but committed (a connection lost after the commit) shows as a stored decision.
        """
        try:
            write()
        except FeedbackError as exc:  # e.g. the decision was deleted with its user meanwhile
            logger.warning("dropped a kept write for decision %s: %s", decision_id, exc)
            with self._lock:
                self._note_dropped(decision_id)
            return True
        except StoreError as exc:
            if inserted and self._stored(decision_id):  # the attempt committed after all
                return True
            self.failed("write a kept decision", exc)
            return False
        return True

    def _stored(self, decision_id: str) -> bool:
        try:
            self.store.get_decision(decision_id)
        except (StoreError, FeedbackError):
            return False
        return True

    def _validate(self, record: DecisionRecord) -> None:
        from metarouter.store.records import validate_decision

        validate_decision(record)
