"""The emulated NVCF service itself: a request in, an answer out, no sockets.

``NVCFService.handle`` takes a method, a path and query, headers and a body
reader, and returns a status, headers and a body (bytes, or an iterator of
chunks for a streamed chat answer). Everything the service does lives here:
the asset API, the presigned S3-style upload, the chat endpoint, fault
injection, latency, the request log and the counters. Two front ends serve it:
the loopback HTTP server (``server.py``, what ``NVCFEmulator.start`` runs) and an
httpx transport (``transport.py``, ``NVCFEmulator.transport``).

A front end reports a client that went away mid-body by raising
``ConnectionError`` from its body reader, and a malformed body by raising
``MalformedBody``; the service raises ``ConnectionDropped`` (or a streamed body
does, part-way) when a fault says the connection must die.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http
import json
import logging
import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from ..workdirs import owned_tempdir
from . import chat, magic, presign

logger = logging.getLogger("nvmedia.testing.emulator")

ASSETS_PATH: Final = "/v2/nvcf/assets"
UPLOAD_PATH: Final = "/s3/nvcf-assets/"
CHAT_PATH: Final = "/v1/chat/completions"
CONTENT_TYPE_RE: Final = re.compile(r"^(\w+)/([-+.\w]+)$", re.ASCII)
FAULT_KINDS: Final = ("429", "500", "503", "drop", "slow", "expire")
MAX_ASSET_BYTES: Final = 5 * 1024**3
CHUNK: Final = 1024 * 1024
MAX_API_BODY: Final = 1024 * 1024
MAX_CHAT_BODY: Final = 256 * 1024 * 1024
DRAIN_CHUNKED_LIMIT: Final = 64 * 1024 * 1024
_PROBLEM_SLUGS: Final = {
    400: "bad-request",
    401: "unauthorized",
    404: "not-found",
    405: "method-not-allowed",
    411: "length-required",
    413: "payload-too-large",
    429: "too-many-requests",
    500: "internal-server-error",
    503: "service-unavailable",
}


def owner_of(api_key: str) -> str:
    """The owner id of a key: assets are keyed by a hash so the service never keeps a key around."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogateescape")).hexdigest()


# -- what goes in and out -----------------------------------------------------------------------


