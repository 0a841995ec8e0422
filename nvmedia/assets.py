"""The NVCF asset clients: create, upload, get, list and delete assets, sync and async.

Large media reaches NVIDIA's hosted endpoints as an *asset*: ``POST`` to the asset
API gives an id and a presigned upload URL, the bytes go to that URL with a
``PUT`` (exactly the signed ``Content-Type`` and description headers, an explicit
``Content-Length``, no Authorization), and requests then reference the id.

What to send, how to read the answers and when to retry lives once, in
``nvmedia._asset_protocol`` (a sans-I/O flow per operation, in the manner of
httpx's ``Auth.auth_flow``; the URL rule in ``_asset_endpoint``, the retry policy
in ``_asset_retry``, the result types in ``_asset_results``). ``AssetClient`` and ``AsyncAssetClient`` only perform
its steps: send a request with ``httpx.Client`` / ``httpx.AsyncClient``, stream a
file, sleep. So both retry the same way: connection errors, timeouts, 429
(honouring ``Retry-After``) and 5xx, with jittered exponential backoff, bounded in
attempts and waiting time; never another 4xx; each retry reopens the file.
Failures surface as the ``AssetAPIError`` family::

    AssetAPIError (asset_api_error)   the API failed or refused; ``status_code`` kept
    ├── AuthError (auth_failed)       no key, or the key was refused (401/403 on the API)
    └── UploadError (upload_failed)   the presigned PUT failed
        └── UploadURLExpired          403 "Request has expired" (upload_file recovers)

**Where the key goes.** Only over https, or plain http to a loopback address
(127.0.0.0/8, ``::1``, ``localhost``); any other ``http://`` URL is a
``ConfigError`` at construction, before anything is sent, unless
``allow_insecure_http=True``. Presigned upload URLs carry no key and are exempt.

**An injected ``http_client``.** Pass your own ``httpx.Client`` (or
``httpx.AsyncClient``) to share a connection pool, a proxy, TLS settings or a
transport (``nvmedia.testing.NVCFEmulator().transport``). It contributes its
transport, pool, proxies, TLS, limits, event hooks and default timeout. nvmedia
builds every request itself, so nvmedia wins where they overlap: its absolute
URLs (the client's ``base_url`` is not used), its headers (``Authorization:
Bearer <key>`` on API calls, none on uploads; the client's default headers,
query parameters, cookies and ``auth`` are not sent), no redirects, and the
``timeout`` argument when given. nvmedia never closes a client it was given.

The API key and the presigned URL's query string (its signature) never appear in
an exception, a log record or a repr: URLs are shown through ``redact_url``.

Example:
    >>> with AssetClient(api_key="nvapi-...") as client:  # doctest: +SKIP
    ...     asset_id = client.upload_file("clip.mp4", "video/mp4")
    ...     client.delete_many([asset_id]).raise_for_failures()
"""

from __future__ import annotations

import builtins
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Final, TypeVar

import anyio
import anyio.to_thread
import httpx

from ._asset_endpoint import AssetEndpoint, check_assets_url, is_loopback_host
from ._asset_protocol import (
    DEFAULT_DESCRIPTION,
    DELETE_CONCURRENCY,
    DELETE_DEADLINE_S,
    DESCRIPTION_HEADER,
    NO_AUTH,
    DeleteTally,
    Flow,
    OpenedUpload,
    ProgressCallback,
    Send,
    Sleep,
    Step,
    build_request,
    create_flow,
    delete_flow,
    get_flow,
    list_flow,
    opened_upload,
    upload_file_flow,
    upload_flow,
)
from ._asset_results import AssetInfo, CreatedAsset, DeleteOutcome, DeleteReport, UploadURLExpired
from ._asset_retry import CallPolicy, parse_retry_after, retry_policy
from ._flow import FlowRunner
from ._redact import install_log_redaction, redact_url
from .config import DEFAULT_ASSETS_URL
from .errors import ConfigError

__all__ = [
    "DEFAULT_ASSETS_URL",
    "DEFAULT_DESCRIPTION",
    "DEFAULT_TIMEOUT_S",
    "DELETE_CONCURRENCY",
    "DELETE_DEADLINE_S",
    "DESCRIPTION_HEADER",
    "AssetClient",
    "AssetInfo",
    "AsyncAssetClient",
    "CreatedAsset",
    "DeleteOutcome",
    "DeleteReport",
    "ProgressCallback",
    "UploadURLExpired",
    "check_assets_url",
    "is_loopback_host",
    "parse_retry_after",
    "redact_url",
    "retry_policy",
]

