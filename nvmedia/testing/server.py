"""The emulator's loopback HTTP server: sockets in front of ``NVCFService``.

Standard library only (``ThreadingHTTPServer``, one thread per connection). This
is where HTTP framing lives, so wire-level behaviour is real here and only here:
chunked request bodies are decoded, a body the service refuses to read makes the
connection close (S3's 411 and 501), a streamed answer goes out chunked, and a
dropped connection really drops.
"""

from __future__ import annotations

import io
import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import urlsplit

from .service import CHUNK, ConnectionDropped, MalformedBody, NVCFService, ServiceRequest, ServiceResponse

logger = logging.getLogger("nvmedia.testing.emulator")

_PARTIAL_ANSWER: Final = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{"asse'
"""What a client receives of an answer whose connection is dropped: a status line and part of a body."""
_QUERY_RE: Final = re.compile(r"\?[^\s\"']*")


class _LengthBody:
    """A body of ``Content-Length`` bytes."""

    def __init__(self, rfile: io.BufferedIOBase, length: int) -> None:
        self._rfile = rfile
        self._remaining = length

    def read(self, size: int) -> bytes:
        if self._remaining <= 0:
            return b""
        data = self._rfile.read(min(size, self._remaining))
        if not data:
            raise ConnectionError("the client closed the connection mid-body")
        self._remaining -= len(data)
        return data


class _ChunkedBody:
    """A ``Transfer-Encoding: chunked`` body, decoded as it is read."""

    def __init__(self, rfile: io.BufferedIOBase) -> None:
        self._rfile = rfile
        self._left_in_chunk = 0
        self._done = False

    def _line(self) -> bytes:
        line = self._rfile.readline(1024)
        if not line:
            raise ConnectionError("the client closed the connection mid-body")
        return line

    def read(self, size: int) -> bytes:
        if self._done:
            return b""
        if self._left_in_chunk == 0:
            try:
                self._left_in_chunk = int(self._line().split(b";")[0].strip(), 16)
            except ValueError:
                raise MalformedBody("malformed chunked body") from None
            if self._left_in_chunk == 0:
                while self._line() not in (b"\r\n", b"\n"):
                    pass  # trailers
                self._done = True
                return b""
        piece = self._rfile.read(min(size, self._left_in_chunk, CHUNK))
        if not piece:
            raise ConnectionError("the client closed the connection mid-body")
        self._left_in_chunk -= len(piece)
        if self._left_in_chunk == 0:
            self._line()  # the CRLF that ends a chunk
        return piece


class LoopbackServer(ThreadingHTTPServer):
    """A threading HTTP server that answers with ``service`` and can cut its open connections."""

    daemon_threads = True
    # Many uploads at once (-j) should queue, not be refused.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], service: NVCFService) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.service = service
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def cut_connections(self) -> None:
        """Shut down every open connection (``stop`` must not wait for idle keep-alive clients)."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "NVCFEmulator/1.0"
    sys_version = ""
    # An idle keep-alive connection is closed after this long.
    timeout = 120
    # Headers and body go out in separate writes; Nagle plus delayed ACKs would stall each answer 40 ms.
    disable_nagle_algorithm = True
    server: LoopbackServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        # Presigned signatures live in query strings: never log one.
        logger.debug("emulator: %s", _QUERY_RE.sub("?<redacted>", format % args))

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def _body(self, headers: dict[str, str]) -> _LengthBody | _ChunkedBody:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return _ChunkedBody(self.rfile)
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            length = 0  # the service answers 400 and closes
        return _LengthBody(self.rfile, max(0, length))

    def _handle(self) -> None:
        split = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = ServiceRequest(self.command, split.path, split.query, headers, self._body(headers))
        try:
            answer = self.server.service.handle(request)
            self._write(answer)
        except ConnectionDropped as dropped:
            if not dropped.mid_body:
                self._write_quietly(_PARTIAL_ANSWER)
            self.close_connection = True
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def _write_quietly(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            pass

    def _write(self, answer: ServiceResponse) -> None:
        if answer.close:
            self.close_connection = True
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        streamed = not isinstance(answer.body, bytes)
        if streamed:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            assert isinstance(answer.body, bytes)
            self.send_header("Content-Length", str(len(answer.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if isinstance(answer.body, bytes):
            self.wfile.write(answer.body)
        else:
            for chunk in answer.body:  # a ConnectionDropped here cuts the stream: no final chunk
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        if answer.close:
            self._linger_and_close()

    def _linger_and_close(self) -> None:
        """Close after the answer has gone out, reading what the client still sends for a moment.

        Closing a socket with unread input makes the kernel send a reset that can destroy
        the answer before the client reads it; a short lingering read avoids that.
        """
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            deadline = time.monotonic() + 2.0
            drained = 0
            while time.monotonic() < deadline and drained < 64 * CHUNK:
                chunk = self.connection.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:
            pass
