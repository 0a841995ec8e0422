"""A cheap check, before any work, that something listens where requests will go.

``batch`` prepares (and uploads) every input's media before its request is sent; a
mistyped ``--base-url`` would cost a whole preparation pass and leave one error per
input. One TCP connection to the endpoint's host and port (or to the proxy the
environment names for it, as httpx would use) finds that out first. It asks nothing
of the endpoint, so any server (the emulator included) passes.
"""

from __future__ import annotations

import socket
import urllib.request
from typing import Final
from urllib.parse import urlsplit

from ._redact import redact_url
from .errors import ConfigError

DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def _host_port(url: str, *, use_proxy: bool) -> tuple[str, int, bool]:
    """Where a connection to ``url`` goes (host, port, whether it is the environment's proxy for it).

    Raises:
        ValueError: the URL (or the proxy's) has no host or a bad port.
    """
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment() if use_proxy else {}
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    via_proxy = bool(proxy and parts.hostname and not urllib.request.proxy_bypass(parts.hostname))
    if proxy and via_proxy:
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if not parts.hostname:
        raise ValueError("no host")
    return parts.hostname, parts.port or DEFAULT_PORTS.get(parts.scheme, 80), via_proxy


def check_reachable(
    url: str, *, what: str, flag: str, timeout_s: float, use_proxy: bool = True, hint: str | None = None
) -> None:
    """Refuse ``url`` when no TCP connection to its host and port can be opened within ``timeout_s``.

    Args:
        url: the endpoint (``http(s)://host[:port]/...``, or ``ray://host:port``).
        what: what it is, for the message ("the chat endpoint").
        flag: the option that sets it, for the hint.
        timeout_s: seconds allowed to connect.
        use_proxy: connect to the proxy the environment names for the URL's scheme, as httpx would.
        hint: the hint instead of "check FLAG and that the server is running".

    Raises:
        ConfigError: naming the endpoint (without credentials or query string) and why.
    """
    via_proxy = False
    try:
        host, port, via_proxy = _host_port(url, use_proxy=use_proxy)
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValueError):
            reason = "not a URL with a host and port"
        elif isinstance(exc, TimeoutError):
            reason = f"no connection within {timeout_s:g} s"
        else:
            reason = (exc.strerror or type(exc).__name__).lower()
        if via_proxy:
            reason = f"the proxy the environment names for it: {reason}"
        raise ConfigError(
            f"cannot reach {what} {redact_url(url)}: {reason}",
            hint=hint or f"check {flag} and that the server is running",
        ) from None