DEFAULT_TIMEOUT_S: Final = 60.0
"""Seconds for connecting and for each read or write, on a client nvmedia creates itself."""

T = TypeVar("T")

install_log_redaction()


class _AssetClientBase:
    """Configuration shared by both clients: where, with which key, under which call policy."""

    def __init__(
        self,
        api_key: str | None,
        base_url: str | None,
        http_client: object | None,
        transport: object | None,
        timeout: float | None,
        max_attempts: int,
        max_retry_wait_s: float,
        allow_insecure_http: bool,
    ) -> None:
        if http_client is not None and transport is not None:
            raise ConfigError("pass http_client or transport, not both", hint="give the transport to your http_client")
        self._endpoint = AssetEndpoint.configure(api_key, base_url, allow_insecure_http=allow_insecure_http)
        self._own_http = http_client is None
        if self._own_http and timeout is None:
            timeout = DEFAULT_TIMEOUT_S
        self._policy = CallPolicy(max_attempts, max_retry_wait_s, timeout)
        self._closed = False

    @property
    def base_url(self) -> str:
        """The asset API base this client talks to (credentials written into the URL are dropped)."""
        return self._endpoint.base_url

    @property
    def timeout(self) -> float | None:
        """Seconds per connect/read/write, or None when the injected HTTP client's own timeout applies."""
        return self._policy.timeout

    @property
    def has_api_key(self) -> bool:
        """True when a key is configured."""
        return self._endpoint.api_key is not None

    def __repr__(self) -> str:
        key = "***" if self.has_api_key else None
        return f"{type(self).__name__}(base_url={redact_url(self.base_url)!r}, api_key={key})"

    def _runner(self, flow: Flow[T]) -> FlowRunner[Step, T]:
        if self._closed:
            flow.close()
            raise ConfigError(
                f"this {type(self).__name__} is closed", hint="create a new client, or keep it open while in use"
            )
        return FlowRunner(flow)


def _check_concurrency(concurrency: int) -> int:
    if concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, got {concurrency}", hint="pass concurrency >= 1")
    return concurrency


