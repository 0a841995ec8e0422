"""AssetClient against the emulator: in-process through its transport, and over loopback where the wire matters."""

from __future__ import annotations

import hashlib
import logging
import traceback
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from support import CORPUS

from nvmedia.assets import (
    DEFAULT_ASSETS_URL,
    AssetClient,
    CreatedAsset,
    UploadURLExpired,
    parse_retry_after,
    redact_url,
)
from nvmedia.errors import AssetAPIError, AuthError, ConfigError, InputError, NVMediaError, UploadError
from nvmedia.testing import NVCFEmulator

KEY = "nvapi-ASSET-CLIENT-SECRET-KEY-42"
PNG = CORPUS / "pillow__hopper.png"
WAV = CORPUS / "pydub__test4.wav"


@pytest.fixture
def emu(emu_in_process: NVCFEmulator) -> NVCFEmulator:
    return emu_in_process


@pytest.fixture
def served() -> Iterator[NVCFEmulator]:
    """The emulator over loopback HTTP: for what needs a real wire (timeouts, framing, the environment)."""
    with NVCFEmulator() as emulator:
        yield emulator


@pytest.fixture
def client(emu: NVCFEmulator) -> Iterator[AssetClient]:
    with AssetClient(api_key=KEY, base_url=emu.assets_url, transport=emu.transport, max_retry_wait_s=5) as c:
        yield c


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def puts(emu: NVCFEmulator) -> list[int | None]:
    return [r.status for r in emu.requests if r.method == "PUT"]


def signature_of(created: CreatedAsset) -> str:
    return dict(parse_qsl(urlsplit(created.upload_url).query))["X-Amz-Signature"]


# -- happy paths ------------------------------------------------------------------------------------


def test_upload_file_stores_the_exact_bytes(emu: NVCFEmulator, client: AssetClient) -> None:
    asset_id = client.upload_file(WAV, "audio/wav", description="a test recording")
    stored = emu.asset(asset_id)
    assert stored is not None and stored.sha256 == sha256(WAV)
    assert (stored.content_type, stored.description) == ("audio/wav", "a test recording")


def test_create_upload_get_list_delete(emu: NVCFEmulator, client: AssetClient) -> None:
    created = client.create("image/png", "hopper")
    assert (created.content_type, created.description) == ("image/png", "hopper")
    client.upload(created, PNG)
    info = client.get(created.asset_id)
    assert info is not None and (info.asset_id, info.content_type, info.description) == (
        created.asset_id,
        "image/png",
        "hopper",
    )
    assert client.list() == [created.asset_id]
    assert client.delete(created.asset_id) is True
    assert client.list() == []
    assert emu.counts["delete"] == 1


def test_deleting_an_asset_already_gone_counts_as_done(client: AssetClient) -> None:
    asset_id = client.upload_file(PNG, "image/png")
    assert client.delete(asset_id) is True
    assert client.delete(asset_id) is False


def test_get_of_an_unknown_asset_is_none(client: AssetClient) -> None:
    assert client.get("b5b841c3-11c2-4c34-b057-9475e82c5369") is None


def test_upload_sends_an_explicit_length_and_no_chunking_or_authorization(served: NVCFEmulator) -> None:
    with AssetClient(api_key=KEY, base_url=served.assets_url) as over_the_wire:
        over_the_wire.upload_file(WAV, "audio/wav")
    (put,) = [r for r in served.requests if r.method == "PUT"]
    assert put.headers["content-length"] == str(WAV.stat().st_size)
    assert "transfer-encoding" not in put.headers
    assert "authorization" not in put.headers
    assert put.headers["content-type"] == "audio/wav"


def test_progress_reports_bytes_sent_up_to_the_file_size(client: AssetClient) -> None:
    seen: list[int] = []
    client.upload_file(WAV, "audio/wav", progress=seen.append)
    assert seen[0] == 0 and seen[-1] == WAV.stat().st_size
    assert seen == sorted(seen)


def test_an_empty_file_uploads_with_length_zero(emu: NVCFEmulator, client: AssetClient, tmp_path: Path) -> None:
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    asset_id = client.upload_file(empty, "application/octet-stream")
    assert emu.asset(asset_id).size == 0  # type: ignore[union-attr]


def test_non_ascii_description_is_made_safe_for_the_upload_header(emu: NVCFEmulator, client: AssetClient) -> None:
    asset_id = client.upload_file(PNG, "image/png", description="café ☕ photo")
    assert emu.asset(asset_id).description == "caf_ _ photo"  # type: ignore[union-attr]


