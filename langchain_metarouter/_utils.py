"""Conversions between LangChain objects and the routing core (no routing logic here).

* Messages in: :func:`to_turns` for the core's routing-text rule (:func:`query_text`), tool-call
  ids of a tool loop, and :func:`call_request`, a call as the core's
  :class:`~metarouter.dispatch.CallRequest`.
* Capabilities: what a call needs (tools, images, ...) and which candidates have it.
* Callbacks: the child callback manager that nests a candidate's run under the router's run,
  and the context the candidate runs in.
* Messages out: the router's answer is the candidate's answer plus routing metadata.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import Context
from typing import Any, Literal, cast

from langchain_core.callbacks import BaseCallbackHandler, CallbackManager
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ToolMessage,
)
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import set_config_context
from langchain_core.tracers.base import AsyncBaseTracer, BaseTracer
from langchain_core.utils.utils import LC_ID_PREFIX
from metarouter.dispatch import Call, CallFlow, CallRequest
from metarouter.text import Role, Turn, routing_text

__all__ = [
    "METADATA_KEY",
    "USER_ID_KEY",
    "CandidateCallbacks",
    "call_request",
    "candidate_context",
    "child_callbacks",
    "finished_message",
    "lacking_capabilities",
    "needed_capabilities",
    "pending_tool_call_ids",
    "query_text",
    "routed_chunk",
    "routed_message",
    "supports",
    "to_chunk",
    "to_turns",
    "user_id_from_config",
]

#: Key of the routing data in ``AIMessage.response_metadata``.
METADATA_KEY = "metarouter"
#: Key of the per-call user id in ``config["configurable"]`` and ``config["metadata"]``.
USER_ID_KEY = "user_id"
#: Tag put on the chosen candidate's own run.
CANDIDATE_TAG = "metarouter:candidate"
#: LangGraph's tag for runs whose tokens ``stream_mode="messages"`` must not emit: the router's
#: run already streams the candidate's tokens.
NOSTREAM_TAG = "nostream"

CandidateCallbacks = Literal["tracers", "all"]

# -- the routing text ---------------------------------------------------------------------------

_ROLES: dict[str, Role] = {
    "human": "user",
    "user": "user",
    "ai": "assistant",
    "assistant": "assistant",
    "system": "system",
    "developer": "system",
    "tool": "tool",
    "function": "tool",
}


def to_turns(messages: Sequence[BaseMessage]) -> list[Turn]:
    """The messages as the core's routing-text rule sees them (role and text parts)."""
    turns = []
    for message in messages:
        kind = str(getattr(message, "role", None) or message.type).lower()
        turns.append(Turn(_ROLES.get(kind, "assistant"), message.text))
    return turns


def query_text(messages: Sequence[BaseMessage]) -> str:
    """The text the router embeds for a call: :func:`metarouter.text.routing_text`.

    The last human message (text parts only); system prompts, earlier turns, answers and tool
    results do not enter it. See :mod:`metarouter.text` for the full rule.
    """
    return routing_text(to_turns(messages))


def pending_tool_call_ids(messages: Sequence[BaseMessage]) -> list[str]:
    """Ids of the tool calls whose results end the conversation, most recent first, each once.

    Empty unless the conversation ends with tool results (the next step of a tool loop).
    """
    ids: list[str] = []
    index = len(messages) - 1
    while index >= 0 and isinstance(messages[index], ToolMessage):
        ids.append(cast("ToolMessage", messages[index]).tool_call_id)
        index -= 1
    if ids and index >= 0 and isinstance(messages[index], AIMessage):
        ids.extend(c["id"] or "" for c in cast("AIMessage", messages[index]).tool_calls)
    return list(dict.fromkeys(i for i in ids if i))


