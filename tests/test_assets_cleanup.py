"""Bulk delete (delete_many) on both clients: concurrent, bounded in time, past failures; CleanupError."""

from __future__ import annotations

import pickle
import threading

import anyio
import httpx
import pytest
from support import CORPUS

import nvmedia
from nvmedia.assets import AssetClient, AsyncAssetClient, DeleteReport
from nvmedia.errors import CleanupError, ConfigError, NVMediaError
from nvmedia.testing import NVCFEmulator

KEY = "nvapi-CLEANUP-TEST-KEY-2718"
PNG = CORPUS / "pillow__hopper.png"
GHOST = "b5b841c3-11c2-4c34-b057-9475e82c5369"

pytestmark = pytest.mark.anyio


@pytest.fixture
def emu(emu_in_process: NVCFEmulator) -> NVCFEmulator:
    return emu_in_process


def upload(emu: NVCFEmulator, count: int) -> list[str]:
    with httpx.Client(transport=emu.transport) as http:
        client = AssetClient(api_key=KEY, base_url=emu.assets_url, http_client=http)
        return [client.upload_file(PNG, "image/png") for _ in range(count)]


def refuse_deletes_of(emu: NVCFEmulator, asset_id: str) -> None:
    """Every attempt to delete ``asset_id`` gets 429 (Retry-After 0: retries cost no time)."""
    emu.inject("429", times=100, method="DELETE", path_prefix=f"/v2/nvcf/assets/{asset_id}", retry_after=0)


def test_delete_many_deletes_every_id_and_counts_404_as_deleted(emu: NVCFEmulator) -> None:
    ids = upload(emu, 5)
    with httpx.Client(transport=emu.transport) as http:
        report = AssetClient(api_key=KEY, base_url=emu.assets_url, http_client=http).delete_many([*ids, GHOST, ids[0]])
    assert [o.asset_id for o in report.outcomes] == [*ids, GHOST]  # input order, duplicates once
    assert report.deleted == tuple(ids) and report.not_found == (GHOST,) and report.failed == ()
    report.raise_for_failures()
    assert emu.assets(KEY) == []


def test_one_failing_delete_does_not_stop_the_others(emu: NVCFEmulator) -> None:
    ids = upload(emu, 6)
    refuse_deletes_of(emu, ids[2])
    with httpx.Client(transport=emu.transport) as http:
        report = AssetClient(api_key=KEY, base_url=emu.assets_url, http_client=http).delete_many(ids)
    assert report.failed == (ids[2],)
    assert set(report.deleted) == set(ids) - {ids[2]}
    assert [a.asset_id for a in emu.assets(KEY)] == [ids[2]]
    with pytest.raises(CleanupError) as err:
        report.raise_for_failures()
    assert err.value.code == "cleanup_failed" and err.value.asset_ids == (ids[2],)
    assert ids[2] in err.value.message and "429" in err.value.message and "1 of 6" in err.value.message
    assert "nvmedia assets delete" in err.value.hint


def test_an_id_that_is_not_a_uuid_fails_alone(emu: NVCFEmulator) -> None:
    (real,) = upload(emu, 1)
    with httpx.Client(transport=emu.transport) as http:
        report = AssetClient(api_key=KEY, base_url=emu.assets_url, http_client=http).delete_many(["nope", real])
    assert report.deleted == (real,) and report.failed == ("nope",)
    assert "not an asset id" in report.outcomes[0].reason


def test_deletes_run_concurrently_up_to_the_bound(emu: NVCFEmulator) -> None:
    ids = upload(emu, 8)
    all_four = threading.Barrier(4, timeout=60)  # passes only when 4 deletes are in flight together
    in_flight, peak, lock = [0], [0], threading.Lock()

    def arrived(request: httpx.Request) -> None:
        if request.method == "DELETE":
            with lock:
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
            all_four.wait()

    def answered(response: httpx.Response) -> None:
        if response.request.method == "DELETE":
            with lock:
                in_flight[0] -= 1

    hooks = {"request": [arrived], "response": [answered]}
    with httpx.Client(transport=emu.transport, event_hooks=hooks) as http:
        report = AssetClient(api_key=KEY, base_url=emu.assets_url, http_client=http).delete_many(ids, concurrency=4)
    assert report.deleted == tuple(ids)
    assert peak[0] == 4


