"""A small OpenAI-compatible chat completions server on loopback, for recording cassettes.

It serves ``POST /v1/chat/completions`` the way the OpenAI API does, from a table of known
answers, so that ``langchain_openai.ChatOpenAI(base_url=server.base_url, ...)`` makes real HTTP
calls that vcrpy can record:

* ``answers[(model, prompt)]`` is the answer text (the tests fill it with real RouterBench
  responses); the prompt is the text of the last user message. Other prompts get
  ``default(model, prompt)`` when a ``default`` is given (then any model is served). Otherwise
  an unknown model is a 404 and an unknown prompt a 400; a missing ``Authorization: Bearer``
  header is a 401 (OpenAI error bodies).
* Tools: when ``tools`` are given, the last message is the user's and the prompt names a tool
  (or ``tool_choice`` forces one), the answer is an assistant message with ``tool_calls``; the
  arguments come from the tool's JSON schema and the prompt (quoted text for strings, numbers
  in order for numbers). After a tool result the answer is ``"The tool <name> returned:
  <result>"``.
* ``usage``: ``ceil(chars / 4)`` tokens per message (plus 4 per message) for the prompt, and
  ``ceil(chars / 4)`` for the answer (its text, or the tool calls' JSON).
* ``stream: true``: server-sent events in ``chat.completion.chunk`` format (a role chunk, the
  text in pieces of about 48 characters, tool calls in two halves each, a ``finish_reason``
  chunk, then a usage chunk with empty ``choices`` when ``stream_options.include_usage``, then
  ``data: [DONE]``), sent with chunked transfer encoding.

* Faults, per model (``faults={model: kind}``), to test what a client sees from a provider in
  trouble: ``"error"`` answers HTTP 500 (an OpenAI error body; clients retry it), ``"hang"``
  accepts the request and never answers (until the server stops), ``"cut"`` streams the first
  two events of the answer, then drops the connection mid-body (a plain request is dropped
  without an answer). ``server.attempts`` lists the model of every request received, faulty or
  not (``server.requests`` only the completions served).

Ids and timestamps are derived from the request, so recording twice gives the same cassette.
The server binds 127.0.0.1 on a free port and runs in a daemon thread::

    with OpenAILoopback({("gpt-4o-mini", "Hi"): "Hello!"}) as server:
        ChatOpenAI(base_url=server.base_url, api_key="test-key", model="gpt-4o-mini")

Shared by the LangChain and the LlamaIndex adapter tests.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

__all__ = [
    "CREATED",
    "Fault",
    "OpenAILoopback",
    "complete",
    "dumps",
    "event_stream",
    "text_pieces",
    "tool_arguments",
    "tool_named_in",
]

Fault = Literal["error", "hang", "cut"]
#: Longest a "hang" fault holds a request if the server is never stopped.
_HANG_SECONDS = 120

#: ``created`` of every completion (fixed, so cassettes do not change between recordings).
CREATED = 1_700_000_000
_PIECE_CHARS = 48
_FORCING = ("required", "any")
_STOPWORDS = {"get", "my", "tool", "the", "a", "of", "function"}


def dumps(obj: Any) -> str:
    """JSON exactly as the server writes it (the cassette serializer relies on the same form)."""
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":"))


def _tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def text_pieces(text: str, size: int = _PIECE_CHARS) -> list[str]:
    """Split an answer into stream pieces of whole words, about ``size`` characters each."""
    pieces: list[str] = []
    current = ""
    for word in re.findall(r"\s*\S+\s*", text) or [text]:
        current += word
        if len(current) >= size:
            pieces.append(current)
            current = ""
    if current or not pieces:
        pieces.append(current)
    return pieces


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def _error(status: int, message: str, kind: str, code: str | None = None) -> tuple[int, Any]:
    return status, {"error": {"message": message, "type": kind, "param": None, "code": code}}


Answers = Mapping[tuple[str, str], str]
Default = Callable[[str, str], str]


class _Completion:
    """One completion computed from a request: text or tool calls, usage, ids."""

    def __init__(
        self, request: Mapping[str, Any], answers: Answers, default: Default | None = None
    ) -> None:
        self.model = str(request["model"])
        messages: list[Mapping[str, Any]] = list(request.get("messages") or [])
        digest = hashlib.sha256(dumps(request).encode()).hexdigest()
        self.id = f"chatcmpl-loopback-{digest[:24]}"
        self.text: str | None = None
        self.tool_calls: list[dict[str, Any]] = []
        last = messages[-1] if messages else {}
        prompt = next(
            (_content_text(m.get("content")) for m in reversed(messages) if m["role"] == "user"),
            "",
        )
        if last.get("role") == "tool":
            self.text = f"The tool {self._tool_name(messages, last)} returned: " + _content_text(
                last.get("content")
            )
        else:
            call = self._tool_call(request, prompt, digest) if last.get("role") == "user" else None
            if call is not None:
                self.tool_calls = [call]
            else:
                known = answers.get((self.model, prompt))
                if known is None and default is None:
                    raise KeyError((self.model, prompt))  # -> 400 in the handler
                self.text = known if known is not None else default(self.model, prompt)
        prompt_tokens = sum(_tokens(_content_text(m.get("content"))) + 4 for m in messages)
        if request.get("tools"):
            prompt_tokens += _tokens(dumps(request["tools"]))
        answer = self.text if self.text is not None else dumps(self.tool_calls)
        completion_tokens = _tokens(answer)
        self.usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        self.finish_reason = "tool_calls" if self.tool_calls else "stop"

    @staticmethod
    def _tool_name(messages: list[Mapping[str, Any]], result: Mapping[str, Any]) -> str:
        for message in messages:
            for call in message.get("tool_calls") or []:
                if call.get("id") == result.get("tool_call_id"):
                    return str(call["function"]["name"])
        return "call"

    @staticmethod
    def _tool_call(request: Mapping[str, Any], prompt: str, digest: str) -> dict[str, Any] | None:
        tools = [t["function"] for t in request.get("tools") or [] if t.get("type") == "function"]
        choice = request.get("tool_choice")
        if not tools or choice == "none":
            return None
        by_name = {t["name"]: t for t in tools}
        chosen = None
        if isinstance(choice, Mapping):
            chosen = by_name.get((choice.get("function") or {}).get("name"))
        if chosen is None:
            named = tool_named_in(prompt, by_name)
            chosen = by_name[named] if named is not None else None
        if chosen is None and choice in _FORCING:
            chosen = tools[0]
        if chosen is None:
            return None
        return {
            "id": f"call_{digest[:16]}",
            "type": "function",
            "function": {
                "name": chosen["name"],
                "arguments": dumps(tool_arguments(chosen.get("parameters") or {}, prompt)),
            },
        }

    # -- wire formats ---------------------------------------------------------------------------
    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.text, "refusal": None}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": CREATED,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                }
            ],
            "usage": self.usage,
        }

    def chunks(self, include_usage: bool) -> Iterator[dict[str, Any]]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            out: dict[str, Any] = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": self.model,
                "system_fingerprint": None,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                out["usage"] = None
            return out

        yield chunk({"role": "assistant", "content": "", "refusal": None})
        if self.text is not None:
            for piece in text_pieces(self.text):
                yield chunk({"content": piece})
        for index, call in enumerate(self.tool_calls):
            arguments = call["function"]["arguments"]
            half = len(arguments) // 2
            head = {"name": call["function"]["name"], "arguments": arguments[:half]}
            yield chunk(
                {
                    "tool_calls": [
                        {"index": index, "id": call["id"], "type": "function", "function": head}
                    ]
                }
            )
            yield chunk(
                {"tool_calls": [{"index": index, "function": {"arguments": arguments[half:]}}]}
            )
        yield chunk({}, self.finish_reason)
        if include_usage:
            last = chunk({})
            last["choices"] = []
            last["usage"] = self.usage
            yield last


def complete(
    request: Mapping[str, Any], answers: Answers, default: Default | None = None
) -> dict[str, Any]:
    """The ``chat.completion`` body the server returns for a (non-streaming) request.

    Raises:
        KeyError: The prompt has no answer for this model (and there is no ``default``).
    """
    return _Completion(request, answers, default).message()


def event_stream(
    request: Mapping[str, Any], answers: Answers, default: Default | None = None
) -> str:
    """The server-sent events body the server returns for a ``stream: true`` request."""
    include = bool((request.get("stream_options") or {}).get("include_usage"))
    completion = _Completion(request, answers, default)
    events = [f"data: {dumps(e)}\n\n" for e in completion.chunks(include)]
    return "".join([*events, "data: [DONE]\n\n"])


def tool_named_in(prompt: str, names: Iterable[str]) -> str | None:
    """The first tool whose name (or a word of it, stop words aside) the prompt mentions."""
    lowered = prompt.lower()
    for name in names:
        words = [w for w in re.split(r"[_\W]+", name.lower()) if w and w not in _STOPWORDS]
        if name.lower() in lowered or any(w in lowered for w in words):
            return name
    return None


def tool_arguments(
    schema: Mapping[str, Any], prompt: str, missing: Callable[[str], str] | None = None
) -> dict[str, Any]:
    """Arguments for a tool call from its JSON schema and the prompt.

    Numbers from the prompt in order for numbers, quoted text for strings (else
    ``missing(name)``, default: the prompt's start), ``True`` for booleans, empty lists and
    objects for the rest.
    """
    numbers = [int(n) for n in re.findall(r"-?\d+", prompt)]
    strings = [a or b for a, b in re.findall(r"'([^']+)'|\"([^\"]+)\"", prompt)]
    args: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        kinds = {prop.get("type")} | {p.get("type") for p in prop.get("anyOf", [])}
        if kinds & {"integer", "number"}:
            args[name] = numbers.pop(0) if numbers else 0
        elif "boolean" in kinds:
            args[name] = True
        elif "array" in kinds:
            args[name] = []
        elif "object" in kinds:
            args[name] = {}
        elif strings:
            args[name] = strings.pop(0)
        else:
            args[name] = missing(name) if missing is not None else prompt[:60]
    return args


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def version_string(self) -> str:
        return "openai-loopback"

    def date_time_string(self, timestamp: float | None = None) -> str:
        return "Tue, 14 Nov 2023 22:13:20 GMT"  # = CREATED; fixed for stable cassettes

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _send_json(self, status: int, body: Any) -> None:
        data = dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_events(self, body: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in body.split("\n\n")[:-1]:
            data = (event + "\n\n").encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            self._send_json(*_error(404, f"no route {self.path}", "invalid_request_error"))
            return
        models = sorted({model for model, _ in self.server.answers})
        self._send_json(
            200,
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": CREATED, "owned_by": "loopback"}
                    for m in models
                ],
            },
        )

    def _fault(self, kind: Fault, raw: bytes) -> None:
        if kind == "error":
            self._send_json(*_error(500, "The server had an error.", "server_error"))
            return
        if kind == "hang":
            self.server.release.wait(_HANG_SECONDS)
        elif kind == "cut":
            request = json.loads(raw)
            if request.get("stream"):
                body = event_stream(request, self.server.answers, self.server.default)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for event in body.split("\n\n")[:2]:
                    data = (event + "\n\n").encode()
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
        self.close_connection = True  # no (complete) answer: the client sees a dropped link

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            model = str(json.loads(raw).get("model"))
        except (ValueError, AttributeError):
            model = ""
        self.server.attempts.append(model)
        fault = self.server.faults.get(model)
        if fault is not None:
            self._fault(fault, raw)
            return
        status, body = self._complete(raw)
        if status == 200:
            request = json.loads(raw)
            self.server.requests.append(request)
            if request.get("stream"):
                self._send_events(event_stream(request, self.server.answers, self.server.default))
            else:
                self._send_json(200, body)
            return
        self._send_json(status, body)

    def _complete(self, raw: bytes) -> tuple[int, Any]:
        if self.path.rstrip("/") != "/v1/chat/completions":
            return _error(404, f"no route {self.path}", "invalid_request_error")
        if not (self.headers.get("Authorization") or "").startswith("Bearer "):
            return _error(401, "missing API key", "invalid_request_error", "invalid_api_key")
        try:
            request = json.loads(raw)
        except ValueError:
            return _error(400, "the body is not JSON", "invalid_request_error")
        models = {model for model, _ in self.server.answers}
        if self.server.default is None and request.get("model") not in models:
            return _error(
                404,
                f"The model `{request.get('model')}` does not exist",
                "invalid_request_error",
                "model_not_found",
            )
        try:
            return 200, complete(request, self.server.answers, self.server.default)
        except KeyError:
            return _error(400, "unknown prompt for this model", "invalid_request_error")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, answers: Answers, default: Default | None, faults: Mapping[str, Fault]
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answers = dict(answers)
        self.default = default
        self.faults = dict(faults)
        self.release = threading.Event()
        self.requests: list[dict[str, Any]] = []
        self.attempts: list[str] = []


class OpenAILoopback:
    """The server as a context manager (see the module docstring).

    Args:
        answers: ``(model, prompt) -> answer text``; the models listed are the ones served.
        default: ``(model, prompt) -> answer text`` for every other prompt (any model).
        faults: ``model -> "error" | "hang" | "cut"`` (see the module docstring).
    """

    def __init__(
        self,
        answers: Answers,
        *,
        default: Default | None = None,
        faults: Mapping[str, Fault] | None = None,
    ) -> None:
        self._server = _Server(answers, default, faults or {})
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="openai-loopback", daemon=True
        )

    @property
    def base_url(self) -> str:
        """The ``base_url`` to give ``ChatOpenAI``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The JSON bodies of the completions served."""
        return self._server.requests

    @property
    def faults(self) -> dict[str, Fault]:
        """``model -> fault`` in effect (a live dict: changes apply to the next request)."""
        return self._server.faults

    @property
    def attempts(self) -> list[str]:
        """The model of every request received, in order (faulty ones included)."""
        return self._server.attempts

    def __enter__(self) -> OpenAILoopback:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.release.set()  # let "hang" requests go
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