class AssetClient(_AssetClientBase):
    """A synchronous client of the NVCF asset API (safe to share between threads).

    Args:
        api_key: the bearer key; default ``$NVIDIA_API_KEY``.
        base_url: the asset API base; default ``$NVMEDIA_ASSETS_URL``, else NVCF's.
        http_client: an ``httpx.Client`` to send through (see the module docstring for what it
            contributes and what nvmedia overrides); it is not closed by ``close()``.
        transport: an httpx transport for a client nvmedia creates (not with ``http_client``).
        timeout: seconds for connecting and for each read or write; default 60, or the
            injected client's own timeout.
        max_attempts: attempts per call, the first included.
        max_retry_wait_s: most seconds spent waiting between attempts of one call (also caps ``Retry-After``).
        allow_insecure_http: allow sending the key over plain http to a host that is not loopback.

    Raises:
        ConfigError: the URL is invalid or plain http to another host, or both
            ``http_client`` and ``transport`` were given.

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
        http_client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float | None = None,
        max_attempts: int = 5,
        max_retry_wait_s: float = 60.0,
        allow_insecure_http: bool = False,
    ) -> None:
        options = (http_client, transport, timeout, max_attempts, max_retry_wait_s, allow_insecure_http)
        super().__init__(api_key, base_url, *options)
        self._http = http_client or httpx.Client(transport=transport, timeout=self.timeout, follow_redirects=False)

    def close(self) -> None:
        """Close the connection pool (unless the HTTP client was injected); later calls raise ``ConfigError``."""
        self._closed = True
        if self._own_http:
            self._http.close()

    def __enter__(self) -> AssetClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _run(self, flow: Flow[T]) -> T:
        runner = self._runner(flow)
        for step in runner:
            with runner.capture():
                runner.outcome = self._perform(step)
        return runner.result

    def _perform(self, step: Step) -> httpx.Response | None:
        if isinstance(step, Sleep):
            time.sleep(step.seconds)
            return None
        if step.upload is None:
            return self._http.send(build_request(step), auth=NO_AUTH, follow_redirects=False)
        with opened_upload(step.upload) as body:
            return self._http.send(build_request(step, body, body.chunks()), auth=NO_AUTH, follow_redirects=False)

    def create(self, content_type: str, description: str = DEFAULT_DESCRIPTION) -> CreatedAsset:
        """Create an asset and get its presigned upload URL.

        Args:
            content_type: a bare MIME type (``video/mp4``; no parameters).
            description: a short description (sent as an upload header: non-ASCII becomes ``_``).

        Raises:
            AuthError: no key, or the key was refused.
            AssetAPIError: the service refused or failed.
        """
        return self._run(create_flow(self._endpoint, self._policy, content_type, description))

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
        self._run(upload_flow(self._policy, created, path, progress))

    def upload_file(
        self,
        path: str | os.PathLike[str],
        content_type: str,
        description: str = DEFAULT_DESCRIPTION,
        progress: ProgressCallback | None = None,
        *,
        on_created: Callable[[str], None] | None = None,
    ) -> str:
        """Create an asset, upload the file to it and return its id.

        An expired upload URL gets a fresh asset (the dead one is deleted, best effort);
        when the upload fails otherwise the asset is deleted, best effort. ``on_created``
        is told each asset id as soon as it is created (before its upload), so a caller
        interrupted in the middle knows what to delete.

        Raises:
            AuthError: no key, or the key was refused.
            UploadError: the upload failed.
            AssetAPIError: the asset API failed.
        """
        return self._run(
            upload_file_flow(self._endpoint, self._policy, path, content_type, description, progress, on_created)
        )

    def get(self, asset_id: str) -> AssetInfo | None:
        """What the service knows about an asset, or None when it does not know it (404)."""
        return self._run(get_flow(self._endpoint, self._policy, asset_id))

    def list(self) -> builtins.list[str]:
        """The ids of the assets this key holds."""
        return self._run(list_flow(self._endpoint, self._policy))

    def delete(self, asset_id: str) -> bool:
        """Delete an asset; True when it was deleted, False when it was already gone (404)."""
        return self._run(delete_flow(self._endpoint, self._policy, asset_id))

    def delete_many(
        self,
        asset_ids: Collection[str],
        *,
        deadline_s: float | None = DELETE_DEADLINE_S,
        concurrency: int = DELETE_CONCURRENCY,
    ) -> DeleteReport:
        """Delete many assets at once, on up to ``concurrency`` threads, within ``deadline_s`` seconds in all.

        Every id is tried whatever happens to the others; a 404 counts as deleted. No
        attempt starts after the deadline and each attempt's timeout is cut to what is
        left, so the call returns about ``deadline_s`` seconds after it started at the
        latest (None: no total bound, each delete still bounded by the retry policy).
        Never raises for a failed delete: ``report.failed`` lists them and
        ``report.raise_for_failures()`` raises ``CleanupError``.

        Raises:
            ConfigError: ``deadline_s`` or ``concurrency`` is not positive.
        """
        tally = DeleteTally(self._endpoint, self._policy, asset_ids, deadline_s)
        workers = min(_check_concurrency(concurrency), len(tally.pending))
        if workers:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nvmedia-delete") as pool:
                for asset_id in tally.pending:
                    pool.submit(self._delete_into, tally, asset_id)
        return tally.report()

    def _delete_into(self, tally: DeleteTally, asset_id: str) -> None:
        with tally.recording(asset_id) as settle:
            settle(self._run(tally.flow(asset_id)))


async def _streamed_from_thread(body: OpenedUpload) -> AsyncIterator[bytes]:
    # Disk reads run on a worker thread so a slow disk never stalls the event loop.
    while chunk := await anyio.to_thread.run_sync(body.read_chunk):
        yield body.sent(chunk)


class AsyncAssetClient(_AssetClientBase):
    """The asynchronous client: the same arguments, protocol and policy as ``AssetClient``, on ``httpx.AsyncClient``.

    Runs on asyncio (through anyio); ``http_client`` takes an ``httpx.AsyncClient``
    and ``transport`` an ``httpx.AsyncBaseTransport``.

    Example:
        >>> async with AsyncAssetClient(api_key="nvapi-...") as client:  # doctest: +SKIP
        ...     asset_id = await client.upload_file("clip.mp4", "video/mp4")
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float | None = None,
        max_attempts: int = 5,
        max_retry_wait_s: float = 60.0,
        allow_insecure_http: bool = False,
    ) -> None:
        options = (http_client, transport, timeout, max_attempts, max_retry_wait_s, allow_insecure_http)
        super().__init__(api_key, base_url, *options)
        self._http = http_client or httpx.AsyncClient(transport=transport, timeout=self.timeout, follow_redirects=False)

    async def aclose(self) -> None:
        """Close the connection pool (unless the HTTP client was injected); later calls raise ``ConfigError``."""
        self._closed = True
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncAssetClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _run(self, flow: Flow[T]) -> T:
        runner = self._runner(flow)
        for step in runner:
            with runner.capture():
                runner.outcome = await self._send_or_sleep(step)
        return runner.result

    async def _send_or_sleep(self, step: Step) -> httpx.Response | None:
        if isinstance(step, Send) and step.upload is not None:
            with opened_upload(step.upload) as body:
                request = build_request(step, body, _streamed_from_thread(body))
                return await self._http.send(request, auth=NO_AUTH, follow_redirects=False)
        if isinstance(step, Send):
            return await self._http.send(build_request(step), auth=NO_AUTH, follow_redirects=False)
        await anyio.sleep(step.seconds)
        return None

    async def create(self, content_type: str, description: str = DEFAULT_DESCRIPTION) -> CreatedAsset:
        """Create an asset and get its presigned upload URL (see ``AssetClient.create``)."""
        return await self._run(create_flow(self._endpoint, self._policy, content_type, description))

    async def upload(
        self, created: CreatedAsset, path: str | os.PathLike[str], *, progress: ProgressCallback | None = None
    ) -> None:
        """Stream the file to the asset's presigned URL (see ``AssetClient.upload``)."""
        await self._run(upload_flow(self._policy, created, path, progress))

    async def upload_file(
        self,
        path: str | os.PathLike[str],
        content_type: str,
        description: str = DEFAULT_DESCRIPTION,
        progress: ProgressCallback | None = None,
        *,
        on_created: Callable[[str], None] | None = None,
    ) -> str:
        """Create an asset, upload the file and return its id (see ``AssetClient.upload_file``)."""
        return await self._run(
            upload_file_flow(self._endpoint, self._policy, path, content_type, description, progress, on_created)
        )

    async def get(self, asset_id: str) -> AssetInfo | None:
        """What the service knows about an asset, or None when it does not know it (404)."""
        return await self._run(get_flow(self._endpoint, self._policy, asset_id))

    async def list(self) -> builtins.list[str]:
        """The ids of the assets this key holds."""
        return await self._run(list_flow(self._endpoint, self._policy))

    async def delete(self, asset_id: str) -> bool:
        """Delete an asset; True when it was deleted, False when it was already gone (404)."""
        return await self._run(delete_flow(self._endpoint, self._policy, asset_id))

    async def delete_many(
        self,
        asset_ids: Collection[str],
        *,
        deadline_s: float | None = DELETE_DEADLINE_S,
        concurrency: int = DELETE_CONCURRENCY,
    ) -> DeleteReport:
        """Delete many assets at once, ``concurrency`` at a time, within ``deadline_s`` seconds in all.

        The same contract as ``AssetClient.delete_many``; the tasks still running half a
        second past the deadline are cancelled and their ids reported as failed.
        """
        tally = DeleteTally(self._endpoint, self._policy, asset_ids, deadline_s)
        limiter = anyio.CapacityLimiter(_check_concurrency(concurrency))
        with anyio.move_on_after(math.inf if deadline_s is None else deadline_s + 0.5):
            async with anyio.create_task_group() as tasks:
                for asset_id in tally.pending:
                    tasks.start_soon(self._delete_into, tally, limiter, asset_id)
        return tally.report()

    async def _delete_into(self, tally: DeleteTally, limiter: anyio.CapacityLimiter, asset_id: str) -> None:
        async with limiter:
            with tally.recording(asset_id) as settle:
                settle(await self._run(tally.flow(asset_id)))
