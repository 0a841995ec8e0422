"""A local, faithful stand-in for NVIDIA's asset API, presigned uploads and chat endpoint.

``NVCFEmulator`` is a real HTTP server on loopback (standard library, one thread
per connection). It implements what DESIGN.md's facts table says about the
service, so code that works against it works against the real thing:

* ``POST/GET /v2/nvcf/assets`` and ``GET/DELETE /v2/nvcf/assets/{id}`` with a
  Bearer key (assets belong to the key that created them);
* presigned ``PUT /s3/nvcf-assets/{id}?X-Amz-...``: signed over the content type,
  the description header and the expiry; S3's answers to a mismatch (403
  ``SignatureDoesNotMatch``), an expired URL (403 ``Request has expired``), a
  chunked body (501), no length (411) and a second auth mechanism (400); bodies
  are streamed to disk, never held in memory;
* ``POST /v1/chat/completions``: checks every media reference and answers in
  OpenAI's shape (server-sent events when ``stream`` is true).

Faults can be injected for tests (``inject``), every request is recorded
(``requests``) with its Authorization header redacted, and ``main`` serves it
from the command line (``nvmedia emulator``).

Example:
    >>> with NVCFEmulator() as emu:  # doctest: +SKIP
    ...     client = AssetClient(api_key="k", base_url=emu.assets_url)
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import http
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape

from . import chat, magic, presign

logger = logging.getLogger(__name__)

ASSETS_PATH: Final = "/v2/nvcf/assets"
UPLOAD_PATH: Final = "/s3/nvcf-assets/"
CHAT_PATH: Final = "/v1/chat/completions"
CONTENT_TYPE_RE: Final = re.compile(r"^(\w+)/([-+.\w]+)$", re.ASCII)
FAULT_KINDS: Final = ("429", "500", "503", "drop", "slow", "expire")
MAX_ASSET_BYTES: Final = 5 * 1024**3
_CHUNK: Final = 1024 * 1024
_MAX_API_BODY: Final = 1024 * 1024
_MAX_CHAT_BODY: Final = 256 * 1024 * 1024
_DRAIN_CHUNKED_LIMIT: Final = 64 * 1024 * 1024
_QUERY_RE: Final = re.compile(r"\?[^\s\"']*")
_PROBLEM_SLUGS: Final = {
    400: "bad-request",
    401: "unauthorized",
    404: "not-found",
    405: "method-not-allowed",
    413: "payload-too-large",
    429: "too-many-requests",
    500: "internal-server-error",
    503: "service-unavailable",
}


def _redact(text: str) -> str:
    """``text`` with every URL query string removed (presigned signatures live there)."""
    return _QUERY_RE.sub("?<redacted>", text)


def _owner(api_key: str) -> str:
    # Assets are keyed by a hash of the key so the emulator never keeps a key around.
    return hashlib.sha256(api_key.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class EmulatedAsset:
    """An asset as the emulator stores it.

    Attributes:
        asset_id: the UUID.
        content_type: the content type it was created with.
        description: its description.
        created_at: when it was created (``time.time()``).
        path: the uploaded bytes on disk, or None until an upload completes.
        size: the uploaded size in bytes.
        sha256: the hex SHA-256 of the uploaded bytes.
        uploads: how many PUTs completed for it.
    """

    asset_id: str
    content_type: str
    description: str
    created_at: float
    path: str | None = None
    size: int | None = None
    sha256: str | None = None
    uploads: int = 0
    owner: str = field(default="", repr=False)
    url_revoked: bool = field(default=False, repr=False)

    @property
    def uploaded(self) -> bool:
        """True once an upload completed."""
        return self.path is not None


@dataclass(frozen=True)
class RecordedRequest:
    """One request the emulator received.

    Attributes:
        method: the HTTP method.
        path: the path, without the query string.
        headers: the request headers, names lower-cased (``authorization`` is redacted to ``Bearer ***``).
        status: the status answered, or None when the connection was dropped or broke.
        body_bytes: how many body bytes were read.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    status: int | None
    body_bytes: int


