"""The NVCF emulator, spoken to over real HTTP on loopback (httpx, http.client, raw sockets, the openai SDK)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from support import CORPUS, ROOT

from nvmedia.testing import NVCFEmulator

KEY = "nvapi-EMULATOR-TEST-KEY-0123456789abcdef"
OTHER_KEY = "nvapi-SOMEONE-ELSE-9876543210"
PNG = CORPUS / "pillow__hopper.png"
JPEG = CORPUS / "pillow__flower.jpg"
WAV = CORPUS / "small__wav.wav"
MP3 = CORPUS / "pydub__tessst.mp3"
MP4 = CORPUS / "pydub__creative_common.mp4"
AVIF = CORPUS / "pillow__hopper.avif"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def emu() -> Iterator[NVCFEmulator]:
    with NVCFEmulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    # One client for the module: building its TLS context costs more than most tests here.
    with httpx.Client(timeout=10) as c:
        yield c


def create(client: httpx.Client, emu: NVCFEmulator, content_type: str = "image/png", key: str = KEY) -> dict[str, Any]:
    resp = client.post(
        emu.assets_url,
        json={"contentType": content_type, "description": "test asset"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def put(client: httpx.Client, created: dict[str, Any], data: bytes, **headers: str) -> httpx.Response:
    sent = {"Content-Type": created["contentType"], "x-amz-meta-nvcf-asset-description": created["description"]}
    sent.update({k.replace("_", "-"): v for k, v in headers.items()})
    return client.put(created["uploadUrl"], content=data, headers=sent)


def uploaded(client: httpx.Client, emu: NVCFEmulator, path: Path, content_type: str, key: str = KEY) -> str:
    created = create(client, emu, content_type, key)
    assert put(client, created, path.read_bytes()).status_code == 200
    return str(created["assetId"])


def data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def chat(
    client: httpx.Client, emu: NVCFEmulator, content: Any, assets: str | None = None, **extra: Any
) -> httpx.Response:
    headers = dict(AUTH)
    if assets is not None:
        headers["NVCF-INPUT-ASSET-REFERENCES"] = assets
    body = {"model": "nvidia/nemotron-3-nano-omni", "messages": [{"role": "user", "content": content}], **extra}
    return client.post(emu.chat_url, json=body, headers=headers)


def raw_exchange(emu: NVCFEmulator, request: bytes) -> bytes:
    """Send raw bytes and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", emu.port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


# -- asset API ------------------------------------------------------------------------------------


def test_addresses_follow_the_service_layout(emu: NVCFEmulator) -> None:
    assert emu.base_url == f"http://127.0.0.1:{emu.port}"
    assert emu.assets_url == emu.base_url + "/v2/nvcf/assets"
    assert emu.chat_url == emu.base_url + "/v1/chat/completions"


def test_create_without_bearer_key_is_401(emu: NVCFEmulator, client: httpx.Client) -> None:
    resp = client.post(emu.assets_url, json={"contentType": "image/png", "description": "x"})
    assert resp.status_code == 401
    assert emu.create_count == 0


def test_create_with_a_key_outside_the_accepted_set_is_401(client: httpx.Client) -> None:
    with NVCFEmulator(api_keys={KEY}) as emu:
        body = {"contentType": "image/png", "description": "x"}
        refused = client.post(emu.assets_url, json=body, headers={"Authorization": f"Bearer {OTHER_KEY}"})
        accepted = client.post(emu.assets_url, json=body, headers=AUTH)
    assert (refused.status_code, accepted.status_code) == (401, 200)


@pytest.mark.parametrize("content_type", ["video/mp4; codecs=avc1", "video", "", "image/png\n", "a/b/c"])
def test_create_rejects_content_types_outside_the_service_pattern(
    emu: NVCFEmulator, client: httpx.Client, content_type: str
) -> None:
    resp = client.post(emu.assets_url, json={"contentType": content_type, "description": "x"}, headers=AUTH)
    assert resp.status_code == 400
    assert "contentType" in resp.json()["detail"]


def test_create_requires_a_description(emu: NVCFEmulator, client: httpx.Client) -> None:
    resp = client.post(emu.assets_url, json={"contentType": "image/png"}, headers=AUTH)
    assert resp.status_code == 400
    assert "description" in resp.json()["detail"]


