"""VCR cassettes that record real RouterBench answers without storing RouterBench text.

RouterBench declares no licence (``../shared/data/routerbench_subset/README.md``: use it from
the shared data folder, do not redistribute it), so its prompts and model responses must not
be committed inside cassettes. This vcrpy serializer (registered as :data:`SERIALIZER`) writes
plain YAML cassettes in which every RouterBench text found in a request or response body, or
each streamed piece of one, is replaced by a reference::

    <<routerbench mbpp.dev.75 gpt-4-1106-preview sha256:1a2b3c4d5e6f 0:48>>

(query id, ``prompt`` or the model that answered, the first 12 hex digits of the text's
SHA-256, and the character range of the piece). Loading a cassette puts the text back from the
shared data (checking the digest), so a replayed request and response are byte for byte what
was recorded. Replaying therefore needs ``../shared/data`` (or ``$METAROUTER_DATA``), as every
test that reads RouterBench does; it never needs the recording server or the network.

Texts shorter than :data:`MIN_CHARS` (one-letter multiple-choice answers) are left as they are.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from openai_loopback import dumps
from vcr.serializers import yamlserializer

__all__ = ["MIN_CHARS", "SERIALIZER", "RouterBenchTexts", "RouterBenchYAMLSerializer"]

#: Name the serializer is registered under (``vcr_config["serializer"]``); pytest-recording
#: also makes it the cassettes' file suffix (``<test name>.routerbench.yaml``).
SERIALIZER = "routerbench.yaml"
#: Shorter texts are not replaced (``"A"``, ``"B"``: nothing to protect, and too ambiguous).
MIN_CHARS = 16

_REF = re.compile(r"<<routerbench (\S+) (\S+) sha256:([0-9a-f]{12}) (\d+):(\d+)>>")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _ref(key: tuple[str, str], text: str, start: int, end: int) -> str:
    return f"<<routerbench {key[0]} {key[1]} sha256:{_digest(text)} {start}:{end}>>"


@dataclass(frozen=True)
class RouterBenchTexts:
    """RouterBench prompts and responses, by ``(query_id, "prompt" | model)`` and by text."""

    by_key: dict[tuple[str, str], str]
    by_text: dict[str, tuple[str, str]]

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, str, str, str]]) -> RouterBenchTexts:
        """Build from ``(query_id, prompt, model, response)`` rows."""
        by_key: dict[tuple[str, str], str] = {}
        for query_id, prompt, model, response in rows:
            by_key.setdefault((query_id, "prompt"), prompt)
            if isinstance(response, str) and response.strip():
                by_key[(query_id, model)] = response
        by_text: dict[str, tuple[str, str]] = {}
        for key, text in by_key.items():
            if len(text) >= MIN_CHARS:
                by_text.setdefault(text, key)
        return cls(by_key, by_text)

    def prompt(self, query_id: str) -> str:
        """The prompt of a query."""
        return self.by_key[(query_id, "prompt")]

    def answer(self, query_id: str, model: str) -> str:
        """A model's recorded response to a query."""
        return self.by_key[(query_id, model)]


def shared_data_dir() -> Path | None:
    """``$METAROUTER_DATA``, else ``../shared/data`` beside the repository."""
    env = os.environ.get("METAROUTER_DATA")
    if env:
        return Path(env)
    default = Path(__file__).resolve().parents[3] / "shared" / "data"
    return default if default.is_dir() else None


def load_routerbench_texts(folder: Path | None = None) -> RouterBenchTexts:
    """All RouterBench prompts and responses from the shared data folder (loaded once)."""
    folder = folder or shared_data_dir()
    if folder is None:
        raise FileNotFoundError(
            "cassettes quoting RouterBench need the shared data: set METAROUTER_DATA to the "
            "folder holding routerbench_subset/ (e.g. ../shared/data)."
        )
    return _load(folder.resolve())


@cache
def _load(folder: Path) -> RouterBenchTexts:
    from metarouter.data import load_dataset

    frame = load_dataset("routerbench", folder).frame
    rows = zip(frame["query_id"], frame["query"], frame["model"], frame["response"], strict=True)
    return RouterBenchTexts.from_rows(rows)


