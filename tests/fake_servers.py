"""Local fault-injecting servers that speak the Gemini and OpenAI wire formats.

Each server listens on 127.0.0.1 on a free port, in a background thread, and
answers each request with the next reply scripted for its model (the model in
the URL for Gemini, the ``model`` field of the body for OpenAI). An unscripted
request gets a 500 that says so. Every request is recorded.

Replies are semantic: ``Text("hi")`` becomes a JSON body for a plain request
and an SSE stream for a streaming one, in the server's own format. Faults:
``Error`` (a proper error body), ``Html`` (an HTML error page), ``Hangup``
(close before any byte), ``Chunks(..., then=BREAK)`` (an SSE stream cut after
its chunks), ``Chunks(..., then=Error(...))`` (an in-stream error object),
``Stall`` (never answer), ``Slow`` (answer after a delay). Error responses,
sent with HTTP 200 (Gemini only): ``Finish`` (a candidate with that finish
reason and no content), ``Blocked`` (no candidate; the prompt was blocked).
A server made with ``first_chunk_delay=`` (e.g. :class:`HeavyTailDelay`)
waits that many seconds before the first chunk of every answer.

Thought signatures (Gemini only), for models named ``gemini-3...``, as
Google documents them: each answer carries a signature issued by this server
for that model (on the first function call, ``Parallel`` calls included, or on
the text), and every request is checked before a reply is used: a signature
this server did not issue for the model, other than the bypass value
``skip_thought_signature_validator``, is a 400 "Invalid thought signature";
in the current turn (after the last user message that is not only function
responses), a model step whose first function call has no signature is a 400
"Function call is missing a thought_signature in functionCall parts".
A part with no data (only ``thought`` or a signature, say) is a 400 for any
model, as on Gemini.

Only the standard library is used, so the servers add no dependency.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import secrets
import socket
import sys
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class FunctionCall:
    name: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Parallel:
    """Several function calls in one answer (parallel function calling)."""

    calls: tuple[FunctionCall, ...]

    def __init__(self, *calls: FunctionCall) -> None:
        object.__setattr__(self, "calls", calls)


@dataclass(frozen=True)
class Error:
    code: int
    status: str = ""
    message: str = "scripted error"
    reason: str = ""  # A google.rpc.ErrorInfo reason, e.g. API_KEY_INVALID.


@dataclass(frozen=True)
class Finish:
    """An HTTP 200 answer whose candidate has no content and ``finishReason: reason``."""

    reason: str
    message: str = ""


@dataclass(frozen=True)
class Blocked:
    """An HTTP 200 answer with no candidate and ``promptFeedback.blockReason: reason``."""

    reason: str


@dataclass(frozen=True)
class Html:
    code: int = 503
    body: str = "<html><body><h1>503 Service Unavailable</h1></body></html>"


@dataclass(frozen=True)
class Hangup:
    """Close the connection before sending a single byte."""


@dataclass(frozen=True)
class Stall:
    """Read the request and never answer (until the server stops)."""


BREAK = "break"
"""``Chunks(..., then=BREAK)``: cut the connection after the chunks."""

STALL = "stall"
"""``Chunks(..., then=STALL)``: send nothing more after the chunks, until the server stops."""


@dataclass(frozen=True)
class Chunks:
    """A streamed answer: text chunks, then ``then``.

    ``then`` is None (finish normally), BREAK (drop the connection without
    ending the stream), STALL (go silent), an ``Error`` (send it as an in-stream error object and
    end), or ``"end-without-finish"`` (end the stream with no finish reason).
    """

    texts: tuple[str, ...]
    then: Error | str | None = None

    def __init__(self, *texts: str, then: Error | str | None = None) -> None:
        object.__setattr__(self, "texts", texts)
        object.__setattr__(self, "then", then)


@dataclass(frozen=True)
class Slow:
    """Send ``reply`` after ``seconds``: a slow but healthy server."""

    reply: Any
    seconds: float


@dataclass(frozen=True)
class Recorded:
    """A request as the server received it."""

    path: str
    model: str
    stream: bool
    body: dict[str, Any]
    headers: dict[str, str]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        # With a first-chunk delay, that delay is the only wait: no 40 ms for a delayed ACK
        # between the headers and the body (Nagle's algorithm), which the other servers keep.
        self.disable_nagle_algorithm = self.server.owner.first_chunk_delay is not None
        super().setup()

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.loads(raw or b"{}")
        owner = self.server.owner
        model, stream = owner.route(urlparse(self.path), body)
        owner.record(Recorded(self.path, model, stream, body, dict(self.headers.items())))
        reply = owner.refusal(model, body) or owner.next_reply(model)
        while isinstance(reply, Slow):
            time.sleep(reply.seconds)  # The fault itself: a slow server, not test synchronisation.
            reply = reply.reply
        self._send(owner, model, stream, reply)

    def _send(self, owner: FakeServer, model: str, stream: bool, reply: Any) -> None:
        if isinstance(reply, Hangup):
            self._drop()
        elif isinstance(reply, Stall):
            owner.stopping.wait()
            self._drop()
        elif isinstance(reply, Html):
            self._respond(reply.code, "text/html", reply.body.encode())
        elif isinstance(reply, Error):
            self._respond(reply.code, "application/json", json.dumps(owner.error_body(reply)).encode())
        elif stream:
            self._stream(owner, model, reply)
        else:
            owner.wait_before_first_chunk()
            self._respond(200, "application/json", json.dumps(owner.full_body(model, reply)).encode())

    def _respond(self, code: int, content_type: str, payload: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _stream(self, owner: FakeServer, model: str, reply: Any) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        owner.wait_before_first_chunk()
        events, then = owner.stream_events(model, reply)
        for event in events:
            self._chunk(
                b"data: " + (event if isinstance(event, bytes) else json.dumps(event).encode()) + b"\r\n\r\n"
            )
        if then == STALL:
            owner.stopping.wait()
        if then in (BREAK, STALL):
            self._drop()
            return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _drop(self) -> None:
        self.close_connection = True
        self.wfile.flush()
        with contextlib.suppress(OSError):  # The client may have gone already.
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name.
        """Quiet: tests read the recorded requests instead."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # Room for a burst of new connections; the default, 5, lost some of 20.
    owner: FakeServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet about a client that hung up first (a hedge's loser, cancelled); loud about the rest."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class HeavyTailDelay:
    """Seeded heavy-tailed delays: 90% of draws 40-60 ms, 9% 300-600 ms, 1% 3 s.

    A provider's time to first token, as the tail-latency benchmark models
    it. Each instance draws on its own; thread-safe.
    """

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            band = self._random.random()
            if band < 0.90:
                return self._random.uniform(0.040, 0.060)
            if band < 0.99:
                return self._random.uniform(0.300, 0.600)
            return 3.0


class FakeServer:
    """The shared machinery: scripting, recording, start and stop.

    ``first_chunk_delay``, if given, is called once per answer (not for an
    error or a hang-up) for the seconds to wait before its first chunk; the
    server then also sends with ``TCP_NODELAY``, so that the delay is the
    only wait.
    """

    def __init__(self, *, first_chunk_delay: Callable[[], float] | None = None) -> None:
        self.first_chunk_delay = first_chunk_delay
        self._scripts: dict[str, deque[Any]] = defaultdict(deque)
        self._lock = threading.Lock()
        self.requests: list[Recorded] = []
        self.stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, model: str, *replies: Any) -> None:
        """Queues ``replies`` for successive requests to ``model``."""
        with self._lock:
            self._scripts[model].extend(replies)

    def calls_to(self, model: str) -> list[Recorded]:
        return [request for request in self.requests if request.model == model]

    def start(self) -> FakeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def record(self, request: Recorded) -> None:
        with self._lock:
            self.requests.append(request)

    def wait_before_first_chunk(self) -> None:
        if self.first_chunk_delay is not None:
            self.stopping.wait(self.first_chunk_delay())  # The fault itself, cut short when stopping.

    def next_reply(self, model: str) -> Any:
        with self._lock:
            queue = self._scripts[model]
            return queue.popleft() if queue else Error(500, "INTERNAL", f"no reply scripted for {model!r}")

    # Wire format hooks, one implementation per provider.
    def refusal(self, model: str, body: dict[str, Any]) -> Error | None:
        """The error a request is refused with before any scripted reply, if any."""
        return None

    def route(self, url: Any, body: dict[str, Any]) -> tuple[str, bool]:
        raise NotImplementedError

    def full_body(self, model: str, reply: Any) -> dict[str, Any]:
        raise NotImplementedError

    def stream_events(self, model: str, reply: Any) -> tuple[list[Any], Any]:
        raise NotImplementedError

    def error_body(self, error: Error) -> dict[str, Any]:
        raise NotImplementedError


