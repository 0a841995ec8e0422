"""nvmedia.normalize.audio: real audio files in, WAV/MP3 the profile accepts out (real ffmpeg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support import CORPUS, corpus_expectations, sha256_file

from nvmedia.errors import MediaError
from nvmedia.normalize import NormalizedMedia, NormalizeOptions, normalize
from nvmedia.normalize.audio import normalize_audio
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
    options = NormalizeOptions(workdir=workdir, fit_chars=fit_chars, trim_s=trim_s)
    return normalize(path, sniffed, info, profile, options)


def _reprobe(path: Path) -> MediaInfo:
    return probe_av(path, sniff_path(path))


def _assert_output_record(result: NormalizedMedia) -> None:
    """The output's MediaInfo describes the bytes actually written."""
    info = result.info
    assert info.sha256 == sha256_file(result.path)
    assert info.bytes == result.path.stat().st_size
    assert info.mime == sniff_path(result.path).mime
    assert info.mime in ("audio/wav", "audio/mpeg")
    again = _reprobe(result.path)
    assert (info.sample_rate, info.channels, info.audio_codec) == (again.sample_rate, again.channels, again.audio_codec)
    assert info.duration_s is not None and info.duration_s > 0


@pytest.mark.parametrize("name", ["wav_pcm16_16k_mono", "mp3_44k", "wav_24bit", "wav_stereo_44k"])
def test_acceptable_wav_and_mp3_pass_through_untouched(av_files: dict[str, Path], tmp_path: Path, name: str) -> None:
    source = av_files[name]
    result = _normalize(source, tmp_path)
    assert result.path == source
    assert result.actions == []
    assert result.info.sha256 == sha256_file(source)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name", ["flac", "ogg_vorbis", "opus", "aiff", "wav_ulaw", "wav_float32", "wav_192k", "wav_6ch", "m4a_aac"]
)
def test_other_audio_becomes_16k_mono_pcm_wav(av_files: dict[str, Path], tmp_path: Path, name: str) -> None:
    source = av_files[name]
    before = sha256_file(source)
    result = _normalize(source, tmp_path)
    assert result.path.parent == tmp_path
    assert result.info.mime == "audio/wav"
    assert (result.info.audio_codec, result.info.sample_rate, result.info.channels) == ("pcm_s16le", 16000, 1)
    assert result.actions[-1] == "encode:wav"
    assert "resample:16000" in result.actions
    assert result.info.duration_s == pytest.approx(_reprobe(source).duration_s, abs=0.05)
    _assert_output_record(result)
    assert sha256_file(source) == before


def test_six_channels_are_downmixed_to_mono(av_files: dict[str, Path], tmp_path: Path) -> None:
    result = _normalize(av_files["wav_6ch"], tmp_path)
    assert "downmix:mono" in result.actions
    assert result.info.channels == 1


def test_audio_below_8khz_is_resampled_up_with_a_warning(av_files: dict[str, Path], tmp_path: Path) -> None:
    result = _normalize(av_files["wav_6k"], tmp_path)
    assert result.info.sample_rate == 16000
    assert "resample:16000" in result.actions
    assert any("6000 Hz" in w and "8000 Hz" in w for w in result.warnings)


def test_audio_too_big_to_inline_as_wav_becomes_mp3(av_files: dict[str, Path], tmp_path: Path) -> None:
    # 12 s of 16 kHz mono WAV is 384 KB, past the 180,000-character inline limit: MP3 instead.
    result = _normalize(av_files["flac_long"], tmp_path)
    assert result.info.mime == "audio/mpeg"
    assert result.actions == ["resample:16000", "encode:mp3", "bitrate:48k"]
    assert (result.info.sample_rate, result.info.channels) == (16000, 1)
    assert result.info.duration_s == pytest.approx(12.0, abs=0.1)
    _assert_output_record(result)


def test_streamed_wav_with_placeholder_sizes_is_rewritten(av_files: dict[str, Path], tmp_path: Path) -> None:
    result = _normalize(av_files["wav_streamed"], tmp_path)
    assert result.path != av_files["wav_streamed"]
    assert result.info.duration_s == pytest.approx(3.0, abs=0.05)


def test_audio_longer_than_the_profile_allows_is_too_long(av_files: dict[str, Path], tmp_path: Path) -> None:
    short = DEFAULT.replace(max_audio_s=5.0)
    with pytest.raises(MediaError) as info:
        _normalize(av_files["wav_long"], tmp_path, short)
    assert info.value.code == "too_long"
    assert "12.0 s" in info.value.message and "5 s" in info.value.message
    assert "trim_s=5" in info.value.hint
    assert list(tmp_path.iterdir()) == []