class RouterBenchYAMLSerializer:
    """YAML cassettes with RouterBench texts replaced by references (see the module docstring).

    Args:
        texts: Returns the RouterBench texts (called on first use; raises if the data is absent).
    """

    def __init__(self, texts: Callable[[], RouterBenchTexts] = load_routerbench_texts) -> None:
        self._texts = texts

    # -- saving ---------------------------------------------------------------------------------
    def serialize(self, cassette: dict[str, Any]) -> str:
        """Replace RouterBench texts by references, then write YAML."""
        cassette = copy.deepcopy(cassette)  # vcrpy hands over the live cassette's dicts
        texts = self._texts()
        used: set[tuple[str, str]] = set()
        for interaction in cassette["interactions"]:
            request = interaction["request"]
            if isinstance(request.get("body"), (str, bytes)):
                request["body"] = self._redact_json(_text(request["body"]), texts, used)
            response = interaction["response"]
            body = response.get("body") or {}
            if isinstance(body.get("string"), (str, bytes)):
                raw = _text(body["string"])
                if _is_event_stream(response):
                    body["string"] = self._redact_events(raw, texts, used)
                else:
                    body["string"] = self._redact_json(raw, texts, used)
                _set_content_length(response, body["string"])
        bodies = [
            _text(part)
            for interaction in cassette["interactions"]
            for part in (
                interaction["request"].get("body"),
                (interaction["response"].get("body") or {}).get("string"),
            )
            if isinstance(part, (str, bytes))
        ]
        for key in used:  # belt and braces: no protected text may be left anywhere
            text = texts.by_key[key]
            if any(form in body for body in bodies for form in (text, dumps(text)[1:-1])):
                raise ValueError(f"RouterBench text {key} would be written to a cassette.")
        return str(yamlserializer.serialize(cassette))

    def _redact_json(self, raw: str, texts: RouterBenchTexts, used: set[tuple[str, str]]) -> str:
        try:
            data = json.loads(raw)
        except ValueError:
            return raw
        return dumps(_replace_strings(data, texts, used))

    def _redact_events(self, raw: str, texts: RouterBenchTexts, used: set[tuple[str, str]]) -> str:
        events: list[Any] = []
        for line in raw.split("\n"):
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[len("data: ") :]))
            else:
                events.append(line)
        pieces: dict[int, list[dict[str, Any]]] = {}
        for event in events:
            if isinstance(event, dict):
                for choice in event.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if isinstance(delta.get("content"), str):
                        pieces.setdefault(choice.get("index", 0), []).append(delta)
        for deltas in pieces.values():
            whole = "".join(d["content"] for d in deltas)
            key = texts.by_text.get(whole)
            if key is None:
                continue
            used.add(key)
            start = 0
            for delta in deltas:
                end = start + len(delta["content"])
                if end > start:
                    delta["content"] = _ref(key, whole, start, end)
                start = end
        for i, event in enumerate(events):
            if isinstance(event, dict):
                events[i] = "data: " + dumps(_replace_strings(event, texts, used))
        return "\n".join(events)

    # -- loading --------------------------------------------------------------------------------
    def deserialize(self, cassette_string: str) -> dict[str, Any]:
        """Read YAML, then put the RouterBench texts back."""
        cassette: dict[str, Any] = yamlserializer.deserialize(cassette_string)
        for interaction in cassette.get("interactions") or []:
            request = interaction["request"]
            if isinstance(request.get("body"), str):
                request["body"] = self._restore(request["body"])
            response = interaction["response"]
            body = response.get("body") or {}
            if isinstance(body.get("string"), str):
                body["string"] = self._restore(body["string"])
                _set_content_length(response, body["string"])
        return cassette

    def _restore(self, raw: str) -> str:
        if _REF.search(raw) is None:
            return raw
        texts = self._texts()

        def put_back(match: re.Match[str]) -> str:
            query_id, field, digest, start, end = match.groups()
            text = texts.by_key.get((query_id, field))
            if text is None or _digest(text) != digest:
                raise ValueError(
                    f"the cassette quotes RouterBench {query_id} / {field} (sha256 {digest}), "
                    "which the shared data does not hold (or holds changed). Fix: point "
                    "METAROUTER_DATA at the routerbench_subset the cassette was recorded from, or "
                    "re-record with --record-mode=rewrite."
                )
            return dumps(text[int(start) : int(end)])[1:-1]

        return _REF.sub(put_back, raw)


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _is_event_stream(response: dict[str, Any]) -> bool:
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    kind = headers.get("content-type") or [""]
    return "text/event-stream" in (kind[0] if isinstance(kind, list) else str(kind))


def _set_content_length(response: dict[str, Any], body: str) -> None:
    headers = response.get("headers") or {}
    for name in headers:
        if name.lower() == "content-length":
            headers[name] = [str(len(body.encode("utf-8")))]


def _replace_strings(value: Any, texts: RouterBenchTexts, used: set[tuple[str, str]]) -> Any:
    if isinstance(value, str):
        key = texts.by_text.get(value)
        if key is None:
            return value
        used.add(key)
        return _ref(key, value, 0, len(value))
    if isinstance(value, list):
        return [_replace_strings(v, texts, used) for v in value]
    if isinstance(value, dict):
        return {k: _replace_strings(v, texts, used) for k, v in value.items()}
    return value
