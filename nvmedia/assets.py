"""The NVCF asset client: create, upload, get, list and delete assets, sync and async.

Large media reaches NVIDIA's hosted endpoints as an *asset*: ``POST`` to the asset
API gives an id and a presigned upload URL, the bytes go to that URL with a
``PUT`` (exactly the signed ``Content-Type`` and description headers, an explicit
``Content-Length``, no Authorization), and requests then reference the id.

``AssetClient`` and ``AsyncAssetClient`` share one retry policy (``retry_policy``):
connection errors, timeouts, 429 (honouring ``Retry-After``) and 5xx are retried
with jittered exponential backoff, bounded in attempts and in total waiting time;
other 4xx never are. Failures surface as the ``AssetAPIError`` family::

    AssetAPIError (asset_api_error)   the API failed or refused; ``status_code`` kept
    ├── AuthError (auth_failed)       no key, or the key was refused (401/403 on the API)
    └── UploadError (upload_failed)   the presigned PUT failed
        └── UploadURLExpired          403 "Request has expired" (upload_file recovers)

The API key and the presigned URL's query string (its signature) never appear in
an exception, a log record or a repr: URLs are shown through ``redact_url``.

Example:
    >>> with AssetClient(api_key="nvapi-...") as client:  # doctest: +SKIP
    ...     asset_id = client.upload_file("clip.mp4", "video/mp4")
"""

from __future__ import annotations

import builtins
import email.utils
import http
import json
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final
from urllib.parse import urlsplit

import anyio
import httpx
import tenacity

from .errors import AssetAPIError, AuthError, ConfigError, InputError, UploadError

logger = logging.getLogger(__name__)

DEFAULT_ASSETS_URL: Final = "https://api.nvcf.nvidia.com/v2/nvcf/assets"
DEFAULT_DESCRIPTION: Final = "nvmedia upload"
DESCRIPTION_HEADER: Final = "x-amz-meta-nvcf-asset-description"
CONTENT_TYPE_RE: Final = re.compile(r"^(\w+)/([-+.\w]+)$", re.ASCII)
UPLOAD_CHUNK: Final = 1024 * 1024
"""Bytes read from disk per upload chunk; memory stays flat whatever the file size."""
BACKOFF_INITIAL_S: Final = 0.5
BACKOFF_MAX_S: Final = 10.0
EXPIRED_URL_ROUNDS: Final = 3
"""How many fresh assets ``upload_file`` creates when upload URLs keep expiring."""

ProgressCallback = Callable[[int], None]
"""Called with the bytes sent so far in the current attempt (it restarts at 0 when an upload is retried)."""

_NO_KEY_HINT: Final = "set NVIDIA_API_KEY or pass --api-key"
_URL_IN_TEXT_RE: Final = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?\"'<>]*)\?[^\s\"'<>]*")


# -- redaction --------------------------------------------------------------------------------


