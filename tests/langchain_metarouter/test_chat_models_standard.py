"""LangChain's standard conformance suites for ``MetaRouterChat`` (tool calling on).

The candidates are deterministic scripted chat models that really emit tool calls and report
usage and model names (lc_scripted_models.py); routing uses the bundled router. Skips come
only from the suites' capability properties, each explained below.
"""

from __future__ import annotations

from typing import Any

from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests
from lc_setup import MID, scripted_candidates, shared_service

from langchain_metarouter import MetaRouterChat


class _Params:
    @property
    def chat_model_class(self) -> type[MetaRouterChat]:
        return MetaRouterChat

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"candidates": scripted_candidates(), "service": shared_service()}

    @property
    def model_override_value(self) -> str:
        # a candidate name: model= forces that arm; response_metadata["model_name"] reports it
        return MID

    # Capabilities left at the suites' defaults, with the reason:
    # - has_tool_calling / has_tool_choice / has_structured_output: detected (True), all on.
    # - supports_json_mode = False: the candidates have no JSON mode; structured output goes
    #   through tool calling (the default with_structured_output).
    # - supports_image_inputs / image_urls / pdf / audio / video / image_tool_message /
    #   pdf_tool_message / anthropic_inputs = False: the scripted candidates read text only
    #   (multimodal routing is covered by the capability-exclusion tests in test_chat_models.py).
    # - supported_usage_metadata_details: none (no audio, reasoning or cache token details).
    # - enable_vcr_tests = False: these candidates make no HTTP calls; the VCR tests with real
    #   HTTP through ChatOpenAI are in test_openai_vcr.py.
    # - init_from_env_params: unset; MetaRouterChat reads no settings from the environment
    #   (credentials belong to the candidates).


class TestMetaRouterChatUnit(_Params, ChatModelUnitTests):
    """``ChatModelUnitTests``. ``test_serdes`` skips: ``is_lc_serializable()`` is False because
    the router holds live candidate models and a preference store."""


class TestMetaRouterChatIntegration(_Params, ChatModelIntegrationTests):
    """``ChatModelIntegrationTests`` with deterministic offline candidates."""
