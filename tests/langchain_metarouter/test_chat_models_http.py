"""``MetaRouterChat`` over real HTTP: ``ChatOpenAI`` candidates against an OpenAI-compatible
server on loopback (tests/openai_loopback.py), with the faults real providers have (a 500, a
hung request, a stream cut mid-answer) and what real LangChain programs do around a call (usage
callbacks, ``llm_output`` readers, user ids from the app's own user records).

Only loopback is reachable; the provider model names differ from the candidate names, as with
real providers (``gpt-4o-mini`` answers as ``gpt-4o-mini-2024-07-18``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler, get_usage_metadata_callback
from langchain_core.messages import AIMessage
from langchain_core.tracers.context import collect_runs, register_configure_hook
from langchain_openai import ChatOpenAI
from metarouter.errors import DispatchError
from metarouter.pricing import Price
from metarouter.service import ArmSpec
from metarouter.store.sql import SQLStore
from openai_loopback import OpenAILoopback, complete

from langchain_metarouter import MetaRouterChat

pytestmark = [
    pytest.mark.enable_socket,  # even under --disable-socket: the server is on loopback
    pytest.mark.block_network(allowed_hosts=["127.0.0.1"]),  # ... and only loopback is reachable
]

QUESTION = "Explain what a hash map is."
PRICES = {"gpt-4o-mini": Price(0.15, 0.6), "gpt-4o": Price(2.5, 10.0)}
ARMS = [
    ArmSpec("gpt-4o-mini", price=PRICES["gpt-4o-mini"], like="qwen2.5-7b-instruct"),
    ArmSpec("gpt-4o", price=PRICES["gpt-4o"], like="llama-3.1-nemotron-51b-instruct"),
]
#: What the provider calls each candidate (reported back as the response's model name).
PROVIDER = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4o": "gpt-4o-2024-08-06"}


def _answer(model: str, prompt: str) -> str:
    return f"({model}) A hash map stores key-value pairs; this answers: {prompt}"


@pytest.fixture
def server() -> Iterator[OpenAILoopback]:
    with OpenAILoopback({}, default=_answer) as running:
        yield running


@pytest.fixture
def make_router(server, lc_router, tmp_path) -> Iterator[Callable[..., MetaRouterChat]]:
    """``MetaRouterChat`` over two ``ChatOpenAI`` candidates on the loopback server."""
    stores: list[SQLStore] = []

    def build(candidate_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> MetaRouterChat:
        options = {"max_retries": 0, **(candidate_kwargs or {})}
        candidates = {
            name: ChatOpenAI(
                model=provider,
                base_url=server.base_url,
                api_key="test-key",  # type: ignore[arg-type]
                http_socket_options=(),  # default: probes a TCP socket at construction
                **options,
            )
            for name, provider in PROVIDER.items()
        }
        stores.append(SQLStore(tmp_path / f"store{len(stores)}.db"))
        return MetaRouterChat(
            candidates=candidates, arms=ARMS, router=lc_router, store=stores[-1], **kwargs
        )

    yield build
    for store in stores:
        store.close()


def served_usage(request: dict[str, Any]) -> dict[str, int]:
    """The usage the server reported for a request it served."""
    return complete(request, {}, _answer)["usage"]


def routing(message: AIMessage) -> dict[str, Any]:
    return message.response_metadata["metarouter"]


def routed_choice(llm: MetaRouterChat) -> tuple[str, str]:
    """(the router's choice for QUESTION, the other candidate), read from a first call."""
    chosen = routing(llm.invoke(QUESTION))["chosen_model"]
    return chosen, next(name for name in PROVIDER if name != chosen)


class _LLMEnds(BaseCallbackHandler):
    """Counts finished LLM runs and keeps their results (like ``get_openai_callback``)."""

    def __init__(self) -> None:
        self.results: list[Any] = []

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        self.results.append(response)


@contextmanager
def counting_llm_ends() -> Iterator[_LLMEnds]:
    """A handler registered the way ``get_openai_callback()`` registers its own."""
    var: ContextVar[_LLMEnds | None] = ContextVar("test_llm_ends", default=None)
    register_configure_hook(var, inheritable=True)
    handler = _LLMEnds()
    var.set(handler)
    try:
        yield handler
    finally:
        var.set(None)


# -- usage is counted once -----------------------------------------------------------------------
def test_handlers_registered_by_context_managers_count_the_call_once(make_router, server):
    llm = make_router()
    with (
        get_usage_metadata_callback() as usage,
        counting_llm_ends() as ends,
        collect_runs() as runs,
    ):
        answer = llm.invoke(QUESTION)

    served = served_usage(server.requests[-1])
    name = answer.response_metadata["model_name"]
    assert list(usage.usage_metadata) == [name], "one model, not the router's and the provider's"
    assert usage.usage_metadata[name]["input_tokens"] == served["prompt_tokens"]
    assert usage.usage_metadata[name]["total_tokens"] == served["total_tokens"]
    assert len(ends.results) == 1, "one request, as get_openai_callback() would count it"
    # tracers still see the candidate's run, nested under the router's
    (router_run,) = runs.traced_runs
    assert [child.extra["metadata"]["metarouter_candidate"] for child in router_run.child_runs] == [
        name
    ]


# -- any user id ---------------------------------------------------------------------------------
@pytest.mark.parametrize("user_id", ["john.doe+news@example.com", "John Doe", "zoë", "org/42 (EU)"])
def test_an_ordinary_user_id_routes_the_call_and_takes_feedback(make_router, user_id):
    llm = make_router()
    config = {"configurable": {"user_id": user_id}}
    cheap = llm.invoke(QUESTION, config=config, model="gpt-4o-mini")
    dear = llm.invoke(QUESTION, config={"metadata": {"user_id": user_id}}, model="gpt-4o")

    for answer in (cheap, dear):
        assert routing(answer)["user_id"] == user_id
        assert llm.service.store.get_decision(routing(answer)["decision_id"]).user_id == user_id
    record = llm.record_preference(dear, cheap)
    assert record.user_id == user_id and llm.preference(user_id).n_comparisons == 1


# -- streamed calls keep their cost --------------------------------------------------------------
@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_a_streamed_call_reports_its_real_cost(make_router, server, mode):
    llm = make_router()  # ChatOpenAI(base_url=...) does not ask for stream usage by default

    if mode == "stream":
        chunks = list(llm.stream(QUESTION))
    else:

        async def collect() -> list[Any]:
            return [chunk async for chunk in llm.astream(QUESTION)]

        chunks = asyncio.run(collect())

    data = routing(chunks[-1])
    request = server.requests[-1]
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}
    served = served_usage(request)
    assert data["cost_is_estimate"] is False
    assert data["cost_usd"] == pytest.approx(
        PRICES[data["model"]].cost(served["prompt_tokens"], served["completion_tokens"])
    )
    assert llm.service.store.get_decision(data["decision_id"]).cost_usd == pytest.approx(
        data["cost_usd"]
    )