@dataclass
class _Fault:
    kind: str
    remaining: int
    path_prefix: str | None
    method: str | None
    retry_after: float | str | None
    delay_s: float

    def matches(self, method: str, path: str) -> bool:
        if self.remaining <= 0:
            return False
        if self.kind == "expire" and not (method == "PUT" and path.startswith(UPLOAD_PATH)):
            return False
        if self.method is not None and self.method != method:
            return False
        return self.path_prefix is None or path.startswith(self.path_prefix)


class _BodyRefused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Many uploads at once (-j) should queue, not be refused.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], emulator: NVCFEmulator) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.emulator = emulator
        super().__init__(address, _Handler)


class NVCFEmulator:
    """A local emulator of the NVCF asset API, presigned uploads and the chat endpoint.

    Args:
        host: interface to listen on.
        port: TCP port; 0 picks a free one.
        latency_api_s: seconds added to every asset-API call (internet-like latency for benchmarks).
        latency_upload_s: seconds added to every upload.
        url_ttl_s: how long a presigned upload URL stays valid (35 minutes on the service).
        storage_dir: where uploaded bytes go; None uses a temporary folder removed on ``stop``.
        api_keys: the keys accepted; None accepts any non-empty Bearer key.
        asset_ttl_s: how long assets live (24 hours on the service).

    Example:
        >>> with NVCFEmulator() as emu:  # doctest: +SKIP
        ...     emu.assets_url
        'http://127.0.0.1:40123/v2/nvcf/assets'
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency_api_s: float = 0.0,
        latency_upload_s: float = 0.0,
        url_ttl_s: float = 35 * 60,
        storage_dir: str | Path | None = None,
        api_keys: Collection[str] | None = None,
        asset_ttl_s: float = 24 * 3600,
    ) -> None:
        self.host = host
        self.port = port
        self.latency_api_s = latency_api_s
        self.latency_upload_s = latency_upload_s
        self.url_ttl_s = url_ttl_s
        self.asset_ttl_s = asset_ttl_s
        self._accepted_owners = None if api_keys is None else {_owner(k) for k in api_keys}
        self._storage_arg = Path(storage_dir) if storage_dir is not None else None
        self._storage: Path | None = None
        self._own_storage = False
        self._secret = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._assets: dict[str, EmulatedAsset] = {}
        self._faults: list[_Fault] = []
        self._requests: list[RecordedRequest] = []
        self._counts: dict[str, int] = {}
        self._problems: dict[tuple[str, str], str | None] = {}
        self._connections: set[socket.socket] = set()
        self._uploads_in_flight = 0
        self._peak_uploads_in_flight = 0
        self._in_flight_changed = threading.Condition(self._lock)
        self._uploads_open = threading.Event()
        self._uploads_open.set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> NVCFEmulator:
        """Start serving in a background thread; returns self."""
        if self._server is not None:
            return self
        if self._storage_arg is None:
            self._storage = Path(tempfile.mkdtemp(prefix="nvmedia-emulator-"))
            self._own_storage = True
        else:
            self._storage = self._storage_arg
            self._storage.mkdir(parents=True, exist_ok=True)
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, name="nvcf-emulator", daemon=True
        )
        self._thread.start()
        logger.debug("NVCF emulator listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and remove the temporary storage."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        self._uploads_open.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._own_storage and self._storage is not None:
            shutil.rmtree(self._storage, ignore_errors=True)

    def __enter__(self) -> NVCFEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self._server is not None else "stopped"
        return f"NVCFEmulator({where})"

    # -- addresses -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def assets_url(self) -> str:
        """The asset API base, for ``NVMEDIA_ASSETS_URL``."""
        return self.base_url + ASSETS_PATH

    @property
    def chat_url(self) -> str:
        """The chat-completions endpoint (the OpenAI SDK's ``base_url`` is ``base_url + "/v1"``)."""
        return self.base_url + CHAT_PATH

    # -- test controls -----------------------------------------------------------------

    def inject(
        self,
        kind: str,
        *,
        times: int = 1,
        path_prefix: str | None = None,
        method: str | None = None,
        retry_after: float | str | None = 1.0,
        delay_s: float = 1.0,
    ) -> None:
        """Make the next ``times`` matching requests fail.

        Args:
            kind: ``"429"`` (with ``Retry-After``), ``"500"``, ``"503"``, ``"drop"`` (the
                connection closes mid-response, or mid-body for an upload), ``"slow"`` (wait
                ``delay_s`` before answering normally) or ``"expire"`` (the next upload's URL
                counts as expired).
            times: how many requests it applies to.
            path_prefix: only requests whose path starts with this (e.g. ``"/s3/"`` for uploads).
            method: only requests with this method.
            retry_after: the ``Retry-After`` value of a 429 (seconds, or an HTTP date string);
                None sends none.
            delay_s: the wait of a ``"slow"`` fault.

        Raises:
            ValueError: ``kind`` is not one of ``FAULT_KINDS`` or ``times`` is below 1.
        """
        kind = str(kind)
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; use one of {', '.join(FAULT_KINDS)}")
        if times < 1:
            raise ValueError(f"times must be at least 1, got {times}")
        with self._lock:
            self._faults.append(_Fault(kind, times, path_prefix, method and method.upper(), retry_after, delay_s))

    def hold_uploads(self) -> None:
        """Make upload PUTs wait, once they have started, until ``release_uploads`` (or ``stop``)."""
        self._uploads_open.clear()

    def release_uploads(self) -> None:
        """Let held and future upload PUTs go on."""
        self._uploads_open.set()

    def wait_for_uploads_in_flight(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` upload PUTs are being served at once; False if ``timeout`` seconds pass first."""
        with self._in_flight_changed:
            return self._in_flight_changed.wait_for(lambda: self._uploads_in_flight >= count, timeout)

    def clear_faults(self) -> None:
        """Drop every pending fault."""
        with self._lock:
            self._faults.clear()

    def expire_urls(self) -> int:
        """Make every upload URL issued so far expired; returns how many assets that touched."""
        with self._lock:
            for asset in self._assets.values():
                asset.url_revoked = True
            return len(self._assets)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the recorded requests and counters."""
        with self._lock:
            self._requests.clear()
            self._counts.clear()
            self._peak_uploads_in_flight = self._uploads_in_flight

    @property
    def counts(self) -> dict[str, int]:
        """Counters: ``create``, ``list``, ``get``, ``delete``, ``upload`` (completed), ``upload_refused``,
        ``chat``, ``chat_refused``, ``fault`` (a copy)."""
        with self._lock:
            return dict(self._counts)

    @property
    def peak_concurrent_uploads(self) -> int:
        """The most upload PUTs this emulator was serving at one moment (since the last ``clear_requests``)."""
        with self._lock:
            return self._peak_uploads_in_flight

    @property
    def upload_count(self) -> int:
        """Uploads that completed."""
        return self.counts.get("upload", 0)

    @property
    def create_count(self) -> int:
        """Assets created."""
        return self.counts.get("create", 0)

    @property
    def delete_count(self) -> int:
        """Assets deleted."""
        return self.counts.get("delete", 0)

    @property
    def chat_count(self) -> int:
        """Chat requests accepted."""
        return self.counts.get("chat", 0)

    def assets(self, api_key: str | None = None) -> list[EmulatedAsset]:
        """Copies of the stored assets, of one key or of all."""
        owner = None if api_key is None else _owner(api_key)
        with self._lock:
            self._purge_expired_locked()
            found = [dataclasses.replace(a) for a in self._assets.values() if owner is None or a.owner == owner]
        return [self._with_digest(a) for a in found]

    def asset(self, asset_id: str) -> EmulatedAsset | None:
        """A copy of one stored asset, or None."""
        with self._lock:
            found = self._assets.get(asset_id)
            copy = dataclasses.replace(found) if found is not None else None
        return self._with_digest(copy) if copy is not None else None

    # -- internals used by the handler ------------------------------------------------------

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + 1

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.remaining -= 1
                    self._counts["fault"] = self._counts.get("fault", 0) + 1
                    taken = dataclasses.replace(fault)
                    self._faults = [f for f in self._faults if f.remaining > 0]
                    return taken
        return None

    def _record(self, entry: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(entry)

    def _upload_started(self, started: bool) -> None:
        with self._lock:
            self._uploads_in_flight += 1 if started else -1
            self._peak_uploads_in_flight = max(self._peak_uploads_in_flight, self._uploads_in_flight)
            self._in_flight_changed.notify_all()

    def _track(self, conn: socket.socket, on: bool) -> None:
        with self._lock:
            if on:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _key_ok(self, api_key: str) -> bool:
        return self._accepted_owners is None or _owner(api_key) in self._accepted_owners

    def _purge_expired_locked(self) -> None:
        cutoff = time.time() - self.asset_ttl_s
        for asset_id in [a.asset_id for a in self._assets.values() if a.created_at < cutoff]:
            self._drop_locked(asset_id)

    def _drop_locked(self, asset_id: str) -> None:
        asset = self._assets.pop(asset_id)
        if asset.path is not None:
            Path(asset.path).unlink(missing_ok=True)

    def _create(self, owner: str, content_type: str, description: str) -> tuple[EmulatedAsset, str]:
        asset_id = str(uuid.uuid4())
        path = UPLOAD_PATH + asset_id
        query = presign.presign(self._secret, path, content_type, description, self.url_ttl_s, time.time())
        asset = EmulatedAsset(asset_id, content_type, description, time.time(), owner=owner)
        with self._lock:
            self._purge_expired_locked()
            self._assets[asset_id] = asset
            self._counts["create"] = self._counts.get("create", 0) + 1
        return asset, f"{self.base_url}{path}?{query}"

    def _owned(self, owner: str, asset_id: str) -> EmulatedAsset | None:
        with self._lock:
            self._purge_expired_locked()
            asset = self._assets.get(asset_id)
            return asset if asset is not None and asset.owner == owner else None

    def _delete(self, owner: str, asset_id: str) -> bool:
        with self._lock:
            asset = self._assets.get(asset_id)
            if asset is None or asset.owner != owner:
                return False
            self._drop_locked(asset_id)
            self._counts["delete"] = self._counts.get("delete", 0) + 1
            return True

    def _list(self, owner: str) -> list[str]:
        with self._lock:
            self._purge_expired_locked()
            return [a.asset_id for a in self._assets.values() if a.owner == owner]

    def _url_revoked(self, asset_id: str) -> bool:
        with self._lock:
            asset = self._assets.get(asset_id)
            return asset is not None and asset.url_revoked

    def _finish_upload(self, asset_id: str, tmp: Path, size: int) -> bool:
        with self._lock:
            asset = self._assets.get(asset_id)
            if asset is None:
                tmp.unlink(missing_ok=True)
                return False
            final = tmp.with_name(asset_id)
            os.replace(tmp, final)
            asset.path, asset.size, asset.sha256 = str(final), size, None
            asset.uploads += 1
            self._problems = {k: v for k, v in self._problems.items() if k[0] != asset_id}
            self._counts["upload"] = self._counts.get("upload", 0) + 1
            return True

    def _with_digest(self, asset: EmulatedAsset) -> EmulatedAsset:
        """``asset`` with its ``sha256`` filled in (computed on demand, outside the lock, then kept)."""
        if asset.path is None or asset.sha256 is not None:
            return asset
        digest = hashlib.sha256()
        try:
            with open(asset.path, "rb") as fh:
                for chunk in iter(lambda: fh.read(_CHUNK), b""):
                    digest.update(chunk)
        except FileNotFoundError:
            return asset
        asset.sha256 = digest.hexdigest()
        with self._lock:
            stored = self._assets.get(asset.asset_id)
            if stored is not None and stored.path == asset.path and stored.uploads == asset.uploads:
                stored.sha256 = asset.sha256
        return asset

    def _view(self, owner: str, asset_id: str) -> chat.AssetView | None:
        asset = self._owned(owner, asset_id)
        return None if asset is None else chat.AssetView(asset.path, asset.content_type)

    def _asset_problem(self, asset_id: str, path: str, mime: str) -> str | None:
        key = (asset_id, magic.canonical_mime(mime))
        with self._lock:
            if key in self._problems:
                return self._problems[key]
        with open(path, "rb") as fh:
            actual = magic.media_type_of(fh.read(magic.HEAD_BYTES))
        if not magic.matches(mime, actual):
            problem: str | None = f"referenced as {mime} but its bytes are {actual or 'not an accepted media type'}"
        else:
            problem = magic.file_decode_problem(path, mime)
        with self._lock:
            self._problems[key] = problem
        return problem


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "NVCFEmulator/1.0"
    sys_version = ""
    # An idle keep-alive connection is closed after this long.
    timeout = 120
    # Headers and body go out in separate writes; Nagle plus delayed ACKs would stall each answer 40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self._status: int | None = None
        self._recorded = False
        self._received = 0
        self.server.emulator._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.emulator._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("emulator: %s", _redact(format % args))

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

    # -- dispatch --------------------------------------------------------------------------

    @property
    def emu(self) -> NVCFEmulator:
        return self.server.emulator

    def _handle(self) -> None:
        split = urlsplit(self.path)
        path = split.path
        self._status = None
        self._received = 0
        self._recorded = False
        is_upload = self.command == "PUT" and path.startswith(UPLOAD_PATH)
        if is_upload:
            self.emu._upload_started(True)
            self.emu._uploads_open.wait()
        try:
            fault = self.emu._take_fault(self.command, path)
            if fault is not None and fault.kind == "slow" and self.emu._stopping.wait(fault.delay_s):
                self.close_connection = True
                return
            if path.startswith(ASSETS_PATH) and self.emu.latency_api_s > 0:
                self.emu._stopping.wait(self.emu.latency_api_s)
            if path.startswith(UPLOAD_PATH) and self.emu.latency_upload_s > 0:
                self.emu._stopping.wait(self.emu.latency_upload_s)
            if fault is not None and fault.kind in ("429", "500", "503", "drop"):
                self._fault(fault, path)
            else:
                self._route(path, split.query, fault is not None and fault.kind == "expire")
        except (ConnectionError, TimeoutError):
            self.close_connection = True
            self._status = None
        except Exception:
            logger.exception("emulator: unexpected error on %s %s", self.command, path)
            if self._status is None:
                self._problem(500, "the emulator failed on this request; see its log")
            self.close_connection = True
        finally:
            self._record(self._status)
            if is_upload:
                self.emu._upload_started(False)

    def _record(self, status: int | None) -> None:
        """Record this request once; answers record before they are written so a client never outruns the log."""
        if self._recorded:
            return
        self._recorded = True
        headers = {k.lower(): ("Bearer ***" if k.lower() == "authorization" else v) for k, v in self.headers.items()}
        path = urlsplit(self.path).path
        self.emu._record(RecordedRequest(self.command, path, headers, status, self._received))

    def _route(self, path: str, query: str, force_expired: bool) -> None:
        method = self.command
        if path == ASSETS_PATH:
            if method == "POST":
                return self._create()
            if method == "GET":
                return self._list()
        elif path.startswith(ASSETS_PATH + "/"):
            asset_id = path[len(ASSETS_PATH) + 1 :]
            if method == "GET":
                return self._get(asset_id)
            if method == "DELETE":
                return self._delete(asset_id)
        elif path.startswith(UPLOAD_PATH):
            if method == "PUT":
                return self._upload(path, query, force_expired)
            self._drain()
            return self._s3_error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")
        elif path == CHAT_PATH:
            if method == "POST":
                return self._chat()
        else:
            self._drain()
            return self._problem(404, f"no route for {path}")
        self._drain()
        self._problem(405, f"{method} is not allowed on {path}")

    # -- bodies ------------------------------------------------------------------------------

    def _content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        if value is None:
            return None
        try:
            length = int(value)
        except ValueError:
            return -1
        return length if length >= 0 else -1

    def _chunked(self) -> bool:
        return "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()

    def _chunks(self, limit: int) -> Iterator[bytes]:
        """The pieces of a chunked body, read as they come.

        Raises:
            _BodyRefused: the body is malformed or larger than ``limit``.
        """
        total = 0
        while True:
            line = self.rfile.readline(1024)
            if not line:
                raise ConnectionError("the client closed the connection mid-body")
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise _BodyRefused(400, "malformed chunked body") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return
            total += size
            if total > limit:
                raise _BodyRefused(413, f"the body is over {limit} bytes")
            while size > 0:
                piece = self.rfile.read(min(size, _CHUNK))
                if not piece:
                    raise ConnectionError("the client closed the connection mid-body")
                size -= len(piece)
                self._received += len(piece)
                yield piece
            self.rfile.readline(1024)

    def _refuse_body(self, refused: _BodyRefused) -> None:
        self.close_connection = True
        self._problem(refused.status, refused.detail)
        self._linger_and_close()

    def _read_body(self, limit: int) -> bytes | None:
        """The request body (plain or chunked), or None after answering 413/400 when it is too big or malformed."""
        if self._chunked():
            try:
                return b"".join(self._chunks(limit))
            except _BodyRefused as refused:
                self._refuse_body(refused)
                return None
        length = self._content_length() or 0
        if length < 0:
            self._refuse_body(_BodyRefused(400, "Content-Length is not a number"))
            return None
        if length > limit:
            self._refuse_body(_BodyRefused(413, f"the body is {length} bytes; at most {limit} are accepted"))
            return None
        data = self.rfile.read(length)
        self._received = len(data)
        if len(data) < length:
            raise ConnectionError("the client closed the connection mid-body")
        return data

    def _drain(self, limit: int | None = None) -> None:
        """Read and discard the body (up to ``limit`` bytes) so the connection can carry the next request."""
        if self._chunked():
            try:
                for _ in self._chunks(_DRAIN_CHUNKED_LIMIT):
                    pass
            except _BodyRefused:
                self.close_connection = True
            return
        remaining = self._content_length() or 0
        if remaining < 0:
            self.close_connection = True
            return
        if limit is not None:
            remaining = min(remaining, limit)
        while remaining > 0:
            chunk = self.rfile.read(min(_CHUNK, remaining))
            if not chunk:
                raise ConnectionError("the client closed the connection mid-body")
            remaining -= len(chunk)
            self._received += len(chunk)

    def _linger_and_close(self) -> None:
        """Close after the response has gone out, reading what the client still sends for a moment.

        Closing a socket with unread input makes the kernel send a reset that can destroy
        the response before the client reads it; a short lingering read avoids that.
        """
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            deadline = time.monotonic() + 2.0
            drained = 0
            while time.monotonic() < deadline and drained < 64 * _CHUNK:
                chunk = self.connection.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:
            pass

    # -- answers -----------------------------------------------------------------------------

    def _send(
        self, status: int, body: bytes, content_type: str | None, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self._status = status
        self._record(status)
        self.end_headers()
        if body:
            self.wfile.write(body)
        self.wfile.flush()

    def _json(self, status: int, obj: object, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", headers)

    def _problem(self, status: int, detail: str, headers: Mapping[str, str] | None = None) -> None:
        body = {
            "type": f"urn:kaizen:problem-details:{_PROBLEM_SLUGS.get(status, 'error')}",
            "title": http.HTTPStatus(status).phrase,
            "status": status,
            "detail": detail,
            "requestId": str(uuid.uuid4()),
        }
        self._send(status, json.dumps(body).encode(), "application/problem+json", headers)

    def _s3_error(
        self,
        status: int,
        code: str,
        message: str,
        extra: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        fields = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in (extra or {}).items())
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>{fields}"
            f"<RequestId>{secrets.token_hex(8).upper()}</RequestId><HostId>emulator</HostId></Error>"
        ).encode()
        self._send(status, body, "application/xml", headers)

    def _fault(self, fault: _Fault, path: str) -> None:
        upload = path.startswith(UPLOAD_PATH)
        if fault.kind == "drop":
            length = self._content_length()
            if upload and self.command == "PUT" and length and length > 0 and not self._chunked():
                # Read about half of the body, then vanish: a connection lost mid-upload.
                self._drain(limit=max(1, length // 2))
            else:
                self._drain()
                # A status line and part of a body, then the connection goes away.
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n")
                self.wfile.write(b'{"asse')
                self.wfile.flush()
            self.close_connection = True
            self._status = None
            return
        self._drain()
        status = int(fault.kind)
        headers: dict[str, str] = {}
        if status == 429 and fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        if upload:
            code, message = {
                429: ("SlowDown", "Please reduce your request rate."),
                500: ("InternalError", "We encountered an internal error. Please try again."),
                503: ("ServiceUnavailable", "Service is unable to handle request."),
            }[status]
            return self._s3_error(status, code, message, headers=headers)
        self._problem(status, f"injected fault: {http.HTTPStatus(status).phrase}", headers)

    # -- auth ----------------------------------------------------------------------------------

    def _bearer_owner(self) -> str | None:
        """The caller's owner hash, or None after answering 401."""
        value = self.headers.get("Authorization") or ""
        scheme, _, key = value.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key or not self.emu._key_ok(key):
            self._problem(
                401, "a valid 'Authorization: Bearer <key>' header is required", {"WWW-Authenticate": "Bearer"}
            )
            return None
        return _owner(key)

    # -- asset API -----------------------------------------------------------------------------

    def _create(self) -> None:
        body = self._read_body(_MAX_API_BODY)
        if body is None:
            return
        owner = self._bearer_owner()
        if owner is None:
            return
        try:
            payload = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError):
            return self._problem(400, "the body is not JSON")
        if not isinstance(payload, dict):
            return self._problem(400, 'the body must be a JSON object {"contentType": ..., "description": ...}')
        content_type = payload.get("contentType")
        description = payload.get("description")
        if not isinstance(content_type, str) or not CONTENT_TYPE_RE.fullmatch(content_type):
            return self._problem(
                400, f"contentType {content_type!r} is invalid: it must match {CONTENT_TYPE_RE.pattern} (no parameters)"
            )
        if not isinstance(description, str) or not description:
            return self._problem(400, "description is required")
        asset, upload_url = self.emu._create(owner, content_type, description)
        self._json(
            200,
            {
                "assetId": asset.asset_id,
                "uploadUrl": upload_url,
                "contentType": content_type,
                "description": description,
            },
        )

    def _list(self) -> None:
        self._drain()
        owner = self._bearer_owner()
        if owner is None:
            return
        self.emu._count("list")
        self._json(200, {"assets": [{"assetId": a} for a in self.emu._list(owner)]})

    def _get(self, asset_id: str) -> None:
        self._drain()
        owner = self._bearer_owner()
        if owner is None:
            return
        self.emu._count("get")
        asset = self.emu._owned(owner, asset_id)
        if asset is None:
            return self._problem(404, f"NotFound error: failed to find asset {asset_id}")
        self._json(
            200,
            {"asset": {"assetId": asset.asset_id, "contentType": asset.content_type, "description": asset.description}},
        )

    def _delete(self, asset_id: str) -> None:
        self._drain()
        owner = self._bearer_owner()
        if owner is None:
            return
        if not self.emu._delete(owner, asset_id):
            return self._problem(404, f"NotFound error: failed to find asset {asset_id}")
        self._send(204, b"", None)

    # -- presigned upload -------------------------------------------------------------------------

    def _upload(self, path: str, query: str, force_expired: bool) -> None:
        emu = self.emu
        asset_id = path[len(UPLOAD_PATH) :]
        if self.headers.get("Authorization") is not None:
            emu._count("upload_refused")
            self._drain()
            return self._s3_error(
                400,
                "InvalidArgument",
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string "
                "parameter or the Authorization header should be specified",
                {"ArgumentName": "Authorization"},
            )
        if self._chunked():
            emu._count("upload_refused")
            self.close_connection = True
            self._s3_error(
                501,
                "NotImplemented",
                "A header you provided implies functionality that is not implemented",
                {"Header": "Transfer-Encoding"},
            )
            return self._linger_and_close()
        length = self._content_length()
        if length is None or length < 0:
            emu._count("upload_refused")
            self.close_connection = True
            self._s3_error(411, "MissingContentLength", "You must provide the Content-Length HTTP header.")
            return self._linger_and_close()
        if length > MAX_ASSET_BYTES:
            emu._count("upload_refused")
            self.close_connection = True
            self._s3_error(
                400,
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed size",
                {"ProposedSize": str(length), "MaxSizeAllowed": str(MAX_ASSET_BYTES)},
            )
            return self._linger_and_close()
        params = dict(parse_qsl(query, keep_blank_values=True))
        verdict = presign.verify(
            emu._secret,
            path,
            params,
            self.headers.get("Content-Type"),
            self.headers.get(presign.DESCRIPTION_HEADER),
            time.time(),
        )
        if verdict.ok and (force_expired or emu._url_revoked(asset_id)):
            verdict = presign.Verdict(False, "AccessDenied", "Request has expired")
        if not verdict.ok:
            emu._count("upload_refused")
            self._drain()
            extra = {"X-Amz-Expires": params.get("X-Amz-Expires", "")} if verdict.message.endswith("expired") else {}
            return self._s3_error(403, verdict.code, verdict.message, extra)
        self._store(asset_id, length)

    def _store(self, asset_id: str, length: int) -> None:
        emu = self.emu
        assert emu._storage is not None
        tmp = emu._storage / f"{asset_id}.{uuid.uuid4().hex}.part"
        remaining = length
        buffer = memoryview(bytearray(_CHUNK))  # one buffer reused: memory stays flat whatever the size
        try:
            with open(tmp, "wb") as out:
                while remaining > 0:
                    got = self.rfile.readinto(buffer[: min(_CHUNK, remaining)])
                    if not got:
                        raise ConnectionError("the client closed the connection mid-upload")
                    out.write(buffer[:got])
                    remaining -= got
                    self._received += got
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if not emu._finish_upload(asset_id, tmp, length):
            emu._count("upload_refused")
            return self._s3_error(403, "AccessDenied", "Access Denied")
        # An opaque tag: hashing every upload here would make the emulator, not the client, the bottleneck.
        self._send(200, b"", None, {"ETag": f'"{uuid.uuid4().hex}"'})

    # -- chat ------------------------------------------------------------------------------------

    def _chat(self) -> None:
        body = self._read_body(_MAX_CHAT_BODY)
        if body is None:
            return
        owner = self._bearer_owner()
        if owner is None:
            return
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return self._problem(400, "the body is not JSON")
        if not isinstance(payload, dict):
            return self._problem(400, "the body must be a JSON object")
        try:
            received = chat.check_request(
                payload,
                self.headers.get(chat.ASSET_HEADER),
                lambda asset_id: self.emu._view(owner, asset_id),
                self.emu._asset_problem,
            )
        except chat.ChatRejected as rejected:
            self.emu._count("chat_refused")
            return self._problem(rejected.status, rejected.detail)
        self.emu._count("chat")
        answer = received.describe()
        if payload.get("stream"):
            self._send(200, chat.completion_stream(payload, answer), "text/event-stream", {"Cache-Control": "no-cache"})
        else:
            self._json(200, chat.completion(payload, answer))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until interrupted; the first line of stdout is its base URL.

    Args:
        argv: command-line arguments (without the program name).

    Returns:
        The exit status (0).
    """
    parser = argparse.ArgumentParser(
        prog="nvmedia emulator", description="Run a local emulator of NVIDIA's asset API and chat endpoint."
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: 0, a free one)")
    parser.add_argument("--latency-api", type=float, default=0.0, metavar="S", help="seconds added per asset-API call")
    parser.add_argument("--latency-upload", type=float, default=0.0, metavar="S", help="seconds added per upload")
    parser.add_argument("--storage-dir", default=None, help="keep uploaded bytes here (default: a temporary folder)")
    args = parser.parse_args(argv)
    done = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: done.set())
    with NVCFEmulator(
        args.host,
        args.port,
        latency_api_s=args.latency_api,
        latency_upload_s=args.latency_upload,
        storage_dir=args.storage_dir,
    ) as emu:
        print(emu.base_url, flush=True)
        print(
            f"NVCF emulator ready. Asset API: {emu.assets_url}\n"
            f"  export NVMEDIA_ASSETS_URL={emu.assets_url}\n"
            f"  OpenAI base_url: {emu.base_url}/v1 (any non-empty API key works)\n"
            "Press Ctrl+C to stop.",
            file=sys.stderr,
            flush=True,
        )
        try:
            while not done.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
