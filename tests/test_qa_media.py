"""Media defects found by the QA pass, each reproduced as a user meets it: `nvmedia prepare` on real files."""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import av
import pytest

from nvmedia import ffmpeg as ff
from nvmedia.cli import main


def make_media(out: Path, *args: str) -> Path:
    """Write ``out`` with the real ffmpeg (``args`` are its inputs and options)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [ff.find_ffmpeg(), "-nostdin", "-hide_banner", "-v", "error", "-y", *args, str(out)]
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    return out


def prepare(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str | Path) -> list[dict[str, Any]]:
    """``nvmedia prepare ARGS --dry-run -o manifest``: the manifest's item records."""
    manifest = tmp_path / "manifest.jsonl"
    main(["prepare", *map(str, args), "--dry-run", "-o", str(manifest)])
    capsys.readouterr()
    records = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    return [r for r in records if r.get("type") == "item"]


def small_profile(tmp_path: Path, **settings: Any) -> Path:
    """A profile file: the default profile with ``settings`` changed (short limits keep the media small)."""
    path = tmp_path / "small.json"
    path.write_text(json.dumps({"base": "nemotron-3-nano-omni", "name": "small", **settings}), encoding="utf-8")
    return path


def stream_tags(path: Path) -> list[dict[str, str]]:
    with av.open(str(path)) as container:
        return [dict(stream.metadata) for stream in container.streams]


# 3 ------------------------------------------------------------------------------------------------------------


def test_trimmed_stream_copy_never_exceeds_the_trim_and_passes_its_own_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 5 fps H.264 with B-frames: copying every packet decoded before 4 s keeps frames shown up to 4.4 s.
    clip = make_media(
        tmp_path / "in" / "long.mp4",
        *("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=5:duration=6"),
        *("-f", "lavfi", "-i", "sine=duration=6", "-c:v", "libx264", "-c:a", "aac", "-shortest"),
    )
    profile = small_profile(tmp_path, max_video_s=4)
    (rec,) = prepare(tmp_path, capsys, clip, "--profile", profile, "--trim", "4", "--keep", tmp_path / "k")
    assert rec["status"] == "ok", rec
    assert "remux:mp4" in rec["actions"] and "trim:4" in rec["actions"]
    assert rec["output"]["duration_s"] <= 4.05
    kept = tmp_path / "k" / "long.mp4"
    with av.open(str(kept)) as container:
        assert container.duration is not None and container.duration / 1_000_000 <= 4.05
    (again,) = prepare(tmp_path, capsys, kept, "--profile", profile)
    assert again["status"] == "ok", again


def test_the_too_long_hint_trim_120_gives_a_video_the_default_profile_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = make_media(
        tmp_path / "in" / "long130.mp4",
        *("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=5:duration=130"),
        *("-f", "lavfi", "-i", "sine=duration=130", "-c:v", "libx264", "-c:a", "aac", "-shortest"),
    )
    (refused,) = prepare(tmp_path, capsys, clip)
    assert refused["error"]["code"] == "too_long" and "--trim 120" in refused["error"]["hint"]
    (rec,) = prepare(tmp_path, capsys, clip, "--trim", "120", "--keep", tmp_path / "k")
    assert rec["status"] == "ok" and rec["output"]["duration_s"] <= 120.05
    (again,) = prepare(tmp_path, capsys, tmp_path / "k" / "long130.mp4")
    assert again["status"] == "ok", again.get("error")