def test_create_accepts_a_chunked_json_body(emu: NVCFEmulator) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=10)
    body = iter([b'{"contentType": "image/png", ', b'"description": "chunked"}'])
    conn.request(
        "POST", "/v2/nvcf/assets", body=body, headers={**AUTH, "Content-Type": "application/json"}, encode_chunked=True
    )
    resp = conn.getresponse()
    answer = resp.read()
    conn.request("GET", "/v2/nvcf/assets", headers=AUTH)  # the same connection still works
    listed = conn.getresponse().read()
    conn.close()
    assert resp.status == 200 and b'"description": "chunked"' in answer
    assert listed.count(b"assetId") == 1
    assert emu.requests[0].headers["transfer-encoding"] == "chunked"


def test_create_returns_id_and_a_presigned_upload_url(emu: NVCFEmulator, client: httpx.Client) -> None:
    created = create(client, emu, "video/mp4")
    assert set(created) == {"assetId", "uploadUrl", "contentType", "description"}
    assert str(uuid.UUID(created["assetId"])) == created["assetId"]
    url = urlsplit(created["uploadUrl"])
    assert url.path == f"/s3/nvcf-assets/{created['assetId']}"
    params = dict(parse_qsl(url.query))
    assert {"X-Amz-Date", "X-Amz-Expires", "X-Amz-Signature"} <= set(params)
    assert params["X-Amz-Expires"] == str(35 * 60)
    assert created["contentType"] == "video/mp4"


def test_uploaded_asset_can_be_got_listed_and_deleted(emu: NVCFEmulator, client: httpx.Client) -> None:
    created = create(client, emu)
    resp = put(client, created, PNG.read_bytes())
    assert resp.status_code == 200
    assert resp.headers["ETag"].startswith('"')
    asset_id = created["assetId"]
    stored = emu.asset(asset_id)
    assert stored is not None and stored.uploaded and stored.size == PNG.stat().st_size
    assert stored.sha256 == hashlib.sha256(PNG.read_bytes()).hexdigest()
    assert client.get(emu.assets_url, headers=AUTH).json() == {"assets": [{"assetId": asset_id}]}
    got = client.get(f"{emu.assets_url}/{asset_id}", headers=AUTH).json()["asset"]
    assert got == {"assetId": asset_id, "contentType": "image/png", "description": "test asset"}
    assert client.delete(f"{emu.assets_url}/{asset_id}", headers=AUTH).status_code == 204
    assert client.delete(f"{emu.assets_url}/{asset_id}", headers=AUTH).status_code == 404
    assert client.get(f"{emu.assets_url}/{asset_id}", headers=AUTH).status_code == 404
    assert stored.path is not None and not Path(stored.path).exists()


def test_assets_belong_to_the_key_that_created_them(emu: NVCFEmulator, client: httpx.Client) -> None:
    asset_id = uploaded(client, emu, PNG, "image/png")
    other = {"Authorization": f"Bearer {OTHER_KEY}"}
    assert client.get(emu.assets_url, headers=other).json() == {"assets": []}
    assert client.get(f"{emu.assets_url}/{asset_id}", headers=other).status_code == 404
    assert client.delete(f"{emu.assets_url}/{asset_id}", headers=other).status_code == 404
    assert emu.asset(asset_id) is not None


def test_storage_dir_keeps_uploaded_bytes(tmp_path: Path, client: httpx.Client) -> None:
    with NVCFEmulator(storage_dir=tmp_path) as emu:
        asset_id = uploaded(client, emu, PNG, "image/png")
    assert (tmp_path / asset_id).read_bytes() == PNG.read_bytes()


# -- presigned PUT ----------------------------------------------------------------------------------


def s3_code(resp: httpx.Response) -> str:
    assert resp.headers["Content-Type"] == "application/xml"
    return resp.text.split("<Code>")[1].split("</Code>")[0]


