"""Real HTTP through ``langchain_openai.ChatOpenAI`` candidates, replayed from VCR cassettes.

The candidates are two RouterBench models served by an OpenAI-compatible server on loopback
(openai_loopback.py) that answers with their real RouterBench responses. The cassettes in
cassettes/test_openai_vcr/ were recorded against it; a normal run (``--record-mode`` unset,
i.e. ``none``) replays them with the network blocked (pytest-recording's ``block_network`` and
pytest-socket) and without the server. RouterBench text is not stored in the cassettes (no
licence to redistribute it): routerbench_cassettes.py swaps it for references on saving and
back on loading, from ../shared/data, so replaying needs the shared data like every RouterBench
test. The Authorization header is redacted.

Re-record (e.g. after changing the requests) with::

    python -m pytest tests/langchain_metarouter/test_openai_vcr.py --record-mode=rewrite

Routing must be reproducible during replay: requests are forced with ``model=``, or, when the
router chooses, every candidate's answer to that request was recorded first in the same
cassette, so whichever the bundled router picks is replayed.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_socket
import yaml
from langchain.agents import create_agent
from langchain.agents.middleware import wrap_model_call
from langchain_core.messages import AIMessage, AIMessageChunk, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from metarouter.pricing import Price
from metarouter.service import ArmSpec
from metarouter.store.sql import SQLStore
from openai_loopback import OpenAILoopback, dumps, event_stream, text_pieces
from routerbench_cassettes import (
    MIN_CHARS,
    SERIALIZER,
    RouterBenchTexts,
    RouterBenchYAMLSerializer,
    load_routerbench_texts,
)

from langchain_metarouter import MetaRouterChat

CASSETTES = Path(__file__).parent / "cassettes" / "test_openai_vcr"
#: Where candidates point during replay: a reserved name, so a request missing from a
#: cassette can never reach anything.
REPLAY_BASE_URL = "http://openai-loopback.invalid/v1"
API_KEY = "test-key"

STRONG, CHEAP = "gpt-4-1106-preview", "mistralai/mixtral-8x7b-chat"
#: List prices in USD per 1M tokens, and the catalog models whose profiles stand in for them.
PRICES = {STRONG: Price(10.0, 30.0), CHEAP: Price(0.6, 0.6)}
ARMS = [
    ArmSpec(STRONG, price=PRICES[STRONG], like="llama-3.3-nemotron-super-49b-v1"),
    ArmSpec(CHEAP, price=PRICES[CHEAP], like="mistral-7b-instruct-v0.3"),
]
#: MBPP queries both models answered in RouterBench (pinned: the cassettes quote them).
QUERY_IDS = ("mbpp.dev.75", "mbpp.dev.214", "mbpp.dev.293")
WEATHER = "What is the weather in 'Paris'? Use the tool."


@tool
def get_weather(city: str) -> str:
    """Get the weather in a city."""
    return f"It is sunny in {city}."


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def routerbench(shared_data: Path) -> RouterBenchTexts:
    """The RouterBench prompts and answers (skips the module when the shared data is absent)."""
    return load_routerbench_texts(shared_data)


def _canonical_request(request: Any) -> Any:
    """Recorded and replayed requests name the same host, whatever port the server had."""
    request.uri = REPLAY_BASE_URL + request.uri.split("/v1", 1)[1]
    for name in list(request.headers):
        if name.lower() == "host" or name.lower().startswith("x-stainless"):
            del request.headers[name]  # the server's port; the recording machine's OS, ...
    return request


@pytest.fixture
def vcr_config(routerbench: RouterBenchTexts) -> dict[str, Any]:
    # No "record_mode" here: it would override --record-mode; pytest-recording's default
    # ("none") then replays, and a missing cassette or request fails instead of going live.
    return {
        "serializer": SERIALIZER,
        "filter_headers": [
            ("authorization", "REDACTED"),
            ("api-key", "REDACTED"),
            ("x-api-key", "REDACTED"),
            ("openai-organization", "REDACTED"),
            ("openai-project", "REDACTED"),
            ("user-agent", None),
        ],
        "before_record_request": _canonical_request,
        "match_on": ["method", "scheme", "host", "path", "query", "body"],
        "allow_playback_repeats": True,
    }


@pytest.fixture
def openai_base_url(vcr: Any, routerbench: RouterBenchTexts) -> Iterator[str]:
    """Replaying: no server, sockets disabled. Recording: the loopback server."""
    if vcr is None:
        pytest.fail("this test needs @pytest.mark.vcr")
    if vcr.write_protected:
        pytest_socket.disable_socket(allow_unix_socket=True)  # asyncio needs a socketpair
        try:
            yield REPLAY_BASE_URL
        finally:
            pytest_socket.enable_socket()
        return
    answers = {
        (model, routerbench.prompt(qid)): routerbench.answer(qid, model)
        for qid in QUERY_IDS
        for model in PRICES
    }
    with OpenAILoopback(answers) as server:
        yield server.base_url


@pytest.fixture
def router(openai_base_url: str, lc_router: Any, tmp_path: Path) -> Iterator[MetaRouterChat]:
    candidates = {
        name: ChatOpenAI(
            base_url=openai_base_url,
            api_key=API_KEY,  # type: ignore[arg-type]
            model=name,
            stream_usage=True,
            max_retries=0,
            http_socket_options=(),  # default: probes a TCP socket at construction
        )
        for name in PRICES
    }
    store = SQLStore(tmp_path / "s.db")
    yield MetaRouterChat(candidates=candidates, arms=ARMS, router=lc_router, store=store)
    store.close()


# -- helpers ------------------------------------------------------------------------------------
def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def recorded_usage(cassette: Any, model: str, *, stream: bool, tools: bool = False) -> dict:
    """The ``usage`` the server returned for the first matching request in the cassette."""
    for request, response in zip(cassette.requests, cassette.responses, strict=True):
        body = json.loads(_text(request.body))
        if (body["model"], bool(body.get("stream")), "tools" in body) != (model, stream, tools):
            continue
        raw = _text(response["body"]["string"])
        if not stream:
            return json.loads(raw)["usage"]
        events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]
        (usage,) = [e["usage"] for e in events if e.get("usage")]
        return usage
    raise AssertionError(f"no recorded request for {model} (stream={stream}, tools={tools})")


def assert_cost_of(message: AIMessage, usage: dict, model: str) -> None:
    """The usage and cost reported are the recorded response's (and the model's price)."""
    assert message.usage_metadata is not None
    assert message.usage_metadata["input_tokens"] == usage["prompt_tokens"]
    assert message.usage_metadata["output_tokens"] == usage["completion_tokens"]
    expected = PRICES[model].cost(usage["prompt_tokens"], usage["completion_tokens"])
    assert message.response_metadata["metarouter"]["cost_usd"] == pytest.approx(expected)
    assert expected > 0


def aggregate(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    return total


# -- tests --------------------------------------------------------------------------------------
@pytest.mark.vcr
@pytest.mark.filterwarnings("ignore:A test tried to use socket.socket")
def test_replay_needs_neither_the_server_nor_the_network(router, routerbench, vcr):
    qid = QUERY_IDS[0]
    answer = router.invoke(routerbench.prompt(qid), model=CHEAP)

    assert answer.text == routerbench.answer(qid, CHEAP)
    assert [r.uri for r in vcr.requests] == [f"{REPLAY_BASE_URL}/chat/completions"]
    if vcr.write_protected:  # a replay (the default run): it came from the cassette, offline
        assert vcr.play_count == 1 and vcr.all_played
        with pytest.raises(pytest_socket.SocketBlockedError):
            socket.socket(socket.AF_INET, socket.SOCK_STREAM)


@pytest.mark.vcr
def test_invoke_returns_the_real_answer_and_costs_the_recorded_usage(router, routerbench, vcr):
    qid = QUERY_IDS[0]
    prompt = routerbench.prompt(qid)

    forced = {name: router.invoke(prompt, model=name) for name in PRICES}
    for name, message in forced.items():
        data = message.response_metadata["metarouter"]
        assert message.text == routerbench.answer(qid, name)
        assert message.response_metadata["model_name"] == data["model"] == name
        assert message.response_metadata["model_provider"] == "openai"  # the inner model's
        assert data["provider_model_name"] == name and data["forced"] is True
        assert_cost_of(message, recorded_usage(vcr, name, stream=False), name)
    assert (
        forced[STRONG].response_metadata["metarouter"]["cost_usd"]
        > forced[CHEAP].response_metadata["metarouter"]["cost_usd"]
    )

    # the router's own choice (both answers are in the cassette, so either replays)
    routed = router.invoke(prompt, config={"configurable": {"user_id": "ann"}})
    data = routed.response_metadata["metarouter"]
    assert data["forced"] is False and data["user_id"] == "ann"
    assert set(data["scores"]) == set(PRICES) and data["model"] == data["ranking"][0]
    assert routed.text == routerbench.answer(qid, data["model"])
    assert_cost_of(routed, recorded_usage(vcr, data["model"], stream=False), data["model"])


@pytest.mark.vcr
def test_stream_yields_the_real_answer_piece_by_piece_with_routing_data_last(
    router, routerbench, vcr
):
    qid = QUERY_IDS[1]
    answer = routerbench.answer(qid, CHEAP)

    chunks = list(router.stream(routerbench.prompt(qid), model=CHEAP))

    assert [c.text for c in chunks if c.text] == text_pieces(answer)  # as the server sent it
    assert "".join(c.text for c in chunks) == answer
    assert [bool(c.response_metadata.get("metarouter")) for c in chunks][-1:] == [True]
    assert sum(bool(c.response_metadata.get("metarouter")) for c in chunks) == 1
    assert sum(bool(c.usage_metadata and c.usage_metadata["input_tokens"]) for c in chunks) == 1
    message = aggregate(chunks)
    assert message.response_metadata["model_name"] == CHEAP
    assert message.response_metadata["model_provider"] == "openai"
    assert_cost_of(message, recorded_usage(vcr, CHEAP, stream=True), CHEAP)


@pytest.mark.vcr
def test_async_invoke_and_stream_replay_through_the_async_client(router, routerbench, vcr):
    qid = QUERY_IDS[2]
    prompt, answer = routerbench.prompt(qid), routerbench.answer(qid, STRONG)

    async def both() -> tuple[AIMessage, list[AIMessageChunk]]:
        whole = await router.ainvoke(prompt, model=STRONG)
        return whole, [c async for c in router.astream(prompt, model=STRONG)]

    whole, chunks = asyncio.run(both())

    assert whole.text == answer == "".join(c.text for c in chunks)
    assert_cost_of(whole, recorded_usage(vcr, STRONG, stream=False), STRONG)
    assert_cost_of(aggregate(chunks), recorded_usage(vcr, STRONG, stream=True), STRONG)


@pytest.mark.vcr
def test_tool_calls_pass_through_to_chatopenai_and_back(router, vcr):
    bound = router.bind_tools([get_weather])

    for name in PRICES:
        message = bound.invoke(WEATHER, model=name)
        assert message.response_metadata["model_name"] == name
        assert [(c["name"], c["args"]) for c in message.tool_calls] == [
            ("get_weather", {"city": "Paris"})
        ]
        assert_cost_of(message, recorded_usage(vcr, name, stream=False, tools=True), name)

    streamed = aggregate(list(bound.stream(WEATHER, model=CHEAP)))
    assert [(c["name"], c["args"]) for c in streamed.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert streamed.response_metadata["metarouter"]["model"] == CHEAP
    assert_cost_of(streamed, recorded_usage(vcr, CHEAP, stream=True, tools=True), CHEAP)


def _force(arm: str) -> Any:
    @wrap_model_call
    def force(request, handler):  # model_settings reach MetaRouterChat.bind_tools(model=...)
        return handler(request.override(model_settings={**request.model_settings, "model": arm}))

    return force


@pytest.mark.vcr
def test_agent_loop_calls_the_tool_and_answers_over_http(router):
    def run(*middleware: Any) -> list[Any]:
        agent = create_agent(model=router, tools=[get_weather], middleware=middleware)
        return agent.invoke({"messages": [("user", WEATHER)]})["messages"]

    for arm in PRICES:  # record every arm's conversation, so the routed run replays either
        forced = run(_force(arm))
        assert {m.response_metadata["model_name"] for m in forced if isinstance(m, AIMessage)} == {
            arm
        }

    messages = run()
    call, final = [m for m in messages if isinstance(m, AIMessage)]
    assert call.tool_calls[0]["args"] == {"city": "Paris"}
    (result,) = [m for m in messages if isinstance(m, ToolMessage)]
    assert result.text == "It is sunny in Paris."
    assert final.text == "The tool get_weather returned: It is sunny in Paris."
    routed = [m.response_metadata["metarouter"] for m in (call, final)]
    assert all(d["forced"] is False and d["cost_usd"] > 0 for d in routed)
    assert routed[0]["model"] == routed[1]["model"]  # same question, same choice


def _cassettes() -> list:
    files = sorted(CASSETTES.glob("*.routerbench.yaml"))
    assert len(files) == 6, [f.name for f in files]
    return files


# the cassettes' API key and header checks: tests/langchain_metarouter/test_cassette_secrets.py
# (data-free; every test of this module needs the shared data through vcr_config)
def test_cassettes_hold_no_routerbench_text(routerbench):
    protected = [
        text
        for qid in QUERY_IDS
        for (query_id, _), text in routerbench.by_key.items()
        if query_id == qid and len(text) >= MIN_CHARS
    ]
    assert len(protected) > 2 * len(QUERY_IDS)
    for path in _cassettes():
        for interaction in yaml.safe_load(path.read_text())["interactions"]:
            bodies = (interaction["request"]["body"], interaction["response"]["body"]["string"])
            for text in protected:
                for form in (text, dumps(text)[1:-1]):
                    assert not any(form[:40] in body for body in bodies), (path.name, form[:40])


def test_the_cassette_serializer_swaps_routerbench_text_for_references_and_back():
    prompt = "Write a function to filter odd numbers."
    answer = "def f(xs):\n    return [x for x in xs if x % 2]  # odd ones, caf\u00e9 \U0001f600"
    texts = RouterBenchTexts.from_rows([("q.1", prompt, "m", answer)])
    request = {"model": "m", "stream": True, "messages": [{"role": "user", "content": prompt}]}
    stream = event_stream(request, {("m", prompt): answer})
    recorded = {
        "version": 1,
        "interactions": [
            {
                "request": {"method": "POST", "uri": "u", "body": dumps(request), "headers": {}},
                "response": {
                    "status": {"code": 200, "message": "OK"},
                    "headers": {"content-type": ["text/event-stream; charset=utf-8"]},
                    "body": {"string": stream},
                },
            }
        ],
    }

    saved = RouterBenchYAMLSerializer(lambda: texts).serialize(recorded)

    stored = yaml.safe_load(saved)["interactions"][0]
    stored_request, stored_stream = stored["request"]["body"], stored["response"]["body"]["string"]
    assert "filter odd" not in saved and "filter odd" not in stored_request
    assert "return [x" not in saved and "return [x" not in stored_stream
    assert "<<routerbench q.1 prompt sha256:" in stored_request
    assert stored_stream.count("<<routerbench q.1 m sha256:") == len(text_pieces(answer)) == 2
    loaded = RouterBenchYAMLSerializer(lambda: texts).deserialize(saved)["interactions"][0]
    assert loaded["response"]["body"]["string"] == stream  # byte for byte
    assert loaded["request"]["body"] == dumps(request)
    changed = RouterBenchTexts.from_rows([("q.1", prompt, "m", answer + "!")])
    with pytest.raises(ValueError, match="re-record"):
        RouterBenchYAMLSerializer(lambda: changed).deserialize(saved)
