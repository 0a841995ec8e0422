"""Fetching remote media over http(s): only when asked, and never into the machine's own network.

A URL handed to nvmedia may come from someone else (a message a server passes
on), so fetching it must not become a way to reach what only this machine can
reach (server-side request forgery). ``fetch_url``:

* takes ``http`` and ``https`` URLs only;
* resolves the host of every hop (the URL, then each redirect) once, and refuses
  it when any of its addresses is loopback, private, link-local, multicast,
  reserved, unspecified, not globally routable, or a cloud metadata service;
  IPv6 addresses that carry an IPv4 address (IPv4-mapped, 6to4, NAT64) are
  judged by the IPv4 address they carry;
* connects to the address it checked, keeping the URL's host in the ``Host``
  header and as the TLS server name (so certificates are still verified against
  it): a DNS answer that changes between the check and the connection
  (rebinding) cannot swap the address;
* opens hosts (exact names) and networks (CIDRs) listed in ``FetchPolicy.allow``;
* bounds connecting, each read and the whole download in time, and the size on
  ``Content-Length`` before the body is read and again while it streams to a
  temporary file (never into memory).

Failures are ``FetchError`` with the codes ``fetch_blocked``, ``fetch_failed``,
``too_large`` (and ``empty``); messages name the host and the rule, never the
URL's query string or credentials.

Example:
    >>> path = fetch_url("https://example.com/cat.jpg", Path("/tmp"))  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Final
from urllib.parse import urljoin, urlsplit

from . import __version__
from .errors import ConfigError, FetchError
from .option_table import ref

if TYPE_CHECKING:
    import ssl

    import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_MAX_BYTES: Final = 1 << 30
"""The largest download accepted by default (1 GiB)."""
DEFAULT_CONNECT_TIMEOUT_S: Final = 10.0
DEFAULT_READ_TIMEOUT_S: Final = 30.0
DEFAULT_TOTAL_TIMEOUT_S: Final = 600.0
DEFAULT_MAX_REDIRECTS: Final = 5

_CHUNK: Final = 1 << 16
_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_CLOUD_METADATA: Final = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2",  # AWS ECS task metadata
        "100.100.100.200",  # Alibaba Cloud
        "fd00:ec2::254",  # AWS over IPv6
    )
)
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
_RULE_PHRASES: Final = {
    "cloud metadata": "a cloud metadata address",
    "loopback": "a loopback address",
    "unspecified": "an unspecified address",
    "link-local": "a link-local address",
    "multicast": "a multicast address",
    "private": "a private address",
    "reserved": "a reserved address",
    "non-global": "an address that is not globally routable",
}
_HOSTNAME_RE: Final = re.compile(
    r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$"
)
_ALLOW_HINT: Final = f"if it is meant to be reachable, pass {ref('url_allow', 'HOST_OR_CIDR')}"
_OFF_HINT: Final = f"pass {ref('fetch_urls', True)} to fetch http(s) URLs"


def is_remote_url(text: object) -> bool:
    """True for a string that starts with ``http://`` or ``https://`` (any case)."""
    return isinstance(text, str) and text[:8].lower().startswith(("http://", "https://"))


def display_url(url: str) -> str:
    """``url`` as it may be shown: without credentials or fragment, ``?REDACTED`` in place of a query string.

    Example:
        >>> display_url("https://user:pw@example.com/a.jpg?X-Amz-Signature=abc")
        'https://example.com/a.jpg?REDACTED'
    """
    without_fragment = url.split("#", 1)[0]
    base, has_query, _ = without_fragment.partition("?")
    scheme, sep, rest = base.partition("://")
    if not sep:
        return base + ("?REDACTED" if has_query else "")
    netloc, slash, path = rest.partition("/")
    return f"{scheme}://{netloc.rsplit('@', 1)[-1]}{slash}{path}{'?REDACTED' if has_query else ''}"


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (IPv4-mapped, 6to4, NAT64), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def blocked_rule(address: IPAddress) -> str | None:
    """The name of the rule that keeps remote fetches away from ``address``, or None for a public address.

    Example:
        >>> blocked_rule(ipaddress.ip_address("::ffff:10.0.0.1"))
        'private'
    """
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return blocked_rule(embedded)
    if address in _CLOUD_METADATA:
        return "cloud metadata"
    if address.is_loopback:
        return "loopback"
    if address.is_unspecified:
        return "unspecified"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_reserved:
        return "reserved"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "non-global"
    return None


