"""``MetaRouterLLM`` over real HTTP: LlamaIndex ``OpenAILike`` candidates against an
OpenAI-compatible server on loopback (tests/openai_loopback.py), with the faults real providers
have (a 500, a hung request, a stream cut mid-answer).

Only loopback is reachable. The provider model names differ from the candidate names, as with
real providers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from llamaindex_tooling import IDS, VARIANTS, call
from metarouter.errors import DispatchError
from metarouter.pricing import Price
from openai_loopback import OpenAILoopback, complete

from llama_index_metarouter import ROUTING_KEY, Candidate, MetaRouterLLM, RoutingFallbackEvent

OpenAILike = pytest.importorskip("llama_index.llms.openai_like").OpenAILike

pytestmark = pytest.mark.block_network(allowed_hosts=["127.0.0.1"])  # loopback only

QUESTION = "Explain what a hash map is."
PRICES = {"gpt-4o-mini": Price(0.15, 0.6), "gpt-4o": Price(2.5, 10.0)}
LIKE = {"gpt-4o-mini": "qwen2.5-7b-instruct", "gpt-4o": "llama-3.1-nemotron-51b-instruct"}
#: What the provider calls each candidate.
PROVIDER = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4o": "gpt-4o-2024-08-06"}


def _answer(model: str, prompt: str) -> str:
    return f"({model}) A hash map stores key-value pairs; this answers: {prompt}"


@pytest.fixture(autouse=True)
def _no_network() -> Iterator[None]:
    """Replaces the folder's socket ban: the ``block_network`` mark allows loopback only."""
    yield


@pytest.fixture
def server() -> Iterator[OpenAILoopback]:
    with OpenAILoopback({}, default=_answer) as running:
        yield running


