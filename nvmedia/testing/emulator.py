"""A local, faithful stand-in for NVIDIA's asset API, presigned uploads and chat endpoint.

``NVCFEmulator`` is the emulated service (``NVCFService``: state, faults, the
request log; see ``service.py``) with two ways in:

* ``start()`` (or ``with NVCFEmulator() as emu:``) serves it over real HTTP on
  loopback (``server.py``), for code that takes a URL and for wire-level behaviour;
* ``emu.transport`` serves it in-process to ``httpx.Client`` / ``httpx.AsyncClient``
  (``transport.py``), no socket needed.

It implements what DESIGN.md's facts table says about the service, so code that
works against it works against the real thing:

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
(``requests``) with its Authorization header redacted, uploads can be held at a
gate (``hold_uploads``), and ``main`` serves it from the command line
(``nvmedia emulator``).

Example:
    >>> with NVCFEmulator() as emu:  # doctest: +SKIP
    ...     client = AssetClient(api_key="k", base_url=emu.assets_url)
    >>> emu = NVCFEmulator()  # doctest: +SKIP
    >>> client = AssetClient(api_key="k", base_url=emu.assets_url, http_client=httpx.Client(transport=emu.transport))
"""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import socket
import sys
import threading
from collections.abc import Collection, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from .server import LoopbackServer
from .service import (
    ASSETS_PATH,
    CHAT_PATH,
    FAULT_KINDS,
    MAX_ASSET_BYTES,
    UPLOAD_PATH,
    EmulatedAsset,
    NVCFService,
    RecordedRequest,
)

if TYPE_CHECKING:
    from .transport import EmulatorTransport

__all__ = [
    "ASSETS_PATH",
    "CHAT_PATH",
    "FAULT_KINDS",
    "MAX_ASSET_BYTES",
    "UPLOAD_PATH",
    "EmulatedAsset",
    "NVCFEmulator",
    "RecordedRequest",
    "main",
]

logger = logging.getLogger(__name__)


class NVCFEmulator(NVCFService):
    """A local emulator of the NVCF asset API, presigned uploads and the chat endpoint.

    Args:
        host: interface to listen on.
        port: TCP port; 0 picks a free one.
        latency_api_s: seconds added to every asset-API call (internet-like latency for benchmarks).
        latency_upload_s: seconds added to every upload.
        latency_chat_s: seconds added to every chat request.
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
        latency_chat_s: float = 0.0,
        url_ttl_s: float = 35 * 60,
        storage_dir: str | Path | None = None,
        api_keys: Collection[str] | None = None,
        asset_ttl_s: float = 24 * 3600,
    ) -> None:
        super().__init__(
            latency_api_s=latency_api_s,
            latency_upload_s=latency_upload_s,
            latency_chat_s=latency_chat_s,
            url_ttl_s=url_ttl_s,
            storage_dir=storage_dir,
            api_keys=api_keys,
            asset_ttl_s=asset_ttl_s,
        )
        self.host = host
        self.port = port
        self._server: LoopbackServer | None = None
        self._thread: threading.Thread | None = None
        self._transport: EmulatorTransport | None = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> NVCFEmulator:
        """Start serving on loopback in a background thread; returns self.

        Raises:
            EmulatorStartError: the address cannot be listened on (port in use, unknown host...).
        """
        if self._server is not None:
            return self
        self._stopping.clear()
        self._storage_path()
        try:
            self._server = LoopbackServer((self.host, self.port), self)
        except (OSError, OverflowError) as exc:
            self.close_storage()  # a start that failed leaves no empty folder behind
            raise EmulatorStartError(self.host, self.port, exc) from exc
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, name="nvcf-emulator", daemon=True
        )
        self._thread.start()
        logger.debug("NVCF emulator listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving, wake held uploads, close open connections and remove the temporary storage.

        Also the end of an emulator used only through ``transport``.
        """
        server, self._server = self._server, None
        self._stop_waiting()
        if server is not None:
            server.shutdown()
            server.server_close()
            server.cut_connections()
            if self._thread is not None:
                self._thread.join(timeout=5)
        self.close_storage()

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
        """``http://HOST:PORT`` (the port is 0 until ``start``; the transport serves any URL)."""
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

    @property
    def transport(self) -> EmulatorTransport:
        """An httpx transport serving this emulator in-process, for ``httpx.Client`` and ``httpx.AsyncClient``.

        Needs no ``start()``: ``httpx.Client(transport=emu.transport)`` reaches the same assets,
        faults, counters and request log as the loopback server. Call ``stop()`` when done to
        remove the temporary storage.

        Example:
            >>> emu = NVCFEmulator()  # doctest: +SKIP
            >>> with httpx.Client(transport=emu.transport) as http:  # doctest: +SKIP
            ...     AssetClient(api_key="k", base_url=emu.assets_url, http_client=http).list()
            []
        """
        if self._transport is None:
            from .transport import EmulatorTransport

            self._transport = EmulatorTransport(self)
        return self._transport


class EmulatorStartError(OSError):
    """The emulator cannot listen where it was asked to.

    Attributes:
        reason: what went wrong, in words (``address already in use``...).
        hint: what to change.
    """

    def __init__(self, host: str, port: int, cause: OSError | OverflowError) -> None:
        if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
            reason, hint = "address already in use", "pick another --port, or --port 0 for a free one"
        elif isinstance(cause, socket.gaierror):
            reason, hint = str(cause.strerror or cause), "check --host"
        elif isinstance(cause, OSError) and cause.errno == errno.EADDRNOTAVAIL:
            reason, hint = "no interface of this machine has that address", "check --host"
        elif isinstance(cause, OSError) and cause.errno == errno.EACCES:
            reason, hint = "permission denied", "ports below 1024 need privileges; pick another --port"
        else:
            reason, hint = str(getattr(cause, "strerror", None) or cause), "check --host and --port"
        shown_host = f"[{host}]" if ":" in host else host
        super().__init__(f"cannot listen on {shown_host}:{port}: {reason}")
        self.reason, self.hint = reason, hint


def _tcp_port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a TCP port 0..65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 0..65535 (0: a free one), got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until interrupted; the first line of stdout is its base URL.

    Args:
        argv: command-line arguments (without the program name).

    Returns:
        The exit status: 0, or 2 when it cannot listen (one line on stderr says why).
    """
    parser = argparse.ArgumentParser(
        prog="nvmedia emulator", description="Run a local emulator of NVIDIA's asset API and chat endpoint."
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=_tcp_port, default=0, help="TCP port (default: 0, a free one)")
    parser.add_argument("--latency-api", type=float, default=0.0, metavar="S", help="seconds added per asset-API call")
    parser.add_argument("--latency-upload", type=float, default=0.0, metavar="S", help="seconds added per upload")
    parser.add_argument("--latency-chat", type=float, default=0.0, metavar="S", help="seconds added per chat request")
    parser.add_argument("--storage-dir", default=None, help="keep uploaded bytes here (default: a temporary folder)")
    args = parser.parse_args(argv)
    done = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: done.set())
    emulator = NVCFEmulator(
        args.host,
        args.port,
        latency_api_s=args.latency_api,
        latency_upload_s=args.latency_upload,
        latency_chat_s=args.latency_chat,
        storage_dir=args.storage_dir,
    )
    try:
        emulator.start()
    except EmulatorStartError as exc:
        print(f"nvmedia: error: {exc} ({exc.hint})", file=sys.stderr)
        return 2
    with emulator as emu:
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
