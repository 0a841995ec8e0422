"""The library API and the delivery half of the pipeline, against the real emulator over loopback."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import shutil
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI
from support import CORPUS

import nvmedia
from nvmedia.cli import main
from nvmedia.testing import NVCFEmulator

KEY = "nvapi-test-key-0123456789-DO-NOT-LEAK"
SMALL = CORPUS / "pillow__hopper.webp"  # inline
LARGE = CORPUS / "pydub__test1-24bit.wav"  # 2.65 MB WAV: sent as it is (its bext chunk cut out), too big to inline


@pytest.fixture()
def emu() -> Iterator[NVCFEmulator]:
    with NVCFEmulator() as emulator:
        yield emulator


def _prepare(emu: NVCFEmulator, sources: list[object], **options: object) -> nvmedia.Prepared:
    options.setdefault("cache", False)
    return nvmedia.prepare(sources, assets_url=emu.assets_url, api_key=KEY, **options)  # type: ignore[arg-type]


def test_small_items_go_inline_and_large_ones_are_uploaded(emu: NVCFEmulator) -> None:
    with _prepare(emu, [SMALL, LARGE]) as prep:
        image, audio = prep.content
        assert image["type"] == "image_url" and image["image_url"]["url"].startswith("data:image/webp;base64,")
        assert audio == {"type": "audio_url", "audio_url": {"url": f"data:audio/wav;asset_id,{prep.asset_ids[0]}"}}
        assert prep.headers == {"NVCF-INPUT-ASSET-REFERENCES": prep.asset_ids[0]}
        stored = emu.asset(prep.asset_ids[0])
        assert stored is not None and stored.content_type == "audio/wav"
        assert stored.sha256 == prep.items[1].output.sha256 != hashlib.sha256(LARGE.read_bytes()).hexdigest()
        assert prep.tags.startswith('<img src="data:image/webp;base64,') and prep.tags.endswith(" />")


def test_leaving_the_block_deletes_the_uploaded_assets(emu: NVCFEmulator) -> None:
    with _prepare(emu, [LARGE]) as prep:
        assert len(emu.assets(KEY)) == 1 and prep.asset_ids
    assert emu.assets(KEY) == []
    with pytest.raises(nvmedia.ConfigError, match="after its block ended"):
        _ = prep.asset_ids  # never stale


def test_openai_sdk_request_built_from_prepare_is_accepted(emu: NVCFEmulator) -> None:
    client = OpenAI(base_url=emu.base_url + "/v1", api_key=KEY)
    with _prepare(emu, [SMALL, LARGE]) as prep:
        reply = client.chat.completions.create(
            model="nvidia/nemotron-3-nano-omni",
            messages=[{"role": "system", "content": "/no_think"}, prep.message("Describe these.")],  # type: ignore[list-item]
            extra_headers=prep.headers,
        )
    assert reply.choices[0].message.content
    assert emu.chat_count == 1


def test_tag_string_form_is_accepted_too(emu: NVCFEmulator) -> None:
    client = OpenAI(base_url=emu.base_url + "/v1", api_key=KEY)
    with _prepare(emu, [SMALL, LARGE]) as prep:
        client.chat.completions.create(
            model="nvidia/nemotron-3-nano-omni",
            messages=[{"role": "user", "content": f"Describe these. {prep.tags}"}],
            extra_headers=prep.headers,
        )
    assert emu.chat_count == 1


def test_bytes_and_binary_file_objects_are_accepted(emu: NVCFEmulator) -> None:
    with _prepare(emu, [SMALL.read_bytes(), io.BytesIO(CORPUS.joinpath("pillow__hopper.bmp").read_bytes())]) as prep:
        assert [it.status for it in prep.items] == ["ok", "ok"]
        assert prep.items[1].output is not None and prep.items[1].output.mime == "image/png"


def test_aprepare_gives_the_same_result(emu: NVCFEmulator) -> None:
    async def go() -> nvmedia.Prepared:
        return await nvmedia.aprepare([SMALL], assets_url=emu.assets_url, api_key=KEY, cache=False)

    prep = asyncio.run(go())
    with prep:
        assert prep.content == _prepare(emu, [SMALL]).content


def test_failed_input_raises_its_error_with_the_manifest_code(emu: NVCFEmulator) -> None:
    with pytest.raises(nvmedia.MediaError) as err:
        _prepare(emu, [SMALL, CORPUS / "pillow__truncated_jpeg.jpg"])
    assert err.value.code == "corrupt_media"


def test_on_error_keep_returns_failed_items(emu: NVCFEmulator) -> None:
    prep = _prepare(emu, [SMALL, CORPUS / "pillow__truncated_jpeg.jpg"], on_error="keep")
    assert [it.status for it in prep.items] == ["ok", "error"]
    assert len(prep.content) == 1


def test_warm_cache_reuses_the_upload(emu: NVCFEmulator, tmp_path: Path) -> None:
    first = _prepare(emu, [LARGE], cache=True, cache_dir=tmp_path)
    first.close()
    second = _prepare(emu, [LARGE], cache=True, cache_dir=tmp_path)
    second.close()
    assert second.asset_ids == first.asset_ids
    assert emu.upload_count == 1


def test_cached_id_the_service_forgot_is_uploaded_again(emu: NVCFEmulator, tmp_path: Path) -> None:
    first = _prepare(emu, [LARGE], cache=True, cache_dir=tmp_path)
    first.close()
    with nvmedia.AssetClient(api_key=KEY, base_url=emu.assets_url) as client:
        client.delete(first.asset_ids[0])
    second = _prepare(emu, [LARGE], cache=True, cache_dir=tmp_path)
    second.close()
    assert second.asset_ids != first.asset_ids
    assert emu.upload_count == 2


def test_request_limit_promotes_the_largest_inline_item(emu: NVCFEmulator) -> None:
    small, bigger = CORPUS / "pillow__hopper.webp", CORPUS / "pillow__flower.webp"
    with _prepare(emu, [small, bigger], request_limit=20_000) as prep:
        deliveries = [it.delivery for it in prep.items]
        assert deliveries == ["inline", "asset"]
        assert "request-limit" in prep.items[1].warnings[0]


def test_upload_survives_a_transient_server_error(emu: NVCFEmulator) -> None:
    emu.inject("503", times=1, path_prefix="/v2/nvcf/assets", method="POST", retry_after=None)
    with _prepare(emu, [LARGE]) as prep:
        assert len(prep.asset_ids) == 1


def test_rewrite_messages_replaces_local_paths(emu: NVCFEmulator, tmp_path: Path) -> None:
    photo = tmp_path / "cat.bmp"
    shutil.copy(CORPUS / "pillow__hopper.bmp", photo)
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": str(photo)}}],
        },
        {"role": "user", "content": f'and <audio src="{LARGE}" /> too'},
    ]
    new, headers = nvmedia.rewrite_messages(messages, assets_url=emu.assets_url, api_key=KEY, cache=False)
    assert messages[0]["content"][1]["image_url"]["url"] == str(photo)  # the input is not modified
    assert new[0]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    asset_id = headers["NVCF-INPUT-ASSET-REFERENCES"]
    assert new[1]["content"] == f'and <audio src="data:audio/wav;asset_id,{asset_id}" /> too'


def test_inspect_reports_without_writing_or_sending() -> None:
    item = nvmedia.inspect(CORPUS / "pillow__hopper_orientation_6.jpg")
    assert item.status == "ok" and "exif-transpose" in item.actions and item.delivery == "inline"
    assert item.part is not None  # inline parts are cheap to show; nothing was uploaded


def _manifest(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_eleven_large_files_in_group_all_are_planned_as_two_requests_not_refused(tmp_path: Path) -> None:
    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(11):
        shutil.copy(LARGE, folder / f"take{i:02}.wav")
    out = tmp_path / "m.jsonl"
    assert main(["prepare", str(folder), "--group", "all", "--dry-run", "-o", str(out)]) == 0
    records = _manifest(out)
    assert [r["type"] for r in records] == ["item"] * 10 + ["request", "item", "request"]
    assert {r["status"] for r in records if r["type"] == "item"} == {"ok"}


def test_group_dir_writes_request_records_after_each_group(emu: NVCFEmulator, tmp_path: Path) -> None:
    for sub in ("a", "b"):
        (tmp_path / "in" / sub).mkdir(parents=True)
        shutil.copy(SMALL, tmp_path / "in" / sub / "x.webp")
        shutil.copy(LARGE, tmp_path / "in" / sub / "y.wav")
    out = tmp_path / "m.jsonl"
    args = ["prepare", str(tmp_path / "in"), "--group", "dir", "-o", str(out), "--no-cache"]
    assert main([*args, "--assets-url", emu.assets_url, "--api-key", KEY]) == 0
    records = _manifest(out)
    assert [r["type"] for r in records] == ["item", "item", "request", "item", "item", "request"]
    request = records[2]
    assert [p["type"] for p in request["content"]] == ["image_url", "audio_url"]  # type: ignore[union-attr]
    assert request["headers"] == records[1]["headers"] == {"NVCF-INPUT-ASSET-REFERENCES": records[1]["asset_id"]}
    assert records[0]["headers"] == request["headers"]


def _noise_wav(path: Path, seconds: float, seed: int) -> Path:
    """A real 44.1 kHz mono 16-bit WAV of seeded noise: passes through, too big to inline past ~1.5 s."""
    import random
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(44_100)
        w.writeframes(random.Random(seed).randbytes(int(44_100 * seconds) * 2))
    return path


def test_one_file_requests_upload_in_parallel_and_come_out_in_order(tmp_path: Path) -> None:
    folder = tmp_path / "memos"
    folder.mkdir()
    for i in range(6):
        _noise_wav(folder / f"memo{i}.wav", 2.0, seed=i)
    out = tmp_path / "m.jsonl"
    # The emulator holds every upload until two are in flight at once: a client that sends one
    # file's request after another's never gets there; one that overlaps them does.
    with NVCFEmulator() as emu:
        emu.hold_uploads()
        args = ["prepare", str(folder), "--group", "file", "-j", "1", "--no-cache", "-o", str(out)]
        status: list[int] = []
        cli = threading.Thread(
            target=lambda: status.append(main([*args, "--assets-url", emu.assets_url, "--api-key", KEY]))
        )
        cli.start()
        try:
            overlapped = emu.wait_uploads_in_flight(2, timeout=120)  # a safety net: it returns at once when they do
        finally:
            emu.release_uploads()
            cli.join()
        assert overlapped and status == [0]
        assert emu.upload_count == 6
    records = _manifest(out)
    assert [Path(str(r["source"])).name for r in records] == [f"memo{i}.wav" for i in range(6)]
    assert len({r["asset_id"] for r in records}) == 6
    for r in records:
        assert r["headers"] == {"NVCF-INPUT-ASSET-REFERENCES": r["asset_id"]}


def test_identical_files_in_one_run_are_uploaded_once(emu: NVCFEmulator, tmp_path: Path) -> None:
    folder = tmp_path / "copies"
    folder.mkdir()
    for name in ("a.wav", "b.wav", "c.wav"):
        shutil.copy(LARGE, folder / name)
    out = tmp_path / "m.jsonl"
    args = ["prepare", str(folder), "--group", "file", "-j", "2", "--no-cache", "-o", str(out)]
    assert main([*args, "--assets-url", emu.assets_url, "--api-key", KEY]) == 0
    assert emu.upload_count == 1
    assert len({r["asset_id"] for r in _manifest(out)}) == 1


def test_emulate_flag_uploads_without_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NVIDIA_API_KEY", raising=False)
    out = tmp_path / "m.jsonl"
    assert main(["prepare", str(LARGE), "--emulate", "-o", str(out)]) == 0
    (record,) = _manifest(out)
    assert record["delivery"] == "asset" and record["asset_id"]
    assert record["part"] == {
        "type": "audio_url",
        "audio_url": {"url": f"data:audio/wav;asset_id,{record['asset_id']}"},
    }


def test_unreachable_asset_api_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "prepare",
            str(LARGE),
            "--assets-url",
            "http://127.0.0.1:9/v2/nvcf/assets",
            "--api-key",
            KEY,
            "--no-cache",
            "-o",
            str(tmp_path / "m.jsonl"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "unreachable" in err and err.count("\n") == 1
    assert not (tmp_path / "m.jsonl").exists()  # a failed run leaves nothing half-written


def test_no_secret_in_any_output(
    emu: NVCFEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emu.inject("503", times=1, path_prefix="/s3/", retry_after=None)
    out = tmp_path / "m.jsonl"
    assert (
        main(
            [
                "prepare",
                str(SMALL),
                str(LARGE),
                "-o",
                str(out),
                "--no-cache",
                "--assets-url",
                emu.assets_url,
                "--api-key",
                KEY,
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    everything = out.read_text() + captured.out + captured.err + caplog.text
    assert KEY not in everything
    assert "X-Amz-Signature" not in everything


def test_client_repr_never_shows_the_key() -> None:
    client = nvmedia.Client(api_key=KEY)
    assert KEY not in repr(client) and "***" in repr(client)
    client.close()


def test_processing_images_on_threads_does_not_silence_the_callers_warnings() -> None:
    # Threads that each save and restore the process's warning filters (warnings.catch_warnings)
    # can leave another thread's "ignore" in place for good. After a threaded run, the caller's
    # filters are as they were (but for the documented filter scoped to Pillow's own modules)
    # and the caller's warnings are still shown.
    images = [CORPUS / n for n in ("small__tiff.tif", "pillow__sugarshack_bad_mpo_header.jpg", "pillow__hopper.bmp")]
    before = list(warnings.filters)
    nvmedia.prepare(images * 3, dry_run=True, jobs=2, on_error="keep").close()
    added = [f for f in warnings.filters if f not in before]
    assert all(f[3] is not None and f[3].pattern.startswith("PIL") for f in added), added
    assert [f for f in before if f not in warnings.filters] == []
    with warnings.catch_warnings(record=True) as heard:  # records with the filters in force; adds none
        warnings.warn("still heard", UserWarning, stacklevel=1)
    assert [str(w.message) for w in heard] == ["still heard"]