def test_threads_can_share_one_client(emu: NVCFEmulator, client: AssetClient, tmp_path: Path) -> None:
    files = []
    for i in range(8):
        path = tmp_path / f"f{i}.wav"
        path.write_bytes(WAV.read_bytes() + bytes([i]))
        files.append(path)
    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda p: client.upload_file(p, "audio/wav"), files))
    assert len(set(ids)) == 8
    assert [emu.asset(i).sha256 for i in ids] == [sha256(p) for p in files]  # type: ignore[union-attr]


def test_upload_memory_stays_flat_for_a_large_file(emu: NVCFEmulator, client: AssetClient, tmp_path: Path) -> None:
    big = tmp_path / "big.mp4"
    with big.open("wb") as fh:
        fh.truncate(64 * 1024 * 1024)
    tracemalloc.start()
    try:
        asset_id = client.upload_file(big, "video/mp4")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert emu.asset(asset_id).size == big.stat().st_size  # type: ignore[union-attr]
    assert peak < 16 * 1024 * 1024, f"peak Python memory {peak / 2**20:.1f} MiB for a 64 MiB upload"


def test_key_and_url_come_from_the_environment(served: NVCFEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NVIDIA_API_KEY", KEY)
    monkeypatch.setenv("NVMEDIA_ASSETS_URL", served.assets_url + "/")
    with AssetClient() as c:
        assert c.base_url == served.assets_url
        assert c.list() == []
    monkeypatch.delenv("NVMEDIA_ASSETS_URL")
    with AssetClient() as c:
        assert c.base_url == DEFAULT_ASSETS_URL


# -- retries ----------------------------------------------------------------------------------------


def test_429_is_retried_after_the_retry_after_wait(
    emu: NVCFEmulator, client: AssetClient, caplog: pytest.LogCaptureFixture
) -> None:
    emu.inject("429", times=2, retry_after=0.1)
    with caplog.at_level(logging.INFO, logger="nvmedia.assets"):
        assert client.list() == []
    assert [r.status for r in emu.requests] == [429, 429, 200]
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2 and all("429 Too Many Requests" in m and "retrying in 0.10 s" in m for m in retries)


def test_a_long_retry_after_is_capped_by_max_retry_wait(emu: NVCFEmulator, caplog: pytest.LogCaptureFixture) -> None:
    emu.inject("429", retry_after=3600)
    with AssetClient(api_key=KEY, base_url=emu.assets_url, transport=emu.transport, max_retry_wait_s=0.2) as c:
        with caplog.at_level(logging.INFO, logger="nvmedia.assets"):
            assert c.list() == []
    assert any("retrying in 0.20 s" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("3", 3.0), ("0.5", 0.5), ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0), ("", None), ("soon", None), ("-4", 0.0)],
)
def test_retry_after_reads_seconds_and_http_dates(value: str, seconds: float | None) -> None:
    now = 1445412480.0  # 2015-10-21 07:28:00 UTC
    assert parse_retry_after(value, now=now) == seconds


@pytest.mark.parametrize("status", ["500", "503"])
def test_server_errors_are_retried(emu: NVCFEmulator, client: AssetClient, status: str) -> None:
    emu.inject(status, times=2)
    asset_id = client.upload_file(PNG, "image/png")
    assert emu.asset(asset_id) is not None
    assert [r.status for r in emu.requests][:3] == [int(status), int(status), 200]


def test_server_errors_on_the_upload_are_retried(emu: NVCFEmulator, client: AssetClient) -> None:
    emu.inject("503", path_prefix="/s3/")
    asset_id = client.upload_file(WAV, "audio/wav")
    assert puts(emu) == [503, 200]
    assert emu.asset(asset_id).sha256 == sha256(WAV)  # type: ignore[union-attr]


def test_persistent_server_errors_end_in_asset_api_error_with_the_status(emu: NVCFEmulator) -> None:
    emu.inject("503", times=10)
    with (
        AssetClient(api_key=KEY, base_url=emu.assets_url, transport=emu.transport, max_attempts=3) as c,
        pytest.raises(AssetAPIError) as err,
    ):
        c.list()
    assert err.value.code == "asset_api_error" and err.value.status_code == 503
    assert "after 3 attempts" in err.value.message and err.value.hint
    assert len(emu.requests) == 3


def test_dropped_connection_on_the_api_is_retried(emu: NVCFEmulator, client: AssetClient) -> None:
    emu.inject("drop", path_prefix="/v2/")
    asset_id = client.upload_file(PNG, "image/png")
    assert [r.status for r in emu.requests][:2] == [None, 200]
    assert client.list() == [asset_id]