def test_a_stream_without_usage_reports_the_expected_cost_marked_as_an_estimate(
    make_router, server
):
    llm = make_router(candidate_kwargs={"stream_usage": False})  # the user said no usage
    chunks = list(llm.stream(QUESTION))

    data = routing(chunks[-1])
    assert "stream_options" not in server.requests[-1]
    assert data["cost_is_estimate"] is True
    assert data["cost_usd"] == pytest.approx(data["expected_costs_usd"][data["model"]])
    assert data["cost_usd"] > 0


# -- timeouts, retries and fallback --------------------------------------------------------------
@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
def test_a_hung_candidate_is_given_up_after_timeout_and_the_next_one_answers(
    make_router, server, mode
):
    llm = make_router(timeout=1.0)
    hung, other = routed_choice(llm)
    server.faults[PROVIDER[hung]] = "hang"

    if mode == "invoke":
        answer = llm.invoke(QUESTION)
    elif mode == "ainvoke":
        answer = asyncio.run(llm.ainvoke(QUESTION))
    elif mode == "stream":
        answer = list(llm.stream(QUESTION))[-1]
    else:

        async def last() -> Any:
            return [chunk async for chunk in llm.astream(QUESTION)][-1]

        answer = asyncio.run(last())

    data = routing(answer)
    assert (data["chosen_model"], data["model"]) == (hung, other)
    assert data["fallbacks"] == [
        {
            "model": hung,
            "error": f"AttemptTimeoutError: candidate {hung!r} gave no answer within timeout=1.0 s",
        }
    ]
    assert server.attempts.count(PROVIDER[hung]) == 2  # the first call, then the hung one


@pytest.mark.timeout(90)
def test_a_candidates_own_retries_run_inside_one_attempt_before_the_fallback(make_router, server):
    llm = make_router(candidate_kwargs={"max_retries": 1})
    failing, other = routed_choice(llm)
    server.faults[PROVIDER[failing]] = "error"  # HTTP 500, which the OpenAI client retries

    data = routing(llm.invoke(QUESTION))

    assert (data["model"], [f["model"] for f in data["fallbacks"]]) == (other, [failing])
    assert "500" in data["fallbacks"][0]["error"]
    # the first call, then one attempt of the router = the client's try and its one retry
    assert server.attempts.count(PROVIDER[failing]) == 1 + 2


def test_a_stream_cut_mid_answer_raises_dispatch_error_and_does_not_fall_back(make_router, server):
    llm = make_router()
    cut, other = routed_choice(llm)
    server.faults[PROVIDER[cut]] = "cut"

    received = []
    with pytest.raises(DispatchError, match=f"candidate '{cut}' failed mid-stream") as caught:
        for chunk in llm.stream(QUESTION):
            received.append(chunk)
    assert received, "the first chunk arrived before the connection dropped"
    assert caught.value.__cause__ is not None
    assert PROVIDER[other] not in server.attempts, "no second answer is mixed in"


# -- what tracing and cost handlers read --------------------------------------------------------
def test_llm_output_carries_the_usage_and_the_model_that_answered(make_router, server):
    llm = make_router()
    ends = _LLMEnds()
    answer = llm.invoke(QUESTION, config={"callbacks": [ends]})

    (result,) = ends.results  # the router's run only (the candidate's reaches tracers)
    served = served_usage(server.requests[-1])
    assert result.llm_output["token_usage"] == {
        "prompt_tokens": served["prompt_tokens"],
        "completion_tokens": served["completion_tokens"],
        "total_tokens": served["total_tokens"],
    }
    assert result.llm_output["model_name"] == answer.response_metadata["model_name"]
    assert result.llm_output["metarouter"]["decision_id"] == routing(answer)["decision_id"]