class BodyReader(Protocol):
    """A request body as the front end delivers it (already de-chunked)."""

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; b"" at the end of the body.

        Raises:
            ConnectionError: the client went away before the end of the body.
            MalformedBody: the body's framing (chunked encoding) is broken.
        """
        ...


class MalformedBody(Exception):
    """The body's framing is broken (raised by a front end's body reader)."""


class ConnectionDropped(Exception):
    """The connection must die now, as a network fault would have it.

    Attributes:
        mid_body: the request body was being read (nothing of an answer was sent).
    """

    def __init__(self, mid_body: bool = False) -> None:
        super().__init__("the connection was dropped")
        self.mid_body = mid_body


@dataclass(frozen=True)
class ServiceRequest:
    """One request as the service sees it.

    Attributes:
        method: the HTTP method, upper case.
        path: the path, without the query string.
        query: the raw query string (without ``?``).
        headers: the headers, names lower-cased.
        body: the body reader.
    """

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: BodyReader = field(repr=False)


@dataclass
class ServiceResponse:
    """The service's answer.

    Attributes:
        status: the HTTP status.
        headers: the answer's headers (``Content-Length`` and framing are the front end's job).
        body: the whole body, or an iterator of chunks for a streamed answer (it may raise
            ``ConnectionDropped`` part-way).
        close: the connection must be closed after this answer (S3 does so when it will not read a body).
    """

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Iterable[bytes] = b""
    close: bool = False


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
    after_chunks: int | None

    def matches(self, method: str, path: str) -> bool:
        if self.remaining <= 0:
            return False
        if self.kind == "expire" and not (method == "PUT" and path.startswith(UPLOAD_PATH)):
            return False
        if self.method is not None and self.method != method:
            return False
        return self.path_prefix is None or path.startswith(self.path_prefix)


class _Refused(Exception):
    """An early answer (auth, body too large, malformed request): handling stops here."""

    def __init__(self, response: ServiceResponse) -> None:
        super().__init__(response.status)
        self.response = response


class _CountingBody:
    """The request body as the service reads it: counts bytes, knows its declared framing."""

    def __init__(self, request: ServiceRequest) -> None:
        self._reader = request.body
        self.received = 0
        self.chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
        value = request.headers.get("content-length")
        self.length: int | None = None
        if value is not None:
            try:
                self.length = int(value) if int(value) >= 0 else -1
            except ValueError:
                self.length = -1
        self.finished = False

    def read(self, size: int) -> bytes:
        data = self._reader.read(size)
        self.received += len(data)
        if not data:
            self.finished = True
        return data

    def drain(self, limit: int | None = None) -> bool:
        """Read and discard up to ``limit`` bytes (all when None); True when the body ended."""
        budget = limit
        while not self.finished and (budget is None or budget > 0):
            piece = self.read(CHUNK if budget is None else min(CHUNK, budget))
            if budget is not None:
                budget -= len(piece)
        return self.finished


# -- answers --------------------------------------------------------------------------------------


def json_answer(status: int, obj: object, headers: Mapping[str, str] | None = None) -> ServiceResponse:
    """A JSON answer."""
    return ServiceResponse(status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(obj).encode())


def problem(status: int, detail: str, headers: Mapping[str, str] | None = None, close: bool = False) -> ServiceResponse:
    """An RFC 7807 problem answer, as NVCF gives them."""
    body = {
        "type": f"urn:kaizen:problem-details:{_PROBLEM_SLUGS.get(status, 'error')}",
        "title": http.HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "requestId": str(uuid.uuid4()),
    }
    answer_headers = {"Content-Type": "application/problem+json", **(headers or {})}
    return ServiceResponse(status, answer_headers, json.dumps(body).encode(), close)


def s3_error(
    status: int,
    code: str,
    message: str,
    extra: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    close: bool = False,
) -> ServiceResponse:
    """An S3-style XML error answer."""
    fields = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in (extra or {}).items())
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>{fields}"
        f"<RequestId>{secrets.token_hex(8).upper()}</RequestId><HostId>emulator</HostId></Error>"
    ).encode()
    return ServiceResponse(status, {"Content-Type": "application/xml", **(headers or {})}, body, close)


class _NotJSONConstant(ValueError):
    """``NaN``, ``Infinity`` or ``-Infinity`` in a body: Python's json reads them, JSON has no such values."""

    def __init__(self, constant: str) -> None:
        super().__init__(constant)
        self.constant = constant


def _not_json_constant(constant: str) -> object:
    raise _NotJSONConstant(constant)


def _dropping_after(chunks: list[bytes], count: int) -> Iterator[bytes]:
    yield from chunks[:count]
    raise ConnectionDropped()


# -- the service ------------------------------------------------------------------------------------


