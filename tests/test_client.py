"""``Client`` and ``AsyncClient``: reuse across calls, asset ownership, cleanup, cancellation, configuration.

Library behaviour runs against the emulator's in-process transport (no socket, deterministic);
the two-process cache test needs the loopback server, since both processes must reach one service.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest
from support import CORPUS, ROOT

import nvmedia
from nvmedia.errors import CleanupError, ConfigError
from nvmedia.testing import NVCFEmulator

KEY = "nvapi-CLIENT-TEST-KEY-0123456789"
OTHER_KEY = "nvapi-SOMEONE-ELSES-KEY-9876543210"
LARGE = CORPUS / "pydub__test1-24bit.wav"  # too big to inline: always an upload


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def emu(emu_in_process: NVCFEmulator) -> NVCFEmulator:
    return emu_in_process


@pytest.fixture
def client(emu: NVCFEmulator) -> Iterator[nvmedia.Client]:
    with (
        httpx.Client(transport=emu.transport) as http,
        nvmedia.Client(api_key=KEY, assets_url=emu.assets_url, http_client=http, jobs=2) as made,
    ):
        yield made


def noise_wavs(folder: Path, count: int) -> list[Path]:
    """``count`` different real WAV files, each too big to inline (so each is its own upload)."""
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"memo{i:02d}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(44_100)
            w.writeframes(random.Random(i).randbytes(44_100 * 2 * 2))
        paths.append(path)
    return paths


def live_ids(emu: NVCFEmulator) -> set[str]:
    return {a.asset_id for a in emu.assets(KEY)}


def listings(emu: NVCFEmulator) -> int:
    return sum(1 for r in emu.requests if r.method == "GET" and r.path.rstrip("/").endswith("/v2/nvcf/assets"))


# -- one client, reused ---------------------------------------------------------------------------------------


def test_calls_of_one_client_share_one_listing_of_the_keys_assets(
    client: nvmedia.Client, emu: NVCFEmulator, tmp_path: Path
) -> None:
    wavs = noise_wavs(tmp_path / "w", 3)
    for wav in wavs:
        assert client.prepare([wav]).asset_ids
    assert client.prepare([wavs[0]]).asset_ids  # reused from the cache, checked against the one listing
    assert emu.upload_count == 3
    assert listings(emu) == 1


def test_a_closed_client_used_again_raises_a_clear_error(emu: NVCFEmulator) -> None:
    client = nvmedia.Client(api_key=KEY, assets_url=emu.assets_url, http_client=httpx.Client(transport=emu.transport))
    client.close()
    with pytest.raises(ConfigError, match="Client is closed") as err:
        client.prepare([LARGE])
    assert "make a new Client" in (err.value.hint or "")
    assert emu.requests == []


def test_plain_http_assets_url_to_another_host_is_refused_before_anything_is_sent(emu: NVCFEmulator) -> None:
    with httpx.Client(transport=emu.transport) as http:
        with pytest.raises(ConfigError, match="http"):
            with nvmedia.Client(
                api_key=KEY, assets_url="http://assets.example.com/v2/nvcf/assets", http_client=http
            ) as c:
                c.prepare([LARGE])
    assert emu.requests == []


def test_http_client_base_url_and_headers_never_override_the_clients_own(emu: NVCFEmulator) -> None:
    # Documented precedence: requests go to assets_url with the client's key, never to the
    # http_client's base_url nor with its default headers.
    http = httpx.Client(
        transport=emu.transport,
        base_url="http://127.0.0.1:9/elsewhere",
        headers={"Authorization": f"Bearer {OTHER_KEY}", "X-Extra": "kept-out"},
    )
    with http, nvmedia.Client(api_key=KEY, assets_url=emu.assets_url, http_client=http) as client:
        prep = client.prepare([LARGE])
        (asset_id,) = prep.asset_ids
    assert [a.asset_id for a in emu.assets(KEY)] == [asset_id]
    assert emu.assets(OTHER_KEY) == []
    assert all(r.path.startswith("/v2/nvcf/assets") or r.path.startswith("/s3/") for r in emu.requests)
    assert all("x-extra" not in r.headers for r in emu.requests)


# -- ownership --------------------------------------------------------------------------------------------------


def test_an_asset_uploaded_in_a_block_is_never_handed_to_another_call(
    client: nvmedia.Client, emu: NVCFEmulator
) -> None:
    with client.prepare([LARGE]) as in_block:
        (owned,) = in_block.asset_ids
        outside = client.prepare([LARGE])
        (long_lived,) = outside.asset_ids
        assert long_lived != owned
    assert live_ids(emu) == {long_lived}  # the block deleted its own asset, and only that


def test_a_block_never_deletes_a_long_lived_asset_it_reused(client: nvmedia.Client, emu: NVCFEmulator) -> None:
    (kept,) = client.prepare([LARGE]).asset_ids
    with client.prepare([LARGE]) as prep:
        assert prep.asset_ids == [kept]
    assert live_ids(emu) == {kept} and emu.upload_count == 1


def test_keep_assets_makes_a_blocks_uploads_long_lived(client: nvmedia.Client, emu: NVCFEmulator) -> None:
    with client.prepare([LARGE], keep_assets=True) as prep:
        (kept,) = prep.asset_ids
    assert live_ids(emu) == {kept}
    assert client.prepare([LARGE]).asset_ids == [kept]  # and it entered the cache


def test_content_after_the_block_raises_instead_of_naming_deleted_assets(client: nvmedia.Client) -> None:
    with client.prepare([LARGE]) as prep:
        assert prep.headers
    for stale in ("content", "tags", "asset_ids", "headers"):
        with pytest.raises(ConfigError, match="after its block ended"):
            getattr(prep, stale)
    assert prep.items[0].status == "ok"  # the record of what happened stays readable


# -- cleanup ----------------------------------------------------------------------------------------------------


def refuse_deletes_of(emu: NVCFEmulator, asset_id: str) -> None:
    """Every attempt to delete ``asset_id`` gets 429 (Retry-After 0: retries cost no time)."""
    emu.inject("429", times=100, method="DELETE", path_prefix=f"/v2/nvcf/assets/{asset_id}", retry_after=0)


def test_delete_fault_at_exit_keeps_the_bodys_exception_with_a_note_and_deletes_the_rest(
    client: nvmedia.Client, emu: NVCFEmulator, tmp_path: Path
) -> None:
    wavs = noise_wavs(tmp_path / "w", 4)
    with pytest.raises(ZeroDivisionError) as err:
        with client.prepare(wavs) as prep:
            ids = prep.asset_ids
            refuse_deletes_of(emu, ids[1])
            _ = 1 / 0
    assert live_ids(emu) == {ids[1]}
    (note,) = err.value.__notes__
    assert ids[1] in note and "could not be deleted" in note


def test_delete_fault_at_exit_of_a_clean_block_is_a_cleanup_error_listing_the_ids(
    client: nvmedia.Client, emu: NVCFEmulator, tmp_path: Path
) -> None:
    wavs = noise_wavs(tmp_path / "w", 3)
    with pytest.raises(CleanupError) as err:
        with client.prepare(wavs) as prep:
            ids = prep.asset_ids
            refuse_deletes_of(emu, ids[0])
    assert err.value.asset_ids == (ids[0],)
    assert live_ids(emu) == {ids[0]}


def test_a_block_whose_asset_is_already_gone_counts_it_as_deleted(client: nvmedia.Client, emu: NVCFEmulator) -> None:
    with client.prepare([LARGE]) as prep:
        (asset_id,) = prep.asset_ids
        with httpx.Client(transport=emu.transport) as http:
            nvmedia.AssetClient(api_key=KEY, base_url=emu.assets_url, http_client=http).delete(asset_id)
    assert live_ids(emu) == set()


# -- two processes, one cache folder ------------------------------------------------------------------------------

_HOLDER = """
import sys, nvmedia
url, key, path = sys.argv[1:4]
with nvmedia.Client(api_key=key, assets_url=url) as client:
    with client.prepare([path]) as prep:
        print(prep.asset_ids[0], flush=True)
        sys.stdin.readline()  # hold the block open until told
