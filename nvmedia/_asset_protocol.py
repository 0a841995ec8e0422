"""The NVCF asset protocol without I/O: what to send, how to read the answer, when to retry.

Every asset operation (create, upload, upload-a-file, get, list, delete) is a
*flow*: a generator that yields ``Send`` and ``Sleep`` steps and receives, for
each ``Send``, the ``httpx.Response`` (or has the transport's exception thrown
into it). It returns the operation's result. This is the shape of httpx's
``Auth.auth_flow``: the sync and async clients in ``assets.py`` only perform
steps (send a request, read a file, sleep) and never decide anything, so both
behave the same by construction.

Retries are decided here, by one tenacity policy driven step by step
(``tenacity.Retrying.iter``, as tenacity's own ``__call__`` does) so that the
waiting is a ``Sleep`` step the client performs with ``time.sleep`` or
``anyio.sleep``. Retried: connection errors, timeouts, 429 (waiting what
``Retry-After`` says) and 5xx; never another 4xx. An upload is described by its
path, not its bytes: the client reopens the file for every attempt.

The service does not paginate ``GET /v2/nvcf/assets`` (it answers
``{"assets": [...]}`` with no cursor, DESIGN.md), so ``list_flow`` reads one answer.

Failures surface as the ``AssetAPIError`` family::

    AssetAPIError (asset_api_error)   the API failed or refused; ``status_code`` kept
    ├── AuthError (auth_failed)       no key, or the key was refused (401/403 on the API)
    └── UploadError (upload_failed)   the presigned PUT failed
        └── UploadURLExpired          403 "Request has expired" (upload_file_flow recovers)
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable, Collection, Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Final, TypeVar

import httpx
import tenacity

from ._asset_endpoint import AssetEndpoint
from ._asset_results import AssetInfo, CreatedAsset, DeleteOutcome, DeleteReport, UploadURLExpired
from ._asset_retry import CallPolicy, RetryableStatus, describe_failure, parse_retry_after, phrase
from ._redact import error_detail, redact_text, redact_url, s3_error_fields
from .errors import AssetAPIError, AuthError, ConfigError, InputError, NVMediaError, UploadError
from .option_table import ref

logger = logging.getLogger("nvmedia.assets")

DEFAULT_DESCRIPTION: Final = "nvmedia upload"
DESCRIPTION_HEADER: Final = "x-amz-meta-nvcf-asset-description"
CONTENT_TYPE_RE: Final = re.compile(r"^(\w+)/([-+.\w]+)$", re.ASCII)
UPLOAD_CHUNK: Final = 1024 * 1024
"""Bytes read from disk per upload chunk; memory stays flat whatever the file size."""
EXPIRED_URL_ROUNDS: Final = 3
"""How many fresh assets ``upload_file_flow`` creates when upload URLs keep expiring."""
DELETE_DEADLINE_S: Final = 30.0
"""Default bound on the total time of a bulk delete (``delete_many``)."""
DELETE_CONCURRENCY: Final = 16
"""Default number of deletes a bulk delete keeps in flight."""

ProgressCallback = Callable[[int], None]
"""Called with the bytes sent so far in the current attempt (it restarts at 0 when an upload is retried)."""

T = TypeVar("T")

# -- steps --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadSource:
    """A file to stream as a request body; the client opens it afresh for every attempt.

    Attributes:
        path: the file.
        progress: called with the bytes sent so far, or None.
    """

    path: Path
    progress: ProgressCallback | None = None


@dataclass(frozen=True)
class Send:
    """Send one request and give the flow its response.

    Attributes:
        method: the HTTP method.
        url: the absolute URL.
        headers: every header to send (nothing else is added but ``Content-Length`` of an upload).
        json: a JSON body, or None.
        upload: a file body, or None (its ``Content-Length`` is the size of the opened file).
        timeout: seconds for connecting and each read or write, or None for the HTTP client's own.
    """

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    json: Any = None
    upload: UploadSource | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class Sleep:
    """Wait this many seconds, then resume the flow (with None).

    Attributes:
        seconds: how long.
    """

    seconds: float


Step = Send | Sleep
Flow = Generator[Step, Any, T]
"""A protocol flow: yields steps, receives each ``Send``'s ``httpx.Response``, returns the operation's result."""


def sent(send: Send, op: str, policy: CallPolicy, *, upload: bool = False) -> Flow[httpx.Response]:
    """Send ``send`` under the retry policy; returns the first answer that is not retried.

    Raises:
        AssetAPIError: attempts ran out, or the transport failed in a way that is not retried
            (``UploadError`` for an upload).
    """
    shown = redact_url(send.url)
    retrying = policy.retrying(op, shown)
    retrying.begin()
    state = tenacity.RetryCallState(retrying, fn=None, args=(), kwargs={})
    timeout = policy.timeout
    while True:
        try:
            do = retrying.iter(state)
        except RetryableStatus as exc:
            raise _exhausted(op, shown, exc, state.attempt_number, timeout, upload, policy.deadline) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise _exhausted(op, shown, exc, state.attempt_number, timeout, upload, policy.deadline) from exc
        if isinstance(do, tenacity.DoAttempt):
            if policy.deadline is not None and time.monotonic() >= policy.deadline:
                raise _past_deadline(op, shown, state.attempt_number - 1, upload)
            timeout = policy.attempt_timeout()
            try:
                response = yield replace(send, timeout=timeout)
                _raise_if_retryable(response)
            except Exception:
                state.set_exception(sys.exc_info())  # type: ignore[arg-type]
            else:
                state.set_result(response)
        elif isinstance(do, tenacity.DoSleep):
            state.prepare_for_next_attempt()
            yield Sleep(float(do))
        else:
            answer: httpx.Response = do
            return answer


# -- reading answers ---------------------------------------------------------------------------


def _raise_if_retryable(resp: httpx.Response) -> None:
    if resp.status_code == 429 or resp.status_code >= 500:
        raise RetryableStatus(resp.status_code, parse_retry_after(resp.headers.get("Retry-After")), error_detail(resp))


def _api_error(op: str, shown_url: str, resp: httpx.Response) -> AssetAPIError:
    status = resp.status_code
    detail = error_detail(resp)
    said = f" ({detail})" if detail else ""
    if status in (401, 403):
        return AuthError(
            f"{op}: the asset API at {shown_url} refused the key with {status} {phrase(status)}{said}",
            hint=f"check NVIDIA_API_KEY (or {ref('api_key')}): it must be a valid NVIDIA API key allowed to use "
            "NVCF assets",
            status_code=status,
        )
    return AssetAPIError(
        f"{op}: the asset API at {shown_url} answered {status} {phrase(status)}{said}",
        hint="this answer is not retried; check the request (content type, asset id) and the asset API URL",
        status_code=status,
    )


def _exhausted(
    op: str,
    shown_url: str,
    exc: BaseException,
    attempts: int,
    timeout: float | None,
    upload: bool,
    deadline: float | None,
) -> AssetAPIError:
    """The error once retries are over (or for a transport failure that is not retried)."""
    cls: type[AssetAPIError] = UploadError if upload else AssetAPIError
    tries = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
    if deadline is not None and time.monotonic() >= deadline - 0.001:
        tries += " (the call's deadline was reached)"
    if isinstance(exc, RetryableStatus):
        said = f" ({exc.detail})" if exc.detail else ""
        return cls(
            f"{op}: {shown_url} answered {exc.status} {phrase(exc.status)}{said} {tries}",
            hint="the service is overloaded or failing; try again later, or with fewer parallel jobs (-j)",
            status_code=exc.status,
        )
    if isinstance(exc, httpx.TimeoutException):
        within = f"the {timeout:g} s timeout" if timeout is not None else "the HTTP client's timeout"
        return cls(
            f"{op}: no answer from {shown_url} within {within} {tries}",
            hint="the service is slow or unreachable; try again later or pass a larger timeout",
        )
    if isinstance(exc, httpx.InvalidURL):
        return cls(
            f"{op}: {shown_url} is not a URL httpx can send to ({redact_text(str(exc))})",
            hint=f"check the asset API URL ({ref('assets_url')} / NVMEDIA_ASSETS_URL)",
        )
    return cls(
        f"{op}: could not talk to {shown_url} ({describe_failure(exc)}) {tries}",
        hint=f"check the network and the asset API URL ({ref('assets_url')} / NVMEDIA_ASSETS_URL)",
    )


def _past_deadline(op: str, shown_url: str, attempts: int, upload: bool) -> AssetAPIError:
    cls: type[AssetAPIError] = UploadError if upload else AssetAPIError
    done = "before it was sent" if attempts == 0 else f"after {attempts} attempt{'s' if attempts != 1 else ''}"
    return cls(
        f"{op}: {shown_url}: the call's deadline had passed {done}",
        hint="the service is slow or failing; try again later, or allow more time (deadline_s)",
    )


def _json_object(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    return body


def _created(resp: httpx.Response, shown_url: str, content_type: str, description: str) -> CreatedAsset:
    if resp.status_code not in (200, 201):
        raise _api_error("create asset", shown_url, resp)
    try:
        body = _json_object(resp)
        asset_id, upload_url = str(body["assetId"]), str(body["uploadUrl"])
    except (ValueError, KeyError, TypeError):
        raise AssetAPIError(
            f"create asset: the answer of {shown_url} has no assetId and uploadUrl",
            hint="check that the asset API URL points at NVCF's /v2/nvcf/assets",
            status_code=resp.status_code,
        ) from None
    # The URL is signed for what the service echoes; fall back to what was sent.
    echoed_type = body.get("contentType")
    echoed_description = body.get("description")
    return CreatedAsset(
        asset_id,
        upload_url,
        echoed_type if isinstance(echoed_type, str) and echoed_type else content_type,
        echoed_description if isinstance(echoed_description, str) and echoed_description else description,
    )


def _asset_info(resp: httpx.Response, shown_url: str, asset_id: str) -> AssetInfo | None:
    if resp.status_code == 404:
        return None
    if resp.status_code != 200:
        raise _api_error("get asset", shown_url, resp)
    try:
        body = _json_object(resp)
        asset = body.get("asset", body)
        return AssetInfo(
            str(asset.get("assetId", asset_id)), str(asset.get("contentType", "")), str(asset.get("description", ""))
        )
    except (ValueError, AttributeError):
        raise AssetAPIError(
            f"get asset: the answer of {shown_url} is not an asset object", status_code=resp.status_code
        ) from None


def _asset_ids(resp: httpx.Response, shown_url: str) -> list[str]:
    if resp.status_code != 200:
        raise _api_error("list assets", shown_url, resp)
    try:
        return [str(a["assetId"]) for a in _json_object(resp).get("assets", [])]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise AssetAPIError(
            f"list assets: the answer of {shown_url} is not an asset list", status_code=resp.status_code
        ) from None


def _deleted(resp: httpx.Response, shown_url: str) -> bool:
    if resp.status_code == 404:
        return False
    if resp.status_code not in (200, 202, 204):
        raise _api_error("delete asset", shown_url, resp)
    return True


def _upload_error(resp: httpx.Response, shown_url: str) -> UploadError:
    status = resp.status_code
    code, message = s3_error_fields(resp.text[:4000])
    if status == 403 and "expired" in message.lower():
        return UploadURLExpired(
            f"upload to {shown_url} refused: the presigned URL has expired (403 {code or 'AccessDenied'})",
            hint="create a fresh asset and upload again (upload_file does this); the service's window is 35 minutes",
            status_code=status,
        )
    if status == 403 and code == "SignatureDoesNotMatch":
        return UploadError(
            f"upload to {shown_url} refused with 403 SignatureDoesNotMatch: the Content-Type or "
            f"{DESCRIPTION_HEADER} header differs from what the URL was signed for, or the URL was altered",
            hint="upload with exactly the content type and description the asset was created with "
            "(AssetClient.upload_file does this)",
            status_code=status,
        )
    said = f"{code}: {message}" if code else error_detail(resp)
    return UploadError(
        f"upload to {shown_url} refused with {status} {phrase(status)}" + (f" ({said})" if said else ""),
        hint="this answer is not retried; create a fresh asset and upload again",
        status_code=status,
    )


def _check_content_type(content_type: str) -> None:
    if not CONTENT_TYPE_RE.fullmatch(content_type):
        raise AssetAPIError(
            f"content type {content_type!r} is not accepted by the asset API: it must match "
            f"{CONTENT_TYPE_RE.pattern} (no parameters such as '; codecs=')",
            hint="pass a bare MIME type such as video/mp4",
        )


def _header_safe(description: str) -> str:
    # The description travels as an HTTP header on the upload: printable ASCII only.
    cleaned = "".join(ch if " " <= ch <= "~" else "_" for ch in description).strip()[:256]
    return cleaned or DEFAULT_DESCRIPTION


# -- upload bodies (the only file I/O, shared by both clients) ----------------------------------------


class OpenedUpload:
    """An upload's file, opened for one attempt, with its size and a progress counter.

    Attributes:
        size: the file's size in bytes when opened (sent as ``Content-Length``).
    """

    def __init__(self, source: UploadSource, fh: IO[bytes]) -> None:
        self._fh = fh
        self._progress = source.progress
        self._sent = 0
        self.size = os.fstat(fh.fileno()).st_size

    def read_chunk(self) -> bytes:
        """The next chunk of at most ``UPLOAD_CHUNK`` bytes, b"" once ``size`` bytes were read."""
        return self._fh.read(min(UPLOAD_CHUNK, self.size - self._sent)) if self._sent < self.size else b""

    def sent(self, chunk: bytes) -> bytes:
        """Count ``chunk`` as sent (reporting progress) and return it."""
        self._sent += len(chunk)
        if self._progress is not None:
            self._progress(self._sent)
        return chunk

    def chunks(self) -> Iterator[bytes]:
        """The file's bytes, read one chunk at a time as the request body is sent."""
        while chunk := self.read_chunk():
            yield self.sent(chunk)


