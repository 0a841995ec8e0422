"""Empty outputs are never ok (issue 7, item 4).

Every converted audio or video file is read back before it is reported: it has
samples or frames and lasts as long as what was converted (within validation's
tolerance). A WAV whose 100 samples last 25 microseconds used to become a
78-byte WAV with no sample at all, reported ``ok``; a single-frame WEBM used to
become a clip one frame interval long.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import Any

import av
import pytest
from make_broken import make_broken

import nvmedia
from nvmedia.errors import NVMediaError
from nvmedia.normalize.video import STILL_FPS, STILL_MIN_S
from nvmedia.profiles import NEMOTRON_3_NANO_OMNI
from nvmedia.validate import SHORTFALL_TOLERANCE_RATIO, SHORTFALL_TOLERANCE_S, check_output


@pytest.fixture(scope="session")
def broken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_broken(tmp_path_factory.getbasetemp() / "broken")


def _prepare_one(path: Path, **options: Any) -> Any:
    prep = nvmedia.prepare([path], dry_run=True, on_error="keep", cache=False, jobs=1, **options)
    (item,) = prep.items
    return item


def _converted(path: Path, keep: Path, **options: Any) -> tuple[Any, Path]:
    """The item for ``path`` and the converted file, kept in ``keep`` (the temporary one is gone by then)."""
    item = _prepare_one(path, keep=keep, **options)
    assert item.status == "ok", item.error
    return item, Path(item.kept)


def _measure(path: Path) -> dict[str, Any]:
    """Decode the whole file with PyAV: frames, samples and each stream's span in seconds."""
    found: dict[str, Any] = {"frames": 0, "samples": 0, "video_s": 0.0, "audio_s": 0.0}
    with av.open(str(path)) as container:
        for frame in container.decode(*container.streams.video, *container.streams.audio):
            if isinstance(frame, av.VideoFrame):
                found["frames"] += 1
                found["video_s"] = max(found["video_s"], float(frame.time or 0) + 1 / STILL_FPS)
            else:
                found["samples"] += frame.samples
                found["audio_s"] = max(found["audio_s"], float(frame.time or 0) + frame.samples / frame.sample_rate)
    return found


# --------------------------------------------------------------------------- the defects


def test_audio_that_converts_to_no_samples_is_never_ok(broken: dict[str, Path], tmp_path: Path) -> None:
    source = broken["wav_4mhz_100_samples"]  # 100 samples at 4 MHz: less than one sample at 16 kHz
    keep = tmp_path / "kept"
    item = _prepare_one(source, keep=keep)
    assert item.status == "error", f"reported {item.status}: {item.output}"
    assert item.error is not None and item.error.code == "empty"
    assert "holds no audio samples" in item.error.message and "0.03 ms of input" in item.error.message
    assert item.error.hint
    assert not keep.exists() or list(keep.rglob("*.wav")) == []


@pytest.mark.parametrize("name", ["webm_still", "webm_still_live", "mp4_still"])
def test_single_frame_video_becomes_a_clip_of_at_least_the_minimum(
    av_files: dict[str, Path], name: str, tmp_path: Path
) -> None:
    item, output = _converted(av_files[name], tmp_path)
    assert f"extend-still:{STILL_MIN_S:g}" in item.actions
    assert item.output is not None and item.output.duration_s >= STILL_MIN_S
    measured = _measure(output)
    assert measured["video_s"] == pytest.approx(STILL_MIN_S, abs=0.05) or measured["video_s"] > STILL_MIN_S
    assert measured["frames"] >= STILL_FPS * STILL_MIN_S


def test_still_with_sound_holds_its_frame_as_long_as_the_sound(av_files: dict[str, Path], tmp_path: Path) -> None:
    item, output = _converted(av_files["webm_still_with_audio"], tmp_path)  # one VP9 frame beside 3 s of Opus
    measured = _measure(output)
    assert measured["audio_s"] == pytest.approx(3.0, abs=0.1)
    assert measured["video_s"] == pytest.approx(measured["audio_s"], abs=0.1)
    assert item.output.duration_s == pytest.approx(3.0, abs=0.1)