def _parse_allow(entries: Sequence[str]) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    hosts: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in entries:
        text = str(entry).strip()
        bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        try:
            networks.append(ipaddress.ip_network(bare, strict=False))
            continue
        except ValueError:
            pass
        host = text.lower().rstrip(".")
        if not _HOSTNAME_RE.fullmatch(host):
            raise ConfigError(
                f"url_allow entry {text!r} is neither a host name nor an IP address or network",
                hint="give host names (localhost, media.internal) or CIDRs (10.0.0.0/8, 127.0.0.1)",
            )
        hosts.add(host)
    return frozenset(hosts), tuple(networks)


@dataclass(frozen=True)
class FetchPolicy:
    """How remote URLs are fetched (``prepare(fetch_urls=True, url_allow=[...])``, ``--fetch-urls``).

    Attributes:
        allow: host names (exact, case-insensitive) and IP addresses or networks (CIDR) that may be
            reached although they are not public. Empty by default.
        max_bytes: the largest download accepted, in bytes.
        connect_timeout_s: seconds allowed to connect, per hop.
        read_timeout_s: seconds allowed without receiving anything.
        total_timeout_s: seconds allowed for the whole download, redirects included.
        max_redirects: how many redirects are followed at most.

    Raises:
        ConfigError: an ``allow`` entry is neither a host name nor an address or network.
    """

    allow: tuple[str, ...] = ()
    max_bytes: int = DEFAULT_MAX_BYTES
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    total_timeout_s: float = DEFAULT_TOTAL_TIMEOUT_S
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    _hosts: frozenset[str] = field(init=False, repr=False, compare=False)
    _networks: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        allow = (self.allow,) if isinstance(self.allow, str) else tuple(self.allow)
        hosts, networks = _parse_allow(allow)
        object.__setattr__(self, "allow", allow)
        object.__setattr__(self, "_hosts", hosts)
        object.__setattr__(self, "_networks", networks)
        if self.max_bytes < 1:
            raise ConfigError(f"the download size limit must be at least 1 byte, got {self.max_bytes}")

    def allows_host(self, host: str) -> bool:
        """True when ``host`` is named in ``allow``."""
        return host.lower().rstrip(".") in self._hosts

    def allows_address(self, address: IPAddress) -> bool:
        """True when ``address`` (or the IPv4 address it carries) is inside a network of ``allow``."""
        candidates = [address]
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            candidates.append(embedded)
        return any(a in net for a in candidates for net in self._networks if a.version == net.version)


def _resolve(host: str, raw_host: bytes, port: int, shown: str) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(raw_host.decode("ascii"), port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise FetchError(
            f"{shown}: cannot resolve the host {host} ({detail})",
            code="fetch_failed",
            hint="check the URL's host name and the network",
        ) from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])  # drop an IPv6 scope id
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise FetchError(f"{shown}: the host {host} has no address", code="fetch_failed", hint="check the URL")
    return addresses


def checked_addresses(url: httpx.URL, shown: str, policy: FetchPolicy) -> list[IPAddress]:
    """Resolve ``url``'s host once, check every address, and return them (to connect to, in order).

    Raises:
        FetchError: ``fetch_blocked`` when an address is not public and ``policy`` does not open it;
            ``fetch_failed`` when the host does not resolve.
    """
    port = url.port or (443 if url.scheme == "https" else 80)
    addresses = _resolve(url.host, url.raw_host, port, shown)
    if policy.allows_host(url.host):
        return addresses
    for address in addresses:
        if policy.allows_address(address):
            continue
        rule = blocked_rule(address)
        if rule is None:
            continue
        where = f"{url.host} is" if str(address) == url.host else f"{url.host} resolves to {address},"
        raise FetchError(
            f"{shown}: {where} {_RULE_PHRASES[rule]} ({rule} rule); remote URLs may reach public addresses only",
            code="fetch_blocked",
            hint=_ALLOW_HINT,
        )
    return addresses