@contextmanager
def opened_upload(source: UploadSource) -> Iterator[OpenedUpload]:
    """Open an upload's file for one attempt (progress restarts at 0).

    Raises:
        InputError: the file is missing (``not_found``) or cannot be read.
    """
    try:
        fh = source.path.open("rb")
    except FileNotFoundError:
        raise InputError(
            f"{source.path} does not exist (it was to be uploaded)", code="not_found", hint="check the path"
        ) from None
    except OSError as exc:
        raise InputError(
            f"{source.path} cannot be read for upload ({exc.strerror or exc})", hint="check the file's permissions"
        ) from None
    with fh:
        if source.progress is not None:
            source.progress(0)
        yield OpenedUpload(source, fh)


def build_request(send: Send, body: OpenedUpload | None = None, content: Any = None) -> httpx.Request:
    """The ``httpx.Request`` of a ``Send``: exactly its URL and headers (plus an upload's ``Content-Length``).

    Built directly rather than through a client's ``build_request``, so that an injected
    client's base URL, default headers, query parameters and cookies never reach the
    service (they would break a presigned URL's signature or leak elsewhere).
    """
    headers = dict(send.headers)
    if body is not None:
        # An explicit Content-Length keeps httpx from sending a chunked body, which S3 refuses (501).
        headers["Content-Length"] = str(body.size)
    extensions = {} if send.timeout is None else {"timeout": httpx.Timeout(send.timeout).as_dict()}
    return httpx.Request(send.method, send.url, headers=headers, json=send.json, content=content, extensions=extensions)


