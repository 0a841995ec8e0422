"""AsyncAssetClient against the emulator (in-process through its transport; loopback for timeouts): as the sync one."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from support import CORPUS

from nvmedia.assets import AsyncAssetClient, UploadURLExpired
from nvmedia.errors import AssetAPIError, AuthError, UploadError
from nvmedia.testing import NVCFEmulator

KEY = "nvapi-ASYNC-CLIENT-SECRET-KEY-7"
PNG = CORPUS / "pillow__hopper.png"
WAV = CORPUS / "pydub__test4.wav"

pytestmark = pytest.mark.anyio


@pytest.fixture
def emu(emu_in_process: NVCFEmulator) -> NVCFEmulator:
    return emu_in_process


@pytest.fixture
async def client(emu: NVCFEmulator) -> AsyncIterator[AsyncAssetClient]:
    async with AsyncAssetClient(api_key=KEY, base_url=emu.assets_url, transport=emu.transport, max_retry_wait_s=5) as c:
        yield c


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def puts(emu: NVCFEmulator) -> list[int | None]:
    return [r.status for r in emu.requests if r.method == "PUT"]


async def test_async_create_upload_get_list_delete(emu: NVCFEmulator, client: AsyncAssetClient) -> None:
    created = await client.create("image/png", "hopper")
    await client.upload(created, PNG)
    info = await client.get(created.asset_id)
    assert info is not None and info.content_type == "image/png" and info.description == "hopper"
    assert await client.list() == [created.asset_id]
    assert emu.asset(created.asset_id).sha256 == sha256(PNG)  # type: ignore[union-attr]
    assert await client.delete(created.asset_id) is True
    assert await client.delete(created.asset_id) is False
    assert await client.get(created.asset_id) is None


async def test_async_upload_sends_an_explicit_length_not_a_chunked_body(
    emu: NVCFEmulator, client: AsyncAssetClient
) -> None:
    seen: list[int] = []
    asset_id = await client.upload_file(WAV, "audio/wav", progress=seen.append)
    (put,) = [r for r in emu.requests if r.method == "PUT"]
    assert put.headers["content-length"] == str(WAV.stat().st_size)
    assert "transfer-encoding" not in put.headers and "authorization" not in put.headers
    assert seen[-1] == WAV.stat().st_size
    assert emu.asset(asset_id).sha256 == sha256(WAV)  # type: ignore[union-attr]


async def test_async_uploads_run_concurrently_on_one_client(
    emu: NVCFEmulator, client: AsyncAssetClient, tmp_path: Path
) -> None:
    files = []
    for i in range(6):
        path = tmp_path / f"f{i}.png"
        path.write_bytes(PNG.read_bytes() + bytes([i]))
        files.append(path)
    ids: dict[Path, str] = {}

    async def one(path: Path) -> None:
        ids[path] = await client.upload_file(path, "image/png")

    async with anyio.create_task_group() as tg:
        for path in files:
            tg.start_soon(one, path)
    assert {emu.asset(ids[p]).sha256 for p in files} == {sha256(p) for p in files}  # type: ignore[union-attr]


async def test_async_429_and_503_are_retried(emu: NVCFEmulator, client: AsyncAssetClient) -> None:
    emu.inject("429", retry_after=0.1)
    emu.inject("503")
    assert await client.list() == []
    assert [r.status for r in emu.requests] == [429, 503, 200]


async def test_async_dropped_upload_is_retried(emu: NVCFEmulator, client: AsyncAssetClient) -> None:
    emu.inject("drop", path_prefix="/s3/")
    asset_id = await client.upload_file(WAV, "audio/wav")
    assert puts(emu) == [None, 200]
    assert emu.asset(asset_id).sha256 == sha256(WAV)  # type: ignore[union-attr]


async def test_async_slow_answer_hits_the_timeout_and_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    with NVCFEmulator() as served:
        served.inject("slow", delay_s=3.0, method="GET")
        async with AsyncAssetClient(api_key=KEY, base_url=served.assets_url, timeout=0.3) as c:
            with caplog.at_level(logging.INFO, logger="nvmedia.assets"):
                assert await c.list() == []
    assert any("ReadTimeout" in r.getMessage() for r in caplog.records)


async def test_async_persistent_errors_end_in_asset_api_error(emu: NVCFEmulator) -> None:
    emu.inject("500", times=10)
    async with AsyncAssetClient(api_key=KEY, base_url=emu.assets_url, transport=emu.transport, max_attempts=2) as c:
        with pytest.raises(AssetAPIError) as err:
            await c.list()
    assert err.value.status_code == 500 and "after 2 attempts" in err.value.message
    assert len(emu.requests) == 2


async def test_async_expired_url_gets_a_fresh_asset(emu: NVCFEmulator, client: AsyncAssetClient) -> None:
    emu.inject("expire")
    asset_id = await client.upload_file(PNG, "image/png")
    assert puts(emu) == [403, 200]
    assert [a.asset_id for a in emu.assets()] == [asset_id]


async def test_async_upload_to_an_expired_url_raises_upload_url_expired(
    emu: NVCFEmulator, client: AsyncAssetClient
) -> None:
    created = await client.create("image/png")
    emu.expire_urls()
    with pytest.raises(UploadURLExpired):
        await client.upload(created, PNG)


async def test_async_signature_mismatch_is_upload_failed_without_retries(
    emu: NVCFEmulator, client: AsyncAssetClient
) -> None:
    created = await client.create("image/png")
    with pytest.raises(UploadError) as err:
        await client.upload(replace(created, content_type="image/webp"), PNG)
    assert err.value.code == "upload_failed" and "SignatureDoesNotMatch" in err.value.message
    assert puts(emu) == [403]


async def test_async_missing_key_is_auth_failed(emu: NVCFEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NVIDIA_API_KEY", raising=False)
    async with AsyncAssetClient(base_url=emu.assets_url, transport=emu.transport) as c:
        with pytest.raises(AuthError) as err:
            await c.list()
    assert err.value.hint == "set NVIDIA_API_KEY or pass api_key"
    assert repr(c) == f"AsyncAssetClient(base_url={emu.assets_url!r}, api_key=None)"


async def test_async_refused_key_is_auth_failed() -> None:
    with NVCFEmulator(api_keys={"right"}) as emu:
        async with AsyncAssetClient(api_key=KEY, base_url=emu.assets_url) as c:
            with pytest.raises(AuthError) as err:
                await c.create("image/png")
        assert len(emu.requests) == 1
    assert err.value.status_code == 401 and KEY not in str(err.value) + repr(c)
