"""The emulator as an httpx transport: the same service, in-process, no socket.

``EmulatorTransport`` is both an ``httpx.BaseTransport`` and an
``httpx.AsyncBaseTransport``, so one object serves ``httpx.Client`` and
``httpx.AsyncClient``. Every request goes to ``NVCFService.handle`` whatever its
host, so the URLs the emulator hands out (``assets_url``, presigned upload URLs)
work as they are. Request bodies stream into the service (uploads keep memory
flat); a dropped connection surfaces as ``httpx.RemoteProtocolError``, as it would
from the network.

What needs a wire is not here: timeouts are not enforced (a ``slow`` fault only
delays), and HTTP framing cannot be got wrong through httpx (S3's 411 and 501
answers are tested over loopback). On an async client the service runs on a
worker thread, so latency, slow faults and held uploads never block the event loop.

Example:
    >>> emu = NVCFEmulator()                                          # doctest: +SKIP
    >>> http = httpx.Client(transport=emu.transport)                  # doctest: +SKIP
    >>> AssetClient(api_key="k", base_url=emu.assets_url, http_client=http).list()  # doctest: +SKIP
    []
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator

import anyio
import anyio.from_thread
import anyio.to_thread
import httpx

from .service import ConnectionDropped, NVCFService, ServiceRequest, ServiceResponse


class _PulledBody:
    """A request body read by the service, pulled one piece at a time from the client's stream."""

    def __init__(self, pull: Callable[[], bytes | None]) -> None:
        self._pull = pull
        self._buffer = b""

    def read(self, size: int) -> bytes:
        while not self._buffer:
            piece = self._pull()
            if piece is None:
                return b""
            self._buffer = piece
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


class _AnswerStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A streamed answer (chat events) for either kind of client; a drop cuts it with a protocol error."""

    def __init__(self, chunks: Iterable[bytes], request: httpx.Request) -> None:
        self._chunks = chunks
        self._request = request

    def _pieces(self) -> Iterator[bytes]:
        try:
            yield from self._chunks
        except ConnectionDropped:
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body (incomplete chunked read)",
                request=self._request,
            ) from None

    def __iter__(self) -> Iterator[bytes]:
        return self._pieces()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._pieces():
            yield piece


async def _next_piece(chunks: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await chunks.__anext__()
    except StopAsyncIteration:
        return None


class EmulatorTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Serves ``NVCFService`` to ``httpx.Client`` and ``httpx.AsyncClient`` without a socket.

    Args:
        service: the service (an ``NVCFEmulator`` is one).
    """

    def __init__(self, service: NVCFService) -> None:
        self._service = service

    def _serve(self, request: httpx.Request, pull: Callable[[], bytes | None]) -> httpx.Response:
        service_request = ServiceRequest(
            request.method,
            request.url.path,
            request.url.query.decode("ascii", "replace"),
            {name.lower(): value for name, value in request.headers.items()},
            _PulledBody(pull),
        )
        try:
            answer: ServiceResponse = self._service.handle(service_request)
        except ConnectionDropped:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            ) from None
        except ConnectionError as exc:
            raise httpx.WriteError(str(exc), request=request) from None
        if isinstance(answer.body, bytes):
            return httpx.Response(answer.status, headers=answer.headers, content=answer.body, request=request)
        return httpx.Response(
            answer.status, headers=answer.headers, stream=_AnswerStream(answer.body, request), request=request
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Answer a request of an ``httpx.Client``."""
        assert isinstance(request.stream, httpx.SyncByteStream), "a sync client sends a sync body"
        pieces = iter(request.stream)
        return self._serve(request, lambda: next(pieces, None))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Answer a request of an ``httpx.AsyncClient`` (the service runs on a worker thread)."""
        assert isinstance(request.stream, httpx.AsyncByteStream), "an async client sends an async body"
        pieces = request.stream.__aiter__()
        try:
            # A worker thread cannot be stopped, so the request runs to its end like a sent one; the
            # shield keeps the body's pieces flowing to it when the caller is cancelled meanwhile
            # (on asyncio they would be cancelled and the service would wait for them for ever).
            with anyio.CancelScope(shield=True):
                response = await anyio.to_thread.run_sync(
                    self._serve, request, lambda: anyio.from_thread.run(_next_piece, pieces)
                )
            return response
        finally:
            close = getattr(pieces, "aclose", None)
            if close is not None:
                await close()
