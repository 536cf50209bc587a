"""A store that cannot be written never stops routing; feedback is one judgement per pair.

The faults are real: another connection holds the store's write lock past the busy timeout
(SQLite) or the lock timeout (PostgreSQL), or SQLite runs out of pages ("database or disk is
full"). The service must route and answer anyway, count and log the failure, keep the decision
and write it once the store recovers (docs/store.md, "When the store cannot be written").
"""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa
from _store_helpers import MODELS, WriteLock, impatient_store, snapshot
from metarouter.errors import StoreError
from metarouter.service import RoutingService
from metarouter.store import SQLStore

QUERY = "Prove that there are infinitely many prime numbers."


@pytest.fixture
def service(store_url, router):
    store = impatient_store(store_url)
    store.migrate()
    yield RoutingService(list(MODELS), router=router, store=store)
    store.close()


def _stored_ids(url: str) -> set[str]:
    with SQLStore(url) as store:
        return {r.decision_id for r in store.iter_records() if hasattr(r, "scores")}


def test_a_locked_store_still_routes_and_the_decision_is_written_when_it_recovers(
    service, store_url, caplog
):
    before = service.decide(QUERY, "alice")
    with WriteLock(store_url), caplog.at_level(logging.WARNING):
        during = [service.decide(QUERY, "alice") for _ in range(3)]
        cost = service.complete(during[0], model=during[0].model, cost_usd=0.0004)
    assert cost == 0.0004
    assert [d.model for d in during] == [before.model] * 3  # routed as usual
    health = service.store_health()
    assert health.failures >= 1 and health.pending == 3 and health.dropped == 0
    assert "lock" in health.last_error.lower()
    assert any("routing goes on" in r.getMessage() for r in caplog.records)
    assert _stored_ids(store_url) == {before.decision_id}

    assert service.flush() == 3  # the store is back: kept decisions are written, in order
    assert _stored_ids(store_url) == {before.decision_id, *(d.decision_id for d in during)}
    stored = service.store.get_decision(during[0].decision_id)
    assert (stored.chosen, stored.cost_usd) == (during[0].model, 0.0004)  # outcome kept too
    assert service.store_health().pending == 0 and service.store_health().retried == 3


def test_the_next_decision_after_the_back_off_writes_the_kept_ones(service, store_url, monkeypatch):
    import metarouter.store.pending as pending

    monkeypatch.setattr(pending, "BACKOFF_SECONDS", (0.0, 0.0))
    with WriteLock(store_url):
        kept = service.decide(QUERY, "bob")
    later = service.decide(QUERY, "bob")
    assert _stored_ids(store_url) == {kept.decision_id, later.decision_id}


def test_an_outcome_for_a_stored_decision_is_kept_and_retried(service, store_url):
    decision = service.decide(QUERY, "carol")
    with WriteLock(store_url):
        service.complete(decision, model=MODELS[2], cost_usd=0.002, fallbacks=[MODELS[0]])
    assert service.store.get_decision(decision.decision_id).cost_usd is None
    assert service.store_health().pending_outcomes == 1
    service.flush()
    stored = service.store.get_decision(decision.decision_id)
    assert (stored.chosen, stored.cost_usd, stored.fallbacks) == (MODELS[2], 0.002, (MODELS[0],))


def test_beyond_max_pending_the_oldest_kept_decisions_are_dropped_and_counted(store_url, router):
    store = impatient_store(store_url)
    store.migrate()
    service = RoutingService(list(MODELS), router=router, store=store, max_pending=2)
    with WriteLock(store_url):
        decisions = [service.decide(QUERY, "dave") for _ in range(4)]
        service.complete(decisions[0], model=decisions[0].model, cost_usd=0.001)  # dropped: no-op
    assert service.store_health().dropped == 2
    assert service.flush() == 2
    assert _stored_ids(store_url) == {d.decision_id for d in decisions[2:]}
    store.close()


def test_feedback_on_a_locked_store_raises_and_stores_nothing(service, store_url):
    cheap = service.decide(QUERY, "erin", forced=MODELS[0])
    dear = service.decide(QUERY, "erin", forced=MODELS[2])
    before = snapshot(service.store)
    with WriteLock(store_url), pytest.raises(StoreError, match="Nothing was written"):
        service.record_preference(dear, cheap)
    assert snapshot(service.store) == before
    assert service.preference("erin").n_comparisons == 0


