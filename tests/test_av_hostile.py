"""Hostile and broken audio/video: every file gets a clear error code, nothing hangs, no secret leaks."""

from __future__ import annotations

from pathlib import Path

import ffmpeg
import pytest
from make_av import SECRET
from support import sha256_file

from nvmedia import ffmpeg as ff
from nvmedia.errors import NVMediaError
from nvmedia.normalize import NormalizedMedia, NormalizeOptions, normalize
from nvmedia.probe import probe
from nvmedia.probe_av import probe_av
from nvmedia.profiles import NEMOTRON_3_NANO_OMNI
from nvmedia.sniff import Sniffed, sniff_path

SMALL_TIMEOUT_S = 20.0


def _prepare(path: Path, workdir: Path) -> NormalizedMedia:
    """sniff -> probe -> normalize, as the pipeline runs them."""
    sniffed = sniff_path(path)
    info = probe(path, sniffed)
    return normalize(path, sniffed, info, NEMOTRON_3_NANO_OMNI, NormalizeOptions(workdir=workdir))


def _assert_no_secret(error: NVMediaError, workdir: Path, captured: tuple[str, ...]) -> None:
    for text in (error.message, error.hint, repr(error), str(error), *captured):
        assert SECRET not in text
    for path in workdir.rglob("*"):
        assert SECRET.encode() not in path.read_bytes()


@pytest.mark.parametrize("name", ["hls_as_avi", "hls_as_mp4", "ffconcat_as_mp4", "ffconcat_as_avi"])
def test_playlist_disguised_as_media_is_refused_without_following_it(
    av_files: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str], name: str
) -> None:
    source = av_files[name]
    assert SECRET in (source.parent / f"{SECRET}.wav").read_bytes().decode("latin-1")
    with pytest.raises(NVMediaError) as info:
        _prepare(source, tmp_path)
    assert info.value.code in ("unsupported_format", "corrupt_media")
    assert info.value.hint
    assert list(tmp_path.iterdir()) == []
    _assert_no_secret(info.value, tmp_path, tuple(capfd.readouterr()))


@pytest.mark.parametrize(
    ("name", "container", "demuxer"),
    [("hls_as_mp4", "mp4", "mov"), ("ffconcat_as_mp4", "mp4", "mov"), ("ffconcat_as_avi", "avi", "avi")],
)
def test_forced_demuxer_stops_a_playlist_even_when_the_sniffer_is_fooled(
    av_files: dict[str, Path],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    name: str,
    container: str,
    demuxer: str,
) -> None:
    # Defence in depth: were the sniffer to call the script a movie, PyAV and ffmpeg still read it as one.
    source = av_files[name]
    lie = Sniffed("video", container, "video/mp4", demuxer, "movie")
    with pytest.raises(NVMediaError) as probed:
        probe_av(source, lie)
    assert probed.value.code == "corrupt_media"
    _assert_no_secret(probed.value, tmp_path, tuple(capfd.readouterr()))

    def node(url: str) -> object:
        return ffmpeg.output(ff.input_stream(source, demuxer), url, f="mp4", c="copy")

    with pytest.raises(NVMediaError) as ran:
        ff.run_to_file(node, tmp_path / "out.mp4", timeout_s=SMALL_TIMEOUT_S)
    assert ran.value.code == "ffmpeg_failed"
    assert list(tmp_path.iterdir()) == []
    _assert_no_secret(ran.value, tmp_path, tuple(capfd.readouterr()))


@pytest.mark.parametrize(
    ("name", "codes"),
    [
        ("mp4_no_moov", {"corrupt_media"}),
        ("mp4_mdat_cut", {"corrupt_media"}),
        ("webm_truncated", {"corrupt_media"}),
        ("mp3_truncated", {"corrupt_media"}),
        ("flac_truncated", {"corrupt_media"}),
        ("random_mp4", {"unsupported_format"}),
        ("random_after_ftyp", {"corrupt_media"}),
        ("mp4_subtitles_only", {"unsupported_format"}),
        ("mp4_zero_duration", {"empty"}),
        ("wav_zero_samples", {"empty"}),
        ("mkv_zero_size", {"corrupt_media"}),
    ],
)
def test_broken_media_gets_a_clear_code(
    av_files: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str], name: str, codes: set[str]
) -> None:
    source = av_files[name]
    before = sha256_file(source)
    with pytest.raises(NVMediaError) as info:
        _prepare(source, tmp_path)
    assert info.value.code in codes
    assert source.name in info.value.message or info.value.code == "unsupported_format"
    assert info.value.hint
    assert str(source.parent) not in info.value.message, "messages name files, not where they live"
    assert list(tmp_path.iterdir()) == []
    assert sha256_file(source) == before
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


def test_truncated_media_is_caught_before_ffmpeg_can_pass_it(av_files: dict[str, Path], tmp_path: Path) -> None:
    # ffmpeg alone would exit 0 on the truncated WEBM; validation names the shortfall instead.
    with pytest.raises(NVMediaError) as info:
        _prepare(av_files["webm_truncated"], tmp_path)
    assert "truncated" in info.value.message
    held, declared = av_files["webm_truncated"].stat().st_size, av_files["webm_vp8_2s"].stat().st_size
    assert f"holds {held:,} bytes" in info.value.message
    assert f"declares {declared:,}" in info.value.message