NO_AUTH: Final = httpx.Auth()
"""Sent with every request: no client-level auth and no credentials taken from a URL."""


# -- the flows ------------------------------------------------------------------------------------


def create_flow(
    endpoint: AssetEndpoint, policy: CallPolicy, content_type: str, description: str = DEFAULT_DESCRIPTION
) -> Flow[CreatedAsset]:
    """Create an asset; returns it with its presigned upload URL.

    Raises:
        AuthError: no key, or the key was refused.
        AssetAPIError: the content type has parameters, or the service refused or failed.
    """
    _check_content_type(content_type)
    description = _header_safe(description)
    send = Send(
        "POST",
        endpoint.base_url,
        endpoint.auth("create asset"),
        json={"contentType": content_type, "description": description},
    )
    resp = yield from sent(send, "create asset", policy)
    created = _created(resp, redact_url(endpoint.base_url), content_type, description)
    logger.debug("created asset %s (%s)", created.asset_id, content_type)
    return created


def upload_flow(
    policy: CallPolicy, created: CreatedAsset, path: str | os.PathLike[str], progress: ProgressCallback | None = None
) -> Flow[None]:
    """Stream a file to an asset's presigned URL (no Authorization: the URL is the credential).

    Raises:
        UploadURLExpired: the URL has expired; create a fresh asset.
        UploadError: the upload was refused or kept failing.
        InputError: the file cannot be read.
    """
    headers = {"Content-Type": created.content_type, DESCRIPTION_HEADER: created.description}
    send = Send("PUT", created.upload_url, headers, upload=UploadSource(Path(path), progress))
    shown = redact_url(created.upload_url)
    resp = yield from sent(send, "upload", policy, upload=True)
    if resp.status_code not in (200, 201, 204):
        raise _upload_error(resp, shown)
    logger.debug("uploaded %s to asset %s", Path(path).name, created.asset_id)


