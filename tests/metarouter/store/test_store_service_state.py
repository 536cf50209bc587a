"""The store as RoutingService uses it: per-user isolation and no stale preference, ever.

Two RoutingService instances with their own SQLStore on one database stand for two app
processes (or machines) sharing the store.
"""

from __future__ import annotations

import numpy as np
import pytest
from _store_helpers import MODELS, make_comparison, snapshot, unit_vectors
from metarouter.errors import FeedbackError
from metarouter.store import SQLStore

QUERIES = [
    "Prove that there are infinitely many prime numbers.",
    "Translate 'good morning, how are you?' into French.",
    "Write a Python function that merges two sorted lists.",
    "What is the capital of Australia?",
]


@pytest.fixture(scope="module")
def router(router_embedder):
    from metarouter.router import MetaRouter

    return MetaRouter.default(embedder=router_embedder)


@pytest.fixture
def services(store_url, router):
    """Two services ("processes") on one database, each with its own store connections."""
    from metarouter.service import RoutingService

    stores = [SQLStore(store_url), SQLStore(store_url)]
    yield [RoutingService(list(MODELS), router=router, store=s) for s in stores]
    for s in stores:
        s.close()


def _fresh(router, service, user):
    stored = service.store.comparisons(user)
    return router.adapt(
        [c.to_comparison() for c in stored], arms=list(service.descriptors.values())
    )


def _same(p, q):
    return p.n_comparisons == q.n_comparisons and np.allclose(
        p.alpha_posterior, q.alpha_posterior, rtol=1e-5, atol=1e-6
    )


def _scores(service, user):
    return [dict(service.decide(q, user).routing.scores) for q in QUERIES]


def test_feedback_of_one_user_never_changes_routing_of_another(services, router):
    a, b = services
    for q in QUERIES[:2]:  # bob has his own feedback: cheap answers are worth it
        cheap = a.decide(q, "bob", forced=MODELS[0])
        dear = a.decide(q, "bob", forced=MODELS[2])
        a.record_preference(cheap, dear)
    bob_before = _scores(a, "bob")
    alice_before = _scores(a, "alice")
    bob_version = a.store.user_version("bob")
    events = []
    b.add_listener(events.append)

    for q in QUERIES:  # alice, through the other process: quality is worth paying for
        cheap = b.decide(q, "alice", forced=MODELS[0])
        dear = b.decide(q, "alice", forced=MODELS[2])
        b.record_preference(dear, cheap)

    assert {e.user_id for e in events} == {"alice"}
    assert a.store.user_version("bob") == bob_version
    for service in (a, b):
        assert _scores(service, "bob") == bob_before
    alice_after = _scores(a, "alice")
    assert alice_after != alice_before, "alice's feedback must change her own routing"
    assert a.preference("alice").n_comparisons == len(QUERIES)
    assert a.preference("bob").n_comparisons == 2


def test_a_comparison_across_users_is_rejected_through_the_service(services):
    a, _ = services
    alice = a.decide(QUERIES[0], "alice", forced=MODELS[0])
    alice2 = a.decide(QUERIES[0], "alice", forced=MODELS[2])
    bob = a.decide(QUERIES[0], "bob", forced=MODELS[2])
    before = snapshot(a.store)
    with pytest.raises(FeedbackError, match="different users"):
        a.record_preference(alice, bob)
    with pytest.raises(FeedbackError, match="same user's decisions"):
        a.record_preference(alice.decision_id, alice2.decision_id, user_id="bob")
    with pytest.raises(FeedbackError, match="belongs to another user"):
        a.store.record_comparison(
            make_comparison("bob", a.store.get_decision(alice.decision_id), MODELS[1])
        )
    assert snapshot(a.store) == before
    assert a.store.user_version("alice") == a.store.user_version("bob") == 0


def test_a_preference_cached_by_another_process_is_recomputed_after_new_feedback(services, router):
    a, b = services
    emb = unit_vectors(3, seed=3)
    b.store.record_comparison(make_comparison("alice", MODELS[0], MODELS[2], embedding=emb[0]))
    first = a.preference("alice")  # cached in a's memory and in the store
    assert _same(first, _fresh(router, a, "alice"))
    b.store.record_comparison(make_comparison("alice", MODELS[2], MODELS[0], embedding=emb[1]))
    b.store.record_comparison(make_comparison("alice", MODELS[2], MODELS[1], embedding=emb[2]))
    second = a.preference("alice")
    assert second.n_comparisons == 3
    assert _same(second, _fresh(router, a, "alice"))
    assert not np.allclose(second.alpha_posterior, first.alpha_posterior)


def test_a_stored_cache_row_of_an_older_version_is_never_served(services, router):
    from metarouter.service import RoutingService

    a, b = services
    emb = unit_vectors(2, seed=4)
    v1 = a.store.record_comparison(make_comparison("alice", MODELS[0], MODELS[2], embedding=emb[0]))
    bogus = router.adapt(
        [make_comparison("x", MODELS[1], MODELS[0], embedding=emb[1]).to_comparison()] * 5
    )
    a.store.cache_preference("alice", a.router_id, v1, bogus.to_dict())
    # control: at the current version the stored cache is what a new process serves
    served = RoutingService(list(MODELS), router=router, store=b.store).preference("alice")
    assert _same(served, bogus)
    a.store.record_comparison(make_comparison("alice", MODELS[2], MODELS[0], embedding=emb[1]))
    assert a.store.cached_preference("alice", a.router_id)[0] == v1  # now stale
    for service in (b, RoutingService(list(MODELS), router=router, store=b.store)):
        got = service.preference("alice")
        assert not _same(got, bogus)
        assert _same(got, _fresh(router, service, "alice"))


def test_a_user_deleted_and_recreated_never_gets_the_old_cached_preference(services, router):
    a, b = services
    emb = unit_vectors(2, seed=5)
    b.store.record_comparison(make_comparison("alice", MODELS[0], MODELS[2], embedding=emb[0]))
    old = a.preference("alice")  # cached in a's memory at alice's first version
    assert b.store.delete_user("alice") > 0
    assert _same(a.preference("alice"), router.prior())
    # as many comparisons as before: a per-user counter would hand out the old version again
    b.store.record_comparison(make_comparison("alice", MODELS[2], MODELS[0], embedding=emb[1]))
    new = a.preference("alice")
    assert _same(new, _fresh(router, a, "alice"))
    assert not np.allclose(new.alpha_posterior, old.alpha_posterior)
