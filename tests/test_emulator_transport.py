"""The emulator in-process (NVCFEmulator.transport), and what the chat and upload tests of others rely on."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from support import CORPUS

from nvmedia.assets import AssetClient, AsyncAssetClient
from nvmedia.testing import NVCFEmulator

KEY = "nvapi-TRANSPORT-TEST-KEY-31337"
AUTH = {"Authorization": f"Bearer {KEY}"}
PNG = CORPUS / "pillow__hopper.png"
CHAT_BODY = {"model": "m", "messages": [{"role": "user", "content": "Say something."}]}

pytestmark = pytest.mark.anyio


@pytest.fixture
def emu(emu_in_process: NVCFEmulator) -> NVCFEmulator:
    return emu_in_process


@pytest.fixture
def http(emu: NVCFEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(transport=emu.transport) as client:
        yield client


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[len("data: ") :])


# -- the transport -----------------------------------------------------------------------------------


def test_the_transport_serves_a_sync_client_without_a_socket(emu: NVCFEmulator, http: httpx.Client) -> None:
    with AssetClient(api_key=KEY, base_url=emu.assets_url, http_client=http) as client:
        asset_id = client.upload_file(PNG, "image/png", description="through the transport")
        assert client.list() == [asset_id]
    assert emu.port == 0 and repr(emu) == "NVCFEmulator(stopped)"  # no server was ever started
    stored = emu.asset(asset_id)
    assert stored is not None and stored.size == PNG.stat().st_size
    assert [(r.method, r.status) for r in emu.requests] == [("POST", 200), ("PUT", 200), ("GET", 200)]


async def test_the_same_transport_serves_an_async_client(emu: NVCFEmulator) -> None:
    async with httpx.AsyncClient(transport=emu.transport) as http:
        async with AsyncAssetClient(api_key=KEY, base_url=emu.assets_url, http_client=http) as client:
            asset_id = await client.upload_file(PNG, "image/png")
            assert await client.get(asset_id) is not None
            assert await client.delete(asset_id) is True
    assert emu.counts == {"create": 1, "upload": 1, "get": 1, "delete": 1}


def test_loopback_and_transport_serve_the_same_assets(http: httpx.Client) -> None:
    with NVCFEmulator() as served:
        with httpx.Client(transport=served.transport) as in_process:
            created = in_process.post(
                served.assets_url, json={"contentType": "image/png", "description": "d"}, headers=AUTH
            ).json()
        listed = httpx.get(served.assets_url, headers=AUTH, timeout=10).json()
    assert listed == {"assets": [{"assetId": created["assetId"]}]}


def test_a_drop_through_the_transport_is_a_protocol_error(emu: NVCFEmulator, http: httpx.Client) -> None:
    emu.inject("drop")
    with pytest.raises(httpx.RemoteProtocolError):
        http.get(emu.assets_url, headers=AUTH)
    assert emu.requests[-1].status is None
    assert http.get(emu.assets_url, headers=AUTH).status_code == 200


# -- chat, for the chat client ------------------------------------------------------------------------


def test_chat_with_a_key_outside_the_accepted_set_is_401() -> None:
    emulator = NVCFEmulator(api_keys={"the-only-key"})
    try:
        with httpx.Client(transport=emulator.transport) as http:
            refused = http.post(emulator.chat_url, json=CHAT_BODY, headers=AUTH)
            accepted = http.post(emulator.chat_url, json=CHAT_BODY, headers={"Authorization": "Bearer the-only-key"})
    finally:
        emulator.stop()
    assert (refused.status_code, accepted.status_code) == (401, 200)
    assert refused.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(("kind", "status"), [("429", 429), ("500", 500), ("503", 503)])
def test_faults_apply_to_chat(emu: NVCFEmulator, http: httpx.Client, kind: str, status: int) -> None:
    emu.inject(kind, path_prefix="/v1/chat", retry_after=2)
    first = http.post(emu.chat_url, json=CHAT_BODY, headers=AUTH)
    second = http.post(emu.chat_url, json=CHAT_BODY, headers=AUTH)
    assert (first.status_code, second.status_code) == (status, 200)
    assert first.headers["Content-Type"] == "application/problem+json"
    assert first.headers.get("Retry-After") == ("2" if status == 429 else None)
    assert emu.chat_count == 1


def test_a_streamed_chat_answer_is_cut_after_n_events_over_loopback() -> None:
    with NVCFEmulator() as served, httpx.Client(timeout=10) as http:
        served.inject("drop", path_prefix="/v1/chat", after_chunks=2)
        got: list[dict[str, Any]] = []
        with pytest.raises(httpx.RemoteProtocolError):
            with http.stream("POST", served.chat_url, json={**CHAT_BODY, "stream": True}, headers=AUTH) as resp:
                assert resp.status_code == 200 and resp.headers["Transfer-Encoding"] == "chunked"
                for event in sse_events(resp.iter_lines()):
                    got.append(event)
        whole = http.post(served.chat_url, json={**CHAT_BODY, "stream": True}, headers=AUTH)
    assert len(got) == 2 and got[0]["object"] == "chat.completion.chunk"
    assert whole.status_code == 200 and whole.text.endswith("data: [DONE]\n\n")
    assert served.chat_count == 2


async def test_a_streamed_chat_answer_is_cut_after_n_events_through_the_transport(emu: NVCFEmulator) -> None:
    emu.inject("drop", path_prefix="/v1/chat", after_chunks=3)
    got: list[dict[str, Any]] = []
    async with httpx.AsyncClient(transport=emu.transport) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            async with http.stream("POST", emu.chat_url, json={**CHAT_BODY, "stream": True}, headers=AUTH) as resp:
                async for line in resp.aiter_lines():
                    got.extend(sse_events(iter([line])))
    assert len(got) == 3


def test_a_drop_fault_on_a_chat_answer_that_is_not_streamed_drops_it_whole(
    emu: NVCFEmulator, http: httpx.Client
) -> None:
    emu.inject("drop", path_prefix="/v1/chat", after_chunks=2)
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(emu.chat_url, json=CHAT_BODY, headers=AUTH)


def test_after_chunks_goes_only_with_drop(emu: NVCFEmulator) -> None:
    with pytest.raises(ValueError, match="after_chunks"):
        emu.inject("500", after_chunks=1)
    with pytest.raises(ValueError, match="after_chunks"):
        emu.inject("drop", after_chunks=-1)


def test_latency_chat_is_a_constructor_option(emu: NVCFEmulator) -> None:
    assert NVCFEmulator(latency_chat_s=0.25).latency_chat_s == 0.25
    assert emu.latency_chat_s == 0.0


# -- holding uploads: concurrency seen without timing ---------------------------------------------------


@pytest.fixture
def three_files(tmp_path: Path) -> list[Path]:
    files = []
    for i in range(3):
        path = tmp_path / f"f{i}.png"
        path.write_bytes(PNG.read_bytes() + bytes([i]))
        files.append(path)
    return files


async def test_held_uploads_show_how_many_a_client_sends_at_once(emu: NVCFEmulator, three_files: list[Path]) -> None:
    emu.hold_uploads()
    async with httpx.AsyncClient(transport=emu.transport) as http:
        client = AsyncAssetClient(api_key=KEY, base_url=emu.assets_url, http_client=http)
        async with anyio.create_task_group() as tasks:
            for path in three_files:
                tasks.start_soon(client.upload_file, path, "image/png")
            all_in = await anyio.to_thread.run_sync(emu.wait_uploads_in_flight, 3, 60)
            emu.release_uploads()
    assert all_in and emu.peak_concurrent_uploads == 3 and emu.upload_count == 3


def test_a_client_sending_one_upload_at_a_time_never_has_two_in_flight(emu: NVCFEmulator, http: httpx.Client) -> None:
    emu.hold_uploads()
    with AssetClient(api_key=KEY, base_url=emu.assets_url, http_client=http) as client:
        worker = threading.Thread(target=lambda: [client.upload_file(PNG, "image/png") for _ in range(2)])
        worker.start()
        assert emu.wait_uploads_in_flight(1, timeout=60)
        assert not emu.wait_uploads_in_flight(2, timeout=0)  # the second waits for the first to finish
        emu.release_uploads()
        worker.join()
    assert emu.peak_concurrent_uploads == 1 and emu.upload_count == 2


def test_stop_wakes_held_uploads(tmp_path: Path) -> None:
    emulator = NVCFEmulator().start()
    emulator.hold_uploads()
    outcome: list[BaseException | str] = []

    def upload() -> None:
        try:
            with AssetClient(api_key=KEY, base_url=emulator.assets_url, max_attempts=1) as client:
                outcome.append(client.upload_file(PNG, "image/png"))
        except Exception as exc:
            outcome.append(exc)

    worker = threading.Thread(target=upload)
    worker.start()
    assert emulator.wait_uploads_in_flight(1, timeout=60)
    emulator.stop()
    worker.join()
    assert len(outcome) == 1
