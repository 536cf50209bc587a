"""One user, two frameworks: feedback given through the LlamaIndex adapter shapes that user's
routing in the LangChain adapter (and back), through the shared preference store, and never
touches another user's routing.

LangChain candidates are the LangChain tests' deterministic ``ScriptedChatModel``; LlamaIndex
candidates replay the two RouterBench models' real answers. Both adapters describe the same two
arms, so their routing is comparable decision for decision.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest
from llamaindex_tooling import CHEAP, RECORDED_ARMS, STRONG, RecordedLLM
from metarouter.service import ArmSpec, RoutingService
from metarouter.store.sql import SQLStore

from llama_index_metarouter import ROUTING_KEY, MetaRouterLLM

pytest.importorskip("langchain_core", reason="the cross-framework tests need the langchain extra")
from langchain_metarouter import MetaRouterChat

ARMS = [
    ArmSpec(name, price=spec["price"], like=spec["like"]) for name, spec in RECORDED_ARMS.items()
]
LC_TESTS = Path(__file__).resolve().parents[1] / "langchain_metarouter"


def _scripted_chat_model() -> type:
    """``ScriptedChatModel`` from the LangChain adapter's test tooling (a plain module there)."""
    if str(LC_TESTS) not in sys.path:
        sys.path.append(str(LC_TESTS))
    return importlib.import_module("lc_scripted_models").ScriptedChatModel


def _langchain_router(**kwargs: Any) -> MetaRouterChat:
    scripted = _scripted_chat_model()
    return MetaRouterChat(
        candidates={name: scripted(model_name=name) for name in RECORDED_ARMS}, **kwargs
    )


def _llamaindex_candidates(routerbench) -> dict[str, RecordedLLM]:
    return {name: RecordedLLM(name, routerbench.answers[name]) for name in RECORDED_ARMS}


def _lc_route(router: MetaRouterChat, prompt: str, user: str) -> dict[str, Any]:
    message = router.invoke(prompt, config={"configurable": {"user_id": user}})
    return message.response_metadata["metarouter"]


def test_llamaindex_feedback_reroutes_that_user_in_langchain_via_the_store_file(
    meta_router, tmp_path, routerbench
):
    # two adapters, two services, one SQLite file: as two apps (or processes) would share it
    path = tmp_path / "preferences.db"
    llama = MetaRouterLLM(
        _llamaindex_candidates(routerbench), arms=ARMS, router=meta_router, store=path
    )
    chain = _langchain_router(arms=ARMS, router=meta_router, store=SQLStore(path))
    probe = routerbench.prompts[:6]

    def chain_routes(user: str) -> list[str]:
        return [_lc_route(chain, p, user)["model"] for p in probe]

    before = chain_routes("picky")
    assert before == chain_routes("bystander")
    # the frameworks agree: same store, same question, same decision
    assert before == [
        llama.complete(p, user_id="picky").additional_kwargs[ROUTING_KEY]["model"] for p in probe
    ]
    assert before.count(STRONG) < len(probe), "the default taste is not already all-GPT-4"

    # "picky" tells the LlamaIndex app, six times, that GPT-4's answer was worth its price
    for prompt in routerbench.prompts[10:16]:
        llama.compare(prompt, user_id="picky").prefer(STRONG)

    after = chain_routes("picky")
    assert after.count(STRONG) > before.count(STRONG)
    assert after == [STRONG] * len(probe)
    assert chain.preference("picky").n_comparisons == 6
    assert chain_routes("bystander") == before, "another user's routing is untouched"
    assert chain.preference("bystander").n_comparisons == 0
    # the LangChain calls were recorded in the same store the LlamaIndex app reads
    decision_id = _lc_route(chain, probe[0], "picky")["decision_id"]
    assert llama.service.store.get_decision(decision_id).chosen == STRONG


def test_langchain_feedback_reaches_llamaindex_through_a_shared_service(
    meta_router, store, routerbench
):
    service = RoutingService(ARMS, router=meta_router, store=store)
    llama = MetaRouterLLM(_llamaindex_candidates(routerbench), service=service)
    chain = _langchain_router(service=service)
    events: list[Any] = []
    listener = llama.add_feedback_listener(events.append)  # a listener on the shared service
    probe = routerbench.prompts[:4]

    def cheap_scores(user: str) -> list[float]:
        return [
            llama.complete(p, user_id=user).additional_kwargs[ROUTING_KEY]["scores"][CHEAP]
            for p in probe
        ]

    assert cheap_scores("thrifty") == pytest.approx(cheap_scores("bystander"))

    # "thrifty" tells the LangChain app, six times, that Mistral's answer was good enough
    for prompt in routerbench.prompts[10:16]:
        chain.compare(prompt, user_id="thrifty").prefer(CHEAP)

    assert llama.preference("thrifty").n_comparisons == 6
    assert [e.kind for e in events].count("comparison_recorded") == 6
    assert {e.user_id for e in events} == {"thrifty"}
    thrifty, bystander = cheap_scores("thrifty"), cheap_scores("bystander")
    assert all(t > b for t, b in zip(thrifty, bystander, strict=True)), (thrifty, bystander)
    assert llama.preference("bystander").n_comparisons == 0
    llama.remove_feedback_listener(listener)

    # decision ids are interchangeable: compare a LangChain answer with a LlamaIndex one
    prompt = routerbench.prompts[16]
    from_chain = _lc_route(chain, prompt, "thrifty")
    other = STRONG if from_chain["model"] == CHEAP else CHEAP
    from_llama = llama.complete(prompt, user_id="thrifty", model=other)
    record = llama.record_preference(from_llama, from_chain["decision_id"])
    assert (record.winner, record.loser) == (other, from_chain["model"])
    assert record.user_id == "thrifty" and record.source == "decisions"
