"""The sans-IO asset protocol driven by hand, and what the thin clients add: http_client, URL policy, closing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support import CORPUS

from nvmedia._asset_endpoint import AssetEndpoint, check_assets_url
from nvmedia._asset_protocol import Send, Sleep, delete_flow, list_flow, upload_flow
from nvmedia._asset_retry import CallPolicy
from nvmedia.assets import AssetClient, AsyncAssetClient, CreatedAsset
from nvmedia.errors import AssetAPIError, ConfigError, UploadError
from nvmedia.testing import NVCFEmulator

KEY = "nvapi-PROTOCOL-TEST-KEY-1618"
PNG = CORPUS / "pillow__hopper.png"
ENDPOINT = AssetEndpoint("https://api.example.test/v2/nvcf/assets", KEY)

pytestmark = pytest.mark.anyio


@pytest.fixture
def emu() -> Iterator[NVCFEmulator]:
    emulator = NVCFEmulator(api_keys={KEY})
    yield emulator
    emulator.stop()


def finish(flow: Any, answer: Any) -> Any:
    with pytest.raises(StopIteration) as done:
        flow.send(answer)
    return done.value.value


# -- the flows, without any I/O -------------------------------------------------------------------------


def test_a_list_flow_sleeps_what_retry_after_says_and_reads_the_answer() -> None:
    flow = list_flow(ENDPOINT, CallPolicy(max_attempts=3))
    first = next(flow)
    assert isinstance(first, Send) and (first.method, first.url) == ("GET", ENDPOINT.base_url)
    assert first.headers == {"Authorization": f"Bearer {KEY}"}
    assert flow.send(httpx.Response(429, headers={"Retry-After": "7"})) == Sleep(7.0)
    again = flow.send(None)
    assert isinstance(again, Send) and again.url == first.url
    assert finish(flow, httpx.Response(200, json={"assets": [{"assetId": "a"}, {"assetId": "b"}]})) == ["a", "b"]


def test_a_transport_error_thrown_into_a_flow_is_retried_then_reported() -> None:
    flow = delete_flow(ENDPOINT, CallPolicy(max_attempts=2, max_retry_wait_s=0), "B5B841C3-11C2-4C34-B057-9475E82C5369")
    send = next(flow)
    assert isinstance(send, Send) and send.url.endswith("/b5b841c3-11c2-4c34-b057-9475e82c5369")
    request = httpx.Request("DELETE", send.url)
    assert isinstance(flow.throw(httpx.ConnectError("refused", request=request)), Sleep)
    assert isinstance(flow.send(None), Send)
    with pytest.raises(AssetAPIError) as err:
        flow.throw(httpx.ConnectError("refused", request=request))
    assert err.value.status_code is None and "after 2 attempts" in err.value.message


def test_a_404_on_delete_ends_the_flow_with_false() -> None:
    flow = delete_flow(ENDPOINT, CallPolicy(), "b5b841c3-11c2-4c34-b057-9475e82c5369")
    next(flow)
    assert finish(flow, httpx.Response(404, json={"detail": "NotFound"})) is False


def test_an_upload_is_described_by_its_path_without_authorization_and_a_403_is_not_retried() -> None:
    created = CreatedAsset("id", "https://bucket.example.test/u?X-Amz-Signature=s", "image/png", "d")
    flow = upload_flow(CallPolicy(), created, PNG)
    send = next(flow)
    assert isinstance(send, Send) and send.method == "PUT" and send.upload is not None
    assert send.upload.path == PNG and "Authorization" not in send.headers
    assert send.headers == {"Content-Type": "image/png", "x-amz-meta-nvcf-asset-description": "d"}
    refusal = "<Error><Code>SignatureDoesNotMatch</Code><Message>no</Message></Error>"
    with pytest.raises(UploadError, match="SignatureDoesNotMatch"):
        flow.send(httpx.Response(403, text=refusal))


# -- where the key may go ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://api.nvcf.nvidia.com/v2/nvcf/assets",
        "http://127.0.0.1:8080/v2/nvcf/assets",
        "http://127.8.9.10/assets",
        "http://[::1]:9000/assets",
        "http://localhost/assets",
        "http://LOCALHOST:1/assets",
    ],
)
def test_https_and_loopback_http_are_allowed(url: str) -> None:
    assert check_assets_url(url).lower() == url.lower()


@pytest.mark.parametrize("url", ["http://api.example.test/assets", "http://10.0.0.1/assets", "http://[fe80::1]/a"])
def test_plain_http_elsewhere_is_refused_before_any_request(emu: NVCFEmulator, url: str) -> None:
    with httpx.Client(transport=emu.transport) as http:
        with pytest.raises(ConfigError) as err:
            AssetClient(api_key=KEY, base_url=url, http_client=http)
    assert "allow_insecure_http" in err.value.hint and KEY not in err.value.message
    assert emu.requests == []


async def test_allow_insecure_http_lets_the_key_go_over_plain_http(emu: NVCFEmulator) -> None:
    async with httpx.AsyncClient(transport=emu.transport) as http:
        with pytest.raises(ConfigError):
            AsyncAssetClient(api_key=KEY, base_url="http://api.example.test/v2/nvcf/assets", http_client=http)
        client = AsyncAssetClient(
            api_key=KEY, base_url="http://api.example.test/v2/nvcf/assets", http_client=http, allow_insecure_http=True
        )
        assert await client.list() == []
    assert [r.headers["host"] for r in emu.requests] == ["api.example.test"]


def test_presigned_upload_urls_are_not_subject_to_the_https_rule() -> None:
    # The API is https; the presigned URLs this emulator hands out are plain http to another host.
    emulator = NVCFEmulator(host="uploads.example.test", api_keys={KEY})
    try:
        with httpx.Client(transport=emulator.transport) as http:
            client = AssetClient(api_key=KEY, base_url="https://api.example.test/v2/nvcf/assets", http_client=http)
            asset_id = client.upload_file(PNG, "image/png")
        assert emulator.asset(asset_id).uploaded  # type: ignore[union-attr]
        put = next(r for r in emulator.requests if r.method == "PUT")
        assert put.headers["host"].startswith("uploads.example.test") and "authorization" not in put.headers
    finally:
        emulator.stop()


def test_credentials_in_the_url_are_dropped_and_never_shown() -> None:
    client = AssetClient(api_key=KEY, base_url="https://user:s3cret@api.example.test/v2/nvcf/assets?x=1")
    assert "s3cret" not in client.base_url + repr(client)
    client.close()


# -- an injected http_client: what it brings, what nvmedia overrides -------------------------------------


def test_our_urls_and_authorization_win_over_the_injected_clients(emu: NVCFEmulator) -> None:
    conflicting = httpx.Client(
        transport=emu.transport,
        base_url="http://elsewhere.example.test/api",
        headers={"Authorization": "Bearer SOMEONE-ELSE", "X-Team": "media"},
        params={"tenant": "other"},
        cookies={"session": "abc"},
        auth=("user", "password"),
    )
    with conflicting as http:
        with AssetClient(api_key=KEY, base_url=emu.assets_url, http_client=http) as client:
            asset_id = client.upload_file(PNG, "image/png")  # 401 with the other key; 400/403 with a header or param
            assert client.list() == [asset_id]
        assert http.get(emu.assets_url, headers={"Authorization": f"Bearer {KEY}"}, auth=None).status_code == 200
    (put,) = [r for r in emu.requests if r.method == "PUT"]
    assert [r.status for r in emu.requests] == [200, 200, 200, 200]  # and the injected client is still open
    assert all("elsewhere" not in r.headers["host"] for r in emu.requests)
    assert "authorization" not in put.headers and "cookie" not in put.headers and "x-team" not in put.headers


def test_the_timeout_argument_wins_else_the_injected_clients_own_applies(emu: NVCFEmulator) -> None:
    with httpx.Client(transport=emu.transport, timeout=12.5) as http:
        assert AssetClient(api_key=KEY, base_url=emu.assets_url, http_client=http).timeout is None
        assert AssetClient(api_key=KEY, base_url=emu.assets_url, http_client=http, timeout=3).timeout == 3
    assert AssetClient(api_key=KEY, base_url=emu.assets_url).timeout == 60.0


def test_http_client_and_transport_together_are_refused(emu: NVCFEmulator) -> None:
    with httpx.Client() as http, pytest.raises(ConfigError, match="not both"):
        AssetClient(api_key=KEY, base_url=emu.assets_url, http_client=http, transport=emu.transport)


async def test_a_closed_client_says_so(emu: NVCFEmulator) -> None:
    with AssetClient(api_key=KEY, base_url=emu.assets_url, transport=emu.transport) as client:
        assert client.list() == []
    with pytest.raises(ConfigError, match="closed"):
        client.list()
    async with AsyncAssetClient(api_key=KEY, base_url=emu.assets_url, transport=emu.transport) as aclient:
        assert await aclient.list() == []
    with pytest.raises(ConfigError, match="closed"):
        await aclient.list()