_NOT_DATA = frozenset({"thought", "thoughtSignature", "partMetadata", "videoMetadata", "mediaResolution"})
"""A part's fields that are not its data: a part with none of the others is a 400, as on Gemini."""

BYPASS_SIGNATURE = "skip_thought_signature_validator"
"""The signature Google documents for function calls a Gemini 3 model did not make (as sent)."""


class FakeGemini(FakeServer):
    """``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse``.

    ``issued`` lists every thought signature the server sent, as sent.
    """

    def __init__(self, *, first_chunk_delay: Callable[[], float] | None = None) -> None:
        super().__init__(first_chunk_delay=first_chunk_delay)
        self._secret = secrets.token_hex(4)
        self.issued: list[str] = []

    @staticmethod
    def signs(model: str) -> bool:
        """Whether ``model`` issues and checks thought signatures (Gemini 3)."""
        return model.startswith("gemini-3")

    def refusal(self, model: str, body: dict[str, Any]) -> Error | None:
        contents = body.get("contents") or []
        for index, content in enumerate(contents):
            for position, part in enumerate(content.get("parts") or []):
                if not part.keys() - _NOT_DATA:
                    return Error(
                        400,
                        "INVALID_ARGUMENT",
                        f"* GenerateContentRequest.contents[{index}].parts[{position}].data: required "
                        "oneof field 'data' must have one initialized field",
                    )
        if not self.signs(model):
            return None
        for index, content in enumerate(contents):
            for part in content.get("parts") or []:
                signature = part.get("thoughtSignature")
                if (
                    signature is not None
                    and signature != BYPASS_SIGNATURE
                    and not self._own(model, signature)
                ):
                    return Error(400, "INVALID_ARGUMENT", f"Invalid thought signature in content {index}.")
        turn_start = next(
            (
                index + 1
                for index in range(len(contents) - 1, -1, -1)
                if contents[index].get("role") == "user"
                and any("functionResponse" not in part for part in contents[index].get("parts") or [])
            ),
            0,
        )
        for index in range(turn_start, len(contents)):
            calls = [part for part in contents[index].get("parts") or [] if "functionCall" in part]
            if contents[index].get("role") == "model" and calls and "thoughtSignature" not in calls[0]:
                return Error(
                    400,
                    "INVALID_ARGUMENT",
                    "Function call is missing a thought_signature in functionCall parts. This is required "
                    "for tools to work correctly. Additional data, function call "
                    f"`{calls[0]['functionCall']['name']}`, position {index + 1}.",
                )
        return None

    def _own(self, model: str, signature: str) -> bool:
        try:
            decoded = base64.urlsafe_b64decode(signature)
        except ValueError:
            return False
        return decoded.startswith(f"sig|{self._secret}|{model}|".encode())

    def _sign(self, model: str, part: dict[str, Any]) -> dict[str, Any]:
        """``part`` with a new signature for ``model``, if ``model`` signs."""
        if not self.signs(model):
            return part
        with self._lock:
            raw = f"sig|{self._secret}|{model}|{len(self.issued)}".encode()
            signature = base64.urlsafe_b64encode(raw).decode()
            self.issued.append(signature)
        return {**part, "thoughtSignature": signature}

    def route(self, url: Any, body: dict[str, Any]) -> tuple[str, bool]:
        resource = url.path.rsplit("/models/", 1)[-1]
        model, _, method = resource.partition(":")
        stream = method == "streamGenerateContent" and parse_qs(url.query).get("alt") == ["sse"]
        return model, stream

    def full_body(self, model: str, reply: Any) -> dict[str, Any]:
        if isinstance(reply, (Finish, Blocked)):
            return self._error_answer(model, reply)
        if isinstance(reply, Chunks):
            reply = Text("".join(reply.texts))
        return self._candidate(model, self._parts(model, reply), finish=True)

    def stream_events(self, model: str, reply: Any) -> tuple[list[Any], Any]:
        if isinstance(reply, (Finish, Blocked)):
            return [self._error_answer(model, reply)], None
        if not isinstance(reply, Chunks):
            return [self._candidate(model, self._parts(model, reply), finish=True)], None
        events: list[Any] = [
            self._candidate(
                model, [{"text": text}], finish=index == len(reply.texts) - 1 and reply.then is None
            )
            for index, text in enumerate(reply.texts)
        ]
        if isinstance(reply.then, Error):
            events.append(self.error_body(reply.then))
        return events, reply.then

    def error_body(self, error: Error) -> dict[str, Any]:
        body: dict[str, Any] = {"code": error.code, "message": error.message, "status": error.status}
        if error.reason:
            body["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": error.reason,
                    "domain": "googleapis.com",
                }
            ]
        return {"error": body}

    @staticmethod
    def _error_answer(model: str, reply: Finish | Blocked) -> dict[str, Any]:
        body: dict[str, Any] = {
            "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3},
            "modelVersion": model,
        }
        if isinstance(reply, Blocked):
            body["promptFeedback"] = {"blockReason": reply.reason}
        else:
            candidate: dict[str, Any] = {"finishReason": reply.reason, "index": 0}
            if reply.message:
                candidate["finishMessage"] = reply.message
            body["candidates"] = [candidate]
        return body

    def _parts(self, model: str, reply: Any) -> list[dict[str, Any]]:
        """The answer's parts, the first signed when ``model`` signs."""
        parts = (
            [self._part(call) for call in reply.calls] if isinstance(reply, Parallel) else [self._part(reply)]
        )
        return [self._sign(model, parts[0]), *parts[1:]]

    @staticmethod
    def _part(reply: Any) -> dict[str, Any]:
        if isinstance(reply, FunctionCall):
            return {"functionCall": {"name": reply.name, "args": reply.args}}
        return {"text": reply.text}

    @staticmethod
    def _candidate(model: str, parts: list[dict[str, Any]], *, finish: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if finish:
            candidate["finishReason"] = "STOP"
        return {
            "candidates": [candidate],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5},
            "modelVersion": model,
        }


