"""``MetaRouterMiddleware``: route a LangChain 1.x agent's model calls with a ``MetaRouterChat``.

For ``create_agent`` users who keep their agent's model as is and add routing as middleware:
each model call is routed (per user) among the router's candidates and executed with
``request.override(model=<chosen candidate>)``; if the candidate raises, the next-best one is
tried. The answer carries the same ``response_metadata["metarouter"]`` as ``MetaRouterChat``,
and feedback goes through the same router (``router.record_preference`` etc.).

(Passing the ``MetaRouterChat`` itself as the agent's model also works; the middleware keeps
the chosen candidate as the model-call run, without the router's own run around it.)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain.agents.structured_output import ProviderStrategy, ToolStrategy
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables.config import run_in_executor
from langgraph.errors import GraphBubbleUp
from metarouter.dispatch import Call
from metarouter.errors import ConfigError

from langchain_metarouter._utils import (
    USER_ID_KEY,
    call_request,
    finished_message,
    needed_capabilities,
    user_id_from_config,
)
from langchain_metarouter.chat_models import MetaRouterChat

__all__ = ["MetaRouterMiddleware"]

logger = logging.getLogger(__name__)


def _context_user(request: ModelRequest[Any]) -> str | None:
    """``user_id`` from the agent's runtime context, then from the run config."""
    runtime = getattr(request, "runtime", None)
    context = getattr(runtime, "context", None)
    if isinstance(context, Mapping) and context.get(USER_ID_KEY) is not None:
        return str(context[USER_ID_KEY])
    if context is not None and getattr(context, USER_ID_KEY, None) is not None:
        return str(getattr(context, USER_ID_KEY))
    try:
        from langgraph.config import get_config

        config = get_config()
    except RuntimeError:  # not inside a graph run
        return None
    return user_id_from_config(config)


class MetaRouterMiddleware(AgentMiddleware):
    """Agent middleware that routes each model call with a :class:`MetaRouterChat`.

    The user is taken from the agent's runtime ``context`` (``context["user_id"]`` or
    ``context.user_id``), else ``config["configurable"]["user_id"]`` /
    ``config["metadata"]["user_id"]``, else the router's ``user_id``. A
    ``model_settings={"model": name}`` in the request forces a candidate.

    Args:
        router: The router whose candidates, service, user and fallback settings are used.

    Example:
        .. code-block:: python

            from langchain.agents import create_agent

            agent = create_agent(
                model=router.candidate("gpt-4o-mini"),  # replaced on every call
                tools=[get_weather],
                middleware=[MetaRouterMiddleware(router)],
            )
            agent.invoke({"messages": [("user", "Weather in Paris?")]},
                         context={"user_id": "alice"})
    """

    def __init__(self, router: MetaRouterChat) -> None:
        super().__init__()
        if not isinstance(router, MetaRouterChat):
            raise ConfigError(
                f"MetaRouterMiddleware takes a MetaRouterChat, got {type(router).__name__}."
            )
        self.router = router

    def _start(self, request: ModelRequest[Any]) -> tuple[Call, ModelRequest[Any]]:
        settings = dict(request.model_settings)
        forced = settings.pop("model", None)
        needs_tools = bool(request.tools) or isinstance(request.response_format, ToolStrategy)
        needed = needed_capabilities(
            request.messages,
            tools=needs_tools,
            tool_choice=request.tool_choice if needs_tools else None,
        )
        if isinstance(request.response_format, ProviderStrategy):
            needed.add("structured_output")
        call = self.router.flow.start(
            call_request(
                self.router.candidates,
                request.messages,
                needed=needed,
                forced=forced,
                user_id=_context_user(request) or self.router.user_id,
                metadata={"via": "agent_middleware"},
            )
        )
        return call, request.override(model_settings=settings) if forced else request

    def _finish(self, call: Call, name: str, response: ModelResponse[Any]) -> ModelResponse[Any]:
        messages: list[BaseMessage] = list(response.result)
        for i in range(len(messages) - 1, -1, -1):
            if isinstance(messages[i], AIMessage):
                messages[i] = finished_message(self.router.flow, call, name, messages[i])
                break
        return ModelResponse(result=messages, structured_response=response.structured_response)

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResponse[Any]:
        """Route the call, run it on the chosen candidate, fall back on errors."""
        call, request = self._start(request)
        response, name = self.router.flow.attempt(
            call,
            lambda n: handler(request.override(model=self.router.candidate(n))),
            passthrough=(GraphBubbleUp,),
        )
        return self._finish(call, name, response)

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResponse[Any]:
        """Async :meth:`wrap_model_call` (routing runs in an executor)."""
        call, request = await run_in_executor(None, self._start, request)
        response, name = await self.router.flow.aattempt(
            call,
            lambda n: handler(request.override(model=self.router.candidate(n))),
            passthrough=(GraphBubbleUp,),
        )
        return await run_in_executor(None, self._finish, call, name, response)