def test_feedback_citing_a_decision_still_kept_in_memory_raises_and_stores_nothing(
    service, store_url
):
    cheap = service.decide(QUERY, "fay", forced=MODELS[0])
    with WriteLock(store_url):
        dear = service.decide(QUERY, "fay", forced=MODELS[2])
        before = snapshot(service.store)
        with pytest.raises(StoreError, match="not in the store yet"):
            service.record_preference(dear, cheap)
        assert snapshot(service.store) == before
    service.record_preference(dear, cheap)  # the store is back: it is written first
    assert service.preference("fay").n_comparisons == 1


def test_an_unreadable_store_routes_with_the_last_known_preference(service, monkeypatch, router):
    def down(*args, **kwargs):
        raise StoreError("could not connect to server: Connection refused.")

    first = service.decide(QUERY, "gus")
    monkeypatch.setattr(service.store, "user_version", down)
    monkeypatch.setattr(service.store, "record_decision", down)
    again = service.decide(QUERY, "gus")
    newcomer = service.decide(QUERY, "hal")
    assert again.routing.scores == pytest.approx(first.routing.scores)
    assert newcomer.routing.quality_weight == pytest.approx(router.prior().quality_weight)
    assert service.store_health().failures >= 2


# -- feedback: one judgement per pair of answers (issue 15, item 4) ----------------------------
def test_judging_the_same_pair_again_replaces_the_earlier_judgement(service):
    cheap = service.decide(QUERY, "ivy", forced=MODELS[0])
    dear = service.decide(QUERY, "ivy", forced=MODELS[2])
    service.record_preference(cheap, dear)
    service.record_preference(cheap, dear)
    last = service.record_preference(dear, cheap)
    (kept,) = service.store.comparisons("ivy")
    assert kept.comparison_id == last.comparison_id
    assert (kept.winner, kept.loser) == (MODELS[2], MODELS[0])
    assert service.preference("ivy").n_comparisons == 1


def test_a_routed_answer_against_an_outside_answer_is_one_judgement_too(service):
    from metarouter.service import Response

    routed = service.decide(QUERY, "jo", forced=MODELS[0])
    service.record_preference(routed, Response("gpt-4o", 0.004))
    service.record_preference(Response("gpt-4o", 0.004), routed)
    service.record_preference(routed, Response("gpt-4o-mini", 0.0003))  # another answer: kept
    assert sorted((c.winner, c.loser) for c in service.store.comparisons("jo")) == [
        (MODELS[0], "gpt-4o-mini"),
        ("gpt-4o", MODELS[0]),
    ]


def test_feedback_that_was_stored_is_never_reported_as_failed(service, monkeypatch, caplog):
    cheap = service.decide(QUERY, "kim", forced=MODELS[0])
    dear = service.decide(QUERY, "kim", forced=MODELS[2])

    def broken_adapt(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(service.router, "adapt", broken_adapt)
    with caplog.at_level(logging.WARNING):
        record = service.record_preference(dear, cheap)  # stored: must not raise
    assert [c.comparison_id for c in service.store.comparisons("kim")] == [record.comparison_id]
    assert any("could not be computed" in r.getMessage() for r in caplog.records)
    assert service.decide(QUERY, "kim").model in MODELS  # routed with the prior meanwhile


# -- messages that say how to fix the fault (issue 15, item 15) --------------------------------
def test_a_full_disk_says_to_free_space_and_routing_goes_on(tmp_path, router):
    path = tmp_path / "full.db"
    store = SQLStore(path)
    store.migrate()

    @sa.event.listens_for(store.engine, "connect")
    def _small_disk(dbapi_conn, _record):  # a disk that is full once the file has grown a bit
        dbapi_conn.execute("PRAGMA max_page_count=24")

    store.engine.dispose()
    service = RoutingService(list(MODELS), router=router, store=store)
    decisions = [service.decide(f"{QUERY} ({i})", "lee") for i in range(30)]
    assert len(decisions) == 30
    assert service.store_health().pending > 0
    message = service.store_health().last_error
    assert "disk is full" in message and "Fix: free space" in message
    assert "Nothing was written" in message
    store.close()
