"""``MetaRouterChat`` when the store fails, and feedback that is one judgement per pair.

Issue 15, items 3 and 4, through the adapter: a store whose write lock another process holds
past the busy timeout never stops a call (it is routed and answered, the decision kept and
written later); ``compare().prefer(0)`` twice then ``prefer(1)`` leaves one comparison.
"""

from __future__ import annotations

import sqlite3

import pytest
from langchain_core.messages import AIMessage
from lc_setup import arm_specs
from metarouter.service import RoutingService
from metarouter.store.sql import SQLStore

from langchain_metarouter import MetaRouterChat

PROOF = "Prove that the square root of 2 is irrational."


@pytest.fixture
def locked(tmp_path, lc_router, candidates):
    """A router on a store, and a way to hold that store's write lock from elsewhere."""
    path = tmp_path / "s.db"
    store = SQLStore(path, busy_timeout=0.3)
    store.migrate()
    service = RoutingService(arm_specs(), router=lc_router, store=store)
    holder = sqlite3.connect(path, isolation_level=None)
    yield MetaRouterChat(candidates=candidates, service=service), holder
    holder.close()
    store.close()


def test_a_locked_store_does_not_stop_the_call(locked):
    router, holder = locked
    holder.execute("BEGIN IMMEDIATE")  # another process stuck inside a write
    answer = router.invoke(PROOF, config={"configurable": {"user_id": "ann"}})
    streamed = list(router.stream(PROOF, config={"configurable": {"user_id": "ann"}}))
    holder.execute("ROLLBACK")
    assert isinstance(answer, AIMessage) and answer.content
    assert streamed and "".join(str(c.content) for c in streamed)
    decision_id = answer.response_metadata["metarouter"]["decision_id"]
    health = router.service.store_health()
    assert health.failures >= 1 and health.pending == 2
    router.service.flush()
    stored = router.service.store.get_decision(decision_id)
    assert stored.chosen == answer.response_metadata["metarouter"]["chosen_model"]


def test_prefer_twice_then_the_other_leaves_one_comparison(locked):
    router, _ = locked
    pair = router.compare(PROOF, user_id="bea")
    pair.prefer(0)
    pair.prefer(0)
    last = pair.prefer(1)
    (kept,) = router.service.store.comparisons("bea")
    assert kept.comparison_id == last.comparison_id and kept.winner == pair.models[1]
    assert router.preference("bea").n_comparisons == 1