def test_connection_dropped_mid_upload_is_retried_from_the_start_of_the_file(
    emu: NVCFEmulator, client: AssetClient
) -> None:
    emu.inject("drop", path_prefix="/s3/")
    seen: list[int] = []
    asset_id = client.upload_file(WAV, "audio/wav", progress=seen.append)
    assert puts(emu) == [None, 200]
    assert seen.count(0) == 2
    assert emu.asset(asset_id).sha256 == sha256(WAV)  # type: ignore[union-attr]


def test_slow_answer_hits_the_client_timeout_and_is_retried(
    served: NVCFEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    served.inject("slow", delay_s=3.0, method="GET")
    with AssetClient(api_key=KEY, base_url=served.assets_url, timeout=0.3) as c:
        with caplog.at_level(logging.INFO, logger="nvmedia.assets"):
            assert c.list() == []
    assert any("ReadTimeout" in r.getMessage() for r in caplog.records)


def test_an_api_that_never_answers_in_time_is_a_clear_timeout_error(served: NVCFEmulator) -> None:
    served.inject("slow", times=5, delay_s=3.0)
    with AssetClient(api_key=KEY, base_url=served.assets_url, timeout=0.2, max_attempts=2) as c:
        with pytest.raises(AssetAPIError) as err:
            c.list()
    assert err.value.status_code is None
    assert "0.2 s timeout" in err.value.message and "after 2 attempts" in err.value.message


def test_an_unreachable_api_is_asset_api_error_without_status(refused_port: int) -> None:
    url = f"http://127.0.0.1:{refused_port}/v2/nvcf/assets"
    with AssetClient(api_key=KEY, base_url=url, max_attempts=2, max_retry_wait_s=0) as c:
        with pytest.raises(AssetAPIError) as err:
            c.list()
    assert err.value.status_code is None and "ConnectError" in err.value.message


def test_other_client_errors_are_not_retried(emu: NVCFEmulator) -> None:
    with (
        AssetClient(api_key=KEY, base_url=emu.base_url + "/v1/chat/completions", transport=emu.transport) as c,
        pytest.raises(AssetAPIError) as err,
    ):
        c.list()
    assert err.value.status_code == 405 and err.value.code == "asset_api_error"
    assert len(emu.requests) == 1


# -- keys and URLs -----------------------------------------------------------------------------------


def test_a_refused_key_is_auth_failed_and_not_retried() -> None:
    with NVCFEmulator(api_keys={"the-right-key"}) as emu, AssetClient(api_key=KEY, base_url=emu.assets_url) as c:
        with pytest.raises(AuthError) as err:
            c.create("image/png")
        assert len(emu.requests) == 1
    assert err.value.code == "auth_failed" and err.value.status_code == 401
    assert "NVIDIA_API_KEY" in err.value.hint


def test_no_key_at_all_is_auth_failed_with_a_hint(emu: NVCFEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NVIDIA_API_KEY", raising=False)
    with AssetClient(base_url=emu.assets_url, transport=emu.transport) as c, pytest.raises(AuthError) as err:
        c.upload_file(PNG, "image/png")
    assert err.value.code == "auth_failed"
    assert err.value.hint == "set NVIDIA_API_KEY or pass api_key"
    assert emu.requests == []


def test_a_base_url_that_is_not_http_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        AssetClient(api_key=KEY, base_url="ftp://example.com/assets")


def test_a_content_type_with_parameters_is_refused_before_any_request(emu: NVCFEmulator, client: AssetClient) -> None:
    with pytest.raises(AssetAPIError, match="no parameters"):
        client.create("video/mp4; codecs=avc1")
    assert emu.requests == []


def test_an_asset_id_that_is_not_a_uuid_is_refused_before_any_request(emu: NVCFEmulator, client: AssetClient) -> None:
    with pytest.raises(AssetAPIError, match="not an asset id"):
        client.delete("../../v1/chat/completions")
    assert emu.requests == []


# -- upload failures ----------------------------------------------------------------------------------


def test_expired_upload_url_gets_a_fresh_asset(emu: NVCFEmulator, client: AssetClient) -> None:
    emu.inject("expire")
    asset_id = client.upload_file(PNG, "image/png")
    assert emu.create_count == 2 and puts(emu) == [403, 200]
    assert [a.asset_id for a in emu.assets()] == [asset_id]  # the dead asset was deleted
    assert emu.asset(asset_id).sha256 == sha256(PNG)  # type: ignore[union-attr]


def test_upload_to_an_expired_url_raises_upload_url_expired(emu: NVCFEmulator, client: AssetClient) -> None:
    created = client.create("image/png")
    emu.expire_urls()
    with pytest.raises(UploadURLExpired) as err:
        client.upload(created, PNG)
    assert err.value.code == "upload_failed" and err.value.status_code == 403
    assert puts(emu) == [403]


def test_urls_that_always_expire_stop_after_a_bounded_number_of_fresh_assets() -> None:
    with NVCFEmulator(url_ttl_s=0) as emu, AssetClient(api_key=KEY, base_url=emu.assets_url) as c:
        with pytest.raises(UploadError) as err:
            c.upload_file(PNG, "image/png")
        assert emu.create_count == 3 and puts(emu) == [403, 403, 403]
        assert emu.assets() == []
    assert err.value.code == "upload_failed" and "3 times" in err.value.message


def test_signature_mismatch_is_upload_failed_at_once_without_retries(emu: NVCFEmulator, client: AssetClient) -> None:
    created = client.create("image/png")
    wrong = replace(created, content_type="image/jpeg")
    with pytest.raises(UploadError) as err:
        client.upload(wrong, PNG)
    assert err.value.code == "upload_failed" and err.value.status_code == 403
    assert "SignatureDoesNotMatch" in err.value.message
    assert not isinstance(err.value, UploadURLExpired)
    assert puts(emu) == [403]


def test_a_missing_file_is_not_found_and_leaves_no_empty_asset(
    emu: NVCFEmulator, client: AssetClient, tmp_path: Path
) -> None:
    with pytest.raises(InputError) as err:
        client.upload_file(tmp_path / "gone.png", "image/png")
    assert err.value.code == "not_found"
    assert emu.create_count == 1 and emu.assets() == []


# -- secrets ------------------------------------------------------------------------------------------


def test_redact_url_drops_query_fragment_and_credentials() -> None:
    url = "https://user:pw@bucket.example.com/a/b?X-Amz-Signature=abc&X-Amz-Date=1#frag"
    assert redact_url(url) == "https://bucket.example.com/a/b?REDACTED"
    assert redact_url("http://h/p") == "http://h/p"
    assert redact_url("http://h?X-Amz-Signature=abc") == "http://h?REDACTED"


def test_repr_of_client_and_created_asset_hide_secrets(client: AssetClient) -> None:
    created = client.create("image/png")
    assert repr(client) == f"AssetClient(base_url={client.base_url!r}, api_key=***)"
    assert signature_of(created) not in repr(created) and "?REDACTED" in repr(created)
    assert KEY not in repr(client)


def test_no_secret_reaches_errors_reprs_or_logs(emu: NVCFEmulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    failures: list[NVMediaError] = []

    def expect_failure(action: Callable[[], object]) -> None:
        with pytest.raises(NVMediaError) as err:
            action()
        failures.append(err.value)
        emu.clear_faults()

    with AssetClient(api_key=KEY, base_url=emu.assets_url, transport=emu.transport, max_attempts=2) as c:
        created = [c.create("image/png") for _ in range(4)]
        expect_failure(lambda: c.upload(replace(created[0], description="tampered"), PNG))
        emu.inject("503", times=5, path_prefix="/s3/")
        expect_failure(lambda: c.upload(created[1], PNG))
        emu.inject("drop", times=5, path_prefix="/s3/")
        expect_failure(lambda: c.upload(created[2], PNG))
        emu.expire_urls()
        expect_failure(lambda: c.upload(created[3], PNG))
        emu.inject("500", times=5)
        expect_failure(c.list)
        seen = [repr(c)] + [repr(x) for x in created]
    with NVCFEmulator(api_keys={"other"}) as strict, AssetClient(api_key=KEY, base_url=strict.assets_url) as c:
        expect_failure(c.list)
    for failure in failures:
        seen += [repr(failure), failure.message, failure.hint, "".join(traceback.format_exception(failure))]
    seen += [caplog.text] + [str(r.args) for r in caplog.records]
    everything = "\n".join(seen)
    assert [f.code for f in failures] == ["upload_failed"] * 4 + ["asset_api_error", "auth_failed"]
    assert "SignatureDoesNotMatch" in everything and "expired" in everything and "503" in everything
    assert KEY not in everything
    for signature in map(signature_of, created):
        assert signature not in everything
    assert "X-Amz-Signature" not in everything