def upload_file_flow(
    endpoint: AssetEndpoint,
    policy: CallPolicy,
    path: str | os.PathLike[str],
    content_type: str,
    description: str = DEFAULT_DESCRIPTION,
    progress: ProgressCallback | None = None,
    on_created: Callable[[str], None] | None = None,
) -> Flow[str]:
    """Create an asset, upload the file to it, and return its id.

    ``on_created`` is told each asset id as soon as it is created, before its upload: a
    caller that is cancelled in the middle still knows what to delete.

    An expired upload URL gets a fresh asset (the dead one is deleted, best effort), up
    to ``EXPIRED_URL_ROUNDS`` times. When the upload fails otherwise the asset is
    deleted, best effort, so no empty asset is left behind.

    Raises:
        AuthError: no key, or the key was refused.
        UploadError: the upload failed.
        AssetAPIError: the asset API failed.
        InputError: the file cannot be read.
    """
    expired: UploadURLExpired | None = None
    for round_no in range(1, EXPIRED_URL_ROUNDS + 1):
        created = yield from create_flow(endpoint, policy, content_type, description)
        if on_created is not None:
            on_created(created.asset_id)
        try:
            yield from upload_flow(policy, created, path, progress)
        except UploadURLExpired as exc:
            expired = exc
            logger.info(
                "upload URL of asset %s expired; creating a fresh asset (%d of %d)",
                created.asset_id,
                round_no,
                EXPIRED_URL_ROUNDS,
            )
            yield from _discard_flow(endpoint, created.asset_id)
            continue
        except Exception:
            yield from _discard_flow(endpoint, created.asset_id)
            raise
        return created.asset_id
    raise UploadError(
        f"upload URLs expired before the upload {EXPIRED_URL_ROUNDS} times in a row",
        hint="check the machine's clock; the service's upload window is 35 minutes",
        status_code=403,
    ) from expired