def test_upload_with_another_content_type_is_signature_mismatch(emu: NVCFEmulator, client: httpx.Client) -> None:
    created = create(client, emu, "image/png")
    resp = put(client, created, PNG.read_bytes(), Content_Type="image/jpeg")
    assert resp.status_code == 403
    assert s3_code(resp) == "SignatureDoesNotMatch"
    assert emu.asset(created["assetId"]).uploaded is False  # type: ignore[union-attr]


def test_upload_without_the_description_header_is_signature_mismatch(emu: NVCFEmulator, client: httpx.Client) -> None:
    created = create(client, emu)
    resp = client.put(created["uploadUrl"], content=b"\x89PNG", headers={"Content-Type": "image/png"})
    assert resp.status_code == 403 and s3_code(resp) == "SignatureDoesNotMatch"


def test_upload_with_another_description_is_signature_mismatch(emu: NVCFEmulator, client: httpx.Client) -> None:
    created = create(client, emu)
    resp = put(client, created, b"\x89PNG", x_amz_meta_nvcf_asset_description="something else")
    assert resp.status_code == 403 and s3_code(resp) == "SignatureDoesNotMatch"


def test_tampered_upload_url_is_signature_mismatch(emu: NVCFEmulator, client: httpx.Client) -> None:
    created = create(client, emu)
    url = urlsplit(created["uploadUrl"])
    params = dict(parse_qsl(url.query))
    params["X-Amz-Expires"] = "604800"
    created["uploadUrl"] = url._replace(query=urlencode(params)).geturl()
    resp = put(client, created, PNG.read_bytes())
    assert resp.status_code == 403 and s3_code(resp) == "SignatureDoesNotMatch"


def test_upload_url_of_another_asset_is_signature_mismatch(emu: NVCFEmulator, client: httpx.Client) -> None:
    first, second = create(client, emu), create(client, emu)
    moved = dict(first, uploadUrl=first["uploadUrl"].replace(first["assetId"], second["assetId"]))
    resp = put(client, moved, PNG.read_bytes())
    assert resp.status_code == 403 and s3_code(resp) == "SignatureDoesNotMatch"


def test_expired_upload_url_is_access_denied_request_has_expired(client: httpx.Client) -> None:
    with NVCFEmulator(url_ttl_s=0) as emu:
        created = create(client, emu)
        emu_expires = dict(parse_qsl(urlsplit(created["uploadUrl"]).query))["X-Amz-Expires"]
        resp = put(client, created, PNG.read_bytes())
    assert emu_expires == "0"
    assert resp.status_code == 403 and s3_code(resp) == "AccessDenied"
    assert "<Message>Request has expired</Message>" in resp.text


def test_expire_urls_expires_only_urls_already_issued(emu: NVCFEmulator, client: httpx.Client) -> None:
    old = create(client, emu)
    assert emu.expire_urls() == 1
    new = create(client, emu)
    assert "Request has expired" in put(client, old, PNG.read_bytes()).text
    assert put(client, new, PNG.read_bytes()).status_code == 200


def test_upload_with_an_authorization_header_is_400(emu: NVCFEmulator, client: httpx.Client) -> None:
    created = create(client, emu)
    resp = put(client, created, PNG.read_bytes(), Authorization=f"Bearer {KEY}")
    assert resp.status_code == 400 and s3_code(resp) == "InvalidArgument"
    assert "Only one auth mechanism allowed" in resp.text


def test_chunked_upload_is_501_not_implemented(emu: NVCFEmulator, client: httpx.Client) -> None:
    created = create(client, emu)
    url = urlsplit(created["uploadUrl"])
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=10)
    conn.putrequest("PUT", f"{url.path}?{url.query}")
    conn.putheader("Content-Type", "image/png")
    conn.putheader("x-amz-meta-nvcf-asset-description", created["description"])
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    conn.send(b"4\r\n\x89PNG\r\n0\r\n\r\n")
    resp = conn.getresponse()
    body = resp.read().decode()
    conn.close()
    assert resp.status == 501
    assert "<Code>NotImplemented</Code>" in body and "<Header>Transfer-Encoding</Header>" in body
    assert emu.upload_count == 0


