"""Remote URLs: fetched only when asked, never into the machine's own network, bounded in size and time.

A real HTTP server on loopback (``Origin``) plays the remote side; ``url_allow``
opens it, exactly as a user opens an internal media server.
"""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support import CORPUS

import nvmedia
from nvmedia.cli import main
from nvmedia.errors import ConfigError, FetchError
from nvmedia.fetch import FetchPolicy, blocked_rule, display_url, fetch_url

HOPPER = CORPUS / "pillow__hopper.png"
SECRET = "X-Amz-Signature=s3cr3t"
_ZEROS = bytes(1 << 16)


class Origin:
    """A loopback HTTP server with scripted routes, counting what it sends.

    Attributes:
        sent: body bytes written by the streaming routes.
        streamed: set when a streaming route stops (the client went away, or the limit was reached).
        release: set by the test to let the silent route end.
        hosts: the Host header of each request, in order.
    """

    def __init__(self) -> None:
        self.sent = 0
        self.streamed = threading.Event()
        self.release = threading.Event()
        self.hosts: list[str] = []
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                origin.hosts.append(self.headers.get("Host", ""))
                route = self.path.split("?", 1)[0]
                handler = origin.routes.get(route)
                if handler is None:
                    self.send_error(404)
                    return
                handler(self)

        self.routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {
            "/hopper.png": self._hopper,
            "/empty": self._empty,
            "/to-metadata": self.redirect("http://169.254.169.254/latest/meta-data/?token=" + SECRET),
            "/to-private": self.redirect("http://10.1.2.3/internal.png"),
            "/to-relative": self.redirect("/hopper.png"),
            "/loop": self.redirect("/loop"),
            "/declared-2gb": self._stream(declared=2 * 1024**3),
            "/endless": self._stream(declared=None),
            "/silent": self._silent,
        }
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def _hopper(self, h: BaseHTTPRequestHandler) -> None:
        data = HOPPER.read_bytes()
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _empty(self, h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "0")
        h.end_headers()

    def redirect(self, location: str) -> Callable[[BaseHTTPRequestHandler], None]:
        def handle(h: BaseHTTPRequestHandler) -> None:
            h.send_response(302)
            h.send_header("Location", location.replace("PORT", str(self.port)))
            h.send_header("Content-Length", "0")
            h.end_headers()

        return handle

    def _stream(self, declared: int | None) -> Callable[[BaseHTTPRequestHandler], None]:
        """Send zeros until the client stops reading (or 2 GB went out)."""

        def handle(h: BaseHTTPRequestHandler) -> None:
            try:
                h.send_response(200)
                h.send_header("Content-Type", "video/mp4")
                if declared is not None:
                    h.send_header("Content-Length", str(declared))
                h.end_headers()
                while self.sent < 2 * 1024**3:
                    h.wfile.write(_ZEROS)
                    self.sent += len(_ZEROS)
            except OSError:
                pass  # the client closed the connection: what this route waits for
            finally:
                h.close_connection = True
                self.streamed.set()

        return handle

    def _silent(self, h: BaseHTTPRequestHandler) -> None:
        self.release.wait(60)
        h.close_connection = True

    def __enter__(self) -> Origin:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def origin() -> Iterator[Origin]:
    with Origin() as server:
        yield server


LOOPBACK = FetchPolicy(allow=("127.0.0.1",))


def fetch_error(call: Callable[[], object]) -> FetchError:
    with pytest.raises(FetchError) as caught:
        call()
    return caught.value


# -- the address rules --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("2002:7f00:1::", "loopback"),  # 6to4 carrying 127.0.0.1
        ("169.254.169.254", "cloud metadata"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("64:ff9b::a00:1", "private"),  # NAT64 carrying 10.0.0.1
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "non-global"),  # carrier-grade NAT
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_address_rules_cover_ipv4_ipv6_and_ipv4_inside_ipv6(address: str, rule: str | None) -> None:
    assert blocked_rule(ipaddress.ip_address(address)) == rule


def test_display_url_drops_credentials_query_and_fragment() -> None:
    assert (
        display_url(f"https://me:pw@example.com:8443/a/b.jpg?{SECRET}#x") == "https://example.com:8443/a/b.jpg?REDACTED"
    )
    assert display_url("https://example.com/a.jpg") == "https://example.com/a.jpg"


def test_url_allow_entry_that_is_neither_host_nor_network_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="neither a host name nor an IP address"):
        FetchPolicy(allow=("http://example.com/",))


# -- blocked --------------------------------------------------------------------------------------------------


def test_loopback_url_is_blocked_without_url_allow_and_nothing_is_sent(origin: Origin, tmp_path: Path) -> None:
    err = fetch_error(lambda: fetch_url(origin.url(f"/hopper.png?{SECRET}"), tmp_path))
    assert err.code == "fetch_blocked"
    assert "127.0.0.1" in err.message and "loopback" in err.message
    assert "url_allow=" in err.hint and "s3cr3t" not in err.message + err.hint
    assert origin.hosts == [] and list(tmp_path.iterdir()) == []


