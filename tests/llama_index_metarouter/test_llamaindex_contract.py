"""The LLM contract of ``MetaRouterLLM``: every entry point, against LlamaIndex's own mocks and a
candidate replaying real RouterBench answers.

{chat, complete} x {sync, async} x {stream, no stream}, each checked for: the chosen candidate's
answer passed through unchanged, real dispatch to the candidate's matching method (no fake async,
no flattened streams), routing data in ``additional_kwargs``, and the decision recorded in the
store with the real cost.
"""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.llms.mock import MockFunctionCallingLLM, MockLLM
from llamaindex_tooling import CHEAP, IDS, RECORDED_ARMS, STRONG, VARIANTS, call, method_name

from llama_index_metarouter import ROUTING_KEY, Candidate


@pytest.mark.parametrize(("api", "mode", "stream"), VARIANTS, ids=IDS)
async def test_recorded_candidates_answer_with_the_chosen_models_real_response(
    api, mode, stream, make_router, recorded_candidates, routerbench
):
    candidates = recorded_candidates()
    router = make_router(candidates)
    prompt = routerbench.prompts[0]

    text, last, chunks = await call(router, api, mode, stream, prompt)

    info = last.additional_kwargs[ROUTING_KEY]
    model = info["model"]
    assert model in RECORDED_ARMS
    assert text == routerbench.answers[model][prompt]
    if stream:
        assert chunks > 1, "a recorded answer streams word by word"
        final = last.message.content if api == "chat" else last.text
        assert final == text, "the last chunk carries the whole answer"
    # dispatched to the candidate's own matching method, and only to the chosen one
    assert candidates[model].llm.calls == [method_name(api, mode, stream)]
    other = CHEAP if model == STRONG else STRONG
    assert candidates[other].llm.calls == []