def _discard_flow(endpoint: AssetEndpoint, asset_id: str) -> Flow[None]:
    """Delete an asset with a single attempt, ignoring failures (cleanup only)."""
    try:
        yield Send("DELETE", endpoint.asset_url(asset_id), endpoint.auth("delete asset"))
    except Exception as exc:
        logger.debug("could not delete asset %s: %s", asset_id, describe_failure(exc))


def get_flow(endpoint: AssetEndpoint, policy: CallPolicy, asset_id: str) -> Flow[AssetInfo | None]:
    """What the service knows about an asset, or None when it does not know it (404)."""
    url = endpoint.asset_url(asset_id)
    resp = yield from sent(Send("GET", url, endpoint.auth("get asset")), "get asset", policy)
    return _asset_info(resp, redact_url(url), asset_id)


def list_flow(endpoint: AssetEndpoint, policy: CallPolicy) -> Flow[list[str]]:
    """The ids of the assets the key holds (the service answers in one page)."""
    resp = yield from sent(Send("GET", endpoint.base_url, endpoint.auth("list assets")), "list assets", policy)
    return _asset_ids(resp, redact_url(endpoint.base_url))


def delete_flow(endpoint: AssetEndpoint, policy: CallPolicy, asset_id: str) -> Flow[bool]:
    """Delete an asset; True when it was deleted, False when it was already gone (404)."""
    url = endpoint.asset_url(asset_id)
    resp = yield from sent(Send("DELETE", url, endpoint.auth("delete asset")), "delete asset", policy)
    return _deleted(resp, redact_url(url))