async def test_async_delete_many_runs_concurrently_and_goes_on_past_a_failure(emu: NVCFEmulator) -> None:
    ids = upload(emu, 6)
    refuse_deletes_of(emu, ids[0])
    arrived_count = [0]
    three_in = anyio.Event()

    async def arrived(request: httpx.Request) -> None:
        if request.method == "DELETE" and not request.url.path.endswith(ids[0]):
            arrived_count[0] += 1
            if arrived_count[0] >= 3:
                three_in.set()
            with anyio.fail_after(60):
                await three_in.wait()  # the first three deletes meet here: they run concurrently

    async with httpx.AsyncClient(transport=emu.transport, event_hooks={"request": [arrived]}) as http:
        client = AsyncAssetClient(api_key=KEY, base_url=emu.assets_url, http_client=http)
        report = await client.delete_many([*ids, GHOST], concurrency=3)
    assert report.failed == (ids[0],) and report.not_found == (GHOST,)
    assert set(report.deleted) == set(ids[1:])
    with pytest.raises(CleanupError) as err:
        report.raise_for_failures()
    assert err.value.asset_ids == (ids[0],)


def test_a_delete_that_hangs_is_given_up_at_the_deadline() -> None:
    with NVCFEmulator() as served:
        ids = upload(served, 3)
        served.inject("slow", method="DELETE", path_prefix=f"/v2/nvcf/assets/{ids[1]}", delay_s=600, times=50)
        report = AssetClient(api_key=KEY, base_url=served.assets_url).delete_many(ids, deadline_s=1.0)
        assert report.failed == (ids[1],) and set(report.deleted) == {ids[0], ids[2]}
        assert "deadline" in report.outcomes[1].reason


async def test_async_delete_that_hangs_is_given_up_at_the_deadline() -> None:
    with NVCFEmulator() as served:
        ids = upload(served, 2)
        served.inject("slow", method="DELETE", path_prefix=f"/v2/nvcf/assets/{ids[0]}", delay_s=600, times=50)
        async with AsyncAssetClient(api_key=KEY, base_url=served.assets_url) as client:
            report = await client.delete_many(ids, deadline_s=1.0)
        assert report.failed == (ids[0],) and report.deleted == (ids[1],)
        assert "deadline" in report.outcomes[0].reason


def test_nothing_to_delete_is_an_empty_report(emu: NVCFEmulator) -> None:
    with httpx.Client(transport=emu.transport) as http:
        report = AssetClient(api_key=KEY, base_url=emu.assets_url, http_client=http).delete_many([])
    assert report == DeleteReport(()) and emu.requests == []


@pytest.mark.parametrize("options", [{"deadline_s": 0}, {"deadline_s": -1}, {"concurrency": 0}])
def test_bad_bulk_delete_options_are_config_errors(emu: NVCFEmulator, options: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        AssetClient(api_key=KEY, base_url=emu.assets_url).delete_many([GHOST], **options)  # type: ignore[arg-type]


def test_cleanup_error_is_public_and_survives_pickling() -> None:
    assert "CleanupError" in nvmedia.__all__ and nvmedia.CleanupError is CleanupError
    err = CleanupError("could not delete 1 of 2 assets: x (503)", asset_ids=["x"], hint="retry later")
    again = pickle.loads(pickle.dumps(err))
    assert isinstance(again, NVMediaError) and again.code == "cleanup_failed"
    assert (again.asset_ids, again.message, again.hint) == (("x",), err.message, "retry later")
