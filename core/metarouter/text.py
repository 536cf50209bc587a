"""The routing text: which part of a call the router reads, the same rule for every adapter.

A call reaches the router as a conversation (system prompt, earlier turns, tool results,
retrieved context) but its cost-vs-quality trade-off is decided by what the user asks *now*.
The rule, in order:

1. **The user's question, when the framework names it.** A RAG pipeline fills a prompt
   template with the retrieved context and the user's question as separate variables
   (LlamaIndex: ``query_str``, ``question``, ``query``; see :data:`QUESTION_VARIABLES`); the
   adapter passes the question, so retrieved context never enters the routing text.
2. **The text of the last user message** (text parts only; images and files are ignored).
3. If it has no text (an image-only turn): the text of all user messages, oldest first.
4. If there is no user text at all: the text of every message, oldest first.

System prompts, earlier turns, the assistant's answers and tool results do not enter the
routing text. So:

* a query engine, a chat engine and a direct call with the same question are routed alike
  (and share one query hash in the store, whatever adapter made the call);
* in a multi-turn chat each turn is routed on its own question;
* every step of a tool-calling loop (whose last user message stays the same) is routed on the
  same question; :class:`metarouter.dispatch.CallFlow` also keeps the loop on the model that
  issued the tool calls.

Adapters convert their messages to :class:`Turn` and call :func:`routing_text`; nothing else
decides what is routed on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["QUESTION_VARIABLES", "Role", "Turn", "question_from_variables", "routing_text"]

Role = Literal["system", "user", "assistant", "tool"]

#: Prompt-template variables that hold the user's question (checked in this order).
QUESTION_VARIABLES: tuple[str, ...] = ("query_str", "question", "query")


@dataclass(frozen=True)
class Turn:
    """One message of a conversation, as the routing-text rule sees it.

    Attributes:
        role: ``system``, ``user``, ``assistant`` or ``tool``.
        text: The message's text parts joined (images, files and tool calls left out).
    """

    role: Role
    text: str


def question_from_variables(variables: Mapping[str, Any]) -> str | None:
    """The user's question among a prompt template's variables, if one names it.

    Args:
        variables: The template's variables (already bound and passed at call time).

    Returns:
        The first non-empty string value of :data:`QUESTION_VARIABLES`, else None.
    """
    for name in QUESTION_VARIABLES:
        value = variables.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _joined(turns: Sequence[Turn]) -> str:
    return "\n\n".join(t for t in (turn.text.strip() for turn in turns) if t)


def routing_text(turns: Sequence[Turn], question: str | None = None) -> str:
    """The text the router embeds for a call (the rule in the module docstring).

    Args:
        turns: The call's messages, oldest first.
        question: The user's question when the framework names it (e.g. a prompt template's
            ``query_str``); it wins over the messages.

    Returns:
        The routing text (empty when the call has no text at all).
    """
    if question is not None and question.strip():
        return question.strip()
    users = [t for t in turns if t.role == "user"]
    if users:
        last = users[-1].text.strip()
        if last:
            return last
        joined = _joined(users)
        if joined:
            return joined
    return _joined(turns)
