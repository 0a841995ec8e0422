"""Slow refusals (issue 7, item 10).

A 10-hour FLAC used to be decoded whole (30 s) before ``too_long``. Now a header
that records an exact length refuses it before anything is decoded, and media
whose header says nothing trustworthy is decoded only until it passes the limit.
Both show in the message, so the tests need no clock: "12.0 s long (by its
header's exact count...)" and "at least 5.3 s long" for a 12 s file under a 5 s
limit.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import nvmedia
from nvmedia.normalize.limits import LIMIT_TOLERANCE_S
from nvmedia.profiles import NEMOTRON_3_NANO_OMNI

LIMIT_S = 5.0
SHORT = NEMOTRON_3_NANO_OMNI.replace(max_audio_s=LIMIT_S, max_video_s=LIMIT_S)


def _prepare_one(path: Path, profile: Any = SHORT, **options: Any) -> Any:
    prep = nvmedia.prepare([path], profile=profile, dry_run=True, on_error="keep", cache=False, jobs=1, **options)
    (item,) = prep.items
    return item


def _stated_length(message: str) -> float:
    found = re.search(r"is (?:at least )?([0-9.]+) s long", message)
    assert found, message
    return float(found.group(1))


def test_ten_hour_flac_is_refused_from_its_header_without_decoding(av_files: dict[str, Path]) -> None:
    # STREAMINFO counts 10 hours; only 12 s of frames follow. Decoding would have found 12 s and called it
    # truncated: being refused as too long shows nothing was decoded.
    item = _prepare_one(av_files["flac_claims_10h"], profile=NEMOTRON_3_NANO_OMNI)
    assert item.status == "error" and item.error is not None
    assert item.error.code == "too_long", item.error.message
    assert "is 36000.0 s long (by its header's exact count, before any decoding)" in item.error.message
    assert "at most 3600 s" in item.error.message and "trim_s=3600" in item.error.hint


@pytest.mark.parametrize("name", ["flac_long", "wav_long", "mp4_long"])
def test_exact_headers_refuse_before_decoding(av_files: dict[str, Path], name: str) -> None:
    item = _prepare_one(av_files[name])
    assert item.status == "error" and item.error is not None and item.error.code == "too_long"
    assert "by its header's exact count" in item.error.message
    assert _stated_length(item.error.message) > 5.9


@pytest.mark.parametrize("name", ["mp3_long_no_xing", "flac_no_total", "mkv_long"])
def test_media_without_an_exact_length_is_decoded_only_past_the_limit(av_files: dict[str, Path], name: str) -> None:
    # 12 s (6 s for the MKV) of media under a 5 s limit: decoding stops just past 5.25 s.
    item = _prepare_one(av_files[name])
    assert item.status == "error" and item.error is not None and item.error.code == "too_long"
    assert "at least" in item.error.message and "reading stopped there" in item.error.message
    assert LIMIT_S + LIMIT_TOLERANCE_S < _stated_length(item.error.message) < LIMIT_S + 1.0


def test_streamed_wav_is_decoded_only_past_the_limit(av_files: dict[str, Path]) -> None:
    # Its header sizes are 0xFFFFFFFF: no length to trust. 3 s of audio under a 1 s limit.
    item = _prepare_one(av_files["wav_streamed"], profile=NEMOTRON_3_NANO_OMNI.replace(max_audio_s=1.0))
    assert item.status == "error" and item.error is not None and item.error.code == "too_long"
    assert 2.0 > _stated_length(item.error.message) > 1.25


@pytest.mark.parametrize("name", ["flac_claims_10h", "mp3_long_no_xing", "mkv_long"])
def test_trim_still_cuts_long_media_it_did_not_read_to_the_end(
    av_files: dict[str, Path], name: str, tmp_path: Path
) -> None:
    item = _prepare_one(av_files[name], trim_s=4.0, keep=tmp_path)
    assert item.status == "ok", item.error
    assert item.actions[0] == "trim:4"
    assert item.output is not None and item.output.duration_s == pytest.approx(4.0, abs=0.1)


def test_split_still_reads_the_whole_file(av_files: dict[str, Path]) -> None:
    prep = nvmedia.prepare(
        [av_files["mp3_long_no_xing"]], profile=SHORT, split_long_audio=True, dry_run=True, cache=False, jobs=1
    )
    spans = [item.piece[2:] for item in prep.items]
    assert len(spans) >= 3 and spans[0][0] == 0.0
    assert spans[-1][1] == pytest.approx(12.0, abs=0.2)
    assert all(end - start <= LIMIT_S + LIMIT_TOLERANCE_S for start, end in spans)


def test_media_within_the_limit_is_still_decoded_whole(av_files: dict[str, Path]) -> None:
    item = _prepare_one(av_files["mp3_5s"], profile=NEMOTRON_3_NANO_OMNI.replace(max_audio_s=10.0))
    assert item.status == "ok", item.error
    assert item.output is not None and item.output.duration_s == pytest.approx(5.0, abs=0.1)
