"""Worker process of the budget concurrency test (importable by spawned children).

Each worker plays one app instance serving calls of a team's users, one call at a time: it
loads the bundled router, routes each call through :meth:`RoutingService.decide` (the budget
check, pacing, the decision record) and reports its billed cost through
:meth:`RoutingService.complete` (the charge), until the team's budget refuses a call.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

#: The candidates every worker routes between: bundled catalog models, cheap to dear, with the
#: prices (USD per 1M tokens) of the catalog's cost model, so a call's billed cost is known.
PRICES = {
    "gemma-2-9b-it": (0.1, 0.1),
    "qwen2.5-7b-instruct": (0.2, 0.2),
    "llama-3.1-nemotron-51b-instruct": (0.9, 0.9),
}
QUERIES = (
    "What is the capital of Peru?",
    "Prove that there are infinitely many primes.",
    "Write a haiku about autumn rain.",
    "Explain the difference between TCP and UDP in two sentences.",
    "Solve for x: 3x + 7 = 22.",
    "Summarise the causes of the First World War.",
)


def team_worker(
    url: str, worker: int, members: list[str], out: str, start: Any, max_calls: int
) -> None:
    os.environ["METAROUTER_NUM_THREADS"] = "1"  # 8 of these share the machine's cores
    from metarouter.errors import BudgetExceededError
    from metarouter.pricing import Price
    from metarouter.router import MetaRouter
    from metarouter.service import ArmSpec, RoutingService
    from metarouter.store import SQLStore

    rng = random.Random(worker)
    router = MetaRouter.default()
    router.route(QUERIES[0], list(PRICES))  # load the embedder before the race starts
    store = SQLStore(url)
    arms = [ArmSpec(name, price=Price(*price)) for name, price in PRICES.items()]
    service = RoutingService(arms, router=router, store=store)
    user = members[worker % len(members)]
    charged: list[tuple[str, float]] = []
    policies: list[str | None] = []
    refused = 0
    start.wait(300)
    for _ in range(max_calls):
        try:
            decision = service.decide(rng.choice(QUERIES), user)
        except BudgetExceededError:
            refused += 1
            break
        assert decision.budget is not None, "the team budget applies to every member"
        policies.append(decision.budget["policy"])
        cost = service.complete(
            decision,
            model=decision.model,
            input_tokens=rng.randint(10, 40),
            output_tokens=rng.randint(100, 400),
        )
        assert cost is not None
        charged.append((decision.decision_id, cost))
    assert service.store_health().failures == 0, service.store_health()
    store.close()
    Path(out).write_text(
        json.dumps({"charged": charged, "refused": refused, "policies": policies}),
        encoding="utf-8",
    )
