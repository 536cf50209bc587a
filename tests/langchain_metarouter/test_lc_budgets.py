"""``MetaRouterChat.budgets``: the core's budgets, honoured and charged on every call."""

from __future__ import annotations

import pytest
from lc_setup import PRICES
from metarouter.errors import BudgetExceededError

from langchain_metarouter import MetaRouterChat

PROOF = "Prove that there are infinitely many prime numbers."


def test_a_budget_set_through_the_chat_model_is_charged_and_enforced(candidates, service):
    llm = MetaRouterChat(candidates=candidates, service=service, user_id="alice")
    assert llm.budgets is service.budgets
    llm.budgets.set(1.0, user="alice", per="day")
    answer = llm.invoke(PROOF)
    data = answer.response_metadata["metarouter"]
    assert data["budget"]["scope"] == "user" and data["budget"]["name"] == "alice"
    state = llm.budgets.states("alice")[0]
    assert state.calls == 1 and state.spent_usd == pytest.approx(data["cost_usd"])
    usage = answer.usage_metadata
    assert data["cost_usd"] == pytest.approx(
        PRICES[data["model"]].cost(usage["input_tokens"], usage["output_tokens"])
    )
    llm.budgets.set(data["cost_usd"] / 2, user="alice", per="day")  # already spent
    with pytest.raises(BudgetExceededError, match="user alice budget"):
        llm.invoke(PROOF)