@pytest.fixture
def http_router(server, make_router) -> Callable[..., MetaRouterLLM]:
    """``MetaRouterLLM`` over two ``OpenAILike`` candidates on the loopback server."""

    def build(candidate_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> MetaRouterLLM:
        options = {"max_retries": 0, **(candidate_kwargs or {})}
        candidates = {
            name: Candidate(
                OpenAILike(
                    model=provider,
                    api_base=server.base_url,
                    api_key="test-key",
                    is_chat_model=True,
                    context_window=16_000,
                    **options,
                ),
                price=PRICES[name],
                like=LIKE[name],
            )
            for name, provider in PROVIDER.items()
        }
        return make_router(candidates, **kwargs)

    return build


def served_usage(request: dict[str, Any]) -> dict[str, int]:
    """The usage the server reported for a request it served."""
    return complete(request, {}, _answer)["usage"]


def routed_choice(router: MetaRouterLLM) -> tuple[str, str]:
    """(the router's choice for QUESTION, the other candidate), read from a first call."""
    chosen = router.complete(QUESTION).additional_kwargs[ROUTING_KEY]["chosen_model"]
    return chosen, next(name for name in PROVIDER if name != chosen)


# -- streamed calls keep their cost --------------------------------------------------------------
@pytest.mark.parametrize(("api", "mode", "stream"), VARIANTS, ids=IDS)
async def test_every_entry_point_reports_the_real_cost_of_the_call(
    api, mode, stream, http_router, server
):
    router = http_router()
    with router.scope() as scope:
        _, last, _ = await call(router, api, mode, stream, QUESTION)

    info = last.additional_kwargs[ROUTING_KEY]
    request = server.requests[-1]
    if stream:  # OpenAI-compatible servers send stream usage only when asked
        assert request["stream_options"] == {"include_usage": True}
    else:
        assert "stream_options" not in request
    served = served_usage(request)
    assert (info["input_tokens"], info["output_tokens"]) == (
        served["prompt_tokens"],
        served["completion_tokens"],
    )
    assert info["cost_is_estimate"] is False
    assert info["cost_usd"] == pytest.approx(
        PRICES[info["model"]].cost(served["prompt_tokens"], served["completion_tokens"])
    )
    assert scope.last.cost_usd == pytest.approx(info["cost_usd"])


async def test_a_stream_without_usage_reports_the_expected_cost_marked_as_an_estimate(
    http_router, server
):
    router = http_router(candidate_kwargs={"additional_kwargs": {"stream_options": None}})
    _, last, _ = await call(router, "chat", "sync", True, QUESTION)

    info = last.additional_kwargs[ROUTING_KEY]
    assert info["input_tokens"] is None, "the server sent no usage"
    assert info["cost_is_estimate"] is True
    assert info["cost_usd"] == pytest.approx(info["expected_costs_usd"][info["model"]])


# -- faults: 500, hang, cut ----------------------------------------------------------------------
def test_a_500_falls_back_after_the_candidates_own_retries(http_router, server, trace):
    router = http_router(candidate_kwargs={"max_retries": 0})
    failing, other = routed_choice(router)
    server.faults[PROVIDER[failing]] = "error"

    info = router.complete(QUESTION).additional_kwargs[ROUTING_KEY]

    assert (info["chosen_model"], info["model"]) == (failing, other)
    assert [f["model"] for f in info["fallbacks"]] == [failing]
    assert server.attempts.count(PROVIDER[failing]) == 1 + 1  # the first call, one try
    (event,) = trace.events.of(RoutingFallbackEvent)
    assert (event.failed_model, event.next_model) == (failing, other)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("fault", ["hang", "error"])
@pytest.mark.parametrize(("api", "mode", "stream"), VARIANTS, ids=IDS)
async def test_timeout_bounds_an_attempt_retries_included_then_the_next_candidate_answers(
    api, mode, stream, fault, http_router, server
):
    # the candidates keep LlamaIndex's default retries (3): a 500 alone takes 2.6 s or more of
    # back-off, past the 1.5 s bound; the healthy candidate gets the same bound, enough on a
    # loaded machine (0.5 s was not, with a second process busy on this 2-core machine)
    router = http_router(candidate_kwargs={"max_retries": 3}, timeout=1.5)
    slow, other = routed_choice(router)
    server.faults[PROVIDER[slow]] = fault

    _, last, _ = await call(router, api, mode, stream, QUESTION)

    info = last.additional_kwargs[ROUTING_KEY]
    assert (info["chosen_model"], info["model"]) == (slow, other)
    assert info["fallbacks"] == [
        {
            "model": slow,
            "error": f"AttemptTimeoutError: candidate {slow!r} gave no answer within timeout=1.5 s",
        }
    ]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_stream_cut_mid_answer_raises_dispatch_error_and_does_not_fall_back(
    mode, http_router, server
):
    router = http_router()
    cut, other = routed_choice(router)
    server.faults[PROVIDER[cut]] = "cut"

    received = []
    with pytest.raises(DispatchError, match=f"candidate '{cut}' failed mid-stream") as caught:
        await _collect(router, mode, received)
    assert received, "the first chunk arrived before the connection dropped"
    assert caught.value.__cause__ is not None
    assert PROVIDER[other] not in server.attempts, "no second answer is mixed in"


async def _collect(router: MetaRouterLLM, mode: str, into: list[Any]) -> None:
    from llama_index.core.base.llms.types import ChatMessage

    messages = [ChatMessage(role="user", content=QUESTION)]
    if mode == "sync":
        for chunk in router.stream_chat(messages):
            into.append(chunk)
    else:
        async for chunk in await router.astream_chat(messages):
            into.append(chunk)


# -- any user id ---------------------------------------------------------------------------------
@pytest.mark.parametrize("user_id", ["john.doe+news@example.com", "John Doe", "zoë", "org/42 (EU)"])
def test_an_ordinary_user_id_routes_the_call_and_takes_feedback(http_router, user_id):
    router = http_router()
    cheap = router.complete(QUESTION, user_id=user_id, model="gpt-4o-mini")
    with router.scope(user_id=user_id) as scope:
        router.complete(QUESTION, model="gpt-4o")

    assert cheap.additional_kwargs[ROUTING_KEY]["user_id"] == user_id
    assert scope.last.user_id == user_id
    record = router.record_preference(scope.last, cheap)
    assert record.user_id == user_id and router.preference(user_id).n_comparisons == 1
