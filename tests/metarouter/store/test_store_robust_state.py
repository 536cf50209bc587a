"""No stored row can break a user's routing (issue 15, item 1).

Numbers are checked at the boundary, so a comparison costing 3.5e38 USD is refused before it
is stored. Rows that got into a store anyway (written by an older metarouter, altered by hand,
cached by another version) are skipped or recomputed with a logged warning: ``decide`` keeps
working for that user and everyone sharing their id, and so do new feedback and exports.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import sqlalchemy as sa
from _store_helpers import MODELS, make_comparison, make_decision, snapshot, unit_vectors
from metarouter.errors import FeedbackError, UnreadableRowError
from metarouter.service import Response, RoutingService
from metarouter.store import SQLStore, load_comparison_export
from metarouter.types import Comparison

QUERY = "Prove that there are infinitely many prime numbers."
HUGE = 3.5e38  # above float32's largest value: the encoder turns it into inf, then NaN


@pytest.fixture
def service(store, router):
    return RoutingService(list(MODELS), router=router, store=store)


def _execute(store_url: str, sql: str, **params) -> None:
    engine = sa.create_engine(store_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text(sql), params)
    engine.dispose()


def _fresh(service, user):
    usable = [c.to_comparison() for c in service.store.comparisons(user)]
    return service.router.adapt(usable, arms=list(service.descriptors.values()))


def _same(p, q) -> bool:
    return p.n_comparisons == q.n_comparisons and np.allclose(
        p.alpha_posterior, q.alpha_posterior, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("cost", [HUGE, 1e300, float("inf"), float("nan"), -0.01, True])
def test_a_cost_out_of_bounds_is_refused_everywhere_and_nothing_is_stored(service, cost):
    with pytest.raises(FeedbackError, match="finite number in"):
        Comparison(MODELS[0], MODELS[1], cost, 0.001, query=QUERY)
    with pytest.raises(FeedbackError, match="winner_cost_usd"):
        service.store.record_comparison(
            make_comparison("alice", MODELS[0], MODELS[1], winner_cost_usd=cost)
        )
    before = snapshot(service.store)
    with pytest.raises(FeedbackError, match="in US dollars"):
        service.record_preference(
            Response(MODELS[0], cost), Response(MODELS[1], 0.001), user_id="alice", query=QUERY
        )
    assert snapshot(service.store) == before
    assert service.decide(QUERY, "alice").model in MODELS


def test_a_stored_comparison_the_router_cannot_use_is_skipped_not_fatal(service, store_url, caplog):
    emb = unit_vectors(3, seed=11)
    good = make_comparison("default", MODELS[2], MODELS[0], embedding=emb[0])
    bad = make_comparison("default", MODELS[0], MODELS[2], embedding=emb[1])
    short = make_comparison("default", MODELS[1], MODELS[0], embedding=emb[2][:100])
    for rec in (good, bad, short):
        service.store.record_comparison(rec)
    # as an older metarouter (no upper bound) would have stored it
    _execute(
        store_url,
        "UPDATE metarouter_comparisons SET winner_cost_usd = :cost WHERE comparison_id = :id",
        cost=HUGE,
        id=bad.comparison_id,
    )
    with caplog.at_level(logging.WARNING):
        pref = service.preference("default")
        decision = service.decide(QUERY)  # the shared id keeps routing
    assert decision.model in MODELS
    assert pref.n_comparisons == 1  # only the usable comparison
    assert np.isfinite(pref.alpha_posterior).all() and np.isfinite(pref.quality_weight)
    skipped = " ".join(r.getMessage() for r in caplog.records)
    assert bad.comparison_id in skipped and short.comparison_id in skipped
    # new valid feedback still works for that user, in a new process too
    service.store.record_comparison(make_comparison("default", MODELS[2], MODELS[1]))
    other = RoutingService(list(MODELS), router=service.router, store=SQLStore(store_url))
    assert other.preference("default").n_comparisons == 2
    assert other.decide(QUERY).model in MODELS


TAMPERED = {
    "posterior arrays of the wrong length": lambda s: {
        **s,
        "posterior": {**s["posterior"], "alpha": s["posterior"]["alpha"][:-1]},
    },
    "broken JSON": lambda s: "{not json",
    "NaN in the posterior": lambda s: {
        **s,
        "posterior": {**s["posterior"], "weight": [float("nan")] * len(s["posterior"]["weight"])},
    },
    "another version's fields": lambda s: {"format": 2, "theta": [0.1, 0.2]},
    "an alpha grid of another router": lambda s: {**s, "alpha_posterior": [0.5, 0.5]},
    "not an object": lambda s: [1, 2, 3],
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_a_tampered_or_foreign_cache_row_is_recomputed(service, store_url, case, caplog):
    emb = unit_vectors(2, seed=12)
    service.store.record_comparison(
        make_comparison("alice", MODELS[2], MODELS[0], embedding=emb[0])
    )
    version = service.store.record_comparison(
        make_comparison("alice", MODELS[2], MODELS[1], embedding=emb[1])
    )
    state = service.preference("alice").to_dict()
    tampered = TAMPERED[case](state)
    text = tampered if isinstance(tampered, str) else json.dumps(tampered)
    _execute(
        store_url,
        "UPDATE metarouter_preference_cache SET state = :state WHERE user_id = 'alice'",
        state=text,
    )
    fresh = RoutingService(list(MODELS), router=service.router, store=SQLStore(store_url))
    with caplog.at_level(logging.WARNING):
        pref = fresh.preference("alice")
        decision = fresh.decide(QUERY, "alice")
    assert _same(pref, _fresh(fresh, "alice"))
    assert decision.model in MODELS
    assert any("recomputed" in r.getMessage() for r in caplog.records)
    # and the recomputed state replaced the bad row
    assert fresh.store.cached_preference("alice", fresh.router_id)[0] == version
    assert _same(
        type(pref).from_dict(fresh.store.cached_preference("alice", fresh.router_id)[1]), pref
    )


def test_a_decision_row_with_broken_json_is_skipped_by_the_dataset_export(
    store, store_url, tmp_path, caplog
):
    a, b = make_decision("alice"), make_decision("alice", chosen=MODELS[2])
    c = make_decision("bob")
    for rec in (a, b, c):
        store.record_decision(rec)
    store.record_comparison(make_comparison("alice", b, a))
    _execute(
        store_url,
        "UPDATE metarouter_decisions SET scores = '{broken' WHERE decision_id = :id",
        id=c.decision_id,
    )
    out = tmp_path / "feedback.jsonl"
    with caplog.at_level(logging.WARNING):
        counts = store.export_comparisons(out)
    assert counts == {"decisions": 2, "comparisons": 1, "unreadable": 1}
    assert any(c.decision_id in r.getMessage() for r in caplog.records)
    assert len(load_comparison_export(out)) == 1
    with pytest.raises(UnreadableRowError, match="restore the store from a backup"):
        store.get_decision(c.decision_id)
    # a data-access export still carries the damaged row, as stored
    rows = list(store.export_user("bob"))
    (damaged,) = [r for r in rows if r["type"] == "decision"]
    assert damaged["scores"] == "{broken" and damaged["unreadable"] == ["scores"]