def _parse(url: str, shown: str) -> httpx.URL:
    import httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise FetchError(f"{shown} is not a valid URL ({exc})", code="fetch_failed", hint="check the URL") from None
    if parsed.scheme not in ("http", "https"):
        raise FetchError(
            f"{shown}: the scheme {parsed.scheme!r} is not fetched; only http and https are",
            code="fetch_blocked",
            hint="pass an http(s) URL or a local path",
        )
    if not parsed.host:
        raise FetchError(f"{shown} has no host", code="fetch_failed", hint="check the URL")
    return parsed


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return re.sub(r"\?\S*", "?REDACTED", text)[:200]


def _transport_error(exc: httpx.HTTPError, shown: str, host: str, policy: FetchPolicy) -> FetchError:
    import httpx

    if isinstance(exc, httpx.ConnectTimeout):
        message = f"{shown}: could not connect to {host} within {policy.connect_timeout_s:g} s (connect timeout)"
    elif isinstance(exc, httpx.ReadTimeout):
        message = f"{shown}: {host} sent nothing for {policy.read_timeout_s:g} s (read timeout)"
    elif isinstance(exc, httpx.TimeoutException):
        message = f"{shown}: {host} timed out ({type(exc).__name__})"
    elif isinstance(exc, httpx.ConnectError):
        message = f"{shown}: cannot connect to {host}: {_reason(exc)}"
    else:
        message = f"{shown}: the download from {host} failed: {_reason(exc)}"
    return FetchError(message, code="fetch_failed", hint="check the URL and the network, or try again later")


def _suffix(path: str) -> str:
    suffix = PurePosixPath(path).suffix
    return suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", suffix) else ""