def test_trimmed_copy_that_cannot_end_by_the_trim_is_transcoded_instead(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Eight B-frames at 5 fps: a copy cut in decode order runs 1.6 s past the cut, or ends far before it.
    clip = make_media(
        tmp_path / "in" / "bframes.mp4",
        *("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=5:duration=8", "-c:v", "libx264"),
        *("-x264-params", "bframes=8:b-pyramid=normal:b-adapt=0", "-an"),
    )
    profile = small_profile(tmp_path, max_video_s=7)
    (rec,) = prepare(tmp_path, capsys, clip, "--profile", profile, "--trim", "3.9", "--keep", tmp_path / "k")
    assert rec["status"] == "ok", rec.get("error")
    assert rec["actions"] == ["trim:3.9", "transcode:h264"]
    assert rec["output"]["duration_s"] <= 3.9 + 0.2  # the last frame kept is shown for its 0.2 s
    (again,) = prepare(tmp_path, capsys, tmp_path / "k" / "bframes.mp4", "--profile", profile)
    assert again["status"] == "ok", again.get("error")


# 15 -----------------------------------------------------------------------------------------------------------


def test_ffmpeg_stopped_by_the_file_size_limit_is_no_space_not_damaged_media(tmp_path: Path) -> None:
    clip = make_media(
        tmp_path / "clip.avi",
        *("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=4"),
        *("-f", "lavfi", "-i", "sine=duration=4", "-c:v", "mpeg4", "-c:a", "mp3", "-shortest"),
    )
    limit = 40_000

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run(
        [sys.executable, "-m", "nvmedia", "prepare", str(clip), "--dry-run", "-o", "-", "--no-output-cache"],
        preexec_fn=small_files,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    (rec,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 1
    assert rec["status"] == "error" and rec["error"]["code"] == "no_space", rec["error"]
    assert f"file size limit of this process ({limit} bytes)" in rec["error"]["message"]
    assert "damaged" not in rec["error"]["hint"]


# 21 -----------------------------------------------------------------------------------------------------------


def test_second_audio_track_dropped_gets_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = make_media(
        tmp_path / "in" / "two_audio.mp4",
        *("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=1"),
        *("-f", "lavfi", "-i", "sine=duration=1", "-f", "lavfi", "-i", "sine=f=880:duration=1"),
        *("-map", "0", "-map", "1", "-map", "2", "-c:v", "libx264", "-c:a", "aac", "-shortest"),
    )
    (rec,) = prepare(tmp_path, capsys, clip, "--keep", tmp_path / "k")
    assert rec["status"] == "ok"
    assert "audio: kept the first of 2 tracks" in rec["warnings"]
    with av.open(str(tmp_path / "k" / "two_audio.mp4")) as container:
        assert len(container.streams.audio) == 1


def test_single_audio_track_gets_no_track_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = make_media(
        tmp_path / "in" / "one_audio.mkv",
        *("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=1"),
        *("-f", "lavfi", "-i", "sine=duration=1", "-c:v", "libx264", "-c:a", "aac", "-shortest"),
    )
    (rec,) = prepare(tmp_path, capsys, clip)
    assert rec["status"] == "ok" and "remux:mp4" in rec["actions"]
    assert not any("tracks" in warning for warning in rec["warnings"])


# 22 -----------------------------------------------------------------------------------------------------------

PLAIN_AV = (
    *("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=1"),
    *("-f", "lavfi", "-i", "sine=duration=1", "-c:v", "libx264", "-c:a", "aac", "-shortest"),
)


def test_personal_handler_names_are_stripped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = make_media(
        tmp_path / "in" / "gp.mp4",
        *PLAIN_AV,
        *("-metadata:s:v:0", "handler_name=GoPro AVC HERO9 SN C3441325"),
        *("-metadata:s:a:0", "handler_name=Jane's iPhone"),
    )
    (rec,) = prepare(tmp_path, capsys, clip, "--keep", tmp_path / "k")
    assert rec["status"] == "ok"
    assert "strip-metadata" in rec["actions"] and "remux:mp4" in rec["actions"]
    handlers = [tags.get("handler_name", "") for tags in stream_tags(tmp_path / "k" / "gp.mp4")]
    assert not any("GoPro" in name or "Jane" in name for name in handlers), handlers


@pytest.mark.parametrize(
    ("video", "audio"),
    [
        ("VideoHandler", "SoundHandler"),  # ffmpeg
        ("Core Media Video", "Core Media Audio"),  # iPhone
        ("VideoHandle", "SoundHandle"),  # Android MediaMuxer
        ("ISO Media file produced by Google Inc.", "ISO Media file produced by Google Inc."),
    ],
)
def test_default_handler_names_still_pass_through(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], video: str, audio: str
) -> None:
    clip = make_media(
        tmp_path / "in" / "plain.mp4",
        *PLAIN_AV,
        *("-map_metadata", "-1", "-fflags", "+bitexact"),
        *("-metadata:s:v:0", f"handler_name={video}", "-metadata:s:a:0", f"handler_name={audio}"),
    )
    (rec,) = prepare(tmp_path, capsys, clip)
    assert rec["status"] == "ok" and rec["actions"] == [], rec["actions"]


# 25 -----------------------------------------------------------------------------------------------------------


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG declaring ``width`` x ``height`` 1-bit pixels, with one empty IDAT: opening it reads only the header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize(
    ("side", "pixels"), [(10_000, "100,000,000"), (15_000, "225,000,000"), (40_000, "1,600,000,000")]
)
def test_too_large_names_the_declared_pixels_and_one_limit_whatever_the_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], side: int, pixels: str
) -> None:
    image = png_header_only(tmp_path / f"big{side}.png", side, side)
    (rec,) = prepare(tmp_path, capsys, image)
    error = rec["error"]
    assert error["code"] == "too_large"
    assert f"declares {side}x{side} = {pixels} pixels, over the safety limit of 89,478,485 pixels" in error["message"]
    assert "Pillow" not in error["message"] and "178,956,970" not in error["message"]
    assert "DOS attack" not in error["message"]
    assert "safety_max_image_pixels" in error["hint"]


