"""RoutingService feedback input: every bad comparison gives a clear error and stores nothing."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from metarouter.errors import ConfigError, FeedbackError
from metarouter.service import Response, RoutingService
from metarouter.store import SQLStore
from metarouter.store.records import MAX_TEXT_CHARS

ARMS = ["gemma-2-9b-it", "qwen2.5-7b-instruct", "llama-3.1-nemotron-51b-instruct"]
QUERY = "Summarise the plot of Hamlet in two sentences."


@pytest.fixture(scope="module")
def router(router_embedder):
    from metarouter.router import MetaRouter

    return MetaRouter.default(embedder=router_embedder)


@pytest.fixture
def service(tmp_path, router):
    store = SQLStore(tmp_path / "store.db")
    yield RoutingService(ARMS, router=router, store=store)
    store.close()


def _state(service):
    store = service.store
    return store.stats(), {u: store.user_version(u) for u in store.users()}


@pytest.fixture
def decided(service):
    """Two decisions of alice on QUERY (cheap and dear), one of bob, one on another query."""
    return {
        "cheap": service.decide(QUERY, "alice", forced=ARMS[0]),
        "dear": service.decide(QUERY, "alice", forced=ARMS[2]),
        "cheap_again": service.decide(QUERY, "alice", forced=ARMS[0]),
        "other_query": service.decide("What is 2 + 2?", "alice", forced=ARMS[1]),
        "bob": service.decide(QUERY, "bob", forced=ARMS[1]),
    }


BAD_FEEDBACK = {
    "malformed decision id": (lambda d: ("not-a-decision-id", d["dear"]), {}, "malformed"),
    "unknown decision id": (lambda d: (uuid.uuid4().hex, d["dear"]), {}, "unknown decision id"),
    "unknown run id": (
        lambda d: (str(uuid.uuid4()), d["dear"]),
        {},
        "no decision was recorded for run id",
    ),
    "the same decision twice": (lambda d: (d["cheap"], d["cheap"]), {}, "same decision"),
    "the same model twice": (
        lambda d: (d["cheap"], d["cheap_again"]),
        {},
        "two different models",
    ),
    "decisions of two users": (lambda d: (d["cheap"], d["bob"]), {}, "different users"),
    "another user's decisions": (
        lambda d: (d["cheap"], d["dear"]),
        {"user_id": "bob"},
        "same user's decisions",
    ),
    "invalid user id": (lambda d: (d["cheap"], d["dear"]), {"user_id": "al\nice"}, "user id"),
    "answers to different queries": (
        lambda d: (d["cheap"], d["other_query"]),
        {},
        "different queries",
    ),
    "a query that is not the decisions' query": (
        lambda d: (d["cheap"], d["dear"]),
        {"query": "something else"},
        "different queries",
    ),
    "oversized query": (
        lambda d: (Response(ARMS[0], 0.001), Response(ARMS[2], 0.01)),
        {"query": "x" * (MAX_TEXT_CHARS + 1)},
        "at most",
    ),
    "query bytes that are not UTF-8": (
        lambda d: (Response(ARMS[0], 0.001), Response(ARMS[2], 0.01)),
        {"query": b"\xff\xfe caf\xe9"},
        "not valid UTF-8",
    ),
    "query with a lone surrogate": (
        lambda d: (Response(ARMS[0], 0.001), Response(ARMS[2], 0.01)),
        {"query": "tell me \ud800 more"},
        "lone surrogate",
    ),
    "oversized answer text": (
        lambda d: (Response(ARMS[0], 0.001, text="y" * (MAX_TEXT_CHARS + 1)), d["dear"]),
        {},
        "at most",
    ),
    "answer text with a lone surrogate": (
        lambda d: (Response(ARMS[0], 0.001, text="ok\udc00"), d["dear"]),
        {},
        "lone surrogate",
    ),
    "negative cost": (lambda d: (Response(ARMS[0], -1.0), d["dear"]), {}, "in US dollars"),
    "no query and no decision": (
        lambda d: (Response(ARMS[0], 0.001), Response(ARMS[2], 0.01)),
        {},
        "query text is needed",
    ),
    "not an answer at all": (lambda d: (42, d["dear"]), {}, "must be a decision id"),
}


@pytest.mark.parametrize("case", sorted(BAD_FEEDBACK))
def test_bad_feedback_is_refused_and_changes_nothing(service, decided, case):
    make, kwargs, message = BAD_FEEDBACK[case]
    winner, loser = make(decided)
    before = _state(service)
    events = []
    service.add_listener(events.append)
    with pytest.raises(FeedbackError, match=message):
        service.record_preference(winner, loser, **kwargs)
    assert _state(service) == before
    assert events == []


def test_valid_feedback_after_refusals_is_recorded(service, decided):
    record = service.record_preference(decided["dear"], decided["cheap"])
    assert (record.winner, record.loser, record.user_id) == (ARMS[2], ARMS[0], "alice")
    assert service.store.user_version("alice") > 0
    assert service.preference("alice").n_comparisons == 1


def test_utf8_bytes_query_is_decoded_for_external_answers(service):
    record = service.record_preference(
        Response(ARMS[2], 0.01),
        Response(ARMS[0], 0.001),
        user_id="carol",
        query="Résumé of Hamlet?".encode(),
    )
    assert record.source == "external"
    assert service.store.comparisons("carol")[0].query_hash == record.query_hash


def test_decide_refuses_text_that_cannot_be_sent_and_stores_nothing(service):
    before = _state(service)
    with pytest.raises(ConfigError, match="lone surrogate"):
        service.decide("broken \ud800 text", "alice")
    with pytest.raises(ConfigError, match="prompt text"):
        service.decide(b"bytes", "alice")
    with pytest.raises(FeedbackError, match="invalid user id"):
        service.decide(QUERY, "bad\nuser")
    assert _state(service) == before


def test_suggest_comparison_picks_one_of_the_queries_and_a_pair_it_values(service, router):
    queries = [QUERY, "What is 2 + 2?", "Write a Python function that reverses a linked list."]
    index, pair = service.suggest_comparison(queries, "carol")
    assert 0 <= index < len(queries)
    assert len(set(pair)) == 2 and set(pair) <= set(ARMS)
    # the choice is the argmax of the router's value of information over every query and pair
    pref = service.preference("carol")
    emb = router.embedder.encode(queries)
    from metarouter.pricing import estimate_tokens

    tokens = [estimate_tokens(q) for q in queries]
    values, pairs = router.comparison_values(emb, tokens, ARMS, pref, traffic=(emb, tokens))
    best = max(
        ((values[q, p], q, p) for q in range(len(queries)) for p in range(len(pairs))),
        key=lambda t: t[0],
    )
    assert index == best[1] and pair == tuple(ARMS[i] for i in pairs[best[2]])
    with pytest.raises(ConfigError, match="non-empty list"):
        service.suggest_comparison("a single string", "carol")
    with pytest.raises(ConfigError, match="two eligible"):
        service.suggest_comparison(queries, "carol", exclude=ARMS[1:])


def test_suggest_comparison_values_pairs_on_the_users_routed_traffic(service, router, monkeypatch):
    """The value of a comparison is measured on the user's last routed queries (with their
    token counts); a user with none yet is read from their compared queries."""
    from metarouter.pricing import estimate_tokens

    seen = []
    values_of = router.comparison_values

    def spy(*args, **kwargs):
        seen.append(kwargs["traffic"])
        return values_of(*args, **kwargs)

    monkeypatch.setattr(router, "comparison_values", spy)
    routed = [f"Translate '{w}' into French and German." for w in ("cat", "house", "tree")]
    for k, q in enumerate(routed):
        service.decide(q, "gail", forced=ARMS[k % 3])
    asked = ["What is 2 + 2?"]
    service.suggest_comparison(asked, "gail")
    emb, tokens = seen[-1]
    recent = service.store.recent_queries("gail")
    assert len(recent) == 3 and [q.prompt_tokens for q in recent] == [
        estimate_tokens(q) for q in routed[::-1]
    ]
    np.testing.assert_allclose(emb[0], router.embedder.encode(asked)[0], atol=1e-6)
    np.testing.assert_allclose(emb[1:], np.stack([q.embedding for q in recent]), atol=1e-6)
    assert list(tokens) == [estimate_tokens(asked[0])] + [q.prompt_tokens for q in recent]
    # a user who has only compared: their compared queries are the traffic
    cheap = service.decide(QUERY, "hal", forced=ARMS[0])
    dear = service.decide(QUERY, "hal", forced=ARMS[2])
    service.record_preference(dear, cheap)
    monkeypatch.setattr(service.store, "recent_queries", lambda user_id, limit=40: [])
    service.suggest_comparison(asked, "hal")
    emb, tokens = seen[-1]
    assert len(emb) == 2 and tokens[1] == service.store.comparisons("hal")[0].prompt_tokens


def test_a_users_preference_reads_their_novelty_from_their_recent_traffic(service, router):
    queries = [f"Integrate x^{k} * exp(x) from 0 to 1 and explain each step." for k in range(8)]
    for k, q in enumerate(queries):
        service.decide(q, "dana", forced=ARMS[k % 3])
    cheap = service.decide(queries[0], "dana", forced=ARMS[0])
    dear = service.decide(queries[0], "dana", forced=ARMS[2])
    service.record_preference(dear, cheap)
    pref = service.preference("dana")
    recent = np.stack(service.store.recent_embeddings("dana"))
    assert len(recent) == 10
    comps = service._usable("dana", service.store.comparisons("dana"))
    with_traffic = router.adapt(comps, arms=list(service.descriptors.values()), traffic=recent)
    assert pref.novelty == pytest.approx(with_traffic.novelty)
    assert pref.novelty != pytest.approx(router.adapt(comps).novelty)


def test_a_store_that_cannot_give_recent_traffic_still_gives_a_preference(
    service, router, monkeypatch
):
    from metarouter.errors import StoreError

    cheap = service.decide(QUERY, "erin", forced=ARMS[0])
    dear = service.decide(QUERY, "erin", forced=ARMS[2])

    def broken(user_id, limit=40):
        raise StoreError("database is locked")

    monkeypatch.setattr(service.store, "recent_queries", broken)
    before = service.store_health().failures
    service.record_preference(dear, cheap)
    pref = service.preference("erin")
    comps = service._usable("erin", service.store.comparisons("erin"))
    # the compared query alone carries the evidence, as without a store
    assert pref.novelty == pytest.approx(router.adapt(comps).novelty)
    assert pref.n_comparisons == 1
    assert service.store_health().failures > before


def test_a_new_users_preference_is_reread_at_doubling_reads():
    from metarouter.service import _refresh_due

    assert [r for r in range(100) if _refresh_due(r)] == [1, 2, 4, 8, 16, 32, 64, 96]


def test_a_new_users_billed_calls_calibrate_their_costs_before_any_comparison(service, router):
    from metarouter.pricing import estimate_tokens
    from metarouter.types import BilledCall

    dear = service.descriptors[ARMS[2]].cost
    tokens = estimate_tokens(QUERY)
    expected = dear.per_call_usd + dear.per_input_token_usd * tokens
    for _ in range(3):  # long answers: billed at ten times the cost model's expectation
        decision = service.decide(QUERY, "hank", forced=ARMS[2])
        service.complete(decision, model=ARMS[2], cost_usd=10 * expected)
    service.decide(QUERY, "hank", forced=ARMS[0])  # routed, never completed: not a bill
    # another instance on the same store (a new process) reads the bills at the first read
    fresh = RoutingService(ARMS, router=router, store=service.store)
    pref = fresh.preference("hank")
    want = router.adapt(
        [],
        arms=list(fresh.descriptors.values()),
        billed=[BilledCall(ARMS[2], tokens, 10 * expected)] * 3,
    )
    assert pref.n_comparisons == 0
    assert pref.cost_factors == pytest.approx(want.cost_factors)
    assert pref.cost_factor_for(ARMS[2]) > 3.0
    routed = fresh.decide(QUERY, "hank")
    plain = router.route(QUERY, [fresh.descriptors[a] for a in ARMS], router.prior())
    assert routed.routing.expected_costs_usd[ARMS[2]] == pytest.approx(
        plain.expected_costs_usd[ARMS[2]] * pref.cost_factor_for(ARMS[2])
    )
    # a user with no bills keeps the prior; so does a store that cannot give them
    assert fresh.preference("ivy").cost_factors == {}


def test_a_new_users_cost_calibration_follows_their_bills_in_the_same_process(service):
    assert service.preference("jan").cost_factor_for(ARMS[2]) == 1.0  # no calls yet
    for _ in range(4):
        decision = service.decide(QUERY, "jan", forced=ARMS[2])
        service.complete(decision, model=ARMS[2], cost_usd=0.05)
    seen = [service.preference("jan").cost_factor_for(ARMS[2]) for _ in range(8)]
    assert seen[-1] > 5.0  # re-read at the doubling reads: the bills reached the preference