def test_trimmed_still_with_sound_is_held_only_as_long_as_the_trim(av_files: dict[str, Path], tmp_path: Path) -> None:
    short = NEMOTRON_3_NANO_OMNI.replace(max_video_s=2.0)
    item, output = _converted(av_files["webm_still_with_audio"], tmp_path, profile=short, trim_s=1.5)
    assert item.actions[:2] == ["trim:1.5", "extend-still:1.5"]
    measured = _measure(output)
    assert measured["video_s"] == pytest.approx(1.5, abs=0.1) and measured["audio_s"] == pytest.approx(1.5, abs=0.1)


# --------------------------------------------------------------------------- every converted output is read back


CONVERTED = [
    "flac",
    "ogg_vorbis",
    "opus",
    "aiff",
    "wav_ulaw",
    "wav_float32",
    "wav_192k",
    "wav_6ch",
    "wav_6k",
    "wav_streamed",
    "m4a_aac",
    "mkv_h264_aac",
    "webm_vp9_opus",
    "mp4_rotated_90",
    "mp4_mpeg4_aac",
    "mp4_h264_mp3",
    "mkv_mjpeg_odd_size",
    "mp4_with_location",
]


@pytest.mark.parametrize("name", CONVERTED)
def test_converted_outputs_have_media_and_the_inputs_length(
    av_files: dict[str, Path], name: str, tmp_path: Path
) -> None:
    source = av_files[name]
    item, output = _converted(source, tmp_path)
    assert item.actions, "a converted fixture passed through"
    expected = _measure(source)
    measured = _measure(output)
    assert measured["frames"] or measured["samples"]
    longest_in, longest_out = (max(m["video_s"], m["audio_s"]) for m in (expected, measured))
    assert abs(longest_out - longest_in) <= max(SHORTFALL_TOLERANCE_S, SHORTFALL_TOLERANCE_RATIO * longest_in)


# --------------------------------------------------------------------------- the check itself, on real files


def _wav(path: Path, rate: int, samples: int) -> Path:
    data = bytes(2 * samples)
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def test_check_output_refuses_a_wav_with_no_samples(tmp_path: Path) -> None:
    with pytest.raises(NVMediaError) as caught:
        check_output(_wav(tmp_path / "out.wav", 16_000, 0), Path("talk.flac"), "audio", 0.5)
    assert caught.value.code == "empty"
    assert (
        caught.value.message == "talk.flac: the converted audio holds no audio samples (0.50 s of input was converted)"
    )


@pytest.mark.parametrize(("seconds", "expected"), [(2.0, 3.0), (4.0, 3.0)])
def test_check_output_refuses_an_output_of_the_wrong_length(tmp_path: Path, seconds: float, expected: float) -> None:
    path = _wav(tmp_path / "out.wav", 16_000, int(16_000 * seconds))
    with pytest.raises(NVMediaError) as caught:
        check_output(path, Path("talk.flac"), "audio", expected)
    assert caught.value.code == "ffmpeg_failed"
    assert f"lasts {seconds:.2f} s but {expected:.2f} s were converted" in caught.value.message


def test_check_output_accepts_a_length_within_the_tolerance(tmp_path: Path) -> None:
    path = _wav(tmp_path / "out.wav", 16_000, 16_000 * 3 + 4_000)  # 3.25 s for 3 s: inside max(0.5 s, 5 %)
    assert check_output(path, Path("talk.flac"), "audio", 3.0) == pytest.approx(3.25)


def test_check_output_refuses_a_video_whose_frames_are_gone(av_files: dict[str, Path], tmp_path: Path) -> None:
    cut = tmp_path / "cut.mp4"
    data = av_files["mp4_faststart_2s"].read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 5])  # moov first: the index names frames the file no longer holds
    with pytest.raises(NVMediaError) as caught:
        check_output(cut, Path("clip.mov"), "video", 2.0)
    assert caught.value.code in ("ffmpeg_failed", "empty")


def test_a_failed_output_leaves_nothing_in_the_workdir(broken: dict[str, Path], tmp_path: Path) -> None:
    from nvmedia.normalize import NormalizeOptions, normalize
    from nvmedia.probe import probe
    from nvmedia.sniff import sniff_path

    source = shutil.copy(broken["wav_4mhz_100_samples"], tmp_path / "tiny.wav")
    sniffed = sniff_path(Path(source))
    work = tmp_path / "work"
    with pytest.raises(NVMediaError):
        normalize(Path(source), sniffed, probe(Path(source), sniffed), NEMOTRON_3_NANO_OMNI, NormalizeOptions(work))
    assert not work.exists() or list(work.iterdir()) == []
