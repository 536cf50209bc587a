"""Routing scopes: per-request user and model for whole pipelines, and the calls made inside."""

from __future__ import annotations

import asyncio
import contextvars
from concurrent.futures import ThreadPoolExecutor

import pytest
from llama_index.core.llms.mock import MockLLM
from metarouter.errors import ConfigError, UnknownArmError

from llama_index_metarouter import ROUTING_KEY


def test_scope_sets_user_and_model_and_collects_the_calls(make_router, mock_candidates):
    router = make_router(mock_candidates())
    with router.scope(user_id="erin", model="gemma-2-9b-it") as scope:
        first = router.complete("Hi")
        second = router.complete("Hello", user_id="frank")  # a per-call keyword still wins
    assert [c.decision_id for c in scope.calls] == [
        first.additional_kwargs[ROUTING_KEY]["decision_id"],
        second.additional_kwargs[ROUTING_KEY]["decision_id"],
    ]
    assert [(c.user_id, c.model, c.reason) for c in scope.calls] == [
        ("erin", "gemma-2-9b-it", "override"),
        ("frank", "gemma-2-9b-it", "override"),
    ]
    assert router.complete("Hi").additional_kwargs[ROUTING_KEY]["user_id"] == "tester"


def test_nested_scopes_innermost_wins_and_both_log(make_router, mock_candidates):
    router = make_router(mock_candidates())
    with router.scope(user_id="outer") as outer, router.scope(user_id="inner") as inner:
        router.complete("Hi")
    assert inner.last.user_id == "inner"
    assert outer.calls == inner.calls


def test_scope_applies_only_to_routers_sharing_its_service(make_router, mock_candidates):
    mine, other = make_router(mock_candidates()), make_router(mock_candidates())
    with mine.scope(user_id="gina") as scope:
        response = other.complete("Hi")
    assert response.additional_kwargs[ROUTING_KEY]["user_id"] == "tester"
    assert scope.calls == []
    with pytest.raises(LookupError, match="no routed call"):
        _ = scope.last


async def test_concurrent_requests_keep_their_own_user(make_router, mock_candidates):
    router = make_router(mock_candidates())

    async def request(user: str) -> tuple[str, list[str]]:
        with router.scope(user_id=user) as scope:
            response = await router.acomplete(f"question from {user}")
            await asyncio.sleep(0)
            await router.acomplete("follow-up")
        return response.additional_kwargs[ROUTING_KEY]["user_id"], [c.user_id for c in scope.calls]

    results = await asyncio.gather(*(request(u) for u in ("u1", "u2", "u3")))
    assert results == [(u, [u, u]) for u in ("u1", "u2", "u3")]


def test_scope_rejects_a_model_that_is_not_a_candidate(make_router):
    router = make_router({"gemma-2-9b-it": MockLLM()})
    with pytest.raises(UnknownArmError, match="not a candidate"), router.scope(model="gpt-5"):
        pass


def test_a_worker_thread_without_the_scope_is_refused_rather_than_booked_to_another_user(
    make_router, mock_candidates
):
    router = make_router(mock_candidates(), user_id=None)
    with router.scope(user_id="carol") as scope, ThreadPoolExecutor(1) as pool:
        with pytest.raises(ConfigError, match=r"copy_context\(\)\.run"):
            pool.submit(router.complete, "Hi").result()
        # passing the caller's context on carries the scope into the worker
        answer = pool.submit(contextvars.copy_context().run, router.complete, "Hi").result()
        named = pool.submit(router.complete, "Hi", user_id="dave").result()
    assert answer.additional_kwargs[ROUTING_KEY]["user_id"] == "carol"
    assert named.additional_kwargs[ROUTING_KEY]["user_id"] == "dave"
    assert [c.user_id for c in scope.calls] == ["carol"]
    with ThreadPoolExecutor(1) as pool:  # no scope open anywhere: the default user, as before
        alone = pool.submit(router.complete, "Hi").result()
    assert alone.additional_kwargs[ROUTING_KEY]["user_id"] == "default"


async def test_a_scope_in_another_task_of_the_loop_does_not_refuse_an_async_call(
    make_router, mock_candidates
):
    router = make_router(mock_candidates(), user_id=None)
    entered, done = asyncio.Event(), asyncio.Event()

    async def request_with_a_scope() -> None:
        with router.scope(user_id="carol"):
            entered.set()
            await done.wait()

    task = asyncio.create_task(request_with_a_scope())
    await entered.wait()
    pair = await router.acompare("Hi")  # plans in a worker thread, user resolved here
    answer = await router.acomplete("Hi")
    done.set()
    await task
    assert pair.user_id == "default"
    assert answer.additional_kwargs[ROUTING_KEY]["user_id"] == "default"