def test_upload_without_content_length_is_411_missing_content_length(emu: NVCFEmulator, client: httpx.Client) -> None:
    created = create(client, emu)
    url = urlsplit(created["uploadUrl"])
    request = (
        f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: 127.0.0.1:{emu.port}\r\nContent-Type: image/png\r\n"
        f"x-amz-meta-nvcf-asset-description: {created['description']}\r\n\r\n"
    ).encode()
    answer = raw_exchange(emu, request)
    assert answer.startswith(b"HTTP/1.1 411 ")
    assert b"<Code>MissingContentLength</Code>" in answer
    assert emu.upload_count == 0


def test_upload_body_is_streamed_to_disk_not_held_in_memory(emu: NVCFEmulator, client: httpx.Client) -> None:
    size = 48 * 1024 * 1024
    created = create(client, emu, "video/mp4")

    def body() -> Iterator[bytes]:
        block = b"\x00" * (1024 * 1024)
        for _ in range(size // len(block)):
            yield block

    headers = {
        "Content-Type": "video/mp4",
        "x-amz-meta-nvcf-asset-description": created["description"],
        "Content-Length": str(size),
    }
    tracemalloc.start()
    try:
        resp = client.put(created["uploadUrl"], content=body(), headers=headers)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert resp.status_code == 200
    stored = emu.asset(created["assetId"])
    assert stored is not None and stored.size == size
    assert peak < 12 * 1024 * 1024, f"peak Python memory {peak / 2**20:.1f} MiB for a {size / 2**20:.0f} MiB upload"


def test_an_upload_cut_short_stores_nothing(emu: NVCFEmulator, client: httpx.Client) -> None:
    created = create(client, emu)
    url = urlsplit(created["uploadUrl"])
    request = (
        f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        f"x-amz-meta-nvcf-asset-description: {created['description']}\r\nContent-Length: 1000\r\n\r\n"
    ).encode() + b"\x89PNG" * 10
    with socket.create_connection(("127.0.0.1", emu.port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""
    asset = emu.asset(created["assetId"])
    assert asset is not None and not asset.uploaded
    assert emu.upload_count == 0


# -- request records and faults -------------------------------------------------------------------


def test_requests_are_recorded_with_authorization_redacted(emu: NVCFEmulator, client: httpx.Client) -> None:
    created = create(client, emu)
    put(client, created, PNG.read_bytes())
    records = emu.requests
    assert [(r.method, r.path, r.status) for r in records] == [
        ("POST", "/v2/nvcf/assets", 200),
        ("PUT", f"/s3/nvcf-assets/{created['assetId']}", 200),
    ]
    assert records[0].headers["authorization"] == "Bearer ***"
    assert records[1].body_bytes == PNG.stat().st_size
    signature = dict(parse_qsl(urlsplit(created["uploadUrl"]).query))["X-Amz-Signature"]
    assert KEY not in repr(records) and signature not in repr(records)
    assert emu.counts == {"create": 1, "upload": 1}


def test_injected_429_carries_retry_after(emu: NVCFEmulator, client: httpx.Client) -> None:
    emu.inject("429", retry_after=0.1)
    first = client.get(emu.assets_url, headers=AUTH)
    second = client.get(emu.assets_url, headers=AUTH)
    assert (first.status_code, first.headers["Retry-After"], second.status_code) == (429, "0.1", 200)


@pytest.mark.parametrize("status", ["500", "503"])
def test_injected_server_errors_answer_that_status(emu: NVCFEmulator, client: httpx.Client, status: str) -> None:
    emu.inject(status, times=2)
    answers = [client.get(emu.assets_url, headers=AUTH).status_code for _ in range(3)]
    assert answers == [int(status), int(status), 200]
    assert emu.counts["fault"] == 2


def test_faults_apply_only_to_matching_paths_and_methods(emu: NVCFEmulator, client: httpx.Client) -> None:
    emu.inject("503", path_prefix="/s3/")
    emu.inject("500", method="DELETE")
    created = create(client, emu)
    assert client.get(emu.assets_url, headers=AUTH).status_code == 200
    resp = put(client, created, PNG.read_bytes())
    assert resp.status_code == 503 and s3_code(resp) == "ServiceUnavailable"
    assert client.delete(f"{emu.assets_url}/{created['assetId']}", headers=AUTH).status_code == 500
    assert put(client, created, PNG.read_bytes()).status_code == 200


def test_dropped_connection_cuts_the_response_short(emu: NVCFEmulator, client: httpx.Client) -> None:
    emu.inject("drop")
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(emu.assets_url, headers=AUTH)
    assert emu.requests[-1].status is None
    assert client.get(emu.assets_url, headers=AUTH).status_code == 200


def test_dropped_upload_stops_reading_mid_body(emu: NVCFEmulator, client: httpx.Client) -> None:
    created = create(client, emu, "audio/wav")
    emu.inject("drop", path_prefix="/s3/")
    data = os.urandom(4 * 1024 * 1024)
    with pytest.raises(httpx.TransportError):
        put(client, created, data)
    record = emu.requests[-1]
    assert record.status is None and 0 < record.body_bytes < len(data)
    assert emu.asset(created["assetId"]).uploaded is False  # type: ignore[union-attr]


def test_slow_fault_delays_the_answer_past_a_short_timeout(emu: NVCFEmulator) -> None:
    emu.inject("slow", delay_s=3.0)
    with httpx.Client(timeout=0.2) as impatient, pytest.raises(httpx.ReadTimeout):
        impatient.get(emu.assets_url, headers=AUTH)
    with httpx.Client(timeout=5) as patient:
        assert patient.get(emu.assets_url, headers=AUTH).status_code == 200


def test_injecting_an_unknown_fault_kind_is_refused(emu: NVCFEmulator) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        emu.inject("418")


# -- chat ---------------------------------------------------------------------------------------------


def test_chat_accepts_inline_image_and_audio_in_openai_shape(emu: NVCFEmulator, client: httpx.Client) -> None:
    content = [
        {"type": "text", "text": "Describe these."},
        {"type": "image_url", "image_url": {"url": data_uri(PNG, "image/png")}},
        {"type": "audio_url", "audio_url": {"url": data_uri(WAV, "audio/wav")}},
    ]
    resp = chat(client, emu, content)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "chat.completion" and body["model"] == "nvidia/nemotron-3-nano-omni"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "received 1 image, 1 audio (2 inline, 0 assets)",
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    assert set(body["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}


def test_chat_accepts_asset_references_listed_in_the_header(emu: NVCFEmulator, client: httpx.Client) -> None:
    video = uploaded(client, emu, MP4, "video/mp4")
    audio = uploaded(client, emu, MP3, "audio/mpeg")
    content = [
        {"type": "video_url", "video_url": {"url": f"data:video/mp4;asset_id,{video}"}},
        {"type": "audio_url", "audio_url": {"url": f"data:audio/mpeg;asset_id,{audio}"}},
    ]
    resp = chat(client, emu, content, assets=f"{video}, {audio}")
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == "received 1 audio, 1 video (0 inline, 2 assets)"


def test_chat_accepts_tags_in_string_content(emu: NVCFEmulator, client: httpx.Client) -> None:
    image = uploaded(client, emu, JPEG, "image/jpeg")
    text = f'Compare <img src="{data_uri(PNG, "image/png")}" /> with <img src="data:image/jpeg;asset_id,{image}" />'
    resp = chat(client, emu, text, assets=image)
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"].startswith("received 2 images")


def test_chat_accepts_input_audio_parts(emu: NVCFEmulator, client: httpx.Client) -> None:
    assert chat(client, emu, [input_audio(MP3, "mp3")]).status_code == 200


@pytest.mark.parametrize("role", ["system", "assistant", "tool"])
def test_chat_refuses_media_outside_user_messages(emu: NVCFEmulator, client: httpx.Client, role: str) -> None:
    # The service takes media from users only: a picture in a system prompt fails the whole request.
    messages = [
        {"role": role, "content": [url_part("image", data_uri(PNG, "image/png"))]},
        {"role": "user", "content": "What is in the picture?"},
    ]
    body = {"model": "nvidia/nemotron-3-nano-omni", "messages": messages}
    resp = client.post(emu.chat_url, json=body, headers=AUTH)
    assert resp.status_code == 400
    assert f"messages[0] ({role})" in resp.text and "only in user messages" in resp.text
    assert emu.chat_count == 0


def test_chat_takes_text_in_system_and_assistant_messages(emu: NVCFEmulator, client: httpx.Client) -> None:
    messages = [
        {"role": "system", "content": "/no_think"},
        {"role": "user", "content": [url_part("image", data_uri(PNG, "image/png"))]},
        {"role": "assistant", "content": 'A picture. In HTML: <img src="picture.png">'},
        {"role": "user", "content": "Sure?"},
    ]
    body = {"model": "nvidia/nemotron-3-nano-omni", "messages": messages}
    assert client.post(emu.chat_url, json=body, headers=AUTH).status_code == 200


def url_part(kind: str, url: str) -> dict[str, Any]:
    return {"type": f"{kind}_url", f"{kind}_url": {"url": url}}


def input_audio(path: Path, fmt: str) -> dict[str, Any]:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(path.read_bytes()).decode(), "format": fmt}}


@pytest.mark.parametrize(
    ("part", "reason"),
    [
        pytest.param(url_part("image", data_uri(PNG, "image/jpeg")), "declared as image/jpeg", id="png-as-jpeg"),
        pytest.param(url_part("image", data_uri(AVIF, "image/png")), "image/avif", id="avif-as-png"),
        pytest.param(url_part("video", data_uri(AVIF, "video/mp4")), "image/avif", id="avif-as-mp4"),
        pytest.param(url_part("audio", data_uri(PNG, "audio/wav")), "declared as audio/wav", id="png-as-wav"),
        pytest.param(url_part("image", data_uri(WAV, "audio/wav")), "not an accepted image type", id="wav-as-image"),
        pytest.param(url_part("image", data_uri(CORPUS / "pillow__chi.gif", "image/gif")), "image/gif", id="gif"),
        pytest.param(url_part("image", "data:image/png;base64,iVBORw0KGgo=!!"), "does not decode", id="bad-base64"),
        pytest.param(
            url_part("image", data_uri(CORPUS / "small__png-truncated.png", "image/png")),
            "does not decode",
            id="truncated-png",
        ),
        pytest.param(input_audio(MP3, "wav"), "declared as audio/wav", id="mp3-as-wav-input-audio"),
        pytest.param(url_part("image", "https://example.com/cat.png"), "is not a data:", id="remote-url"),
        pytest.param({"type": "file", "file": {}}, "unsupported content part type", id="unknown-part"),
    ],
)
def test_chat_rejects_media_that_is_not_what_it_claims(
    emu: NVCFEmulator, client: httpx.Client, part: dict[str, Any], reason: str
) -> None:
    resp = chat(client, emu, [part])
    assert resp.status_code == 400
    assert reason in resp.json()["detail"]
    assert emu.chat_count == 0


def test_chat_rejects_a_mistyped_tag_in_string_content(emu: NVCFEmulator, client: httpx.Client) -> None:
    resp = chat(client, emu, f'<audio src="{data_uri(PNG, "audio/mpeg")}" />')
    assert resp.status_code == 400 and "declared as audio/mpeg" in resp.json()["detail"]


def test_chat_with_an_unknown_asset_is_404_not_found(emu: NVCFEmulator, client: httpx.Client) -> None:
    ghost = str(uuid.uuid4())
    resp = chat(client, emu, [{"type": "image_url", "image_url": {"url": f"data:image/png;asset_id,{ghost}"}}], ghost)
    assert resp.status_code == 404
    assert resp.json()["detail"] == f"NotFound error: failed to find asset {ghost}"


def test_chat_with_another_keys_asset_is_404(emu: NVCFEmulator, client: httpx.Client) -> None:
    theirs = uploaded(client, emu, PNG, "image/png", key=OTHER_KEY)
    resp = chat(client, emu, [{"type": "image_url", "image_url": {"url": f"data:image/png;asset_id,{theirs}"}}], theirs)
    assert resp.status_code == 404


def test_chat_with_an_asset_missing_from_the_header_is_400(emu: NVCFEmulator, client: httpx.Client) -> None:
    image = uploaded(client, emu, PNG, "image/png")
    resp = chat(client, emu, [{"type": "image_url", "image_url": {"url": f"data:image/png;asset_id,{image}"}}])
    assert resp.status_code == 400
    assert "not listed in the NVCF-INPUT-ASSET-REFERENCES header" in resp.json()["detail"]


def test_chat_with_an_asset_never_uploaded_is_400(emu: NVCFEmulator, client: httpx.Client) -> None:
    empty = create(client, emu)["assetId"]
    resp = chat(client, emu, [{"type": "image_url", "image_url": {"url": f"data:image/png;asset_id,{empty}"}}], empty)
    assert resp.status_code == 400 and "never completed" in resp.json()["detail"]


def test_chat_with_an_asset_of_another_type_is_400(emu: NVCFEmulator, client: httpx.Client) -> None:
    image = uploaded(client, emu, PNG, "image/png")
    resp = chat(client, emu, [{"type": "video_url", "video_url": {"url": f"data:video/mp4;asset_id,{image}"}}], image)
    assert resp.status_code == 400 and "image/png" in resp.json()["detail"]


def test_chat_takes_ten_assets_in_a_369_character_header(emu: NVCFEmulator, client: httpx.Client) -> None:
    ids = [uploaded(client, emu, CORPUS / "small__png-transparent.png", "image/png") for _ in range(10)]
    header = ",".join(ids)
    parts = [{"type": "image_url", "image_url": {"url": f"data:image/png;asset_id,{i}"}} for i in ids]
    resp = chat(client, emu, parts, assets=header)
    assert len(header) == 369
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == "received 10 images (0 inline, 10 assets)"


def test_chat_refuses_an_asset_header_over_370_characters(emu: NVCFEmulator, client: httpx.Client) -> None:
    header = ", ".join(str(uuid.uuid4()) for _ in range(10))
    resp = chat(client, emu, "hello", assets=header)
    assert len(header) == 378
    assert resp.status_code == 400
    assert "378 characters" in resp.json()["detail"] and "370" in resp.json()["detail"]


def test_chat_refuses_an_asset_header_item_that_is_not_a_uuid(emu: NVCFEmulator, client: httpx.Client) -> None:
    resp = chat(client, emu, "hello", assets="not-a-uuid")
    assert resp.status_code == 400 and "not a UUID" in resp.json()["detail"]


def test_chat_without_bearer_key_is_401(emu: NVCFEmulator, client: httpx.Client) -> None:
    resp = client.post(emu.chat_url, json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 401


def test_chat_streams_server_sent_events_ending_with_done(emu: NVCFEmulator, client: httpx.Client) -> None:
    content = [{"type": "image_url", "image_url": {"url": data_uri(PNG, "image/png")}}]
    resp = chat(client, emu, content, stream=True, stream_options={"include_usage": True})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    events = [line[len("data: ") :] for line in resp.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    import json

    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "received 1 image (1 inline, 0 assets)"
    assert chunks[-1]["usage"]["total_tokens"] > 0


def test_openai_sdk_sends_an_asset_reference_the_emulator_accepts(emu: NVCFEmulator, client: httpx.Client) -> None:
    from openai import OpenAI

    image = uploaded(client, emu, PNG, "image/png")
    sdk = OpenAI(base_url=emu.base_url + "/v1", api_key=KEY, max_retries=0)
    messages: Any = [
        {"role": "system", "content": "/no_think"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;asset_id,{image}"}},
            ],
        },
    ]
    headers = {"NVCF-INPUT-ASSET-REFERENCES": image}
    answer = sdk.chat.completions.create(model="nvidia/nemotron-3-nano-omni", messages=messages, extra_headers=headers)
    assert answer.choices[0].message.content == "received 1 image (0 inline, 1 asset)"
    stream = sdk.chat.completions.create(
        model="nvidia/nemotron-3-nano-omni", messages=messages, extra_headers=headers, stream=True
    )
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert streamed == "received 1 image (0 inline, 1 asset)"
    sdk.close()


# -- command line -------------------------------------------------------------------------------------


def test_main_prints_the_base_url_first_and_serves_until_terminated() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nvmedia.testing.emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        resp = httpx.get(base_url + "/v2/nvcf/assets", headers=AUTH, timeout=10)
        assert resp.json() == {"assets": []}
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "NVMEDIA_ASSETS_URL" in err