@pytest.mark.parametrize(("api", "mode", "stream"), VARIANTS, ids=IDS)
async def test_routing_data_and_real_cost_are_attached_and_stored(
    api, mode, stream, make_router, recorded_candidates, routerbench
):
    router = make_router(recorded_candidates())
    prompt = routerbench.prompts[1]

    _, last, _ = await call(router, api, mode, stream, prompt)

    info = last.additional_kwargs[ROUTING_KEY]
    assert len(info["decision_id"]) == 32
    assert info["user_id"] == "tester"
    assert info["reason"] == "routed" and info["forced"] is False
    assert info["model"] == info["chosen_model"] == info["ranking"][0]
    assert set(info["scores"]) == set(RECORDED_ARMS)
    assert sum(info["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    assert info["fallbacks"] == [] and info["cost_is_estimate"] is False
    # cost from the usage the candidate reported, at the candidate's price
    price = RECORDED_ARMS[info["model"]]["price"]
    assert info["input_tokens"] > 0 and info["output_tokens"] > 0
    assert info["cost_usd"] == pytest.approx(
        price.cost(info["input_tokens"], info["output_tokens"])
    )
    stored = router.service.store.get_decision(info["decision_id"])
    assert stored.user_id == "tester" and stored.chosen == info["model"]
    assert stored.cost_usd == pytest.approx(info["cost_usd"])


@pytest.mark.parametrize(("api", "mode", "stream"), VARIANTS, ids=IDS)
async def test_llamaindex_mocks_pass_through_unchanged(
    api, mode, stream, make_router, mock_candidates
):
    router = make_router(mock_candidates())
    prompt = "Summarise the plot of Hamlet in one sentence."

    text, last, _ = await call(router, api, mode, stream, prompt)

    model = last.additional_kwargs[ROUTING_KEY]["model"]
    expected, _, _ = await call(router.candidates[model], api, mode, stream, prompt)
    assert text == expected
    info = last.additional_kwargs[ROUTING_KEY]
    # mocks report no usage: the cost is the router's expected cost, marked as an estimate
    assert info["cost_is_estimate"] is True
    assert info["cost_usd"] == pytest.approx(info["expected_costs_usd"][model])


@pytest.mark.parametrize(("api", "mode", "stream"), VARIANTS, ids=IDS)
async def test_model_override_forces_a_candidate_and_is_reported(
    api, mode, stream, make_router, mock_candidates
):
    router = make_router(mock_candidates())
    for forced in ("gemma-2-9b-it", "qwen2.5-7b-instruct"):
        _, last, _ = await call(router, api, mode, stream, "Hello there", model=forced)
        info = last.additional_kwargs[ROUTING_KEY]
        assert (info["model"], info["forced"], info["reason"]) == (forced, True, "override")


@pytest.mark.parametrize(("api", "mode", "stream"), VARIANTS, ids=IDS)
async def test_per_call_user_id_overrides_the_instance_user(
    api, mode, stream, make_router, mock_candidates
):
    router = make_router(mock_candidates(), user_id="alice")
    _, last, _ = await call(router, api, mode, stream, "Hi", user_id="bob")
    decision_id = last.additional_kwargs[ROUTING_KEY]["decision_id"]
    assert last.additional_kwargs[ROUTING_KEY]["user_id"] == "bob"
    assert router.service.store.get_decision(decision_id).user_id == "bob"


async def test_unknown_model_override_lists_the_candidates(make_router, mock_candidates):
    from metarouter.errors import UnknownArmError

    router = make_router(mock_candidates())
    with pytest.raises(UnknownArmError, match=r"'gpt-5'.*gemma-2-9b-it.*qwen2.5-7b-instruct"):
        router.complete("Hi", model="gpt-5")


def test_candidate_kwargs_reach_the_candidate(make_router):
    seen: list[dict] = []

    def respond(messages, **kwargs):
        seen.append(kwargs)
        return ChatMessage(role="assistant", content="ok")

    router = make_router(
        {
            "gemma-2-9b-it": MockFunctionCallingLLM(response_generator=respond),
            "qwen2.5-7b-instruct": MockFunctionCallingLLM(response_generator=respond),
        }
    )
    router.chat([ChatMessage(role="user", content="Hi")], temperature=0.1, user_id="zoe")
    assert seen == [{"temperature": 0.1}], "routing keywords are consumed, the rest passed on"


# -- metadata -----------------------------------------------------------------------------------
def test_metadata_is_what_every_candidate_supports(make_router, routerbench):
    router = make_router(
        {
            STRONG: Candidate(
                _recorded(routerbench, STRONG, window=128_000), **RECORDED_ARMS[STRONG]
            ),
            CHEAP: Candidate(_recorded(routerbench, CHEAP, window=8_192), **RECORDED_ARMS[CHEAP]),
        }
    )
    meta = router.metadata
    assert meta.context_window == 8_192
    assert meta.num_output == 512
    assert meta.is_chat_model is True
    assert meta.is_function_calling_model is False
    assert STRONG in meta.model_name and CHEAP in meta.model_name


def test_function_calling_only_when_every_candidate_calls_tools(make_router):
    both = make_router(
        {"gemma-2-9b-it": MockFunctionCallingLLM(), "qwen2.5-7b-instruct": MockFunctionCallingLLM()}
    )
    mixed = make_router(
        {"gemma-2-9b-it": MockLLM(), "qwen2.5-7b-instruct": MockFunctionCallingLLM()}
    )
    assert both.metadata.is_function_calling_model is True
    assert mixed.metadata.is_function_calling_model is False
    assert mixed.metadata.is_chat_model is True  # MockLLM is not, but every LLM has chat()


def test_payload_names_candidates_and_user_but_no_secrets(make_router, mock_candidates):
    payload = make_router(mock_candidates(), user_id="alice").to_payload()
    assert payload["class_name"] == "MetaRouterLLM"
    assert payload["candidates"] == ["gemma-2-9b-it", "qwen2.5-7b-instruct"]
    assert payload["user_id"] == "alice"


def test_for_user_shares_the_service_and_routes_for_that_user(make_router, mock_candidates):
    router = make_router(mock_candidates())
    alice = router.for_user("alice")
    assert alice.service is router.service and alice.user_id == "alice"
    assert router.user_id == "tester"
    response = alice.complete("Hi")
    assert response.additional_kwargs[ROUTING_KEY]["user_id"] == "alice"


def test_invalid_user_id_is_a_config_error_that_says_how_to_fix_it(make_router, mock_candidates):
    from metarouter.errors import ConfigError, FeedbackError

    with pytest.raises(ConfigError, match=r"invalid user id .*Fix") as caught:
        make_router(mock_candidates(), user_id="tab\tseparated")
    assert not isinstance(caught.value, FeedbackError), "a call records no feedback"
    router = make_router(mock_candidates())
    with pytest.raises(ConfigError, match=r"invalid user id .*empty"):
        router.complete("Hi", user_id="")
    with pytest.raises(ConfigError, match="at most 128"):
        router.complete("Hi", user_id="u" * 129)


def _recorded(routerbench, model: str, window: int) -> Any:
    from llamaindex_tooling import RecordedLLM

    return RecordedLLM(model, routerbench.answers[model], window=window)


def test_is_a_drop_in_llamaindex_llm(make_router, mock_candidates):
    from llama_index.core.llms.function_calling import FunctionCallingLLM
    from llama_index.core.prompts import PromptTemplate

    router = make_router(mock_candidates())
    assert isinstance(router, FunctionCallingLLM)
    assert isinstance(router.candidates["gemma-2-9b-it"], MockLLM)
    # LLM.predict / stream go through chat() because the router is a chat model; the answer is
    # the routed candidate's own: MockLLM(max_tokens=8) answers "text" x 8, the function-calling
    # mock echoes the formatted prompt
    answers = {"text text text text text text text text", "Say hi"}
    assert router.predict(PromptTemplate("Say {word}"), word="hi") in answers
    assert "".join(router.stream(PromptTemplate("Say {word}"), word="hi")) in answers


def test_warm_up_routes_a_throwaway_query_and_records_nothing(make_router, mock_candidates, store):
    router = make_router(mock_candidates())
    assert router.warm_up() > 0
    assert router.warm_up("someone else") > 0
    assert store.users() == []
