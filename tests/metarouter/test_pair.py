"""What ``prefer()`` accepts, one rule for every adapter (``metarouter.feedback.Pair``)."""

from __future__ import annotations

import numpy as np
import pytest
from metarouter.errors import FeedbackError
from metarouter.feedback import Pair, default_feedback_user
from metarouter.service import Response

PAIR = Pair("Why?", "ann", ("cheap", "dear"), ("a" * 32, "b" * 32))


@pytest.mark.parametrize(
    ("winner", "expected"),
    [(0, 0), (1, 1), (np.int64(1), 1), ("dear", 1), ("cheap", 0), ("b" * 32, 1)],
)
def test_a_position_a_model_name_or_a_decision_id_names_the_winner(winner, expected):
    assert PAIR.index(winner) == expected
    assert PAIR.choose(winner) == (PAIR.decision_ids[expected], PAIR.decision_ids[1 - expected])


@pytest.mark.parametrize("winner", [True, False, 1.0, 0.0, 2, -1, "gpt-17", None, b"dear"])
def test_anything_else_is_refused_saying_what_is_taken(winner):
    with pytest.raises(FeedbackError, match=r"prefer\(\) takes the position .*'cheap', 'dear'"):
        PAIR.choose(winner)


def test_the_adapters_user_applies_only_when_no_side_was_routed():
    external = Response("m", 0.1)
    assert default_feedback_user((external, Response("n", 0.2)), "ann") == "ann"
    assert default_feedback_user((external, "a" * 32), "ann") is None
    assert (
        default_feedback_user((external, Response("n", 0.2, decision_id="b" * 32)), "ann") is None
    )
