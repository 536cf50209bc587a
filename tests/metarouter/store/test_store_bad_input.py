"""Bad input to the store: each case raises a clear error and changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
from _store_helpers import MODELS, make_comparison, make_decision, snapshot
from metarouter.errors import FeedbackError
from metarouter.store.records import MAX_TEXT_CHARS, check_text


@pytest.fixture
def seeded(store):
    """A store with decisions and comparisons of alice and bob."""
    made = {}
    for user in ("alice", "bob"):
        a = make_decision(user, chosen=MODELS[0])
        b = make_decision(user, chosen=MODELS[2])
        store.record_decision(a)
        store.record_decision(b)
        store.record_comparison(make_comparison(user, a, b))
        made[user] = (a, b)
    return store, made


BAD_DECISIONS = {
    "malformed decision id": ({"decision_id": "not-an-id"}, "malformed decision id"),
    "uppercase decision id": ({"decision_id": "A" * 32}, "malformed decision id"),
    "user id with a newline": ({"user_id": "bob\nsmith"}, "invalid user id"),
    "empty user id": ({"user_id": ""}, "invalid user id"),
    "oversized user id": ({"user_id": "u" * 129}, "invalid user id"),
    "user id not a string": ({"user_id": 42}, "invalid user id"),
    "malformed query hash": ({"query_hash": "abc"}, "malformed query hash"),
    "NaN in the embedding": ({"embedding": np.full(384, np.nan)}, "NaN or infinite"),
    "2-d embedding": ({"embedding": np.zeros((2, 384))}, "1-d vector"),
    "empty embedding": ({"embedding": np.zeros(0)}, "1-d vector"),
    "negative tokens": ({"prompt_tokens": -1}, "prompt_tokens"),
    "negative cost": ({"expected_cost_usd": -0.1}, "expected_cost_usd"),
    "infinite real cost": ({"cost_usd": float("inf")}, "cost_usd"),
    "no candidates": ({"candidates": ()}, "candidates"),
    "duplicate candidates": ({"candidates": (MODELS[0], MODELS[0])}, "duplicates"),
    "oversized model name": ({"chosen": "m" * 300}, "at most 256"),
    "lone surrogate in model name": ({"chosen": "gpt\ud800"}, "lone surrogate"),
    "control character in model name": ({"chosen": "gpt\x00-4"}, "control characters"),
    "model name as bytes": ({"chosen": b"gpt-4"}, "non-empty string"),
    "oversized metadata": ({"metadata": {"note": "x" * (MAX_TEXT_CHARS + 1)}}, "at most"),
    "lone surrogate in metadata": ({"metadata": {"note": "bad \udc80 text"}}, "lone surrogate"),
    "NaN in metadata": ({"metadata": {"x": float("nan")}}, "not JSON-serialisable"),
    "oversized run id": ({"run_id": "r" * 65}, "at most 64"),
    "NaN score": ({"scores": {MODELS[0]: float("nan")}}, "finite number"),
    "negative time": ({"created_at": -5.0}, "created_at"),
}


@pytest.mark.parametrize("case", sorted(BAD_DECISIONS))
def test_a_bad_decision_is_refused_and_changes_nothing(seeded, case):
    store, _ = seeded
    overrides, message = BAD_DECISIONS[case]
    before = snapshot(store)
    overrides = dict(overrides)
    user = overrides.pop("user_id", "alice")
    with pytest.raises(FeedbackError, match=message):
        store.record_decision(make_decision(user, **overrides))
    assert snapshot(store) == before


def _bad_comparisons(made):
    a, b = made["alice"]
    bob_a, _ = made["bob"]
    other_query = make_decision("alice", query="another question", chosen=MODELS[1])
    return {
        "malformed comparison id": ({"comparison_id": "123"}, "malformed comparison id"),
        "malformed winner decision id": (
            {"winner_decision_id": "xyz"},
            "malformed winner decision id",
        ),
        "unknown winner decision id": ({"winner_decision_id": "0" * 32}, "unknown decision id"),
        "unknown loser decision id": ({"loser_decision_id": "1" * 32}, "unknown decision id"),
        "same model on both sides": ({"loser": a.chosen}, "two different models"),
        "same decision on both sides": (
            {"loser_decision_id": a.decision_id},
            "same decision",
        ),
        "another user's decision": (
            {"loser_decision_id": bob_a.decision_id},
            "belongs to another user",
        ),
        "a decision for another query": (
            {"loser_decision_id": other_query.decision_id},
            "another query",
        ),
        "invalid user id": ({"user_id": "alice\x00bob"}, "invalid user id"),
        "oversized winner name": ({"winner": "w" * 257}, "at most 256"),
        "lone surrogate in loser name": ({"loser": "\udfffmodel"}, "lone surrogate"),
        "negative cost": ({"winner_cost_usd": -1.0}, "winner_cost_usd"),
        "NaN cost": ({"loser_cost_usd": float("nan")}, "loser_cost_usd"),
        "unknown source": ({"source": "guess"}, "unknown comparison source"),
        "embedding of strings": ({"embedding": np.array(["a", "b"])}, "numeric vector"),
        "bool tokens": ({"prompt_tokens": True}, "prompt_tokens"),
    }, (a, b, other_query)


CASES = sorted(
    _bad_comparisons(
        {
            "alice": (make_decision("alice"), make_decision("alice")),
            "bob": (make_decision("bob"), None),
        }
    )[0]
)


@pytest.mark.parametrize("case", CASES)
def test_a_bad_comparison_is_refused_and_changes_nothing(seeded, case):
    store, made = seeded
    cases, (a, b, other_query) = _bad_comparisons(made)
    store.record_decision(other_query)
    overrides, message = cases[case]
    before = snapshot(store)
    overrides = dict(overrides)
    user = overrides.pop("user_id", "alice")
    with pytest.raises(FeedbackError, match=message):
        store.record_comparison(make_comparison(user, a, b, **overrides))
    assert snapshot(store) == before


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.get_decision("nope"), "malformed decision id"),
        (lambda s: s.comparisons("bad\tuser"), "invalid user id"),
        (lambda s: s.user_version(""), "invalid user id"),
        (lambda s: s.delete_user("../etc\x00"), "invalid user id"),
        (lambda s: list(s.export_user("x" * 200)), "invalid user id"),
        (lambda s: s.cached_preference("alice", ""), "router id"),
        (lambda s: s.find_decision("r" * 100), "at most 64"),
        (lambda s: s.complete_decision("0" * 32, chosen="", cost_usd=None), "non-empty"),
        (lambda s: s.complete_decision("0" * 32, chosen="m", cost_usd=-2), "cost_usd"),
    ],
)
def test_malformed_arguments_to_other_calls_are_refused_and_change_nothing(seeded, call, message):
    store, _ = seeded
    before = snapshot(store)
    with pytest.raises(FeedbackError, match=message):
        call(store)
    assert snapshot(store) == before


def test_sql_injection_attempts_are_plain_data(store):
    evil = "x'); DROP TABLE metarouter_decisions; --"
    rec = make_decision("alice", chosen=evil, metadata={"q": evil})
    store.record_decision(rec)
    assert store.get_decision(rec.decision_id).chosen == evil
    assert store.stats()["decisions"] == 1
    assert store.find_decision(evil[:60]) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"caf\xe9", "not valid UTF-8"),
        ("ok \ud83d alone", "lone surrogate"),
        ("x" * (MAX_TEXT_CHARS + 1), "at most"),
        (12, "must be a string"),
    ],
)
def test_check_text_explains_what_is_wrong(text, message):
    with pytest.raises(FeedbackError, match=message):
        check_text("query", text)


def test_check_text_decodes_utf8_bytes():
    assert check_text("query", "café".encode()) == "café"
    assert check_text("query", "x" * (MAX_TEXT_CHARS + 5), max_chars=None) is not None
