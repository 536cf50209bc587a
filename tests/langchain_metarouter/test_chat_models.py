"""Behaviour of ``MetaRouterChat`` beyond the standard suites: routing data, users, forcing,
fallback, capabilities, callback nesting, async and streaming."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.tools import tool
from langchain_core.tracers.context import collect_runs
from lc_scripted_models import ScriptedChatModel, TextOnlyChatModel
from lc_setup import BIG, CHEAP, MID, PRICES, arm_specs
from metarouter.errors import ConfigError, DispatchError, StoreError, UnknownArmError
from metarouter.service import ArmSpec

from langchain_metarouter import MetaRouterChat, query_text

PROOF = "Prove that the square root of 2 is irrational."


class CountingHandler(BaseCallbackHandler):
    """A plain (non-tracer) handler counting chat model runs and tokens."""

    def __init__(self) -> None:
        self.starts: list[dict] = []
        self.ends: list = []
        self.tokens: list[str] = []

    def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None, **kw):
        self.starts.append({"run_id": run_id, "parent": parent_run_id, **kw})

    def on_llm_new_token(self, token, **kw):
        self.tokens.append(token)

    def on_llm_end(self, response, **kw):
        self.ends.append(response)


@tool
def get_weather(city: str) -> str:
    """Get the weather in a city."""
    return f"It is sunny in {city}."


@pytest.fixture
def router(candidates, service) -> MetaRouterChat:
    return MetaRouterChat(candidates=candidates, service=service, user_id="alice")


def routing(message) -> dict:
    return message.response_metadata["metarouter"]


# -- answer and routing data ---------------------------------------------------------------------


def test_invoke_reports_the_chosen_model_its_scores_user_and_real_cost(router, candidates, service):
    answer = router.invoke(PROOF)

    data = routing(answer)
    chosen = data["chosen_model"]
    assert answer.response_metadata["model_name"] == chosen == data["model"]
    assert answer.response_metadata["model_provider"] == "scripted"
    assert data["provider_model_name"] == f"{chosen}-v1"
    assert set(data["scores"]) == set(PRICES) and abs(sum(data["scores"].values()) - 1) < 1e-6
    assert data["ranking"][0] == chosen and data["user_id"] == "alice" and data["forced"] is False
    usage = answer.usage_metadata
    assert usage and usage["input_tokens"] > 0
    assert data["cost_usd"] == pytest.approx(
        PRICES[chosen].cost(usage["input_tokens"], usage["output_tokens"])
    )
    assert answer.content == f"[{chosen}-v1] {PROOF}"
    assert len(candidates[chosen].calls) == 1
    stored = service.store.get_decision(data["decision_id"])
    assert stored.chosen == chosen and stored.cost_usd == pytest.approx(data["cost_usd"])


def test_streaming_puts_model_name_and_routing_data_on_the_last_chunk_only(router):
    chunks = list(router.stream(PROOF))

    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert [c.chunk_position for c in chunks].count("last") == 1 and chunks[-1].chunk_position
    tagged = [c for c in chunks if "model_name" in c.response_metadata]
    assert tagged == [chunks[-1]]
    full = chunks[0]
    for c in chunks[1:]:
        full = full + c
    chosen = routing(full)["chosen_model"]
    assert full.response_metadata["model_name"] == chosen  # not concatenated
    assert full.text == f"[{chosen}-v1] {PROOF}"
    assert routing(full)["cost_usd"] == pytest.approx(
        PRICES[chosen].cost(
            full.usage_metadata["input_tokens"], full.usage_metadata["output_tokens"]
        )
    )
    assert len(chunks) > 3  # really streamed word by word


def test_model_override_forces_the_arm_and_is_reported_as_forced(router, candidates):
    answer = router.invoke(PROOF, model=BIG)

    assert answer.response_metadata["model_name"] == BIG
    assert routing(answer)["forced"] is True and routing(answer)["chosen_model"] == BIG
    assert len(candidates[BIG].calls) == 1


def test_unknown_model_override_lists_the_candidates(router):
    with pytest.raises(UnknownArmError, match="candidates are"):
        router.invoke(PROOF, model="gpt-17")


def test_standard_sampling_params_are_set_on_copies_of_the_candidates(candidates, service):
    router = MetaRouterChat(candidates=candidates, service=service, temperature=0.3, max_tokens=7)

    assert router.candidate(CHEAP).temperature == 0.3
    assert router.candidate(CHEAP).max_tokens == 7
    assert candidates[CHEAP].temperature is None  # the caller's objects are untouched


def test_default_stop_sequences_reach_the_candidate(candidates, service):
    router = MetaRouterChat(candidates=candidates, service=service, stop=["root"])
    answer = router.invoke(PROOF)
    assert "root" not in answer.text and answer.text.endswith("square ")


# -- users -------------------------------------------------------------------------------------


def test_user_id_comes_from_configurable_then_metadata_then_the_instance(router, service):
    by_conf = router.invoke(PROOF, config={"configurable": {"user_id": "bob"}})
    by_meta = router.invoke(PROOF, config={"metadata": {"user_id": "carol"}})
    by_default = router.invoke(PROOF)
    both = router.invoke(
        PROOF, config={"configurable": {"user_id": "dave"}, "metadata": {"user_id": "erin"}}
    )

    assert [routing(m)["user_id"] for m in (by_conf, by_meta, by_default, both)] == [
        "bob",
        "carol",
        "alice",
        "dave",
    ]
    assert service.store.get_decision(routing(by_conf)["decision_id"]).user_id == "bob"


def test_batch_routes_each_input_for_its_own_user(router):
    out = router.batch(
        [PROOF, "What is the capital of France?"],
        config=[{"configurable": {"user_id": "u1"}}, {"configurable": {"user_id": "u2"}}],
    )
    assert [routing(m)["user_id"] for m in out] == ["u1", "u2"]


def _count_backend_batches(service, monkeypatch) -> list[int]:
    embedder = service.router.embedder
    embedder._lru.clear()
    sizes: list[int] = []
    original = embedder._forward
    monkeypatch.setattr(
        embedder, "_forward", lambda t, p=False: sizes.append(len(t)) or original(t, p)
    )
    return sizes


def test_batch_embeds_all_inputs_in_one_embedding_batch(router, service, monkeypatch):
    sizes = _count_backend_batches(service, monkeypatch)
    prompts = [f"Question {i}: what is {i} squared?" for i in range(4)]
    out = router.batch(prompts)
    assert len(out) == 4 and sizes == [4]  # one batch; each call then an LRU hit


def test_abatch_embeds_all_inputs_in_one_embedding_batch(router, service, monkeypatch):
    sizes = _count_backend_batches(service, monkeypatch)
    prompts = [f"Async question {i}: name a prime above {10 * i}." for i in range(3)]
    out = asyncio.run(router.abatch(prompts))
    assert len(out) == 3 and sizes == [3]


def test_invalid_user_id_is_a_config_error_that_says_how_to_fix_it(router):
    from metarouter.errors import FeedbackError

    for bad, why in (("x" * 129, "at most 128"), ("line\nbreak", "control characters")):
        with pytest.raises(ConfigError, match=f"invalid user id .*{why}.*Fix") as caught:
            router.invoke(PROOF, config={"configurable": {"user_id": bad}})
        assert not isinstance(caught.value, FeedbackError), "a call records no feedback"


def test_run_id_given_in_config_indexes_the_decision(router, service):
    run_id = uuid.uuid4()
    answer = router.invoke(PROOF, config={"run_id": run_id})
    stored = service.store.find_decision(str(run_id))
    assert stored is not None and stored.decision_id == routing(answer)["decision_id"]

    stream_run = uuid.uuid4()
    streamed = list(router.stream(PROOF, config={"run_id": stream_run}))
    assert (
        service.store.find_decision(str(stream_run)).decision_id
        == routing(streamed[-1])["decision_id"]
    )


# -- fallback ----------------------------------------------------------------------------------


def _failing(name: str, exc: BaseException, after: int | None = None) -> ScriptedChatModel:
    return ScriptedChatModel(model_name=f"{name}-v1", fail_with=exc, fail_after_chunks=after)


def _two_fail(service, **kw) -> tuple[MetaRouterChat, dict]:
    models = {
        CHEAP: _failing(CHEAP, RuntimeError("rate limited (429)")),
        MID: _failing(MID, TimeoutError("read timed out")),
        BIG: ScriptedChatModel(model_name=f"{BIG}-v1"),
    }
    return MetaRouterChat(candidates=models, service=service, **kw), models


def _ranking(service) -> list[str]:
    """The router's ranking of the candidates for PROOF for a user with no history.

    The probe runs as another user: a call's bill calibrates its own user's costs.
    """
    probe = MetaRouterChat(
        candidates={n: ScriptedChatModel(model_name=f"{n}-v1") for n in PRICES},
        service=service,
        user_id="ranking-probe",
    )
    return routing(probe.invoke(PROOF))["ranking"]


@pytest.mark.parametrize("mode", ["invoke", "stream", "ainvoke", "astream"])
def test_falls_back_to_the_next_best_candidate_and_records_what_failed(service, mode, caplog):
    # the ranking is forced: the router's first two choices fail, whatever a retrained router
    # ranks first, so the call exercises two fallbacks every time
    first, second, last = _ranking(service)
    router = MetaRouterChat(
        candidates={
            first: _failing(first, RuntimeError("rate limited (429)")),
            second: _failing(second, TimeoutError("read timed out")),
            last: ScriptedChatModel(model_name=f"{last}-v1"),
        },
        service=service,
    )
    caplog.set_level(logging.WARNING, logger="langchain_metarouter")

    async def run_async() -> AIMessage:
        if mode == "ainvoke":
            return await router.ainvoke(PROOF)
        full = None
        async for c in router.astream(PROOF):
            full = c if full is None else full + c
        return full

    if mode == "invoke":
        answer = router.invoke(PROOF)
    elif mode == "stream":
        answer = None
        for c in router.stream(PROOF):
            answer = c if answer is None else answer + c
    else:
        answer = asyncio.run(run_async())

    data = routing(answer)
    assert data["ranking"] == [first, second, last]
    assert answer.response_metadata["model_name"] == last
    assert (data["chosen_model"], data["model"]) == (first, last)
    assert [f["model"] for f in data["fallbacks"]] == [first, second]
    assert "RuntimeError" in data["fallbacks"][0]["error"]
    assert "TimeoutError" in data["fallbacks"][1]["error"]
    assert service.store.get_decision(data["decision_id"]).fallbacks == (first, second)
    assert caplog.text.count("falling back") == 2


def test_when_every_candidate_fails_the_error_lists_each_failure(service):
    models = {n: _failing(n, RuntimeError(f"{n} is down")) for n in PRICES}
    router = MetaRouterChat(candidates=models, service=service)
    with pytest.raises(DispatchError) as err:
        router.invoke(PROOF)
    for name in PRICES:
        assert f"'{name}' raised RuntimeError: {name} is down" in str(err.value)
    assert "every eligible candidate was tried" in str(err.value)


def test_a_forced_model_does_not_fall_back(service):
    router, models = _two_fail(service)
    with pytest.raises(DispatchError, match="forced with model="):
        router.invoke(PROOF, model=CHEAP)
    assert models[BIG].calls == []


def test_no_fallback_after_part_of_the_answer_was_streamed(service):
    models = {n: _failing(n, RuntimeError("connection reset"), after=2) for n in PRICES}
    router = MetaRouterChat(candidates=models, service=service)
    seen = []
    with pytest.raises(DispatchError, match="mid-stream"):
        for chunk in router.stream(PROOF):
            seen.append(chunk)
    assert len(seen) == 2 and sum(len(m.calls) for m in models.values()) == 1


def test_fallback_on_limits_which_errors_fall_back(service):
    router, _ = _two_fail(service, fallback_on=(KeyError,))
    with pytest.raises((RuntimeError, TimeoutError)):
        router.invoke(PROOF)


# -- capabilities --------------------------------------------------------------------------------


def test_candidates_without_tool_calling_are_left_out_of_tool_calls(service, candidates):
    text_only = TextOnlyChatModel(model_name="plain-v1")
    router = MetaRouterChat(candidates={**candidates, CHEAP: text_only}, service=service)
    assert router.profile["tool_calling"] is False  # not every candidate has it

    for prompt in (PROOF, "What is the weather in Paris? Use the tool."):
        answer = router.bind_tools([get_weather]).invoke(prompt)
        stored = router.service.store.get_decision(routing(answer)["decision_id"])
        assert CHEAP not in stored.candidates and routing(answer)["model"] != CHEAP
    assert text_only.calls == []
    assert answer.tool_calls[0]["name"] == "get_weather"
    assert answer.tool_calls[0]["args"] == {
        "city": "city for: What is the weather in Paris? Use the tool."
    }

    with pytest.raises(ConfigError, match="lacks"):
        router.bind_tools([get_weather]).invoke(PROOF, model=CHEAP)


def test_bind_tools_without_any_tool_calling_candidate_says_how_to_fix(service):
    models = {n: TextOnlyChatModel(model_name=n) for n in PRICES}
    router = MetaRouterChat(candidates=models, service=service)
    with pytest.raises(ConfigError, match="supports tool calling"):
        router.bind_tools([get_weather])


def test_image_inputs_go_only_to_candidates_that_read_images(service, candidates):
    blind = ScriptedChatModel(model_name="blind", profile={"image_inputs": False})
    router = MetaRouterChat(
        candidates={**candidates, BIG: blind, MID: blind.model_copy()}, service=service
    )
    image = HumanMessage(
        content=[
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image", "url": "https://example.com/cat.png"},
        ]
    )
    answer = router.invoke([image])
    assert routing(answer)["model"] == CHEAP
    assert router.profile.get("image_inputs") is False


def test_tool_calls_stream_through_the_router(router):
    full = None
    for chunk in router.bind_tools([get_weather], tool_choice="any").stream("Weather in 'Oslo'?"):
        full = chunk if full is None else full + chunk
    assert full.tool_calls == [
        {
            "name": "get_weather",
            "args": {"city": "Oslo"},
            "id": full.tool_calls[0]["id"],
            "type": "tool_call",
        }
    ]


# -- callbacks -----------------------------------------------------------------------------------


def _runs_by_name(runs):
    out = {}
    for run in runs:
        out.setdefault(run.name, []).append(run)
        out.update(_runs_by_name(run.child_runs))
    return out


@pytest.mark.parametrize("mode", ["invoke", "stream", "ainvoke", "astream"])
def test_the_candidate_run_nests_under_the_router_run_with_inherited_tags_and_metadata(
    router, mode
):
    config = {"tags": ["my-app"], "metadata": {"tenant": "acme"}}
    counter = CountingHandler()
    with collect_runs() as collector:
        config["callbacks"] = [counter]
        if mode == "invoke":
            router.invoke(PROOF, config=config)
        elif mode == "stream":
            list(router.stream(PROOF, config=config))
        elif mode == "ainvoke":
            asyncio.run(router.ainvoke(PROOF, config=config))
        else:

            async def consume():
                return [c async for c in router.astream(PROOF, config=config)]

            asyncio.run(consume())

    (root,) = collector.traced_runs
    assert root.name == "MetaRouterChat" and root.run_type == "llm"
    (child,) = root.child_runs
    assert child.name == "ScriptedChatModel" and child.parent_run_id == root.id
    assert "my-app" in child.tags and "metarouter:candidate" in child.tags
    assert child.extra["metadata"]["tenant"] == "acme"
    message = root.outputs["generations"][0][0]["message"]
    metadata = (
        message.response_metadata
        if isinstance(message, AIMessage)
        else message["kwargs"]["response_metadata"]
    )
    assert (
        child.extra["metadata"]["metarouter_decision_id"] == metadata["metarouter"]["decision_id"]
    )
    # a plain handler sees one chat model run (the router's), so nothing is counted twice
    assert len(counter.starts) == 1 and len(counter.ends) == 1
    if mode in ("stream", "astream"):
        assert len(counter.tokens) > 3


def test_candidate_callbacks_all_passes_every_handler_to_the_candidate_run(candidates, service):
    router = MetaRouterChat(candidates=candidates, service=service, candidate_callbacks="all")
    counter = CountingHandler()
    router.invoke(PROOF, config={"callbacks": [counter]})
    assert len(counter.starts) == 2
    assert counter.starts[1]["parent"] == counter.starts[0]["run_id"]


def test_invoke_in_a_streaming_context_streams_tokens_from_the_router_run(router):
    async def events():
        return [e async for e in router.astream_events(PROOF, version="v2")]

    evs = asyncio.run(events())
    streamed = [e for e in evs if e["event"] == "on_chat_model_stream"]
    assert len(streamed) > 3 and {e["name"] for e in streamed} == {"MetaRouterChat"}
    end = next(e for e in evs if e["event"] == "on_chat_model_end")
    assert end["data"]["output"].response_metadata["model_name"] in PRICES


def test_async_calls_use_the_candidates_native_async(router, candidates):
    async def run():
        return await router.ainvoke(PROOF), [c async for c in router.astream(PROOF)]

    answer, _ = asyncio.run(run())
    chosen = routing(answer)["model"]
    assert candidates[chosen].async_calls == 2


def test_abatch_answers_every_input(router):
    out = asyncio.run(router.abatch([PROOF, "What is the capital of France?"]))
    assert len(out) == 2 and all(routing(m)["decision_id"] for m in out)


# -- construction ----------------------------------------------------------------------------------


def test_construction_errors_say_how_to_fix(candidates, service, lc_router, tmp_path):
    from metarouter.store.sql import SQLStore

    with pytest.raises(ConfigError, match="at least one candidate"):
        MetaRouterChat(candidates={}, service=service)
    with pytest.raises(ConfigError, match="same candidate names"):
        MetaRouterChat(candidates={CHEAP: candidates[CHEAP]}, service=service)
    with pytest.raises(ConfigError, match="describe no candidate"):
        MetaRouterChat(candidates=candidates, arms=[ArmSpec("other")], router=lc_router)
    with pytest.raises(ValueError, match="instance of BaseChatModel"):
        MetaRouterChat(candidates={CHEAP: "gpt"}, service=service)
    with pytest.raises(UnknownArmError, match="describe it"):
        MetaRouterChat(
            candidates={"my-model": candidates[CHEAP]},
            router=lc_router,
            store=SQLStore(tmp_path / "x.db"),
        )


def test_unknown_arguments_are_reported_not_silently_dropped(candidates, service, caplog):
    caplog.set_level(logging.WARNING, logger="langchain_metarouter")
    MetaRouterChat(candidates=candidates, service=service, api_key="sk-...")
    assert "ignores the arguments ['api_key']" in caplog.text


# -- routing text ----------------------------------------------------------------------------------


def test_query_text_is_the_last_human_message():
    messages = [
        SystemMessage("You are terse."),
        HumanMessage("first question"),
        AIMessage("first answer"),
        HumanMessage("second question"),
    ]
    assert query_text(messages) == "second question"
    image_only = HumanMessage(content=[{"type": "image", "url": "https://x/y.png"}])
    assert query_text([HumanMessage("describe"), image_only]) == "describe"
    assert query_text([SystemMessage("only a system prompt")]) == "only a system prompt"


# -- the call flow the core owns -----------------------------------------------------------------
WEATHER = "What is the weather in 'Paris'?"


def test_a_tool_loop_stays_on_the_model_that_issued_the_calls(router):
    bound = router.bind_tools([get_weather])
    routed = routing(bound.invoke(WEATHER))["model"]
    other = next(n for n in (CHEAP, MID, BIG) if n != routed)

    first = bound.invoke(WEATHER, model=other)
    (call,) = first.tool_calls
    result = ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
    second = bound.invoke([HumanMessage(WEATHER), first, result])

    data = routing(second)
    assert (data["model"], data["reason"], data["forced"]) == (other, "tool_loop", False)
    assert routing(bound.invoke(WEATHER))["reason"] == "routed"


def test_an_outcome_the_store_cannot_record_is_logged_and_the_answer_returned(
    router, service, monkeypatch, caplog
):
    def disk_full(*args, **kwargs):
        raise StoreError("database or disk is full")

    monkeypatch.setattr(service.store, "complete_decision", disk_full)
    with caplog.at_level(logging.WARNING):
        answer = router.invoke(PROOF)
        streamed = list(router.stream(PROOF))

    assert answer.text and routing(answer)["cost_usd"] > 0
    assert routing(streamed[-1])["cost_usd"] > 0
    assert "outcome" in caplog.text and "database or disk is full" in caplog.text


def test_token_counts_come_from_the_first_candidates_tokenizer(service):
    def words(text: str) -> list[int]:
        return list(range(len(text.split())))

    first = ScriptedChatModel(model_name="counting", custom_get_token_ids=words)
    models = {CHEAP: first, MID: ScriptedChatModel(), BIG: ScriptedChatModel()}
    router = MetaRouterChat(candidates=models, service=service)

    assert router.get_num_tokens("one two three") == 3
    assert router.get_token_ids("a b") == [0, 1]
    messages = [SystemMessage("Be brief."), HumanMessage("one two three")]
    assert router.get_num_tokens_from_messages(messages) == first.get_num_tokens_from_messages(
        messages
    )


def test_dumps_writes_not_implemented_rather_than_a_router_on_another_store(router):
    from langchain_core.load import dumps

    data = json.loads(dumps(router))
    assert data["type"] == "not_implemented"
    assert data["id"] == ["langchain_metarouter", "chat_models", "MetaRouterChat"]


def test_warm_up_loads_the_models_before_the_first_call_and_records_nothing(
    candidates, tmp_path, monkeypatch
):
    from metarouter.embedding_backends import StaticBackend
    from metarouter.embeddings import ROUTER_EMBEDDER, Embedder
    from metarouter.router import MetaRouter, default_router_dir
    from metarouter.store.sql import SQLStore

    loads: list[str] = []
    read = StaticBackend._read
    monkeypatch.setattr(StaticBackend, "_read", lambda self: loads.append("model") or read(self))
    fresh = MetaRouter.from_pretrained(default_router_dir(), embedder=Embedder(ROUTER_EMBEDDER))
    store = SQLStore(tmp_path / "warm.db")
    router = MetaRouterChat(candidates=candidates, arms=arm_specs(), router=fresh, store=store)
    assert loads == []

    seconds = router.warm_up("alice")

    assert loads == ["model"] and seconds > 0
    assert store.users() == [], "warming up records no decision"
    router.invoke(PROOF, config={"configurable": {"user_id": "alice"}})
    assert loads == ["model"], "the first call loads nothing more"
    store.close()
