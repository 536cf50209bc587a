"""Conversions between LangChain objects and the routing core (no routing logic here).

* :func:`query_text`: the text the router embeds for a call (the documented rule).
* Capabilities: what a call needs (tools, images, ...) and which candidates have it.
* Callbacks: the child callback manager that nests a candidate's run under the router's run.
* Messages: the router's answer is the candidate's answer plus routing metadata.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, cast

from langchain_core.callbacks import BaseCallbackHandler, CallbackManager
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.tracers.base import AsyncBaseTracer, BaseTracer
from langchain_core.utils.utils import LC_ID_PREFIX

__all__ = [
    "METADATA_KEY",
    "USER_ID_KEY",
    "CandidateCallbacks",
    "child_callbacks",
    "lacking_capabilities",
    "needed_capabilities",
    "query_text",
    "routed_chunk",
    "routed_message",
    "supports",
    "to_chunk",
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


def _text_of(message: BaseMessage) -> str:
    return message.text.strip()


def query_text(messages: Sequence[BaseMessage]) -> str:
    """The text the router embeds for a call.

    Rule, in order:

    1. the text of the **last human message** (text parts only; images and files are ignored);
    2. if it has no text (an image-only turn), the text of all human messages, oldest first;
    3. if there is no human text at all, the text of every message, oldest first.

    System prompts, earlier turns and tool results do not enter the routing text: routing
    follows what the user asks *now*, and every step of a tool-calling loop (whose last human
    message stays the same) is routed on the same question, hence to the same model.

    Args:
        messages: The call's messages, as the chat model receives them.

    Returns:
        The routing text (may be empty when the conversation has no text).
    """
    humans = [m for m in messages if isinstance(m, HumanMessage)]
    if humans:
        last = _text_of(humans[-1])
        if last:
            return last
        joined = "\n\n".join(t for t in (_text_of(m) for m in humans) if t)
        if joined:
            return joined
    return "\n\n".join(t for t in (_text_of(m) for m in messages) if t)


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