def test_cloud_metadata_url_is_blocked_before_connecting(tmp_path: Path) -> None:
    err = fetch_error(lambda: fetch_url(f"http://169.254.169.254/latest/meta-data/?{SECRET}", tmp_path))
    assert err.code == "fetch_blocked" and "169.254.169.254" in err.message and "cloud metadata" in err.message
    assert "s3cr3t" not in err.message


@pytest.mark.parametrize("url", ["ftp://example.com/a.jpg", "file:///etc/passwd"])
def test_schemes_other_than_http_and_https_are_blocked(url: str, tmp_path: Path) -> None:
    err = fetch_error(lambda: fetch_url(url, tmp_path))
    assert err.code == "fetch_blocked" and "only http and https" in err.message


@pytest.mark.parametrize(("route", "rule"), [("/to-metadata", "cloud metadata"), ("/to-private", "private")])
def test_redirect_from_an_allowed_host_to_a_private_address_is_blocked(
    origin: Origin, tmp_path: Path, route: str, rule: str
) -> None:
    err = fetch_error(lambda: fetch_url(origin.url(route), tmp_path, LOOPBACK))
    assert err.code == "fetch_blocked" and rule in err.message and "redirected to" in err.message
    assert "s3cr3t" not in err.message
    assert len(origin.hosts) == 1 and list(tmp_path.iterdir()) == []


def test_allowed_host_name_does_not_open_its_address_under_another_name(origin: Origin, tmp_path: Path) -> None:
    origin.routes["/to-ip"] = origin.redirect("http://127.0.0.1:PORT/hopper.png")
    by_name = FetchPolicy(allow=("localhost",))
    err = fetch_error(lambda: fetch_url(origin.url("/to-ip", host="localhost"), tmp_path, by_name))
    assert err.code == "fetch_blocked" and "127.0.0.1" in err.message and "loopback" in err.message


# -- allowed ------------------------------------------------------------------------------------------------


def test_allowed_url_is_fetched_to_a_temp_file_with_the_host_header_of_the_url(origin: Origin, tmp_path: Path) -> None:
    path = fetch_url(origin.url("/hopper.png", host="localhost"), tmp_path, FetchPolicy(allow=("localhost",)))
    assert path.read_bytes() == HOPPER.read_bytes() and path.parent == tmp_path
    assert origin.hosts == [f"localhost:{origin.port}"]  # connected to the checked address, Host kept


def test_relative_redirect_on_an_allowed_host_is_followed(origin: Origin, tmp_path: Path) -> None:
    assert fetch_url(origin.url("/to-relative"), tmp_path, LOOPBACK).read_bytes() == HOPPER.read_bytes()


def test_redirect_loop_ends_with_fetch_failed(origin: Origin, tmp_path: Path) -> None:
    policy = FetchPolicy(allow=("127.0.0.1",), max_redirects=3)
    err = fetch_error(lambda: fetch_url(origin.url("/loop"), tmp_path, policy))
    assert err.code == "fetch_failed" and "more than 3 redirects" in err.message
    assert len(origin.hosts) == 4


def test_http_error_status_is_fetch_failed_naming_host_and_status(origin: Origin, tmp_path: Path) -> None:
    err = fetch_error(lambda: fetch_url(origin.url(f"/nothing-here?{SECRET}"), tmp_path, LOOPBACK))
    assert err.code == "fetch_failed" and "127.0.0.1 answered 404" in err.message and "s3cr3t" not in err.message


def test_empty_download_is_empty(origin: Origin, tmp_path: Path) -> None:
    assert fetch_error(lambda: fetch_url(origin.url("/empty"), tmp_path, LOOPBACK)).code == "empty"
    assert list(tmp_path.iterdir()) == []


# -- size and time ----------------------------------------------------------------------------------------------


def test_2gb_content_length_is_refused_before_the_body_is_read(origin: Origin, tmp_path: Path) -> None:
    err = fetch_error(lambda: fetch_url(origin.url("/declared-2gb"), tmp_path, LOOPBACK))
    assert err.code == "too_large" and "2,147,483,648 bytes (Content-Length)" in err.message
    assert "1,073,741,824" in err.message  # the default cap
    assert origin.streamed.wait(60)
    assert origin.sent < 64 * 1024**2  # the server learned early that nobody reads (socket buffers aside)
    assert list(tmp_path.iterdir()) == []


def test_download_without_length_is_stopped_once_over_the_cap(origin: Origin, tmp_path: Path) -> None:
    policy = FetchPolicy(allow=("127.0.0.1",), max_bytes=1024**2)
    err = fetch_error(lambda: fetch_url(origin.url("/endless"), tmp_path, policy))
    assert err.code == "too_large" and "more than 1,048,576 bytes" in err.message
    assert origin.streamed.wait(60)
    assert origin.sent < 64 * 1024**2
    assert list(tmp_path.iterdir()) == []  # the partial file is gone


