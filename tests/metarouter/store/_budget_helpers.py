"""Worker process of the budget concurrency test (importable by spawned children).

Each worker plays one app instance serving calls of a team's users: before a call it reads
the budgets (the admission check :meth:`RoutingService.decide` makes), and after it charges
the call's cost (what :meth:`RoutingService.complete` does), one call at a time, until a
budget says it is spent. No text is embedded and no torch is loaded.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from metarouter.budgets import Budgets
from metarouter.store import SQLStore, new_id


def team_worker(
    url: str, worker: int, members: list[str], out: str, start: Any, max_calls: int
) -> None:
    rng = random.Random(worker)
    store = SQLStore(url)
    budgets = Budgets(store)
    user = members[worker % len(members)]
    charged: list[tuple[str, float]] = []
    refused = 0
    start.wait(60)
    for _ in range(max_calls):
        check = budgets.check(user)
        assert check is not None, "the team budget applies to every member"
        if check.exhausted is not None:
            refused += 1
            break
        cost = round(rng.uniform(0.005, 0.015), 6)  # the call's billed cost
        spend_id = new_id()
        budgets.charge(spend_id, user, "gemma-2-9b-it", cost, is_estimate=rng.random() < 0.2)
        charged.append((spend_id, cost))
    store.close()
    Path(out).write_text(json.dumps({"charged": charged, "refused": refused}), encoding="utf-8")
