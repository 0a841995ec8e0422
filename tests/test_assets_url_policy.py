"""Where the key may go: https, or plain http to loopback only; URLs never show a key; bad URLs are exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import CORPUS

from nvmedia.cli import main

KEY = "nvapi-URL-POLICY-SECRET-KEY-5150"
PNG = CORPUS / "pillow__hopper.png"


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://{key}@127.0.0.1:{port}/v2/nvcf/assets", id="key-as-user"),
        pytest.param("http://user:{key}@127.0.0.1:{port}/v2/nvcf/assets", id="key-as-password"),
        pytest.param("http://127.0.0.1:{port}/v2/nvcf/assets?key={key}", id="key-in-query"),
    ],
)
def test_a_key_in_the_assets_url_is_never_printed_when_it_is_unreachable(
    url: str, refused_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assets_url = url.format(key=KEY, port=refused_port)
    out = tmp_path / "m.jsonl"
    args = ["prepare", str(PNG), "--mode", "asset", "--no-cache", "-j", "1", "--pool", "thread", "-o", str(out)]
    code = main([*args, "--assets-url", assets_url, "--api-key", "nvapi-other"])
    captured = capsys.readouterr()
    assert code == 2 and "unreachable" in captured.err
    assert KEY not in captured.err + captured.out


@pytest.mark.parametrize("url", ["http://[::1", "http://[::1]:99999/v2/nvcf/assets", "http://exa mple.com/assets"])
def test_an_invalid_assets_url_is_exit_2_with_one_line(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["assets", "--assets-url", url, "--api-key", KEY, "list"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "URL" in err and KEY not in err


def test_plain_http_to_another_host_is_refused_before_anything_is_sent(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["assets", "--assets-url", "http://nvcf.example.invalid/v2/nvcf/assets", "--api-key", KEY, "list"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "https" in err and "--allow-insecure-http" in err


def test_prepare_refuses_plain_http_to_another_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.jsonl"
    args = ["prepare", str(PNG), "--mode", "asset", "--no-cache", "-j", "1", "--pool", "thread", "-o", str(out)]
    code = main([*args, "--assets-url", "http://nvcf.example.invalid/v2/nvcf/assets", "--api-key", KEY])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "plain http" in err and "--allow-insecure-http" in err and KEY not in err
    assert not out.exists()