def test_server_that_never_answers_times_out(origin: Origin, tmp_path: Path) -> None:
    policy = FetchPolicy(allow=("127.0.0.1",), read_timeout_s=0.2)
    err = fetch_error(lambda: fetch_url(origin.url("/silent"), tmp_path, policy))
    origin.release.set()
    assert err.code == "fetch_failed" and "sent nothing for 0.2 s (read timeout)" in err.message


# -- through prepare and the command line ----------------------------------------------------------------------


def test_prepare_fetches_an_http_source_when_asked(origin: Origin) -> None:
    prep = nvmedia.prepare(
        [origin.url(f"/hopper.png?{SECRET}")], fetch_urls=True, url_allow=["127.0.0.1"], mode="inline", cache=False
    )
    with prep:
        (item,) = prep.items
        assert item.ok and item.kind == "image" and item.delivery == "inline"
        assert item.source == origin.url("/hopper.png?REDACTED")
        assert prep.content[0]["type"] == "image_url"


def test_prepare_refuses_an_http_source_unless_asked_and_names_the_option(origin: Origin) -> None:
    prep = nvmedia.prepare([origin.url("/hopper.png")], on_error="keep", dry_run=True)
    (item,) = prep.items
    assert item.status == "error" and item.error is not None
    assert item.error.code == "fetch_blocked" and "fetch_urls=True" in item.error.hint
    assert "--fetch-urls" not in item.error.hint  # the flag is named on the command line only
    assert origin.hosts == []


def test_prepare_reports_a_2gb_download_as_too_large(origin: Origin) -> None:
    prep = nvmedia.prepare(
        [origin.url("/declared-2gb")], fetch_urls=True, url_allow=["127.0.0.1"], on_error="keep", dry_run=True
    )
    assert prep.items[0].error is not None and prep.items[0].error.code == "too_large"


def test_cli_prepare_fetch_urls_with_url_allow(origin: Origin, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["prepare", origin.url("/hopper.png"), "--fetch-urls", "--url-allow", "127.0.0.1", "--dry-run"])
    record = json.loads(capsys.readouterr().out)
    assert code == 0 and record["status"] == "ok" and record["source"] == origin.url("/hopper.png")


def test_cli_prepare_blocks_loopback_url_without_url_allow(origin: Origin, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["prepare", origin.url("/hopper.png"), "--fetch-urls", "--dry-run"])
    record = json.loads(capsys.readouterr().out)
    assert code == 1 and record["error"]["code"] == "fetch_blocked"
    assert origin.hosts == []


def test_inspect_fetches_urls_with_the_same_flags_as_prepare(
    origin: Origin, capsys: pytest.CaptureFixture[str]
) -> None:
    url = origin.url("/hopper.png")
    assert main(["inspect", url, "--json", "--fetch-urls", "--url-allow", "127.0.0.1"]) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert record["status"] == "ok" and record["input"]["mime"] == "image/png"


def test_cli_url_allow_without_fetch_urls_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prepare", "http://127.0.0.1/a.png", "--url-allow", "127.0.0.1", "--dry-run"]) == 2
    assert "--fetch-urls" in capsys.readouterr().err


# -- https: the connection is pinned to the checked address, TLS still speaks to the URL's host ------------


@pytest.fixture
def tls_origin(origin: Origin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Origin, list[str]]]:
    """``origin`` behind TLS, with a certificate for ``localhost`` from a CA this test trusts (``SSL_CERT_FILE``)."""
    import ssl

    import trustme

    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    server_names: list[str] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    context.sni_callback = lambda sock, name, ctx: server_names.append(str(name))
    origin.server.socket = context.wrap_socket(origin.server.socket, server_side=True)
    yield origin, server_names


def test_https_url_is_fetched_over_the_checked_address_with_sni_and_certificate_of_the_host(
    tls_origin: tuple[Origin, list[str]], tmp_path: Path
) -> None:
    origin, server_names = tls_origin
    url = f"https://localhost:{origin.port}/hopper.png"
    path = fetch_url(url, tmp_path, FetchPolicy(allow=("localhost",)))
    assert path.read_bytes() == HOPPER.read_bytes()
    assert server_names == ["localhost"] and origin.hosts == [f"localhost:{origin.port}"]


def test_https_certificate_must_match_the_urls_host_not_the_address(
    tls_origin: tuple[Origin, list[str]], tmp_path: Path
) -> None:
    origin, _ = tls_origin
    err = fetch_error(lambda: fetch_url(f"https://127.0.0.1:{origin.port}/hopper.png", tmp_path, LOOPBACK))
    assert err.code == "fetch_failed" and "CERTIFICATE_VERIFY_FAILED" in err.message
    assert origin.hosts == []