class FakeOpenAI(FakeServer):
    """``POST /v1/chat/completions``, with and without ``stream``."""

    def route(self, url: Any, body: dict[str, Any]) -> tuple[str, bool]:
        return str(body.get("model", "")), bool(body.get("stream"))

    def full_body(self, model: str, reply: Any) -> dict[str, Any]:
        if isinstance(reply, Chunks):
            reply = Text("".join(reply.texts))
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if isinstance(reply, FunctionCall):
            message["tool_calls"] = [self._tool_call(reply)]
            finish = "tool_calls"
        else:
            message["content"] = reply.text
            finish = "stop"
        return {
            **self._envelope(model, "chat.completion"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        }

    def stream_events(self, model: str, reply: Any) -> tuple[list[Any], Any]:
        if isinstance(reply, FunctionCall):
            deltas = [{"role": "assistant", "tool_calls": [{"index": 0, **self._tool_call(reply)}]}]
            then, finish = None, "tool_calls"
        else:
            texts = reply.texts if isinstance(reply, Chunks) else (reply.text,)
            deltas = [{"role": "assistant", "content": text} for text in texts]
            then = reply.then if isinstance(reply, Chunks) else None
            finish = "stop"
        events: list[Any] = [self._chunk_event(model, delta, None) for delta in deltas]
        if isinstance(then, Error):
            events.append(self.error_body(then))
        elif then is None:
            events += [self._chunk_event(model, {}, finish), b"[DONE]"]
        return events, then

    def error_body(self, error: Error) -> dict[str, Any]:
        return {"error": {"message": error.message, "type": error.status or "api_error", "code": error.code}}

    def _chunk_event(self, model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            **self._envelope(model, "chat.completion.chunk"),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    @staticmethod
    def _tool_call(reply: FunctionCall) -> dict[str, Any]:
        return {
            "id": f"call_{reply.name}",
            "type": "function",
            "function": {"name": reply.name, "arguments": json.dumps(reply.args)},
        }

    @staticmethod
    def _envelope(model: str, kind: str) -> dict[str, Any]:
        return {"id": "chatcmpl-fake", "object": kind, "created": 1_700_000_000, "model": model}


@dataclass
class ClosedPort:
    """A port on 127.0.0.1 that nothing listens on (connection refused)."""

    port: int = field(init=False)

    def __post_init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