"""


def test_two_processes_sharing_a_cache_folder_never_delete_what_the_other_references(tmp_path: Path) -> None:
    env = {**os.environ, "NVMEDIA_CACHE_DIR": str(tmp_path / "shared-cache"), "PYTHONPATH": str(ROOT)}
    with NVCFEmulator() as emu:
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, emu.assets_url, KEY, str(LARGE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert holder.stdout is not None and holder.stdin is not None
        block_owned = holder.stdout.readline().strip()
        # This process: a long-lived upload of the same bytes while the other's block is open.
        with nvmedia.Client(api_key=KEY, assets_url=emu.assets_url, cache_dir=tmp_path / "shared-cache") as client:
            (mine,) = client.prepare([LARGE]).asset_ids
        holder.stdin.write("\n")
        holder.stdin.close()
        assert holder.wait(timeout=120) == 0
        assert mine != block_owned
        assert live_ids(emu) == {mine}
        # The other process's next block reuses this long-lived asset, and leaves it alive.
        reuse = subprocess.run(
            [sys.executable, "-c", _HOLDER, emu.assets_url, KEY, str(LARGE)],
            input="\n",
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert reuse.returncode == 0, reuse.stderr
        assert reuse.stdout.strip() == mine
        assert live_ids(emu) == {mine}


# -- the async client ----------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_await_is_long_lived_and_async_with_deletes_at_exit(emu: NVCFEmulator, tmp_path: Path) -> None:
    first, second = noise_wavs(tmp_path / "w", 2)
    async with (
        httpx.AsyncClient(transport=emu.transport) as http,
        nvmedia.AsyncClient(api_key=KEY, assets_url=emu.assets_url, http_client=http) as aclient,
    ):
        kept = await aclient.prepare([first])
        (kept_id,) = kept.asset_ids
        async with aclient.prepare([first, second]) as prep:
            reused, owned = prep.asset_ids
            assert reused == kept_id and live_ids(emu) == {kept_id, owned}
        assert live_ids(emu) == {kept_id}
        with pytest.raises(ConfigError, match="after its block ended"):
            _ = prep.headers


@pytest.mark.anyio
async def test_cancelling_an_async_call_mid_upload_deletes_every_asset_it_created(
    emu: NVCFEmulator, tmp_path: Path
) -> None:
    wavs = noise_wavs(tmp_path / "w", 3)
    emu.hold_uploads()
    outcome: list[str] = []
    async with (
        httpx.AsyncClient(transport=emu.transport) as http,
        nvmedia.AsyncClient(api_key=KEY, assets_url=emu.assets_url, http_client=http, jobs=3) as aclient,
    ):

        async def call() -> None:
            try:
                await aclient.prepare(wavs)
            except anyio.get_cancelled_exc_class():
                outcome.append("cancelled")
                raise

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(call)
            assert await anyio.to_thread.run_sync(emu.wait_uploads_in_flight, 1, 120)
            assert emu.assets(KEY)  # created, uploads held
            tasks.cancel_scope.cancel()
            emu.release_uploads()
    assert outcome == ["cancelled"]
    assert emu.assets(KEY) == []


@pytest.mark.anyio
async def test_async_delete_fault_keeps_the_bodys_exception_with_a_note(emu: NVCFEmulator, tmp_path: Path) -> None:
    wavs = noise_wavs(tmp_path / "w", 3)
    async with (
        httpx.AsyncClient(transport=emu.transport) as http,
        nvmedia.AsyncClient(api_key=KEY, assets_url=emu.assets_url, http_client=http) as aclient,
    ):
        with pytest.raises(KeyError) as err:
            async with aclient.prepare(wavs) as prep:
                ids = prep.asset_ids
                refuse_deletes_of(emu, ids[2])
                raise KeyError("body")
    assert live_ids(emu) == {ids[2]}
    assert ids[2] in err.value.__notes__[0]


@pytest.mark.anyio
async def test_a_closed_async_client_used_again_raises_a_clear_error(emu: NVCFEmulator) -> None:
    aclient = nvmedia.AsyncClient(api_key=KEY, assets_url=emu.assets_url)
    await aclient.aclose()
    with pytest.raises(ConfigError, match="AsyncClient is closed"):
        await aclient.prepare([LARGE])


def test_module_level_prepare_runs_through_the_default_client(tmp_path: Path) -> None:
    prep = nvmedia.prepare([CORPUS / "pillow__hopper.webp"])
    assert prep.content[0]["type"] == "image_url"
    from nvmedia.api import default_client

    assert default_client() is default_client()
    assert json.dumps(prep.message("hi"))


# -- conversations through a client ------------------------------------------------------------------------------


def test_client_rewrite_messages_block_deletes_its_uploads_and_never_what_it_reused(
    client: nvmedia.Client, emu: NVCFEmulator, tmp_path: Path
) -> None:
    reused, fresh = noise_wavs(tmp_path / "w", 2)
    (kept,) = client.prepare([reused]).asset_ids
    messages = [{"role": "user", "content": f"Compare <audio src='{reused}'> and <audio src='{fresh}'>"}]
    with client.rewrite_messages(messages) as rw:
        assert rw.asset_ids[0] == kept and len(rw.asset_ids) == 2
        assert rw.uploaded_ids == rw.asset_ids[1:]
        assert live_ids(emu) == set(rw.asset_ids)
    assert live_ids(emu) == {kept}


@pytest.mark.anyio
async def test_async_client_rewrite_messages_deletes_at_the_end_of_its_block(emu: NVCFEmulator, tmp_path: Path) -> None:
    (wav,) = noise_wavs(tmp_path / "w", 1)
    async with (
        httpx.AsyncClient(transport=emu.transport) as http,
        nvmedia.AsyncClient(api_key=KEY, assets_url=emu.assets_url, http_client=http) as aclient,
    ):
        rw = await aclient.rewrite_messages([{"role": "user", "content": f"Listen: <audio src='{wav}'>"}])
        async with rw:
            assert live_ids(emu) == set(rw.asset_ids) and len(rw.asset_ids) == 1
        assert live_ids(emu) == set()


# -- requests split to fit ------------------------------------------------------------------------------------------


def test_group_all_over_ten_assets_becomes_several_requests_in_input_order(
    client: nvmedia.Client, emu: NVCFEmulator, tmp_path: Path
) -> None:
    wavs = noise_wavs(tmp_path / "w", 12)
    prep = client.prepare(wavs, group="all", mode="asset")
    assert [len(r.sources) for r in prep.requests] == [10, 2]
    assert [s for r in prep.requests for s in r.sources] == [str(w) for w in wavs]
    for request in prep.requests:
        ids = request.headers["NVCF-INPUT-ASSET-REFERENCES"].split(",")
        assert len(ids) == len(request.sources) and set(ids) <= live_ids(emu)
    assert all(it.status == "ok" for it in prep.items)
    with pytest.raises(ConfigError, match=r"2 requests.*Prepared\.requests"):
        prep.message("Describe these.")


def test_cli_group_all_over_ten_assets_writes_a_request_record_per_ten(tmp_path: Path) -> None:
    from nvmedia.cli import main

    wavs = noise_wavs(tmp_path / "w", 11)
    out = tmp_path / "m.jsonl"
    with NVCFEmulator() as emu:
        args = ["prepare", str(tmp_path / "w"), "--group", "all", "--no-cache", "-o", str(out)]
        assert main([*args, "--assets-url", emu.assets_url, "--api-key", KEY]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["type"] for r in records] == ["item"] * 10 + ["request", "item", "request"]
    assert [Path(r["source"]).name for r in records if r["type"] == "item"] == [w.name for w in wavs]
    assert len(records[10]["sources"]) == 10 and len(records[12]["sources"]) == 1
    assert records[11]["headers"] == records[12]["headers"] == {"NVCF-INPUT-ASSET-REFERENCES": records[11]["asset_id"]}
