"""nvmedia.normalize.video: real videos in, MP4 H.264/AAC (or passthrough) out, with the real ffmpeg."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import pytest
from PIL import Image, ImageChops, ImageStat
from support import CORPUS, corpus_expectations, sha256_file

from nvmedia.errors import MediaError
from nvmedia.normalize import NormalizedMedia, NormalizeOptions, normalize
from nvmedia.probe import MediaInfo
from nvmedia.probe_av import probe_av
from nvmedia.profiles import GENERIC, NEMOTRON_3_NANO_OMNI, Profile
from nvmedia.sniff import sniff_path
from nvmedia.wire import b64_len

DEFAULT = NEMOTRON_3_NANO_OMNI


def _normalize(
    path: Path, workdir: Path, profile: Profile = DEFAULT, *, fit_chars: int | None = None, trim_s: float | None = None
) -> NormalizedMedia:
    sniffed = sniff_path(path)
    info = probe_av(path, sniffed)
    return normalize(
        path, sniffed, info, profile, NormalizeOptions(workdir=workdir, fit_chars=fit_chars, trim_s=trim_s)
    )


def _reprobe(path: Path) -> MediaInfo:
    return probe_av(path, sniff_path(path))


def _top_level_boxes(path: Path) -> list[bytes]:
    data = path.read_bytes()
    boxes, at = [], 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        boxes.append(data[at + 4 : at + 8])
        if size < 8:
            break
        at += size
    return boxes


def _first_frame(path: Path) -> Image.Image:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            image: Image.Image = frame.to_image()
            return image
    raise AssertionError(f"{path.name} has no video frame")


def _assert_mp4_output(result: NormalizedMedia, *, audio: bool) -> None:
    info = result.info
    assert info.mime == "video/mp4" == sniff_path(result.path).mime
    assert info.video_codec == "h264"
    assert info.audio_codec == ("aac" if audio else None)
    assert info.sha256 == sha256_file(result.path)
    assert info.bytes == result.path.stat().st_size
    assert info.width and info.height and info.width % 2 == 0 and info.height % 2 == 0
    again = _reprobe(result.path)
    assert (again.width, again.height, again.rotation) == (info.width, info.height, 0)
    assert info.duration_s is not None and info.duration_s > 0


def test_h264_aac_mp4_passes_through_untouched(av_files: dict[str, Path], tmp_path: Path) -> None:
    source = av_files["mp4_h264_aac"]
    result = _normalize(source, tmp_path)
    assert result.path == source and result.actions == []
    assert result.info.sha256 == sha256_file(source)
    assert list(tmp_path.iterdir()) == []


def test_mp4_with_moov_at_the_end_still_passes_through(av_files: dict[str, Path], tmp_path: Path) -> None:
    source = av_files["mp4_moov_last"]
    assert _top_level_boxes(source).index(b"moov") > _top_level_boxes(source).index(b"mdat")
    assert _normalize(source, tmp_path).path == source


def test_location_metadata_is_stripped_by_a_remux(av_files: dict[str, Path], tmp_path: Path) -> None:
    source = av_files["mp4_with_location"]
    assert _reprobe(source).extra["location_tags"]
    result = _normalize(source, tmp_path)
    assert result.actions == ["strip-metadata", "remux:mp4"]
    _assert_mp4_output(result, audio=True)
    assert result.info.extra["location_tags"] == []
    with av.open(str(result.path)) as container:
        assert not any("location" in key for key in container.metadata)


def test_location_metadata_is_kept_when_asked(av_files: dict[str, Path], tmp_path: Path) -> None:
    source = av_files["mp4_with_location"]
    sniffed = sniff_path(source)
    options = NormalizeOptions(workdir=tmp_path, keep_metadata=True)
    result = normalize(source, sniffed, probe_av(source, sniffed), DEFAULT, options)
    assert result.path == source


def test_h264_aac_mov_is_remuxed_to_faststart_mp4(av_files: dict[str, Path], tmp_path: Path) -> None:
    source = av_files["mov_h264_aac_720p"]
    result = _normalize(source, tmp_path)
    assert result.actions == ["remux:mp4"]
    _assert_mp4_output(result, audio=True)
    assert (result.info.width, result.info.height) == (1280, 720)
    boxes = _top_level_boxes(result.path)
    assert boxes.index(b"moov") < boxes.index(b"mdat"), "+faststart puts moov first"


def test_h264_in_mkv_is_remuxed_and_audio_less_stays_audio_less(av_files: dict[str, Path], tmp_path: Path) -> None:
    with_audio = _normalize(av_files["mkv_h264_aac"], tmp_path)
    assert with_audio.actions == ["remux:mp4"]
    _assert_mp4_output(with_audio, audio=True)
    silent = _normalize(av_files["mkv_h264_noaudio"], tmp_path)
    assert silent.actions == ["remux:mp4"]
    _assert_mp4_output(silent, audio=False)


def test_mp3_audio_in_mp4_is_reencoded_while_the_video_is_copied(av_files: dict[str, Path], tmp_path: Path) -> None:
    result = _normalize(av_files["mp4_h264_mp3"], tmp_path)
    assert result.actions == ["remux:mp4", "transcode:aac"]
    _assert_mp4_output(result, audio=True)


def test_vp9_opus_webm_is_transcoded_to_h264_aac(av_files: dict[str, Path], tmp_path: Path) -> None:
    result = _normalize(av_files["webm_vp9_opus"], tmp_path)
    assert result.actions == ["transcode:h264", "transcode:aac"]
    _assert_mp4_output(result, audio=True)
    assert result.info.duration_s == pytest.approx(1.0, abs=0.1)


def test_transcoded_video_without_audio_stays_without_audio(av_files: dict[str, Path], tmp_path: Path) -> None:
    result = _normalize(av_files["webm_vp9_noaudio"], tmp_path)
    assert result.actions == ["transcode:h264"]
    _assert_mp4_output(result, audio=False)


def test_mpeg4_part2_video_is_transcoded_and_its_aac_copied(av_files: dict[str, Path], tmp_path: Path) -> None:
    result = _normalize(av_files["mp4_mpeg4_aac"], tmp_path)
    assert result.actions == ["transcode:h264"]
    _assert_mp4_output(result, audio=True)


def test_rotated_video_is_turned_upright(av_files: dict[str, Path], tmp_path: Path) -> None:
    result = _normalize(av_files["mp4_rotated_90"], tmp_path)
    assert result.actions == ["transcode:h264", "rotate"]
    _assert_mp4_output(result, audio=False)
    assert (result.info.width, result.info.height) == (240, 320)
    # The stored picture is the unrotated one turned 90 degrees counter-clockwise, as players show it.
    expected = _first_frame(av_files["mp4_h264_noaudio"]).rotate(90, expand=True)
    difference = ImageStat.Stat(ImageChops.difference(expected, _first_frame(result.path))).mean
    assert max(difference) < 8


def test_4k_video_is_scaled_down_to_1080_lines(av_files: dict[str, Path], tmp_path: Path) -> None:
    result = _normalize(av_files["mp4_4k"], tmp_path)
    assert result.actions == ["transcode:h264", "scale"]
    _assert_mp4_output(result, audio=False)
    assert (result.info.width, result.info.height) == (1920, 1080)


def test_odd_dimensions_become_even(av_files: dict[str, Path], tmp_path: Path) -> None:
    result = _normalize(av_files["mkv_mjpeg_odd_size"], tmp_path)
    _assert_mp4_output(result, audio=False)
    assert (result.info.width, result.info.height) == (320, 240)


def test_video_longer_than_the_profile_allows_is_too_long(av_files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(MediaError) as info:
        _normalize(av_files["mp4_long"], tmp_path, DEFAULT.replace(max_video_s=3.0))
    assert info.value.code == "too_long"
    assert "6.0 s" in info.value.message and "3 s" in info.value.message
    assert "trim_s=" in info.value.hint
    assert list(tmp_path.iterdir()) == []


def test_trim_keeps_the_first_seconds_of_a_long_video(av_files: dict[str, Path], tmp_path: Path) -> None:
    result = _normalize(av_files["mp4_long"], tmp_path, DEFAULT.replace(max_video_s=3.0), trim_s=2)
    assert result.actions == ["trim:2", "remux:mp4"]
    _assert_mp4_output(result, audio=True)
    assert result.info.duration_s == pytest.approx(2.0, abs=0.25)


def test_generic_profile_passes_mov_and_webm_through(av_files: dict[str, Path], tmp_path: Path) -> None:
    for name in ("mov_h264_aac_720p", "webm_vp9_opus"):
        result = _normalize(av_files[name], tmp_path, GENERIC)
        assert result.path == av_files[name] and result.actions == []
    assert list(tmp_path.iterdir()) == []


def test_generic_profile_remuxes_mkv_it_does_not_list(av_files: dict[str, Path], tmp_path: Path) -> None:
    result = _normalize(av_files["mkv_h264_aac"], tmp_path, GENERIC)
    assert result.actions == ["remux:mp4"]


def test_inline_mode_shrinks_video_under_the_budget(av_files: dict[str, Path], tmp_path: Path) -> None:
    budget = 60_000
    source = av_files["mov_h264_aac_720p"]
    assert b64_len(source.stat().st_size) > budget
    result = _normalize(source, tmp_path, fit_chars=budget)
    assert b64_len(result.info.bytes) < budget
    assert "transcode:h264" in result.actions and "scale" in result.actions
    assert any(a.startswith("bitrate:") for a in result.actions)
    _assert_mp4_output(result, audio=True)
    assert result.info.height is not None and result.info.height < 720
    assert len(list(tmp_path.iterdir())) == 1, "rejected attempts must not be left behind"


def test_inline_mode_reports_video_that_cannot_fit(av_files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(MediaError) as info:
        _normalize(av_files["mp4_long"], tmp_path, fit_chars=3_000)
    assert info.value.code == "cannot_fit_inline"
    assert "3,000" in info.value.message
    assert 'mode="auto"' in info.value.hint
    assert list(tmp_path.iterdir()) == []


_CORPUS_VIDEO = [e for e in corpus_expectations() if e["kind"] == "video"]


@pytest.mark.parametrize("entry", _CORPUS_VIDEO, ids=lambda e: e["file"])
def test_corpus_video_matches_its_expectation(entry: dict[str, Any], tmp_path: Path) -> None:
    source = CORPUS / entry["file"]
    before = sha256_file(source)
    if entry["expect"] == "error":
        codes = {entry["error_code"], *(entry.get("alt_error_codes") or [])}
        with pytest.raises(MediaError) as info:
            _normalize(source, tmp_path)
        assert info.value.code in codes
        assert info.value.hint
    else:
        result = _normalize(source, tmp_path)
        assert result.info.kind == "video"
        _assert_mp4_output(result, audio=result.info.audio_codec is not None)
        if "passthrough-ok" in (entry.get("checks") or []):
            # As it is, or remuxed when it carries tags (a creation date...) that are not sent.
            assert (result.path == source and result.actions == []) or result.actions == ["strip-metadata", "remux:mp4"]
        if "transcode-video" in (entry.get("checks") or []):
            assert "transcode:h264" in result.actions
    assert sha256_file(source) == before
