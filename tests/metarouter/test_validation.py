"""Numbers and choices checked at the boundary, and errors that never echo a huge value."""

from __future__ import annotations

import numpy as np
import pytest
from metarouter.errors import ConfigError, FeedbackError
from metarouter.pricing import Price
from metarouter.store.records import validate_user_id
from metarouter.types import Comparison
from metarouter.validation import MAX_ECHO_CHARS, excerpt, preferred_index


@pytest.mark.parametrize("value", [np.float32(0.2), np.float64(0.2), np.int64(1), 0.2, 3])
def test_a_price_takes_any_real_number(value):
    price = Price(value, value)
    assert price.input_per_million == pytest.approx(float(value))
    assert isinstance(price.input_per_million, float)


@pytest.mark.parametrize(
    "value", [True, np.bool_(False), 1e300, float("inf"), float("nan"), -0.1, "0.2", None, 1j]
)
def test_a_price_refuses_what_is_not_a_sane_amount(value):
    with pytest.raises(ConfigError, match=r"Price\.input_per_million") as refused:
        Price(value, 1.0)
    assert "Fix:" in str(refused.value)


def test_a_huge_price_never_reaches_routing(default_router):
    from metarouter.service import ArmSpec, RoutingService
    from metarouter.store import SQLStore

    with pytest.raises(ConfigError, match="USD per 1M tokens"):
        RoutingService(
            [ArmSpec("my-model", price=Price(1e300, 1.0), like="gemma-2-9b-it"), "gemma-2-9b-it"],
            router=default_router,
            store=SQLStore(":memory:"),
        )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("winner_cost_usd", 3.5e38),
        ("loser_cost_usd", float("nan")),
        ("winner_cost_usd", True),
        ("tokens", -3),
        ("tokens", 2.5),
        ("tokens", 10**12),
    ],
)
def test_a_comparison_refuses_numbers_out_of_bounds(field, value):
    fields = {
        "winner": "a",
        "loser": "b",
        "winner_cost_usd": 0.001,
        "loser_cost_usd": 0.002,
        "query": "q",
    }
    fields[field] = value
    with pytest.raises(FeedbackError, match=rf"Comparison\.{field}"):
        Comparison(**fields)


def test_a_comparison_takes_numpy_numbers():
    c = Comparison("a", "b", np.float32(0.001), np.int64(0), query="q", tokens=np.int64(12))
    assert (c.winner_cost_usd, c.loser_cost_usd, c.tokens) == (pytest.approx(0.001), 0.0, 12)


def test_errors_echo_at_most_a_short_excerpt():
    huge = "x" * 10_000_000
    text = excerpt(huge)
    assert len(text) < MAX_ECHO_CHARS + 40 and "10,000,000 characters" in text
    with pytest.raises(FeedbackError) as refused:
        validate_user_id(huge)
    assert len(str(refused.value)) < 400
    with pytest.raises(ConfigError) as refused_price:
        Price("9" * 1_000_000, 1.0)
    assert len(str(refused_price.value)) < 400


def test_a_huge_user_id_in_a_routed_call_is_not_echoed_whole(default_router):
    from metarouter.service import RoutingService
    from metarouter.store import SQLStore

    service = RoutingService(
        ["gemma-2-9b-it", "qwen2.5-7b-instruct"], router=default_router, store=SQLStore(":memory:")
    )
    with pytest.raises(FeedbackError) as refused:
        service.decide("hello", "u" * 10_000_000)
    assert len(str(refused.value)) < 400


LABELS = [("gemma-2-9b-it", "a" * 32), ("qwen2.5-7b-instruct", "b" * 32)]


@pytest.mark.parametrize(
    ("winner", "index"),
    [(0, 0), (1, 1), (np.int64(1), 1), ("qwen2.5-7b-instruct", 1), ("a" * 32, 0)],
)
def test_the_preferred_answer_is_a_position_or_a_label(winner, index):
    assert preferred_index(winner, LABELS) == index


@pytest.mark.parametrize("winner", [True, False, 1.0, 0.0, 2, -1, "gpt-4o", None, [0]])
def test_the_preferred_answer_refuses_anything_ambiguous(winner):
    with pytest.raises(FeedbackError, match="prefer\\(\\) takes the position"):
        preferred_index(winner, LABELS)
