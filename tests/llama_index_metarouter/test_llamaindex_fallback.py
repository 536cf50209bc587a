"""Fallback: a failing candidate hands the call to the next-best one; when all fail, one clear
``DispatchError``."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llamaindex_tooling import IDS, VARIANTS, BrokenLLM, call
from metarouter.errors import DispatchError, MetaRouterError

from llama_index_metarouter import ROUTING_KEY, RoutingFallbackEvent

NAMES = ("gemma-2-9b-it", "qwen2.5-7b-instruct")


@pytest.fixture
def routed(make_router) -> tuple[str, str]:
    """``(the router's choice for "Hello", the other candidate)`` for the test user."""
    probe = make_router({name: MockFunctionCallingLLM() for name in NAMES})
    chosen = probe.complete("Hello").additional_kwargs[ROUTING_KEY]["chosen_model"]
    return chosen, next(n for n in NAMES if n != chosen)


@pytest.mark.parametrize(("api", "mode", "stream"), VARIANTS, ids=IDS)
async def test_failing_choice_falls_back_to_the_next_best_candidate(
    api, mode, stream, make_router, trace, routed
):
    down, up = routed
    router = make_router({down: BrokenLLM(), up: MockFunctionCallingLLM()})

    text, last, _ = await call(router, api, mode, stream, "Hello")

    assert text == "Hello"  # MockFunctionCallingLLM echoes
    info = last.additional_kwargs[ROUTING_KEY]
    assert (info["chosen_model"], info["model"]) == (down, up)
    assert info["fallbacks"] == [
        {"model": down, "error": "ConnectionError: provider unavailable (HTTP 503)"}
    ]
    assert router.candidates[down].attempts == 1
    stored = router.service.store.get_decision(info["decision_id"])
    assert stored.chosen == up and tuple(stored.fallbacks) == (down,)
    (event,) = trace.events.of(RoutingFallbackEvent)
    assert (event.failed_model, event.next_model) == (down, up)
    assert "ConnectionError" in event.error


@pytest.mark.parametrize(("api", "mode", "stream"), VARIANTS, ids=IDS)
async def test_when_every_candidate_fails_one_clear_error_names_them(
    api, mode, stream, make_router
):
    down, up = NAMES
    router = make_router({down: BrokenLLM(), up: BrokenLLM()})
    with pytest.raises(DispatchError) as caught:
        await call(router, api, mode, stream, "Hello")
    message = str(caught.value)
    assert down in message and up in message and "HTTP 503" in message
    assert "Fix:" in message
    assert isinstance(caught.value, MetaRouterError) and isinstance(caught.value, RuntimeError)
    assert isinstance(caught.value.__cause__, ConnectionError)


def test_max_fallbacks_limits_the_candidates_tried(make_router, routed):
    down, up = routed
    router = make_router({down: BrokenLLM(), up: MockFunctionCallingLLM()}, max_fallbacks=0)
    with pytest.raises(DispatchError, match="max_fallbacks=0"):
        router.complete("Hello")
    assert router.candidates[down].attempts == 1


def test_a_forced_model_never_falls_back(make_router, routed):
    down, up = routed
    router = make_router({down: BrokenLLM(), up: MockFunctionCallingLLM()})
    with pytest.raises(DispatchError, match="forced with model=, and a forced model never falls"):
        router.complete("Hello", model=down)
    with router.scope(model=down), pytest.raises(DispatchError, match="never falls back"):
        router.chat([ChatMessage(role="user", content="Hello")])
    assert router.candidates[down].attempts == 2


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_stream_failing_mid_answer_raises_dispatch_error_without_fallback(
    mode, make_router, routed
):
    down, up = routed
    router = make_router({down: BrokenLLM(fail_after=2), up: MockFunctionCallingLLM()})
    messages = [ChatMessage(role="user", content="Hello")]
    received = []
    with pytest.raises(DispatchError, match="failed mid-stream") as caught:
        if mode == "sync":
            for chunk in router.stream_chat(messages):
                received.append(chunk.delta)
        else:
            async for chunk in await router.astream_chat(messages):
                received.append(chunk.delta)
    assert received == ["part0 ", "part1 "], "chunks already sent are kept; nothing is replayed"
    assert isinstance(caught.value.__cause__, ConnectionError)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_stream_abandoned_early_is_still_booked(mode, make_router, recorded_candidates):

    router = make_router(recorded_candidates())
    messages = [ChatMessage(role="user", content="Write a function that adds two numbers.")]
    with router.scope() as scope:
        if mode == "sync":
            stream = router.stream_chat(messages)
            first = next(stream)
            stream.close()
        else:
            stream = await router.astream_chat(messages)
            first = await stream.__anext__()
            await stream.aclose()
            # LlamaIndex's callback wrapper does not close the inner stream; the event loop
            # finalises it (and the router books the call) on its next iterations
            for _ in range(5):
                await asyncio.sleep(0)
    decision_id = first.additional_kwargs[ROUTING_KEY]["decision_id"]
    assert scope.decision_ids == [decision_id]