# -- bulk delete bookkeeping ---------------------------------------------------------------------------


class DeleteTally:
    """The shared bookkeeping of a bulk delete: which ids, their deadline, and what became of each.

    Each client runs ``flow(asset_id)`` for every id in ``pending`` (concurrently, in
    its own way) inside ``recording(asset_id)``; ids still unsettled when it stops
    (the deadline cut them off) are reported as failed.
    """

    def __init__(
        self, endpoint: AssetEndpoint, policy: CallPolicy, asset_ids: Collection[str], deadline_s: float | None
    ) -> None:
        if deadline_s is not None and deadline_s <= 0:
            raise ConfigError(f"deadline_s must be positive, got {deadline_s}", hint="pass deadline_s > 0 or None")
        self.deadline_s = deadline_s
        self._endpoint = endpoint
        self._policy = policy.until(None if deadline_s is None else time.monotonic() + deadline_s)
        self._order = list(dict.fromkeys(str(i) for i in asset_ids))
        self._outcomes: dict[str, DeleteOutcome] = {}

    @property
    def pending(self) -> list[str]:
        """The distinct ids, in the order given."""
        return list(self._order)

    def flow(self, asset_id: str) -> Flow[bool]:
        """The delete flow of one id, under the bulk delete's deadline."""
        return delete_flow(self._endpoint, self._policy, asset_id)

    @contextmanager
    def recording(self, asset_id: str) -> Iterator[Callable[[bool], None]]:
        """Record one id's outcome: call the yielded function with the flow's result; a failure is recorded too."""

        def settle(deleted: bool) -> None:
            self._outcomes[asset_id] = DeleteOutcome(asset_id, "deleted" if deleted else "not_found")

        try:
            yield settle
        except NVMediaError as exc:
            self._outcomes[asset_id] = DeleteOutcome(asset_id, "failed", exc.message)
        except Exception as exc:  # one broken delete must not stop the others
            self._outcomes[asset_id] = DeleteOutcome(
                asset_id, "failed", f"{type(exc).__name__}: {redact_text(str(exc))}"
            )

    def report(self) -> DeleteReport:
        """Every id's outcome; an id never settled failed at the deadline."""
        within = "in time" if self.deadline_s is None else f"within the {self.deadline_s:g} s deadline"
        late = f"not deleted {within} of the bulk delete"
        outcomes = tuple(self._outcomes.get(i) or DeleteOutcome(i, "failed", late) for i in self._order)
        for outcome in outcomes:
            if outcome.status == "failed":
                logger.info("could not delete asset %s: %s", outcome.asset_id, outcome.reason)
        return DeleteReport(outcomes)