def test_rounding_past_the_limit_is_tolerated(av_files: dict[str, Path], tmp_path: Path) -> None:
    result = _normalize(av_files["wav_long"], tmp_path, DEFAULT.replace(max_audio_s=11.9))
    assert result.path == av_files["wav_long"]


def test_trim_keeps_the_first_seconds_of_long_audio(av_files: dict[str, Path], tmp_path: Path) -> None:
    short = DEFAULT.replace(max_audio_s=5.0)
    result = _normalize(av_files["wav_long"], tmp_path, short, trim_s=4)
    assert result.actions[0] == "trim:4"
    assert result.info.duration_s == pytest.approx(4.0, abs=0.05)
    _assert_output_record(result)


def test_trim_beyond_the_limit_is_refused(av_files: dict[str, Path], tmp_path: Path) -> None:
    short = DEFAULT.replace(max_audio_s=5.0)
    with pytest.raises(MediaError) as info:
        _normalize(av_files["wav_long"], tmp_path, short, trim_s=8)
    assert info.value.code == "too_long"


def test_inline_mode_shrinks_audio_under_the_budget(av_files: dict[str, Path], tmp_path: Path) -> None:
    budget = 40_000
    result = _normalize(av_files["flac_long"], tmp_path, fit_chars=budget)
    assert b64_len(result.info.bytes) < budget
    assert result.info.mime == "audio/mpeg"
    assert "encode:mp3" in result.actions
    assert result.info.sample_rate is not None and result.info.sample_rate >= 8000
    assert len(list(tmp_path.iterdir())) == 1, "rejected attempts must not be left behind"


def test_inline_mode_passes_through_what_already_fits(av_files: dict[str, Path], tmp_path: Path) -> None:
    source = av_files["mp3_44k"]
    result = _normalize(source, tmp_path, fit_chars=b64_len(source.stat().st_size) + 1)
    assert result.path == source


def test_inline_mode_reports_audio_that_cannot_fit(av_files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(MediaError) as info:
        _normalize(av_files["flac_long"], tmp_path, fit_chars=5_000)
    assert info.value.code == "cannot_fit_inline"
    assert "5,000" in info.value.message and "12.0 s" in info.value.message
    assert 'mode="auto"' in info.value.hint
    assert list(tmp_path.iterdir()) == []


def test_silent_audio_is_kept_with_a_warning(av_files: dict[str, Path], tmp_path: Path) -> None:
    result = _normalize(av_files["wav_silent"], tmp_path)
    assert result.path == av_files["wav_silent"]
    assert any("silent" in w for w in result.warnings)


def test_zero_length_audio_is_empty(av_files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(MediaError) as info:
        _normalize(av_files["wav_zero_samples"], tmp_path)
    assert info.value.code == "empty"
    assert info.value.hint


def test_generic_profile_also_converts_flac(av_files: dict[str, Path], tmp_path: Path) -> None:
    result = normalize_audio(
        av_files["flac"],
        sniff_path(av_files["flac"]),
        _reprobe(av_files["flac"]),
        GENERIC,
        NormalizeOptions(workdir=tmp_path),
    )
    assert result.info.mime == "audio/wav"


def test_mp3_only_profile_never_writes_wav(av_files: dict[str, Path], tmp_path: Path) -> None:
    result = _normalize(av_files["flac"], tmp_path, DEFAULT.replace(audio_formats=("mp3",)))
    assert result.info.mime == "audio/mpeg"


_CORPUS_AUDIO = [e for e in corpus_expectations() if e["kind"] == "audio"]


@pytest.mark.parametrize("entry", _CORPUS_AUDIO, ids=lambda e: e["file"])
def test_corpus_audio_matches_its_expectation(entry: dict[str, Any], tmp_path: Path) -> None:
    source = CORPUS / entry["file"]
    if entry["expect"] == "error":
        codes = {entry["error_code"], *(entry.get("alt_error_codes") or [])}
        with pytest.raises(MediaError) as info:
            _normalize(source, tmp_path)
        assert info.value.code in codes
        assert info.value.hint
        return
    result = _normalize(source, tmp_path)
    assert result.info.kind == "audio"
    assert result.info.mime in ("audio/wav", "audio/mpeg")
    assert result.info.sample_rate is not None and result.info.sample_rate >= 8000
    if "passthrough-ok" in (entry.get("checks") or []):
        # As it is, or with its tags cut out losslessly (tests/test_audio_metadata.py).
        assert (result.path == source and result.actions == []) or result.actions == ["strip-metadata"]
    else:
        assert result.path.parent == tmp_path
    _assert_output_record(result)
