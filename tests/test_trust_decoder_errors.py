"""Decoder errors are failures (issue 7, item 3).

libav's decoders conceal damage and carry on: an H.264 frame with noise in it
decodes with "error while decoding MB", a damaged AAC frame is dropped, an MP3
cut inside a frame is padded ("invalid new backstep"); the decode calls succeed.
Validation watches the decoders' log (on the validating thread, see
nvmedia/avlog.py) and their corrupt-frame flags. The damaged files come from
fixtures/make_broken.py, which checks that the ffmpeg CLI's decoder complains.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import av
import av.logging
import pytest
from make_broken import decoder_complaints, make_broken
from support import sha256_file

import nvmedia
from nvmedia.errors import NVMediaError
from nvmedia.probe import probe
from nvmedia.sniff import sniff_path
from nvmedia.validate import validate_av

DAMAGED = {
    "h264_keyframe_damaged": ("video decoder (h264)", "error while decoding MB"),
    "h264_first_gop_damaged": ("video decoder (h264)", "error while decoding MB"),
    "h264_last_gop_damaged": ("video decoder (h264)", "error while decoding MB"),
    "h264_single_gop_damaged": ("video decoder (h264)", "error while decoding MB"),
    "aac_damaged_in_mp4": ("audio decoder (aac)", ""),
    "mp3_cut_mid_frame": ("audio decoder (mp3float)", "invalid new backstep"),
}


@pytest.fixture(scope="session")
def broken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_broken(tmp_path_factory.getbasetemp() / "broken")


def _prepare(paths: list[Path], **options: Any) -> list[Any]:
    """prepare() in this process (worker threads), as a library user calls it."""
    options.setdefault("jobs", 1)
    prep = nvmedia.prepare(paths, dry_run=True, on_error="keep", cache=False, **options)
    return list(prep.items)


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_media_the_decoder_complains_about_is_corrupt_media_with_its_message(
    broken: dict[str, Path], name: str, capfd: pytest.CaptureFixture[str]
) -> None:
    source = broken[name]
    decoder, message = DAMAGED[name]
    assert message in decoder_complaints(source)  # the ffmpeg CLI sees the damage too
    before = sha256_file(source)
    (item,) = _prepare([source])
    assert item.status == "error", f"{name}: reported {item.status}, actions {item.actions}"
    assert item.error is not None and item.error.code == "corrupt_media"
    assert f"{source.name}: the {decoder} reports" in item.error.message
    assert message in item.error.message
    assert item.error.hint
    assert sha256_file(source) == before
    assert capfd.readouterr() == ("", "")  # the decoder's log goes into the message, nowhere else


@pytest.mark.parametrize("name", ["h264_aac_two_gops", "h264_single_gop", "mp3_no_xing_5s"])
def test_the_undamaged_sources_of_those_files_are_ok(broken: dict[str, Path], name: str) -> None:
    assert decoder_complaints(broken[name]) == ""
    (item,) = _prepare([broken[name]])
    assert item.status == "ok", item.error


def test_open_gop_h264_with_b_frames_is_not_mistaken_for_damage(av_files: dict[str, Path]) -> None:
    # After the seek to the last GOP, its leading B-frames reference the GOP before: the decoder logs
    # "mmco: unref short failure" for them and drops them. That is no damage.
    source = av_files["mp4_h264_open_gop"]
    assert decoder_complaints(source) == ""
    (item,) = _prepare([source], profile="generic")
    assert item.status == "ok", item.error


def test_the_same_fault_in_two_files_in_a_row_is_reported_for_both(broken: dict[str, Path], tmp_path: Path) -> None:
    # PyAV holds back a message identical to the previous one (process-wide): the second file would pass.
    first = shutil.copy(broken["mp3_cut_mid_frame"], tmp_path / "first.mp3")
    second = shutil.copy(broken["mp3_cut_mid_frame"], tmp_path / "second.mp3")
    items = _prepare([Path(first), Path(second)])
    assert [(it.status, it.error and it.error.code) for it in items] == [("error", "corrupt_media")] * 2
    assert all("invalid new backstep" in it.error.message for it in items)


def test_concurrent_validations_each_get_their_own_decoders_messages(broken: dict[str, Path]) -> None:
    names = [*sorted(DAMAGED), "h264_aac_two_gops", "mp3_no_xing_5s"]
    assert len(names) % 4 == 0
    together = threading.Barrier(4, timeout=120)  # the timeout only turns a bug into a failure, never a pass

    def validate(name: str) -> str:
        source = broken[name]
        sniffed = sniff_path(source)
        info = probe(source, sniffed)
        together.wait()  # four validations decode at once, whatever the scheduler does
        try:
            validate_av(source, sniffed, info)
        except NVMediaError as exc:
            return exc.message
        return "ok"

    with ThreadPoolExecutor(4) as pool:
        verdicts = dict(zip(names, pool.map(validate, names), strict=True))
    for name, verdict in verdicts.items():
        if name in DAMAGED:
            decoder, message = DAMAGED[name]
            assert verdict.startswith(f"{broken[name].name}: the {decoder} reports") and message in verdict
        else:
            assert verdict == "ok", (name, verdict)


def test_damaged_files_fail_alike_in_forked_workers(broken: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in [*DAMAGED, "h264_aac_two_gops"]:
        shutil.copy(broken[name], folder / broken[name].name)
    manifest = tmp_path / "m.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "nvmedia", "prepare", str(folder), "--dry-run", "-j", "2", "-o", str(manifest)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    records = {
        Path(r["source"]).name: r for r in map(json.loads, manifest.read_text().splitlines()) if r["type"] == "item"
    }
    for name, (decoder, message) in DAMAGED.items():
        record = records[broken[name].name]
        assert record["status"] == "error" and record["error"]["code"] == "corrupt_media", record
        assert decoder in record["error"]["message"] and message in record["error"]["message"]
    assert records["h264_aac_two_gops.mp4"]["status"] == "ok"


def test_pyav_logging_is_left_as_it_was_found(broken: dict[str, Path]) -> None:
    level, skip = av.logging.get_level(), av.logging.get_skip_repeated()
    _prepare([broken["h264_keyframe_damaged"], broken["mp3_cut_mid_frame"]])
    assert (av.logging.get_level(), av.logging.get_skip_repeated()) == (level, skip)


def test_an_application_that_logs_pyav_still_gets_the_decoders_messages(
    broken: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    av.logging.set_level(av.logging.WARNING)
    try:
        with caplog.at_level(logging.WARNING, logger="libav"):
            (item,) = _prepare([broken["mp3_cut_mid_frame"]])
        assert av.logging.get_level() == av.logging.WARNING
    finally:
        av.logging.set_level(None)
    assert item.status == "error"
    assert any("invalid new backstep" in r.getMessage() and r.name == "libav.mp3float" for r in caplog.records)