def call_request(
    candidates: Mapping[str, BaseChatModel],
    messages: Sequence[BaseMessage],
    *,
    needed: set[str],
    user_id: str | None,
    forced: Any = None,
    compare: bool = False,
    run_id: uuid.UUID | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> CallRequest:
    """A LangChain call as the core's :class:`~metarouter.dispatch.CallRequest`."""
    lacking = {
        name: missing
        for name, model in candidates.items()
        if (missing := lacking_capabilities(model, needed))
    }
    return CallRequest(
        text=query_text(messages),
        user_id=user_id,
        model=forced,
        lacking=lacking,
        needs=sorted(needed),
        pending_tool_calls=pending_tool_call_ids(messages),
        compare=compare,
        run_id=run_id,
        metadata=dict(metadata or {}),
    )


# -- capabilities -------------------------------------------------------------------------------

#: Call needs mapped to the ``ModelProfile`` key that declares them.
_BLOCK_NEEDS = {
    "image": "image_inputs",
    "image_url": "image_inputs",
    "audio": "audio_inputs",
    "input_audio": "audio_inputs",
    "video": "video_inputs",
}


def _block_need(block: Mapping[str, Any]) -> str | None:
    kind = block.get("type")
    if kind == "file":
        mime = str(block.get("mime_type") or "")
        return "pdf_inputs" if mime in ("application/pdf", "") else None
    return _BLOCK_NEEDS.get(str(kind)) if kind is not None else None


def needed_capabilities(
    messages: Sequence[BaseMessage], *, tools: bool = False, tool_choice: Any = None
) -> set[str]:
    """Capabilities (``ModelProfile`` keys) a call needs from the candidate that answers it.

    Args:
        messages: The call's messages (multimodal content blocks are detected).
        tools: Whether tools are bound.
        tool_choice: The bound ``tool_choice``; a forcing value also needs ``tool_choice``.
    """
    needed: set[str] = set()
    if tools:
        needed.add("tool_calling")
        if tool_choice not in (None, "auto", "none", False):
            needed.add("tool_choice")
    for message in messages:
        if isinstance(message.content, str):
            continue
        for block in message.content:
            if isinstance(block, Mapping):
                need = _block_need(block)
                if need is not None:
                    if isinstance(message, ToolMessage) and need in (
                        "image_inputs",
                        "pdf_inputs",
                    ):
                        need = need.replace("_inputs", "_tool_message")
                    needed.add(need)
    return needed


def supports(model: BaseChatModel, capability: str) -> bool | None:
    """Whether a candidate has a capability: True, False, or None when it does not say.

    Tool calling also needs ``bind_tools`` to be implemented by the model's class.
    """
    if capability == "tool_calling" and type(model).bind_tools is BaseChatModel.bind_tools:
        return False
    profile: Mapping[str, Any] = cast("Mapping[str, Any]", model.profile or {})
    value = profile.get(capability)
    if value is None:
        return True if capability == "tool_calling" else None
    return bool(value)


def lacking_capabilities(model: BaseChatModel, needed: Iterable[str]) -> list[str]:
    """The needed capabilities a candidate is known to lack (unknown counts as present)."""
    return sorted(c for c in needed if supports(model, c) is False)


# -- callbacks ----------------------------------------------------------------------------------


def child_callbacks(
    *,
    parent_run_id: Any,
    handlers: Sequence[BaseCallbackHandler],
    tags: Sequence[str],
    metadata: Mapping[str, Any],
    policy: CandidateCallbacks,
    extra_metadata: Mapping[str, Any] | None = None,
) -> CallbackManager:
    """The callback manager for the chosen candidate's run, nested under the router's run.

    Mirrors ``CallbackManagerForChainRun.get_child``: the router run's inheritable tags and
    metadata are inherited, the candidate's run gets ``parent_run_id`` = the router's run id
    and the ``metarouter:candidate`` tag. With ``policy="tracers"`` only tracers (LangSmith,
    run collectors, ``astream_log``) receive the nested run; other handlers (token counters,
    streaming handlers, the app's own) see the router's run only, which carries the same
    tokens, answer and usage, so nothing is counted twice. ``policy="all"`` passes every
    inheritable handler. Either way the candidate's run is tagged ``nostream``, so that a
    LangGraph ``stream_mode="messages"`` stream emits each token once (from the router's run).

    Args:
        parent_run_id: The router's run id (None when unknown).
        handlers: The router run's inheritable handlers.
        tags: The router run's inheritable tags.
        metadata: The router run's inheritable metadata (``ls_*`` keys are dropped: the
            candidate reports its own).
        policy: Which handlers the candidate's run reaches.
        extra_metadata: Metadata added for the candidate's run (routing ids).
    """
    manager = CallbackManager(handlers=[], parent_run_id=parent_run_id)
    chosen = [
        h for h in handlers if policy == "all" or isinstance(h, (BaseTracer, AsyncBaseTracer))
    ]
    manager.set_handlers(chosen)
    manager.add_tags(list(tags))
    manager.add_metadata({k: v for k, v in metadata.items() if not k.startswith("ls_")})
    if extra_metadata:
        manager.add_metadata(dict(extra_metadata), inherit=False)
    manager.add_tags([CANDIDATE_TAG, NOSTREAM_TAG], inherit=False)
    return manager


def _without_hook_handlers(context: Context) -> None:
    """Unset, in ``context``, the handlers that context managers registered (not tracers).

    ``get_usage_metadata_callback()``, ``get_openai_callback()`` and the like register their
    handler through a configure hook, so every run configured in their block reports to it,
    the candidate's nested run included. The router's run already reports the candidate's
    tokens and usage: without this, they are counted twice.
    """
    from langchain_core.tracers import context as tracing  # the hook registry lives here

    for var, _inheritable, _cls, _env in getattr(tracing, "_configure_hooks", ()):
        handler = context.run(var.get)
        if handler is not None and not isinstance(handler, (BaseTracer, AsyncBaseTracer)):
            context.run(var.set, None)


@contextmanager
def candidate_context(config: RunnableConfig, policy: CandidateCallbacks) -> Iterator[Context]:
    """The context a candidate runs in: its own config as the ambient one.

    LangChain merges a runnable's explicit config with the *ambient* one (the parent chain's,
    from a context variable) when a binding is invoked; the candidate therefore runs in a
    context whose ambient config is its own, so its run nests under the router's run and
    nowhere else. With ``policy="tracers"``, handlers registered by context managers
    (``get_usage_metadata_callback()``, ...) do not see the candidate's run either.
    """
    with set_config_context(config) as context:
        if policy == "tracers":
            _without_hook_handlers(context)
        yield context


def user_id_from_config(config: Mapping[str, Any] | None) -> str | None:
    """The per-call user id: ``configurable["user_id"]``, else ``metadata["user_id"]``."""
    if not config:
        return None
    for section in ("configurable", "metadata"):
        value = (config.get(section) or {}).get(USER_ID_KEY)
        if value is not None:
            return str(value)
    return None


# -- messages -----------------------------------------------------------------------------------


def _own_id(message_id: str | None) -> str | None:
    """Keep provider ids; drop ids LangChain generated for the candidate's run."""
    return None if message_id is None or message_id.startswith(LC_ID_PREFIX) else message_id


def routed_message(message: BaseMessage, arm: str, routing: Mapping[str, Any]) -> AIMessage:
    """The router's answer: the candidate's message with ``model_name`` = the arm and routing data.

    The candidate's ``model_provider``, ``usage_metadata``, tool calls and other metadata are
    kept; its own model name is kept in ``response_metadata["metarouter"]["provider_model_name"]``.
    """
    if not isinstance(message, AIMessage):
        raise TypeError(f"candidate {arm!r} returned {type(message).__name__}, not an AIMessage.")
    if isinstance(message, AIMessageChunk):
        message = AIMessage(
            content=message.content,
            additional_kwargs=message.additional_kwargs,
            response_metadata=message.response_metadata,
            tool_calls=message.tool_calls,
            invalid_tool_calls=message.invalid_tool_calls,
            usage_metadata=message.usage_metadata,
            id=message.id,
            name=message.name,
        )
    metadata = {**message.response_metadata, "model_name": arm, METADATA_KEY: dict(routing)}
    return message.model_copy(update={"response_metadata": metadata, "id": _own_id(message.id)})


def to_chunk(message: BaseMessage) -> AIMessageChunk:
    """An ``AIMessageChunk`` for a whole message (a candidate that does not stream)."""
    if isinstance(message, AIMessageChunk):
        return message
    if not isinstance(message, AIMessage):
        raise TypeError(f"expected an AIMessage, got {type(message).__name__}.")
    return AIMessageChunk(
        content=message.content,
        additional_kwargs=message.additional_kwargs,
        response_metadata=message.response_metadata,
        usage_metadata=message.usage_metadata,
        id=message.id,
        name=message.name,
        tool_call_chunks=[
            tool_call_chunk(
                name=call["name"], args=json.dumps(call["args"]), id=call.get("id"), index=i
            )
            for i, call in enumerate(message.tool_calls)
        ],
        chunk_position="last",
    )


def routed_chunk(chunk: BaseMessage) -> tuple[AIMessageChunk, str | None]:
    """A candidate's streamed chunk as the router streams it, and the model name it carried.

    ``model_name`` and ``chunk_position="last"`` are removed: the router's final chunk carries
    both (with the routing data), so that aggregating the stream neither concatenates two model
    names nor closes the message before the routing data arrives.
    """
    piece = to_chunk(chunk)
    metadata = dict(piece.response_metadata)
    provider_name = metadata.pop("model_name", None)
    update: dict[str, Any] = {"response_metadata": metadata, "id": _own_id(piece.id)}
    if piece.chunk_position == "last":
        update["chunk_position"] = None
    return piece.model_copy(update=update), provider_name


def finished_message(flow: CallFlow, call: Call, name: str, message: BaseMessage) -> AIMessage:
    """Book a candidate's answer with the core and return it as the router's answer.

    The usage and model name the candidate reported go to :meth:`CallFlow.finish`, its tool
    calls keep the next step of the loop on it, and the routing data is attached.
    """
    usage = message.usage_metadata if isinstance(message, AIMessage) else None
    data = flow.finish(
        call,
        name,
        input_tokens=usage.get("input_tokens") if usage else None,
        output_tokens=usage.get("output_tokens") if usage else None,
        provider_model=message.response_metadata.get("model_name"),
    )
    if isinstance(message, AIMessage):
        flow.remember_tool_calls(name, [c["id"] or "" for c in message.tool_calls])
    return routed_message(message, name, data)
