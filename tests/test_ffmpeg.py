"""nvmedia.ffmpeg: finding ffmpeg and running it with its guard rails, against the real executable."""

from __future__ import annotations

import os
from pathlib import Path

import ffmpeg
import imageio_ffmpeg
import pytest

from nvmedia import ffmpeg as ff
from nvmedia.errors import ConfigError, MediaError, ProcessingError
from nvmedia.probe_av import probe_av
from nvmedia.sniff import sniff_path


def _copy_node(source: Path, fmt: str) -> object:
    def node(url: str) -> object:
        return ffmpeg.output(ff.input_stream(source, fmt), url, f="mp4", c="copy")

    return node


def test_bundled_ffmpeg_is_used_without_the_env_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ff.FFMPEG_ENV, raising=False)
    assert ff.find_ffmpeg() == imageio_ffmpeg.get_ffmpeg_exe()


def test_env_variable_names_the_ffmpeg_to_use(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    own = tmp_path / "my-ffmpeg"
    os.symlink(imageio_ffmpeg.get_ffmpeg_exe(), own)
    monkeypatch.setenv(ff.FFMPEG_ENV, str(own))
    assert ff.find_ffmpeg() == str(own)
    path, version = ff.ffmpeg_version()
    assert path == str(own)
    assert version.startswith("ffmpeg version ")


def test_env_variable_naming_no_executable_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ff.FFMPEG_ENV, str(tmp_path / "missing-ffmpeg"))
    with pytest.raises(ConfigError) as info:
        ff.find_ffmpeg()
    assert ff.FFMPEG_ENV in info.value.message
    assert info.value.hint


def test_version_reports_the_executable_and_its_version_line() -> None:
    path, version = ff.ffmpeg_version()
    assert Path(path).is_file()
    assert version.startswith("ffmpeg version ")
    assert "\n" not in version


def test_every_command_carries_the_guard_rails(av_files: dict[str, Path]) -> None:
    source = av_files["mp4_h264_aac"]
    args = ff.build_args(ffmpeg.output(ff.input_stream(source, "mov"), "file:/tmp/x.mp4", f="mp4"))
    head = args[: args.index("-i")]
    assert {"-nostdin", "-hide_banner"} <= set(head)
    assert head[head.index("-v") + 1] == "error"
    assert head[head.index("-protocol_whitelist") + 1] == "file,pipe"
    assert head[head.index("-f") + 1] == "mov"
    assert args[args.index("-i") + 1] == "file:" + str(source.absolute())


def test_input_without_a_known_demuxer_is_refused(av_files: dict[str, Path]) -> None:
    with pytest.raises(MediaError) as info:
        ff.input_stream(av_files["mp4_h264_aac"], None)
    assert info.value.code == "unsupported_format"


def test_name_starting_with_dash_and_holding_a_percent_pattern_is_read_as_a_file(
    av_files: dict[str, Path], tmp_path: Path
) -> None:
    source = av_files["dash_in_name"]
    assert source.name.startswith("-") and "%d" in source.name
    out = ff.run_to_file(_copy_node(source, "mov"), tmp_path / "out.mp4", timeout_s=60)
    info = probe_av(out, sniff_path(out))
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")


def test_stderr_output_fails_a_run_that_exits_zero(av_files: dict[str, Path], tmp_path: Path) -> None:
    # ffmpeg exits 0 on a truncated WEBM and only says "File ended prematurely" on stderr.
    node = ffmpeg.output(ff.input_stream(av_files["webm_truncated"], "matroska"), "pipe:", f="null")
    with pytest.raises(ProcessingError) as info:
        ff.run(node, timeout_s=60)
    assert info.value.code == "ffmpeg_failed"
    assert "exit status 0" in info.value.message
    assert "prematurely" in info.value.message


def test_failed_run_removes_its_partial_output_and_shortens_paths(av_files: dict[str, Path], tmp_path: Path) -> None:
    source = av_files["mp4_no_moov"]
    out = tmp_path / "out.mp4"
    with pytest.raises(ProcessingError) as info:
        ff.run_to_file(_copy_node(source, "mov"), out, timeout_s=60)
    assert info.value.code == "ffmpeg_failed"
    assert "moov atom not found" in info.value.message
    assert str(source.parent) not in info.value.message
    assert info.value.hint
    assert list(tmp_path.iterdir()) == []


def test_timeout_kills_ffmpeg_and_removes_its_partial_output(av_files: dict[str, Path], tmp_path: Path) -> None:
    # -re reads the input in real time, so this 2 s clip cannot finish inside 0.3 s.
    def node(url: str) -> object:
        inp = ff.input_stream(av_files["mov_h264_aac_720p"], "mov", re=None)
        return ffmpeg.output(inp, url, f="mp4", c="copy")

    with pytest.raises(ProcessingError) as info:
        ff.run_to_file(node, tmp_path / "out.mp4", timeout_s=0.3)
    assert info.value.code == "timeout"
    assert "0.3 s" in info.value.message
    assert list(tmp_path.iterdir()) == []


def test_pipe_output_streams_in_chunks(av_files: dict[str, Path]) -> None:
    node = ffmpeg.output(ff.input_stream(av_files["wav_pcm16_16k_mono"], "wav"), "pipe:", f="s16le", ac=1, ar=8000)
    with ff.open_pipe(node, timeout_s=60, chunk_size=4096) as chunks:
        sizes = [len(chunk) for chunk in chunks]
    assert len(sizes) > 1
    assert sum(sizes) == 2 * 8000 * 2  # 2 s of 8 kHz mono 16-bit


def test_pipe_output_reports_a_failure_when_it_ends(av_files: dict[str, Path]) -> None:
    node = ffmpeg.output(ff.input_stream(av_files["flac_truncated"], "flac"), "pipe:", f="s16le")
    with pytest.raises(ProcessingError) as info, ff.open_pipe(node, timeout_s=60) as chunks:
        for _ in chunks:
            pass
    assert info.value.code == "ffmpeg_failed"


def test_pipe_timeout_stops_ffmpeg(av_files: dict[str, Path]) -> None:
    inp = ff.input_stream(av_files["wav_long"], "wav", re=None)
    node = ffmpeg.output(inp, "pipe:", f="s16le")
    with pytest.raises(ProcessingError) as info, ff.open_pipe(node, timeout_s=0.3) as chunks:
        for _ in chunks:
            pass
    assert info.value.code == "timeout"


def test_timeout_grows_with_the_media_duration() -> None:
    assert ff.timeout_for(None) == ff.BASE_TIMEOUT_S
    assert ff.timeout_for(60, per_second=2) == ff.BASE_TIMEOUT_S + 120
    assert ff.timeout_for(120) > ff.timeout_for(10)


def test_output_names_are_fresh_and_never_option_like(tmp_path: Path) -> None:
    first = ff.output_path(tmp_path, Path("--evil %d name.wav"), ".wav")
    second = ff.output_path(tmp_path, Path("--evil %d name.wav"), ".wav")
    assert first != second
    assert first.parent == second.parent == tmp_path
    for path in (first, second):
        assert not path.name.startswith(("-", "."))
        assert "%" not in path.name and " " not in path.name


def test_missing_executable_is_reported_not_crashed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "ffmpeg-that-is-not"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv(ff.FFMPEG_ENV, str(fake))
    with pytest.raises(ConfigError) as info:
        ff.ffmpeg_version()
    assert "does not run" in info.value.message