# 19 -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "script",
    [
        None,  # /bin/true: runs, exits 0, prints nothing
        '#!/bin/sh\necho "ffmpeg: error while loading shared libraries: libavdevice.so.58" >&2\nexit 127\n',
        "#!/bin/sh\necho 'usage: convert [options] file'\n",  # some other program
    ],
)
def test_unusable_ffmpeg_stops_the_run_as_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, script: str | None
) -> None:
    tone = make_media(tmp_path / "in" / "tone.flac", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "flac")
    clip = make_media(tmp_path / "in" / "clip.avi", *PLAIN_AV[:4], "-c:v", "mpeg4")
    broken = Path("/bin/true")
    if script is not None:
        broken = tmp_path / "bin" / "ffmpeg"
        broken.parent.mkdir()
        broken.write_text(script)
        broken.chmod(0o755)
    monkeypatch.setenv(ff.FFMPEG_ENV, str(broken))
    manifest = tmp_path / "m.jsonl"
    code = main(["prepare", str(tone), str(clip), "--dry-run", "--no-output-cache", "-o", str(manifest)])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nvmedia: error: "), err
    assert str(broken) in err and ff.FFMPEG_ENV in err
    assert "corrupt_media" not in err and "ffmpeg_failed" not in err


# 11 -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kept", "label"), [(0.9, "zero90"), (0.5, "zero50"), (1.0, "noeoi")])
def test_jpeg_with_a_zero_filled_or_missing_tail_is_corrupt_not_reencoded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kept: float, label: str
) -> None:
    from PIL import Image

    noise = Image.frombytes("RGB", (300, 200), os.urandom(300 * 200 * 3)).resize((600, 400))
    whole = tmp_path / "a.jpg"
    noise.save(whole, quality=90)
    data = whole.read_bytes()
    cut = len(data) - 2 if label == "noeoi" else int(len(data) * kept)
    damaged = tmp_path / "in" / f"{label}.jpg"
    damaged.parent.mkdir()
    damaged.write_bytes(data[:cut] + bytes(len(data) - cut if label != "noeoi" else 0))
    (rec,) = prepare(tmp_path, capsys, damaged)
    assert rec["status"] == "error", rec.get("actions")
    assert rec["error"]["code"] == "corrupt_media"
    assert "truncated" in rec["error"]["message"] or "EOI" in rec["error"]["message"]


def test_jpeg_with_bytes_after_its_eoi_still_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    photo = tmp_path / "in" / "trailer.jpg"
    photo.parent.mkdir()
    Image.radial_gradient("L").convert("RGB").save(photo, quality=90)
    photo.write_bytes(photo.read_bytes() + b"SEFH\x00\x00" + bytes(500))  # a vendor trailer after EOI
    (rec,) = prepare(tmp_path, capsys, photo)
    assert rec["status"] == "ok" and rec["actions"] == ["strip-metadata"], rec


# 12 -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", [1600, 1601, 2])
def test_wav_cut_short_is_corrupt_whatever_the_number_of_bytes_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], missing: int
) -> None:
    whole = make_media(tmp_path / "a.wav", "-f", "lavfi", "-i", "sine=f=440:duration=5", "-ar", "16000", "-ac", "1")
    data = whole.read_bytes()
    cut = tmp_path / "in" / "cut.wav"
    cut.parent.mkdir()
    cut.write_bytes(data[:-missing])
    (rec,) = prepare(tmp_path, capsys, cut)
    assert rec["status"] == "error" and rec["error"]["code"] == "corrupt_media", rec.get("actions")
    if missing % 2 == 0:
        # 5 s of 16-bit mono at 16 kHz: 160,000 bytes declared
        assert (
            f"declares 160,000 bytes of sound but the file holds only {160_000 - missing:,}" in rec["error"]["message"]
        )


def test_mp3_missing_its_tail_is_sent_with_a_warning_naming_the_gap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = make_media(
        tmp_path / "a.mp3", "-f", "lavfi", "-i", "sine=f=440:duration=5", "-ar", "16000", "-ac", "1", "-b:a", "64k"
    )
    data = whole.read_bytes()
    cut = tmp_path / "in" / "cut90.mp3"
    cut.parent.mkdir()
    cut.write_bytes(data[: int(len(data) * 0.9)])
    (rec,) = prepare(tmp_path, capsys, cut)
    assert rec["status"] == "ok"
    gaps = [w for w in rec["warnings"] if "shorter than its header says" in w]
    assert len(gaps) == 1 and "of 5.00 s" in gaps[0], rec["warnings"]


def test_mp3_without_a_frame_count_missing_its_tail_gets_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = make_media(
        tmp_path / "a.mp3",
        *("-f", "lavfi", "-i", "sine=f=440:duration=5", "-ar", "16000", "-ac", "1"),
        *("-c:a", "libmp3lame", "-b:a", "64k", "-write_xing", "0"),
    )
    data = whole.read_bytes()
    cut = tmp_path / "in" / "cut90.mp3"
    cut.parent.mkdir()
    cut.write_bytes(data[: int(len(data) * 0.9)])
    (rec,) = prepare(tmp_path, capsys, cut)
    assert rec["status"] == "ok"
    assert any("last MP3 frame is cut short" in w for w in rec["warnings"]), rec["warnings"]
    (healthy,) = prepare(tmp_path, capsys, whole)
    assert healthy["status"] == "ok" and healthy["warnings"] == []