def _save(resp: httpx.Response, shown: str, dest_dir: Path, policy: FetchPolicy, deadline: float) -> Path:
    declared = resp.headers.get("Content-Length", "").strip()
    if declared.isdigit() and int(declared) > policy.max_bytes:
        raise FetchError(
            f"{shown} is {int(declared):,} bytes (Content-Length); the limit is {policy.max_bytes:,} bytes",
            code="too_large",
            hint="fetch a smaller file, or download it yourself and pass the local path",
        )
    fd, name = tempfile.mkstemp(dir=dest_dir, prefix="fetched-", suffix=_suffix(resp.request.url.path))
    path = Path(name)
    try:
        total = 0
        with os.fdopen(fd, "wb") as out:
            for chunk in resp.iter_bytes(_CHUNK):
                total += len(chunk)
                if total > policy.max_bytes:
                    raise FetchError(
                        f"{shown} sent more than {policy.max_bytes:,} bytes, the limit; the download was stopped",
                        code="too_large",
                        hint="fetch a smaller file, or download it yourself and pass the local path",
                    )
                if time.monotonic() > deadline:
                    raise FetchError(
                        f"{shown}: the download took longer than {policy.total_timeout_s:g} s "
                        f"({total:,} bytes received)",
                        code="fetch_failed",
                        hint="try again later, or download it yourself and pass the local path",
                    )
                out.write(chunk)
        if total == 0:
            raise FetchError(f"{shown} is empty (0 bytes)", code="empty", hint="check the URL")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _tls_context() -> ssl.SSLContext:
    """A verifying TLS context, made once per CA setting (``SSL_CERT_FILE``/``SSL_CERT_DIR``, else certifi's)."""
    return _tls_context_for(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.cache
def _tls_context_for(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    # Loading a CA bundle costs about 0.1 s: once per process, not once per download.
    import httpx

    if cafile or capath:
        import ssl

        return ssl.create_default_context(cafile=cafile, capath=capath)
    return httpx.create_ssl_context(trust_env=False)


def _connect(
    client: httpx.Client, target: httpx.URL, addresses: Sequence[IPAddress], headers: dict[str, str]
) -> httpx.Response:
    """Send the GET to the first checked address that accepts a connection; the answer's body is unread."""
    import httpx

    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    headers = {**headers, "Host": target.netloc.decode("ascii")}
    for number, address in enumerate(addresses, 1):
        pinned = target.copy_with(host=str(address), username=None, password=None, fragment=None)
        request = client.build_request("GET", pinned, headers=headers, extensions=extensions)
        try:
            return client.send(request, stream=True)
        except httpx.ConnectError:
            if number == len(addresses):
                raise
    raise AssertionError("no address to connect to")  # _resolve never returns an empty list


def fetch_url(url: str, dest_dir: Path, policy: FetchPolicy | None = None) -> Path:
    """Download ``url`` into a new file in ``dest_dir``, under ``policy``'s rules; returns the file.

    Args:
        url: an ``http`` or ``https`` URL.
        dest_dir: an existing folder for the downloaded file.
        policy: the rules (default: ``FetchPolicy()``, public addresses only).

    Raises:
        FetchError: ``fetch_blocked`` (scheme, or an address that is not public), ``fetch_failed``
            (resolution, connection, status, timeouts, redirects), ``too_large``, ``empty``.
    """
    import httpx  # here, not at the top: the pipeline imports this module and most runs fetch nothing

    policy = policy if policy is not None else FetchPolicy()
    first_shown = shown = display_url(url)
    deadline = time.monotonic() + policy.total_timeout_s
    timeout = httpx.Timeout(policy.read_timeout_s, connect=policy.connect_timeout_s)
    headers = {"Accept-Encoding": "identity", "User-Agent": f"nvmedia/{__version__}"}
    # No proxies or netrc from the environment: the request must go to the address checked here.
    with httpx.Client(timeout=timeout, verify=_tls_context(), trust_env=False, follow_redirects=False) as client:
        current = url
        for _ in range(policy.max_redirects + 1):
            target = _parse(current, shown)
            addresses = checked_addresses(target, shown, policy)
            try:
                resp = _connect(client, target, addresses, headers)
                try:
                    location = resp.headers.get("Location")
                    if resp.status_code in _REDIRECT_STATUSES and location:
                        current = urljoin(current, location)
                        shown = f"{first_shown} (redirected to {display_url(current)})"
                        continue
                    if resp.status_code != 200:
                        raise FetchError(
                            f"{shown}: {target.host} answered {resp.status_code} {resp.reason_phrase}",
                            code="fetch_failed",
                            hint="check the URL" if resp.status_code < 500 else "try again later",
                        )
                    return _save(resp, shown, dest_dir, policy, deadline)
                finally:
                    resp.close()  # an unread body is not drained: the connection is dropped
            except httpx.HTTPError as exc:
                raise _transport_error(exc, shown, target.host, policy) from None
    raise FetchError(
        f"{first_shown}: more than {policy.max_redirects} redirects",
        code="fetch_failed",
        hint="check the URL (it may redirect in a loop)",
    )


def fetch_source(url: str, workdir: Path, policy: FetchPolicy | None) -> Path:
    """The pipeline's entry: ``url`` downloaded into ``workdir``, or refused when fetching is off.

    Args:
        url: the source as the user gave it.
        workdir: the run's temporary folder.
        policy: the rules, or None when the user did not ask for URLs to be fetched.

    Raises:
        FetchError: ``fetch_blocked`` when fetching is off (naming the option), else as ``fetch_url``.
    """
    if policy is None:
        raise FetchError(
            f"{display_url(url)} is a remote URL, and remote URLs are fetched only when asked",
            code="fetch_blocked",
            hint=_OFF_HINT,
        )
    return fetch_url(url, workdir, policy)


def url_name(url: str) -> str:
    """The last segment of ``url``'s path (``cat.jpg``), or ``download`` when it has none."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return "download"
    return PurePosixPath(path).name or "download"