class NVCFService:
    """The NVCF asset API, presigned uploads and chat endpoint, as a function from requests to answers.

    Args:
        latency_api_s: seconds added to every asset-API call (internet-like latency for benchmarks).
        latency_upload_s: seconds added to every upload.
        latency_chat_s: seconds added to every chat request.
        url_ttl_s: how long a presigned upload URL stays valid (35 minutes on the service).
        storage_dir: where uploaded bytes go; None uses a temporary folder (removed by ``close_storage``).
        api_keys: the keys accepted; None accepts any non-empty Bearer key.
        asset_ttl_s: how long assets live (24 hours on the service).

    Uploads in flight can be held at a gate so that a test can see, without any timing,
    how many a client sends at once::

        service.hold_uploads()                 # uploads now wait once they arrive
        ... start the client (another thread or task) ...
        assert service.wait_uploads_in_flight(2, timeout=30)   # True as soon as 2 are waiting
        service.release_uploads()              # they complete; peak_concurrent_uploads >= 2
    """

    def __init__(
        self,
        *,
        latency_api_s: float = 0.0,
        latency_upload_s: float = 0.0,
        latency_chat_s: float = 0.0,
        url_ttl_s: float = 35 * 60,
        storage_dir: str | Path | None = None,
        api_keys: Collection[str] | None = None,
        asset_ttl_s: float = 24 * 3600,
    ) -> None:
        self.latency_api_s = latency_api_s
        self.latency_upload_s = latency_upload_s
        self.latency_chat_s = latency_chat_s
        self.url_ttl_s = url_ttl_s
        self.asset_ttl_s = asset_ttl_s
        self._accepted_owners = None if api_keys is None else {owner_of(k) for k in api_keys}
        self._storage_arg = Path(storage_dir) if storage_dir is not None else None
        self._storage: Path | None = None
        self._secret = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._uploads_changed = threading.Condition(self._lock)
        self._assets: dict[str, EmulatedAsset] = {}
        self._faults: list[_Fault] = []
        self._requests: list[RecordedRequest] = []
        self._counts: dict[str, int] = {}
        self._problems: dict[tuple[str, str], str | None] = {}
        self._uploads_in_flight = 0
        self._peak_uploads_in_flight = 0
        self._uploads_held = False
        self._stopping = threading.Event()

    # -- where presigned URLs point -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The scheme and authority presigned upload URLs use (``NVCFEmulator`` gives its own)."""
        return "http://127.0.0.1"

    # -- storage ---------------------------------------------------------------------------------

    def _storage_path(self) -> Path:
        with self._lock:
            if self._storage is None:
                if self._storage_arg is None:
                    # Marked as this process's, so a run after a SIGKILL removes it (workdirs.py).
                    self._storage = owned_tempdir("nvmedia-emulator-")
                else:
                    self._storage = self._storage_arg
                    self._storage.mkdir(parents=True, exist_ok=True)
            return self._storage

    def close_storage(self) -> None:
        """Remove the temporary storage folder (a ``storage_dir`` given by the caller is kept)."""
        import shutil

        with self._lock:
            storage, self._storage = self._storage, None
        if storage is not None and self._storage_arg is None:
            shutil.rmtree(storage, ignore_errors=True)

    # -- test controls -----------------------------------------------------------------------------

    def inject(
        self,
        kind: str,
        *,
        times: int = 1,
        path_prefix: str | None = None,
        method: str | None = None,
        retry_after: float | str | None = 1.0,
        delay_s: float = 1.0,
        after_chunks: int | None = None,
    ) -> None:
        """Make the next ``times`` matching requests fail.

        Args:
            kind: ``"429"`` (with ``Retry-After``), ``"500"``, ``"503"``, ``"drop"`` (the
                connection closes mid-response, or mid-body for an upload), ``"slow"`` (wait
                ``delay_s`` before answering normally) or ``"expire"`` (the next upload's URL
                counts as expired).
            times: how many requests it applies to.
            path_prefix: only requests whose path starts with this (e.g. ``"/s3/"`` for uploads,
                ``"/v1/chat"`` for chat).
            method: only requests with this method.
            retry_after: the ``Retry-After`` value of a 429 (seconds, or an HTTP date string);
                None sends none.
            delay_s: the wait of a ``"slow"`` fault.
            after_chunks: with ``"drop"``, a streamed chat answer is cut after this many
                server-sent events (the request is checked and counted as usual); an
                answer that is not streamed is dropped before it starts.

        Raises:
            ValueError: ``kind`` is not one of ``FAULT_KINDS``, ``times`` is below 1, or
                ``after_chunks`` is negative or given with another kind.
        """
        kind = str(kind)
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; use one of {', '.join(FAULT_KINDS)}")
        if times < 1:
            raise ValueError(f"times must be at least 1, got {times}")
        if after_chunks is not None and (kind != "drop" or after_chunks < 0):
            raise ValueError(f"after_chunks goes with kind 'drop' and must be >= 0, got {kind!r}, {after_chunks}")
        fault = _Fault(kind, times, path_prefix, method and method.upper(), retry_after, delay_s, after_chunks)
        with self._lock:
            self._faults.append(fault)

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

    def hold_uploads(self) -> None:
        """Make every upload that arrives wait (counted as in flight) until ``release_uploads``."""
        with self._lock:
            self._uploads_held = True

    def release_uploads(self) -> None:
        """Let held uploads, and those still to come, proceed."""
        with self._lock:
            self._uploads_held = False
            self._uploads_changed.notify_all()

    def wait_uploads_in_flight(self, count: int, timeout: float) -> bool:
        """Wait until at least ``count`` uploads are in flight at once; False if ``timeout`` seconds pass first.

        With ``hold_uploads`` on, arriving uploads stay in flight, so this returns as soon as
        the client has sent ``count`` of them concurrently, whatever the machine's speed.
        """
        with self._lock:
            return self._uploads_changed.wait_for(lambda: self._uploads_in_flight >= count, timeout)

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
        """The most upload PUTs being served at one moment (since the last ``clear_requests``).

        Deterministic with ``hold_uploads`` / ``wait_uploads_in_flight`` (see the class docstring).
        """
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
        owner = None if api_key is None else owner_of(api_key)
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

    # -- serving ---------------------------------------------------------------------------------

    def handle(self, request: ServiceRequest) -> ServiceResponse:
        """Answer one request (blocking for latency, slow faults and held uploads).

        Raises:
            ConnectionDropped: a fault drops the connection (a streamed body may also raise it part-way).
            ConnectionError: the client went away mid-body.
        """
        body = _CountingBody(request)
        status: int | None = None
        is_upload = request.method == "PUT" and request.path.startswith(UPLOAD_PATH)
        if is_upload:
            self._upload_arrived()
        try:
            answer = self._answer(request, body)
            if not answer.close:
                # Read what is left of the body so the connection can carry the next request; one that
                # cannot be drained (malformed, or a chunked body over the limit) closes the connection.
                try:
                    answer.close = not body.drain(DRAIN_CHUNKED_LIMIT if body.chunked else None)
                except MalformedBody:
                    answer.close = True
            status = answer.status
            return answer
        finally:
            self._record(request, status, body.received)
            if is_upload:
                self._upload_left()

    def _answer(self, request: ServiceRequest, body: _CountingBody) -> ServiceResponse:
        path = request.path
        fault = self._take_fault(request.method, path)
        if fault is not None and fault.kind == "slow" and self._pause(fault.delay_s):
            raise ConnectionDropped()
        latency = (
            self.latency_api_s
            if path.startswith(ASSETS_PATH)
            else self.latency_upload_s
            if path.startswith(UPLOAD_PATH)
            else self.latency_chat_s
            if path == CHAT_PATH
            else 0.0
        )
        if latency > 0 and self._pause(latency):
            raise ConnectionDropped()
        if fault is not None and fault.kind == "drop" and not (fault.after_chunks is not None and path == CHAT_PATH):
            if request.method == "PUT" and path.startswith(UPLOAD_PATH) and (body.length or 0) > 0:
                body.drain(limit=max(1, (body.length or 0) // 2))  # about half the body, then vanish
                raise ConnectionDropped(mid_body=True)
            body.drain()
            raise ConnectionDropped()
        if fault is not None and fault.kind in ("429", "500", "503"):
            return self._fault_answer(fault, path)
        try:
            return self._route(request, body, fault)
        except _Refused as refused:
            return refused.response
        except MalformedBody as exc:
            return problem(400, f"the request body is malformed: {exc}", close=True)
        except (ConnectionError, ConnectionDropped):
            raise
        except Exception:
            logger.exception("emulator: unexpected error on %s %s", request.method, path)
            return problem(500, "the emulator failed on this request; see its log", close=True)

    def _pause(self, seconds: float) -> bool:
        """Wait ``seconds``; True when the emulator is stopping meanwhile."""
        return self._stopping.wait(seconds)

    def _fault_answer(self, fault: _Fault, path: str) -> ServiceResponse:
        status = int(fault.kind)
        headers: dict[str, str] = {}
        if status == 429 and fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        if path.startswith(UPLOAD_PATH):
            code, message = {
                429: ("SlowDown", "Please reduce your request rate."),
                500: ("InternalError", "We encountered an internal error. Please try again."),
                503: ("ServiceUnavailable", "Service is unable to handle request."),
            }[status]
            return s3_error(status, code, message, headers=headers)
        return problem(status, f"injected fault: {http.HTTPStatus(status).phrase}", headers)

    def _route(self, request: ServiceRequest, body: _CountingBody, fault: _Fault | None) -> ServiceResponse:
        method, path = request.method, request.path
        if path == ASSETS_PATH:
            if method == "POST":
                return self._create(request, body)
            if method == "GET":
                return self._list(request)
        elif path.startswith(ASSETS_PATH + "/"):
            asset_id = path[len(ASSETS_PATH) + 1 :]
            if method == "GET":
                return self._get(request, asset_id)
            if method == "DELETE":
                return self._delete(request, asset_id)
        elif path.startswith(UPLOAD_PATH):
            if method == "PUT":
                return self._upload(request, body, fault is not None and fault.kind == "expire")
            return s3_error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")
        elif path == CHAT_PATH:
            if method == "POST":
                return self._chat(request, body, fault.after_chunks if fault is not None else None)
        else:
            return problem(404, f"no route for {path}")
        return problem(405, f"{method} is not allowed on {path}")

    # -- bodies and auth ------------------------------------------------------------------------------

    def _read_body(self, body: _CountingBody, limit: int) -> bytes:
        """The whole body, at most ``limit`` bytes.

        Raises:
            _Refused: 413 when it is larger, 400 when its length is not a number (both close the connection).
        """
        if body.length == -1:
            raise _Refused(problem(400, "Content-Length is not a number", close=True))
        if body.length is not None and not body.chunked and body.length > limit:
            raise _Refused(problem(413, f"the body is {body.length} bytes; at most {limit} are accepted", close=True))
        parts: list[bytes] = []
        size = 0
        while piece := body.read(CHUNK):
            size += len(piece)
            if size > limit:
                raise _Refused(problem(413, f"the body is over {limit} bytes", close=True))
            parts.append(piece)
        if body.length is not None and not body.chunked and size < body.length:
            raise ConnectionError("the client closed the connection mid-body")
        return b"".join(parts)

    def _bearer_owner(self, request: ServiceRequest) -> str:
        """The caller's owner id.

        Raises:
            _Refused: 401 without a valid Bearer key.
        """
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key or not self._key_ok(key):
            raise _Refused(
                problem(401, "a valid 'Authorization: Bearer <key>' header is required", {"WWW-Authenticate": "Bearer"})
            )
        return owner_of(key)

    def _key_ok(self, api_key: str) -> bool:
        return self._accepted_owners is None or owner_of(api_key) in self._accepted_owners

    # -- asset API ---------------------------------------------------------------------------------

    def _create(self, request: ServiceRequest, body: _CountingBody) -> ServiceResponse:
        data = self._read_body(body, MAX_API_BODY)
        owner = self._bearer_owner(request)
        try:
            payload = json.loads(data or b"null")
        except (ValueError, UnicodeDecodeError):
            return problem(400, "the body is not JSON")
        if not isinstance(payload, dict):
            return problem(400, 'the body must be a JSON object {"contentType": ..., "description": ...}')
        content_type = payload.get("contentType")
        description = payload.get("description")
        if not isinstance(content_type, str) or not CONTENT_TYPE_RE.fullmatch(content_type):
            return problem(
                400, f"contentType {content_type!r} is invalid: it must match {CONTENT_TYPE_RE.pattern} (no parameters)"
            )
        if not isinstance(description, str) or not description:
            return problem(400, "description is required")
        asset_id = str(uuid.uuid4())
        path = UPLOAD_PATH + asset_id
        query = presign.presign(self._secret, path, content_type, description, self.url_ttl_s, time.time())
        asset = EmulatedAsset(asset_id, content_type, description, time.time(), owner=owner)
        with self._lock:
            self._purge_expired_locked()
            self._assets[asset_id] = asset
            self._counts["create"] = self._counts.get("create", 0) + 1
        return json_answer(
            200,
            {
                "assetId": asset_id,
                "uploadUrl": f"{self.base_url}{path}?{query}",
                "contentType": content_type,
                "description": description,
            },
        )

    def _list(self, request: ServiceRequest) -> ServiceResponse:
        owner = self._bearer_owner(request)
        with self._lock:
            self._purge_expired_locked()
            ids = [a.asset_id for a in self._assets.values() if a.owner == owner]
            self._counts["list"] = self._counts.get("list", 0) + 1
        return json_answer(200, {"assets": [{"assetId": a} for a in ids]})

    def _get(self, request: ServiceRequest, asset_id: str) -> ServiceResponse:
        owner = self._bearer_owner(request)
        self._count("get")
        asset = self._owned(owner, asset_id)
        if asset is None:
            return problem(404, f"NotFound error: failed to find asset {asset_id}")
        return json_answer(
            200,
            {"asset": {"assetId": asset.asset_id, "contentType": asset.content_type, "description": asset.description}},
        )

    def _delete(self, request: ServiceRequest, asset_id: str) -> ServiceResponse:
        owner = self._bearer_owner(request)
        with self._lock:
            asset = self._assets.get(asset_id)
            if asset is None or asset.owner != owner:
                return problem(404, f"NotFound error: failed to find asset {asset_id}")
            self._drop_locked(asset_id)
            self._counts["delete"] = self._counts.get("delete", 0) + 1
        return ServiceResponse(204)

    # -- presigned upload ------------------------------------------------------------------------------

    def _upload(self, request: ServiceRequest, body: _CountingBody, force_expired: bool) -> ServiceResponse:
        asset_id = request.path[len(UPLOAD_PATH) :]
        self._wait_for_upload_gate()
        refused = self._upload_refusal(request, body, asset_id, force_expired)
        if refused is not None:
            self._count("upload_refused")
            return refused
        assert body.length is not None
        storage = self._storage_path()
        tmp = storage / f"{asset_id}.{uuid.uuid4().hex}.part"
        remaining = body.length
        try:
            with open(tmp, "wb") as out:  # streamed to disk one chunk at a time: memory stays flat
                while remaining > 0:
                    piece = body.read(min(CHUNK, remaining))
                    if not piece:
                        raise ConnectionError("the client closed the connection mid-upload")
                    out.write(piece)
                    remaining -= len(piece)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if not self._finish_upload(asset_id, tmp, body.length):
            self._count("upload_refused")
            return s3_error(403, "AccessDenied", "Access Denied")
        # An opaque tag: hashing every upload here would make the emulator, not the client, the bottleneck.
        return ServiceResponse(200, {"ETag": f'"{uuid.uuid4().hex}"'})

    def _upload_refusal(
        self, request: ServiceRequest, body: _CountingBody, asset_id: str, force_expired: bool
    ) -> ServiceResponse | None:
        """S3's answer when it will not take this PUT, else None."""
        if "authorization" in request.headers:
            return s3_error(
                400,
                "InvalidArgument",
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string "
                "parameter or the Authorization header should be specified",
                {"ArgumentName": "Authorization"},
            )
        if body.chunked:
            return s3_error(
                501,
                "NotImplemented",
                "A header you provided implies functionality that is not implemented",
                {"Header": "Transfer-Encoding"},
                close=True,
            )
        if body.length is None or body.length < 0:
            return s3_error(411, "MissingContentLength", "You must provide the Content-Length HTTP header.", close=True)
        if body.length > MAX_ASSET_BYTES:
            return s3_error(
                400,
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed size",
                {"ProposedSize": str(body.length), "MaxSizeAllowed": str(MAX_ASSET_BYTES)},
                close=True,
            )
        params = dict(parse_qsl(request.query, keep_blank_values=True))
        verdict = presign.verify(
            self._secret,
            request.path,
            params,
            request.headers.get("content-type"),
            request.headers.get(presign.DESCRIPTION_HEADER),
            time.time(),
        )
        if verdict.ok and (force_expired or self._url_revoked(asset_id)):
            verdict = presign.Verdict(False, "AccessDenied", "Request has expired")
        if verdict.ok:
            return None
        extra = {"X-Amz-Expires": params.get("X-Amz-Expires", "")} if verdict.message.endswith("expired") else {}
        return s3_error(403, verdict.code, verdict.message, extra)

    def _wait_for_upload_gate(self) -> None:
        with self._lock:
            self._uploads_changed.wait_for(lambda: not self._uploads_held or self._stopping.is_set())

    # -- chat -------------------------------------------------------------------------------------

    def _chat(self, request: ServiceRequest, body: _CountingBody, drop_after: int | None) -> ServiceResponse:
        data = self._read_body(body, MAX_CHAT_BODY)
        owner = self._bearer_owner(request)
        try:
            payload = json.loads(data, parse_constant=_not_json_constant)
        except _NotJSONConstant as exc:
            return problem(400, f"the body is not JSON: {exc.constant} is not a JSON value (RFC 8259)")
        except (ValueError, UnicodeDecodeError):
            return problem(400, "the body is not JSON")
        if not isinstance(payload, dict):
            return problem(400, "the body must be a JSON object")
        try:
            received = chat.check_request(
                payload,
                request.headers.get(chat.ASSET_HEADER.lower()),
                lambda asset_id: self._view(owner, asset_id),
                self._asset_problem,
            )
        except chat.ChatRejected as rejected:
            self._count("chat_refused")
            return problem(rejected.status, rejected.detail)
        self._count("chat")
        answer = received.describe()
        if not payload.get("stream"):
            if drop_after is not None:
                raise ConnectionDropped()
            return json_answer(200, chat.completion(payload, answer))
        events = chat.completion_events(payload, answer)
        stream: Iterable[bytes] = events if drop_after is None else _dropping_after(events, drop_after)
        return ServiceResponse(200, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}, stream)

    # -- bookkeeping ------------------------------------------------------------------------------------

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

    def _record(self, request: ServiceRequest, status: int | None, body_bytes: int) -> None:
        """Record a request once its answer is decided, before it is sent, so a client never outruns the log."""
        headers = {k: ("Bearer ***" if k == "authorization" else v) for k, v in request.headers.items()}
        with self._lock:
            self._requests.append(RecordedRequest(request.method, request.path, headers, status, body_bytes))

    def _upload_arrived(self) -> None:
        with self._lock:
            self._uploads_in_flight += 1
            self._peak_uploads_in_flight = max(self._peak_uploads_in_flight, self._uploads_in_flight)
            self._uploads_changed.notify_all()

    def _upload_left(self) -> None:
        with self._lock:
            self._uploads_in_flight -= 1
            self._uploads_changed.notify_all()

    def _stop_waiting(self) -> None:
        """Wake everything that waits (latency, slow faults, held uploads): the emulator is stopping."""
        self._stopping.set()
        with self._lock:
            self._uploads_changed.notify_all()

    def _purge_expired_locked(self) -> None:
        cutoff = time.time() - self.asset_ttl_s
        for asset_id in [a.asset_id for a in self._assets.values() if a.created_at < cutoff]:
            self._drop_locked(asset_id)

    def _drop_locked(self, asset_id: str) -> None:
        asset = self._assets.pop(asset_id)
        if asset.path is not None:
            Path(asset.path).unlink(missing_ok=True)

    def _owned(self, owner: str, asset_id: str) -> EmulatedAsset | None:
        with self._lock:
            self._purge_expired_locked()
            asset = self._assets.get(asset_id)
            return asset if asset is not None and asset.owner == owner else None

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
                for chunk in iter(lambda: fh.read(CHUNK), b""):
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
            problem_text: str | None = (
                f"referenced as {mime} but its bytes are {actual or 'not an accepted media type'}"
            )
        else:
            problem_text = magic.file_decode_problem(path, mime)
        with self._lock:
            self._problems[key] = problem_text
        return problem_text
