"""A scripted chat-completions server on loopback, for what the emulator does not do (yet).

Each test gives a ``script(exchange)``; the exchange carries the decoded request and
writes the answer: ``json`` (a whole completion), ``events`` (server-sent events,
optionally without ``data: [DONE]``), or anything else through the raw handler. The
server records every request body and header, so tests see what was sent.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Exchange:
    """One request and the means to answer it."""

    body: dict[str, Any]
    headers: dict[str, str]
    handler: BaseHTTPRequestHandler

    @property
    def prompt(self) -> str:
        """The text of the user message's first text part."""
        user = [m for m in self.body["messages"] if m["role"] == "user"][-1]
        content = user["content"]
        return content if isinstance(content, str) else next(p["text"] for p in content if p["type"] == "text")

    def json(self, obj: dict[str, Any], status: int = 200) -> None:
        data = json.dumps(obj).encode()
        h = self.handler
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
        h.wfile.flush()

    def answer(self, text: str, reasoning: str | None = None) -> None:
        """A whole ``chat.completion``."""
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if reasoning is not None:
            message["reasoning_content"] = reasoning
        self.json(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.body.get("model"),
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split()), "total_tokens": 0},
            }
        )

    def start_events(self) -> None:
        h = self.handler
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True

    def event(self, delta: dict[str, str], finish: str | None = None) -> None:
        chunk = {
            "id": "chatcmpl-scripted",
            "object": "chat.completion.chunk",
            "model": self.body.get("model"),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        self.handler.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.handler.wfile.flush()

    def done(self) -> None:
        self.handler.wfile.write(b"data: [DONE]\n\n")
        self.handler.wfile.flush()

    def events(self, deltas: Sequence[dict[str, str]], *, done: bool = True) -> None:
        """A whole stream: the deltas, a stop chunk and ``[DONE]`` (or the connection closes without them)."""
        self.start_events()
        for delta in deltas:
            self.event(delta)
        if done:
            self.event({}, "stop")
            self.done()


@dataclass
class ChatServer:
    """The server: ``script`` answers each request; ``received`` holds every exchange, in arrival order."""

    script: Callable[[Exchange], None]
    received: list[Exchange] = field(default_factory=list)
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@contextmanager
def chat_server(script: Callable[[Exchange], None]) -> Iterator[ChatServer]:
    """Serve ``script`` on 127.0.0.1 until the block ends."""
    state = ChatServer(script)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length))
            exchange = Exchange(body, {k.lower(): v for k, v in self.headers.items()}, self)
            with state.lock:
                state.received.append(exchange)
            try:
                state.script(exchange)
            except OSError:
                self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
