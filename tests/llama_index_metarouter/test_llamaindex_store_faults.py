"""``MetaRouterLLM`` when the store fails (issue 15, item 3, through the adapter)."""

from __future__ import annotations

import sqlite3

from llamaindex_tooling import CHEAP, STRONG
from metarouter.store.sql import SQLStore

from llama_index_metarouter import ROUTING_KEY


def test_a_locked_store_does_not_stop_the_call(
    make_router, recorded_candidates, routerbench, tmp_path
):
    path = tmp_path / "locked.db"
    store = SQLStore(path, busy_timeout=0.3)
    store.migrate()
    router = make_router(recorded_candidates(), store=store)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process stuck inside a write
    answer = router.complete(routerbench.prompts[0])
    holder.execute("ROLLBACK")
    holder.close()
    assert answer.text and answer.additional_kwargs[ROUTING_KEY]["chosen_model"] in (STRONG, CHEAP)
    assert router.preference().n_comparisons == 0
    service = router.service
    assert service.store_health().pending == 1
    service.flush()
    assert store.get_decision(answer.additional_kwargs[ROUTING_KEY]["decision_id"])
    store.close()