def redact_url(url: str | httpx.URL) -> str:
    """``url`` without its query string, fragment or credentials, safe to show.

    Example:
        >>> redact_url("https://bucket.s3.amazonaws.com/a/b?X-Amz-Signature=abc")
        'https://bucket.s3.amazonaws.com/a/b?REDACTED'
    """
    text = str(url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return text.split("?", 1)[0].split("#", 1)[0]
    if not parts.scheme or not parts.netloc:
        return text.split("?", 1)[0].split("#", 1)[0]
    host = parts.netloc.rsplit("@", 1)[-1]
    had_query = bool(parts.query) or text.split("#", 1)[0].endswith("?")
    return f"{parts.scheme}://{host}{parts.path}{'?REDACTED' if had_query else ''}"


def _redact_text(text: str) -> str:
    return _URL_IN_TEXT_RE.sub(r"\1?REDACTED", text)


class _RedactQueryStrings(logging.Filter):
    """Removes URL query strings from httpx's own request log lines (they carry presigned signatures)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_url(a) if isinstance(a, httpx.URL) else _redact_text(a) if isinstance(a, str) else a
                for a in record.args
            )
        if isinstance(record.msg, str):
            record.msg = _redact_text(record.msg)
        return True


def _install_log_redaction() -> None:
    httpx_logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactQueryStrings) for f in httpx_logger.filters):
        httpx_logger.addFilter(_RedactQueryStrings())


_install_log_redaction()


# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatedAsset:
    """A freshly created asset and where to upload its bytes.

    Attributes:
        asset_id: the asset's UUID.
        upload_url: the presigned PUT URL (secret: never shown in full).
        content_type: the content type the URL was signed for.
        description: the description the URL was signed for.
    """

    asset_id: str
    upload_url: str = field(repr=False)
    content_type: str
    description: str

    def __repr__(self) -> str:
        return (
            f"CreatedAsset(asset_id={self.asset_id!r}, upload_url={redact_url(self.upload_url)!r}, "
            f"content_type={self.content_type!r}, description={self.description!r})"
        )


@dataclass(frozen=True)
class AssetInfo:
    """What the asset API says about one asset.

    Attributes:
        asset_id: the asset's UUID.
        content_type: its content type.
        description: its description.
    """

    asset_id: str
    content_type: str
    description: str


class UploadURLExpired(UploadError):
    """The presigned URL expired before the upload (403 ``Request has expired``); a fresh asset is needed."""


# -- the retry policy, shared by both clients ------------------------------------------------------


class _RetryableStatus(Exception):
    """A 429 or 5xx answer: retried by the policy, turned into an ``AssetAPIError`` when attempts run out."""

    def __init__(self, status: int, retry_after: float | None, detail: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after
        self.detail = detail


_TRANSIENT: Final = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, (_RetryableStatus, *_TRANSIENT))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta seconds or an HTTP date), or None.

    Example:
        >>> parse_retry_after("2")
        2.0
    """
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class _WaitRetryAfterOrBackoff(tenacity.wait.wait_base):
    """``Retry-After`` when the service gave one, else jittered exponential backoff; capped either way."""

    def __init__(self, cap_s: float) -> None:
        self._backoff = tenacity.wait_random_exponential(multiplier=BACKOFF_INITIAL_S, max=BACKOFF_MAX_S)
        self._cap_s = cap_s

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome is not None else None
        if isinstance(exc, _RetryableStatus) and exc.retry_after is not None:
            return min(exc.retry_after, self._cap_s)
        return min(self._backoff(retry_state), self._cap_s)


class _StopWhenWaitBudgetSpent(tenacity.stop.stop_base):
    """Stops once the time spent waiting between attempts would exceed the budget."""

    def __init__(self, budget_s: float) -> None:
        self._budget_s = budget_s

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return retry_state.idle_for + retry_state.upcoming_sleep > self._budget_s


def retry_policy(max_attempts: int = 5, max_retry_wait_s: float = 60.0) -> dict[str, Any]:
    """The tenacity arguments both clients use (``tenacity.Retrying(**p)`` / ``tenacity.AsyncRetrying(**p)``).

    Retries connection errors, timeouts, 429 (waiting what ``Retry-After`` says, at most
    ``max_retry_wait_s``) and 5xx, with jittered exponential backoff otherwise; stops after
    ``max_attempts`` attempts or when the waits would add up to more than ``max_retry_wait_s``.
    Never retries another 4xx.
    """
    if max_attempts < 1:
        raise ConfigError(f"max_attempts must be at least 1, got {max_attempts}", hint="pass max_attempts >= 1")
    return {
        "stop": tenacity.stop_after_attempt(max_attempts) | _StopWhenWaitBudgetSpent(max_retry_wait_s),
        "wait": _WaitRetryAfterOrBackoff(max_retry_wait_s),
        "retry": tenacity.retry_if_exception(_is_retryable),
        "reraise": True,
    }


def _describe_failure(exc: BaseException) -> str:
    if isinstance(exc, _RetryableStatus):
        return f"{exc.status} {_phrase(exc.status)}"
    return f"{type(exc).__name__}: {_redact_text(str(exc)) or 'no detail'}"


def _before_sleep(op: str, shown_url: str, max_attempts: int) -> Callable[[tenacity.RetryCallState], None]:
    def log(retry_state: tenacity.RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome is not None else None
        logger.info(
            "%s (%s) failed with %s; attempt %d of %d, retrying in %.2f s",
            op,
            shown_url,
            _describe_failure(exc) if exc is not None else "no result",
            retry_state.attempt_number,
            max_attempts,
            retry_state.upcoming_sleep,
        )

    return log


# -- reading answers (shared by both clients) -----------------------------------------------------


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _s3_fields(text: str) -> tuple[str, str]:
    code = re.search(r"<Code>([^<]{0,100})</Code>", text)
    message = re.search(r"<Message>([^<]{0,300})</Message>", text)
    return (code.group(1) if code else "", message.group(1) if message else "")


def _detail(resp: httpx.Response) -> str:
    """A short, redacted explanation from an error body (problem details, S3 XML or text)."""
    text = resp.text[:4000]
    found = ""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        for candidate in (body.get("detail"), body.get("message"), error, body.get("title")):
            if isinstance(candidate, dict):
                candidate = candidate.get("message")
            if isinstance(candidate, str) and candidate:
                found = candidate
                break
    elif "<Error>" in text:
        code, message = _s3_fields(text)
        found = f"{code}: {message}" if code else message
    else:
        found = " ".join(text.split())
    found = _redact_text(found)
    return found[:300] + ("..." if len(found) > 300 else "")


def _raise_if_retryable(resp: httpx.Response) -> None:
    if resp.status_code == 429 or resp.status_code >= 500:
        raise _RetryableStatus(resp.status_code, parse_retry_after(resp.headers.get("Retry-After")), _detail(resp))


def _api_error(op: str, shown_url: str, resp: httpx.Response) -> AssetAPIError:
    status = resp.status_code
    detail = _detail(resp)
    said = f" ({detail})" if detail else ""
    if status in (401, 403):
        return AuthError(
            f"{op}: the asset API at {shown_url} refused the key with {status} {_phrase(status)}{said}",
            hint="check NVIDIA_API_KEY (or --api-key): it must be a valid NVIDIA API key allowed to use NVCF assets",
            status_code=status,
        )
    return AssetAPIError(
        f"{op}: the asset API at {shown_url} answered {status} {_phrase(status)}{said}",
        hint="this answer is not retried; check the request (content type, asset id) and the asset API URL",
        status_code=status,
    )


def _exhausted(
    op: str, shown_url: str, exc: BaseException, attempts: int, timeout: float, upload: bool
) -> AssetAPIError:
    """The error once retries are over (or for a transport failure that is not retried)."""
    cls: type[AssetAPIError] = UploadError if upload else AssetAPIError
    tries = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
    if isinstance(exc, _RetryableStatus):
        said = f" ({exc.detail})" if exc.detail else ""
        return cls(
            f"{op}: {shown_url} answered {exc.status} {_phrase(exc.status)}{said} {tries}",
            hint="the service is overloaded or failing; try again later, or with fewer parallel jobs (-j)",
            status_code=exc.status,
        )
    if isinstance(exc, httpx.TimeoutException):
        return cls(
            f"{op}: no answer from {shown_url} within the {timeout:g} s timeout {tries}",
            hint="the service is slow or unreachable; try again later or pass a larger timeout",
        )
    return cls(
        f"{op}: could not talk to {shown_url} ({_describe_failure(exc)}) {tries}",
        hint="check the network and the asset API URL (--assets-url / NVMEDIA_ASSETS_URL)",
    )


def _created(resp: httpx.Response, shown_url: str, content_type: str, description: str) -> CreatedAsset:
    if resp.status_code not in (200, 201):
        raise _api_error("create asset", shown_url, resp)
    try:
        body = resp.json()
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
        body = resp.json()
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
        return [str(a["assetId"]) for a in resp.json().get("assets", [])]
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
    code, message = _s3_fields(resp.text[:4000])
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
    said = f"{code}: {message}" if code else _detail(resp)
    return UploadError(
        f"upload to {shown_url} refused with {status} {_phrase(status)}" + (f" ({said})" if said else ""),
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


def _open_source(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise InputError(
            f"{path} does not exist (it was to be uploaded)", code="not_found", hint="check the path"
        ) from None
    except OSError as exc:
        raise InputError(
            f"{path} cannot be read for upload ({exc.strerror or exc})", hint="check the file's permissions"
        ) from None


def _chunks(fh: IO[bytes], size: int, progress: ProgressCallback | None) -> Iterator[bytes]:
    sent = 0
    if progress is not None:
        progress(0)
    while sent < size:
        chunk = fh.read(min(UPLOAD_CHUNK, size - sent))
        if not chunk:
            return
        sent += len(chunk)
        yield chunk
        if progress is not None:
            progress(sent)


async def _achunks(fh: anyio.AsyncFile[bytes], size: int, progress: ProgressCallback | None) -> AsyncIterator[bytes]:
    sent = 0
    if progress is not None:
        progress(0)
    while sent < size:
        chunk = await fh.read(min(UPLOAD_CHUNK, size - sent))
        if not chunk:
            return
        sent += len(chunk)
        yield chunk
        if progress is not None:
            progress(sent)


# -- the clients ----------------------------------------------------------------------------------


class _ClientBase:
    """Configuration and the pieces both clients share."""

    def __init__(
        self, api_key: str | None, base_url: str | None, timeout: float, max_attempts: int, max_retry_wait_s: float
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("NVIDIA_API_KEY")
        self._api_key: str | None = (key.strip() or None) if key is not None else None
        url = (base_url or os.environ.get("NVMEDIA_ASSETS_URL") or DEFAULT_ASSETS_URL).strip().rstrip("/")
        if not url.lower().startswith(("http://", "https://")):
            raise ConfigError(
                f"the asset API URL {redact_url(url)!r} is not an http(s) URL",
                hint="pass --assets-url or set NVMEDIA_ASSETS_URL to e.g. https://api.nvcf.nvidia.com/v2/nvcf/assets",
            )
        self.base_url = url
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_retry_wait_s = max_retry_wait_s
        self._policy = retry_policy(max_attempts, max_retry_wait_s)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={redact_url(self.base_url)!r}, api_key={'***' if self._api_key else None})"
        )

    @property
    def has_api_key(self) -> bool:
        """True when a key is configured."""
        return self._api_key is not None

    def _auth(self, op: str) -> dict[str, str]:
        if self._api_key is None:
            raise AuthError(f"{op}: no API key is set, and the asset API needs one", hint=_NO_KEY_HINT)
        return {"Authorization": f"Bearer {self._api_key}"}

    def _asset_url(self, asset_id: str) -> str:
        try:
            canonical = str(uuid.UUID(asset_id))
        except (ValueError, TypeError, AttributeError):
            raise AssetAPIError(
                f"{str(asset_id)[:60]!r} is not an asset id (a UUID such as b5b841c3-11c2-4c34-b057-9475e82c5369)",
                hint="pass an id returned by create/upload_file or listed by `nvmedia assets list`",
            ) from None
        return f"{self.base_url}/{canonical}"

    def _retry_args(self, op: str, shown_url: str) -> dict[str, Any]:
        return {**self._policy, "before_sleep": _before_sleep(op, shown_url, self.max_attempts)}

    @staticmethod
    def _upload_headers(created: CreatedAsset, size: int) -> dict[str, str]:
        # An explicit Content-Length keeps httpx from sending a chunked body, which S3 refuses (501).
        return {
            "Content-Type": created.content_type,
            DESCRIPTION_HEADER: created.description,
            "Content-Length": str(size),
        }


class AssetClient(_ClientBase):
    """A synchronous client of the NVCF asset API (safe to share between threads).

    Args:
        api_key: the bearer key; default ``$NVIDIA_API_KEY``.
        base_url: the asset API base; default ``$NVMEDIA_ASSETS_URL``, else NVCF's.
        transport: an httpx transport to use instead of the network (tests, proxies).
        timeout: seconds allowed for connecting and for each read or write.
        max_attempts: attempts per call, the first included.
        max_retry_wait_s: most seconds spent waiting between attempts of one call (also caps ``Retry-After``).

    Example:
        >>> with AssetClient(api_key="nvapi-...") as client:  # doctest: +SKIP
        ...     created = client.create("image/png", "cat")
        ...     client.upload(created, "cat.png")
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 60.0,
        max_attempts: int = 5,
        max_retry_wait_s: float = 60.0,
    ) -> None:
        super().__init__(api_key, base_url, timeout, max_attempts, max_retry_wait_s)
        self._http = httpx.Client(transport=transport, timeout=httpx.Timeout(timeout), follow_redirects=False)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> AssetClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _send(self, op: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        shown = redact_url(url)
        retrying = tenacity.Retrying(**self._retry_args(op, shown))

        def attempt() -> httpx.Response:
            resp = self._http.request(method, url, **kwargs)
            _raise_if_retryable(resp)
            return resp

        return self._run(retrying, attempt, op, shown, upload=False)

    def _run(
        self, retrying: tenacity.Retrying, attempt: Callable[[], httpx.Response], op: str, shown: str, upload: bool
    ) -> httpx.Response:
        try:
            return retrying(attempt)
        except _RetryableStatus as exc:
            attempts = int(retrying.statistics.get("attempt_number", 1))
            raise _exhausted(op, shown, exc, attempts, self.timeout, upload) from None
        except httpx.HTTPError as exc:
            attempts = int(retrying.statistics.get("attempt_number", 1))
            raise _exhausted(op, shown, exc, attempts, self.timeout, upload) from exc

    def create(self, content_type: str, description: str = DEFAULT_DESCRIPTION) -> CreatedAsset:
        """Create an asset and get its presigned upload URL.

        Args:
            content_type: a bare MIME type (``video/mp4``; no parameters).
            description: a short description (sent as an upload header: non-ASCII becomes ``_``).

        Raises:
            AuthError: no key, or the key was refused.
            AssetAPIError: the service refused or failed.
        """
        _check_content_type(content_type)
        description = _header_safe(description)
        headers = self._auth("create asset")
        resp = self._send(
            "create asset",
            "POST",
            self.base_url,
            json={"contentType": content_type, "description": description},
            headers=headers,
        )
        created = _created(resp, redact_url(self.base_url), content_type, description)
        logger.debug("created asset %s (%s)", created.asset_id, content_type)
        return created

    def upload(
        self, created: CreatedAsset, path: str | os.PathLike[str], *, progress: ProgressCallback | None = None
    ) -> None:
        """Stream the file at ``path`` to the asset's presigned URL.

        The file is reopened on every attempt and sent in chunks with an explicit
        ``Content-Length``, so memory stays flat whatever its size.

        Raises:
            UploadURLExpired: the URL has expired; create a fresh asset.
            UploadError: the upload was refused or kept failing.
            InputError: the file cannot be read.
        """
        source = Path(path)
        url = created.upload_url
        shown = redact_url(url)
        retrying = tenacity.Retrying(**self._retry_args("upload", shown))

        def attempt() -> httpx.Response:
            with _open_source(source) as fh:
                size = os.fstat(fh.fileno()).st_size
                resp = self._http.put(
                    url, content=_chunks(fh, size, progress), headers=self._upload_headers(created, size)
                )
            _raise_if_retryable(resp)
            return resp

        resp = self._run(retrying, attempt, "upload", shown, upload=True)
        if resp.status_code not in (200, 201, 204):
            raise _upload_error(resp, shown)
        logger.debug("uploaded %s to asset %s", source.name, created.asset_id)

    def upload_file(
        self,
        path: str | os.PathLike[str],
        content_type: str,
        description: str = DEFAULT_DESCRIPTION,
        progress: ProgressCallback | None = None,
    ) -> str:
        """Create an asset, upload the file to it and return its id.

        An expired upload URL gets a fresh asset (the dead one is deleted, best effort),
        up to ``EXPIRED_URL_ROUNDS`` times. When the upload fails otherwise the asset is
        deleted, best effort, so no empty asset is left behind.

        Raises:
            AuthError: no key, or the key was refused.
            UploadError: the upload failed.
            AssetAPIError: the asset API failed.
        """
        expired: UploadURLExpired | None = None
        for round_no in range(1, EXPIRED_URL_ROUNDS + 1):
            created = self.create(content_type, description)
            try:
                self.upload(created, path, progress=progress)
            except UploadURLExpired as exc:
                expired = exc
                logger.info(
                    "upload URL of asset %s expired; creating a fresh asset (%d of %d)",
                    created.asset_id,
                    round_no,
                    EXPIRED_URL_ROUNDS,
                )
                self._discard(created.asset_id)
                continue
            except Exception:
                self._discard(created.asset_id)
                raise
            return created.asset_id
        raise UploadError(
            f"upload URLs expired before the upload {EXPIRED_URL_ROUNDS} times in a row",
            hint="check the machine's clock; the service's upload window is 35 minutes",
            status_code=403,
        ) from expired

    def _discard(self, asset_id: str) -> None:
        """Delete an asset with a single attempt, ignoring failures (cleanup only)."""
        try:
            self._http.delete(self._asset_url(asset_id), headers=self._auth("delete asset"))
        except (httpx.HTTPError, AssetAPIError) as exc:
            logger.debug("could not delete asset %s: %s", asset_id, _describe_failure(exc))

    def get(self, asset_id: str) -> AssetInfo | None:
        """What the service knows about an asset, or None when it does not know it (404)."""
        url = self._asset_url(asset_id)
        resp = self._send("get asset", "GET", url, headers=self._auth("get asset"))
        return _asset_info(resp, redact_url(url), asset_id)

    def delete(self, asset_id: str) -> bool:
        """Delete an asset; True when it was deleted, False when it was already gone (404)."""
        url = self._asset_url(asset_id)
        return _deleted(self._send("delete asset", "DELETE", url, headers=self._auth("delete asset")), redact_url(url))

    def list(self) -> builtins.list[str]:
        """The ids of the assets this key holds."""
        resp = self._send("list assets", "GET", self.base_url, headers=self._auth("list assets"))
        return _asset_ids(resp, redact_url(self.base_url))


class AsyncAssetClient(_ClientBase):
    """The asynchronous twin of ``AssetClient`` (httpx.AsyncClient; same arguments, same policy).

    Example:
        >>> async with AsyncAssetClient(api_key="nvapi-...") as client:  # doctest: +SKIP
        ...     asset_id = await client.upload_file("clip.mp4", "video/mp4")
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 60.0,
        max_attempts: int = 5,
        max_retry_wait_s: float = 60.0,
    ) -> None:
        super().__init__(api_key, base_url, timeout, max_attempts, max_retry_wait_s)
        self._http = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(timeout), follow_redirects=False)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncAssetClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _send(self, op: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        shown = redact_url(url)
        retrying = tenacity.AsyncRetrying(**self._retry_args(op, shown))

        async def attempt() -> httpx.Response:
            resp = await self._http.request(method, url, **kwargs)
            _raise_if_retryable(resp)
            return resp

        return await self._run(retrying, attempt, op, shown, upload=False)

    async def _run(
        self,
        retrying: tenacity.AsyncRetrying,
        attempt: Callable[[], Any],
        op: str,
        shown: str,
        upload: bool,
    ) -> httpx.Response:
        try:
            resp: httpx.Response = await retrying(attempt)
            return resp
        except _RetryableStatus as exc:
            attempts = int(retrying.statistics.get("attempt_number", 1))
            raise _exhausted(op, shown, exc, attempts, self.timeout, upload) from None
        except httpx.HTTPError as exc:
            attempts = int(retrying.statistics.get("attempt_number", 1))
            raise _exhausted(op, shown, exc, attempts, self.timeout, upload) from exc

    async def create(self, content_type: str, description: str = DEFAULT_DESCRIPTION) -> CreatedAsset:
        """Create an asset and get its presigned upload URL (see ``AssetClient.create``)."""
        _check_content_type(content_type)
        description = _header_safe(description)
        headers = self._auth("create asset")
        resp = await self._send(
            "create asset",
            "POST",
            self.base_url,
            json={"contentType": content_type, "description": description},
            headers=headers,
        )
        created = _created(resp, redact_url(self.base_url), content_type, description)
        logger.debug("created asset %s (%s)", created.asset_id, content_type)
        return created

    async def upload(
        self, created: CreatedAsset, path: str | os.PathLike[str], *, progress: ProgressCallback | None = None
    ) -> None:
        """Stream the file to the asset's presigned URL (see ``AssetClient.upload``)."""
        source = Path(path)
        url = created.upload_url
        shown = redact_url(url)
        retrying = tenacity.AsyncRetrying(**self._retry_args("upload", shown))

        async def attempt() -> httpx.Response:
            async with anyio.wrap_file(_open_source(source)) as fh:
                size = os.fstat(fh.wrapped.fileno()).st_size
                resp = await self._http.put(
                    url, content=_achunks(fh, size, progress), headers=self._upload_headers(created, size)
                )
            _raise_if_retryable(resp)
            return resp

        resp = await self._run(retrying, attempt, "upload", shown, upload=True)
        if resp.status_code not in (200, 201, 204):
            raise _upload_error(resp, shown)
        logger.debug("uploaded %s to asset %s", source.name, created.asset_id)

    async def upload_file(
        self,
        path: str | os.PathLike[str],
        content_type: str,
        description: str = DEFAULT_DESCRIPTION,
        progress: ProgressCallback | None = None,
    ) -> str:
        """Create an asset, upload the file and return its id (see ``AssetClient.upload_file``)."""
        expired: UploadURLExpired | None = None
        for round_no in range(1, EXPIRED_URL_ROUNDS + 1):
            created = await self.create(content_type, description)
            try:
                await self.upload(created, path, progress=progress)
            except UploadURLExpired as exc:
                expired = exc
                logger.info(
                    "upload URL of asset %s expired; creating a fresh asset (%d of %d)",
                    created.asset_id,
                    round_no,
                    EXPIRED_URL_ROUNDS,
                )
                await self._discard(created.asset_id)
                continue
            except Exception:
                await self._discard(created.asset_id)
                raise
            return created.asset_id
        raise UploadError(
            f"upload URLs expired before the upload {EXPIRED_URL_ROUNDS} times in a row",
            hint="check the machine's clock; the service's upload window is 35 minutes",
            status_code=403,
        ) from expired

    async def _discard(self, asset_id: str) -> None:
        try:
            await self._http.delete(self._asset_url(asset_id), headers=self._auth("delete asset"))
        except (httpx.HTTPError, AssetAPIError) as exc:
            logger.debug("could not delete asset %s: %s", asset_id, _describe_failure(exc))

    async def get(self, asset_id: str) -> AssetInfo | None:
        """What the service knows about an asset, or None when it does not know it (404)."""
        url = self._asset_url(asset_id)
        resp = await self._send("get asset", "GET", url, headers=self._auth("get asset"))
        return _asset_info(resp, redact_url(url), asset_id)

    async def delete(self, asset_id: str) -> bool:
        """Delete an asset; True when it was deleted, False when it was already gone (404)."""
        url = self._asset_url(asset_id)
        resp = await self._send("delete asset", "DELETE", url, headers=self._auth("delete asset"))
        return _deleted(resp, redact_url(url))

    async def list(self) -> builtins.list[str]:
        """The ids of the assets this key holds."""
        resp = await self._send("list assets", "GET", self.base_url, headers=self._auth("list assets"))
        return _asset_ids(resp, redact_url(self.base_url))
