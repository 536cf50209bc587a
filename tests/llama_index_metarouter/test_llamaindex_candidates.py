"""Building a router: candidate descriptions, services, and the errors that say how to fix them."""

from __future__ import annotations

import pytest
from llama_index.core.llms.mock import MockFunctionCallingLLM, MockLLM
from metarouter.errors import ConfigError, UnknownArmError
from metarouter.pricing import Price
from metarouter.service import ArmSpec, RoutingService

from llama_index_metarouter import Candidate, MetaRouterLLM


def test_catalog_models_need_no_description(make_router):
    router = make_router({"gemma-2-9b-it": MockLLM(), "llama-3.1-8b-instruct": MockLLM()})
    assert router.service.arm_names == ["gemma-2-9b-it", "llama-3.1-8b-instruct"]


def test_other_models_are_described_by_price_and_likeness(make_router):
    router = make_router(
        {
            "gemma-2-9b-it": MockLLM(),
            "my-model": Candidate(MockLLM(), price=(0.15, 0.6), like="qwen2.5-7b-instruct"),
            "flat": Candidate(MockLLM(), price=Price(1.0, 2.0), quality=0.7),
        }
    )
    spec = router.service.specs["my-model"]
    assert spec.price == Price(0.15, 0.6) and spec.like == "qwen2.5-7b-instruct"
    assert router.service.cost_of("my-model", 1_000_000, 0) == pytest.approx(0.15)
    assert router.complete("Hi", model="flat").additional_kwargs["metarouter"]["model"] == "flat"


def test_an_undescribed_unknown_model_lists_the_catalog_and_the_fix(make_router):
    with pytest.raises(UnknownArmError, match=r"'gpt-4o'.*gemma-2-9b-it.*Fix: describe it"):
        make_router({"gpt-4o": MockLLM(), "gemma-2-9b-it": MockLLM()})


@pytest.mark.parametrize(
    ("candidates", "message"),
    [
        ({}, "non-empty mapping"),
        ({"gemma-2-9b-it": "gpt-4"}, "not a LlamaIndex LLM"),
        ({"": MockLLM()}, "non-empty strings"),
        ({"x": Candidate(MockLLM(), price=(1,), like="gemma-2-9b-it")}, "price must be"),
    ],
)
def test_malformed_candidates_are_rejected_clearly(make_router, candidates, message):
    with pytest.raises(ConfigError, match=message):
        make_router(candidates)


def test_a_shared_service_serves_several_routers(meta_router, store):
    service = RoutingService(
        [
            ArmSpec("gpt-4o-mini", price=Price(0.15, 0.6), like="qwen2.5-7b-instruct"),
            "gemma-2-9b-it",
        ],
        router=meta_router,
        store=store,
    )
    a = MetaRouterLLM({"gpt-4o-mini": MockLLM(), "gemma-2-9b-it": MockLLM()}, service=service)
    b = MetaRouterLLM({"gemma-2-9b-it": MockFunctionCallingLLM()}, service=service)
    assert a.service is b.service
    # a router over a subset of the service's arms only routes among its own candidates
    info = b.complete("Hi").additional_kwargs["metarouter"]
    assert info["model"] == "gemma-2-9b-it" and set(info["scores"]) == {"gemma-2-9b-it"}


def test_service_conflicts_are_explained(meta_router, store):
    service = RoutingService(["gemma-2-9b-it"], router=meta_router, store=store)
    with pytest.raises(ConfigError, match="either service= or router=/store="):
        MetaRouterLLM({"gemma-2-9b-it": MockLLM()}, service=service, store=store)
    with pytest.raises(ConfigError, match=r"described .* by the RoutingService"):
        MetaRouterLLM({"gemma-2-9b-it": Candidate(MockLLM(), price=(0.1, 0.1))}, service=service)
    with pytest.raises(ConfigError, match=r"\['qwen2.5-7b-instruct'\] are not arms"):
        MetaRouterLLM(
            {"gemma-2-9b-it": MockLLM(), "qwen2.5-7b-instruct": MockLLM()}, service=service
        )


def test_store_may_be_a_sqlite_path(meta_router, tmp_path):
    router = MetaRouterLLM(
        {"gemma-2-9b-it": MockLLM()}, router=meta_router, store=tmp_path / "prefs.db"
    )
    router.complete("Hi")
    assert (tmp_path / "prefs.db").exists()


def test_arms_describe_plain_llms_as_in_the_langchain_adapter(make_router):
    router = make_router(
        {"my-model": MockLLM(), "gemma-2-9b-it": MockLLM()},
        arms=[ArmSpec("my-model", price=Price(0.15, 0.6), like="qwen2.5-7b-instruct")],
    )
    spec = router.service.specs["my-model"]
    assert spec.price == Price(0.15, 0.6) and spec.like == "qwen2.5-7b-instruct"
    assert router.service.arm_names == ["my-model", "gemma-2-9b-it"]
    assert router.complete("Hi", model="my-model").additional_kwargs["metarouter"]["model"] == (
        "my-model"
    )


def test_arms_conflicts_are_explained(make_router, meta_router, store):
    with pytest.raises(ConfigError, match=r"arms \['typo'\] describe no candidate"):
        make_router({"gemma-2-9b-it": MockLLM()}, arms=[ArmSpec("typo", price=Price(1, 1))])
    with pytest.raises(ConfigError, match="described twice"):
        make_router(
            {"m": Candidate(MockLLM(), price=(1, 1), quality=0.5)},
            arms=[ArmSpec("m", price=Price(1, 1), quality=0.5)],
        )
    service = RoutingService(["gemma-2-9b-it"], router=meta_router, store=store)
    with pytest.raises(ConfigError, match="no arms="):
        MetaRouterLLM(
            {"gemma-2-9b-it": MockLLM()},
            arms=[ArmSpec("gemma-2-9b-it", price=Price(0.1, 0.1))],
            service=service,
        )
