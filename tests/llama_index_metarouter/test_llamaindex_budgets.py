"""``MetaRouterLLM.budgets``: the core's budgets, honoured and charged on every call."""

from __future__ import annotations

import pytest
from llama_index.core.base.llms.types import ChatMessage
from metarouter.errors import BudgetExceededError


def test_a_budget_set_through_the_llm_is_charged_and_enforced(make_router, mock_candidates):
    llm = make_router(mock_candidates(), user_id="alice")
    assert llm.budgets is llm.service.budgets
    llm.budgets.set(1.0, user="alice", per="week", on_exhausted="cheapest")
    response = llm.chat([ChatMessage(role="user", content="What is the capital of France?")])
    info = response.additional_kwargs["metarouter"]
    assert info["budget"]["scope"] == "user"
    state = llm.budgets.states("alice")[0]
    assert state.calls == 1 and state.spent_usd == pytest.approx(info["cost_usd"])
    llm.budgets.set(1.0, user="alice", per="week", on_exhausted="error")
    llm.budgets.charge("f" * 32, "alice", "gemma-2-9b-it", 2.0, is_estimate=False)
    with pytest.raises(BudgetExceededError):
        llm.complete("What is 2 + 2?")
