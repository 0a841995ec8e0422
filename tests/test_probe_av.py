"""nvmedia.probe_av and nvmedia.validate: properties and integrity of real audio and video files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from support import CORPUS, sha256_file

from nvmedia.errors import InputError, MediaError
from nvmedia.probe import MediaInfo, probe
from nvmedia.probe_av import probe_av
from nvmedia.sniff import Sniffed, sniff_path
from nvmedia.validate import Validation, validate_av


def _probe(path: Path) -> MediaInfo:
    return probe_av(path, sniff_path(path))


def _validate(path: Path) -> Validation:
    sniffed = sniff_path(path)
    return validate_av(path, sniffed, probe_av(path, sniffed))


def test_mp4_with_latin1_metadata_probes_as_h264_aac_video() -> None:
    info = _probe(CORPUS / "pydub__creative_common.mp4")
    assert (info.kind, info.mime, info.container) == ("video", "video/mp4", "mp4")
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert (info.width, info.height) == (640, 480)
    assert (info.sample_rate, info.channels) == (48000, 2)
    assert info.duration_s == pytest.approx(2.269, abs=0.01)
    assert info.rotation == 0
    assert info.frame_rate and info.frame_rate > 1
    assert info.bytes == 266745


def test_mp4_holding_only_audio_is_kind_audio() -> None:
    info = _probe(CORPUS / "small__mp4-with-audio.mp4")
    assert (info.kind, info.mime, info.audio_codec) == ("audio", "audio/mp4", "aac")
    assert info.video_codec is None and info.width is None


def test_m4a_named_aac_is_read_as_mp4_audio() -> None:
    info = _probe(CORPUS / "pydub__wrong_extension.aac")
    assert (info.kind, info.container, info.audio_codec) == ("audio", "m4a", "aac")
    assert info.duration_s == pytest.approx(9.66, abs=0.01)


def test_webm_with_only_opus_is_kind_audio() -> None:
    info = _probe(CORPUS / "pydub__test5.webm")
    assert (info.kind, info.mime, info.audio_codec) == ("audio", "audio/webm", "opus")


def test_ogg_carrying_flac_reports_flac() -> None:
    info = _probe(CORPUS / "pydub__bach.ogg")
    assert (info.kind, info.audio_codec, info.sample_rate, info.bit_depth) == ("audio", "flac", 44100, 16)


def test_mp3_with_cover_art_stays_audio(av_files: dict[str, Path]) -> None:
    info = _probe(av_files["mp3_cover_art"])
    assert (info.kind, info.mime, info.audio_codec) == ("audio", "audio/mpeg", "mp3")
    assert info.width is None
    assert info.extra["video_streams"] == 0


def test_webm_duration_comes_from_the_container(av_files: dict[str, Path]) -> None:
    info = _probe(av_files["webm_vp9_opus"])
    assert (info.video_codec, info.audio_codec) == ("vp9", "opus")
    assert info.duration_s == pytest.approx(1.0, abs=0.05)


def test_display_matrix_rotation_is_reported_clockwise(av_files: dict[str, Path]) -> None:
    # -display_rotation 90 is counter-clockwise: the picture must turn 270 degrees clockwise.
    assert _probe(av_files["mp4_rotated_90"]).rotation == 270
    assert _probe(av_files["mp4_h264_noaudio"]).rotation == 0


def test_video_properties_of_a_mov(av_files: dict[str, Path]) -> None:
    info = _probe(av_files["mov_h264_aac_720p"])
    assert (info.kind, info.mime, info.container) == ("video", "video/quicktime", "mov")
    assert (info.width, info.height, info.frame_rate) == (1280, 720, 25.0)
    assert info.mode == "yuv420p"
    assert info.bit_rate and info.bit_rate > 0


@pytest.mark.parametrize(
    ("name", "codec", "rate", "channels", "bits", "sample_format"),
    [
        ("wav_24bit", "pcm_s24le", 44100, 1, 24, "s32"),
        ("wav_float32", "pcm_f32le", 44100, 1, 32, "flt"),
        ("wav_ulaw", "pcm_mulaw", 8000, 1, None, "s16"),
        ("wav_192k", "pcm_s16le", 192000, 1, 16, "s16"),
        ("wav_6ch", "pcm_s16le", 48000, 6, 16, "s16"),
        ("aiff", "pcm_s16be", 44100, 1, 16, "s16"),
        ("flac", "flac", 44100, 1, 16, "s16"),
        ("ogg_vorbis", "vorbis", 44100, 1, None, "fltp"),
        ("opus", "opus", 48000, 1, None, "fltp"),
    ],
)
def test_audio_properties(
    av_files: dict[str, Path],
    name: str,
    codec: str,
    rate: int,
    channels: int,
    bits: int | None,
    sample_format: str,
) -> None:
    info = _probe(av_files[name])
    assert info.kind == "audio"
    assert (info.audio_codec, info.sample_rate, info.channels) == (codec, rate, channels)
    assert info.bit_depth == bits
    assert info.sample_format == sample_format
    assert info.duration_s and info.duration_s > 0.9


def test_container_with_no_streams_is_empty() -> None:
    with pytest.raises(MediaError) as info:
        _probe(CORPUS / "small__Mpeg4.mp4")
    assert info.value.code == "empty"
    assert "0 audio, 0 video" in info.value.message


def test_subtitle_only_mp4_is_unsupported(av_files: dict[str, Path]) -> None:
    with pytest.raises(MediaError) as info:
        _probe(av_files["mp4_subtitles_only"])
    assert info.value.code == "unsupported_format"
    assert "subtitle" in info.value.message


def test_zero_by_zero_video_is_corrupt(av_files: dict[str, Path]) -> None:
    with pytest.raises(MediaError) as info:
        _probe(av_files["mkv_zero_size"])
    assert info.value.code == "corrupt_media"
    assert "0x0" in info.value.message


def test_header_only_flv_is_corrupt() -> None:
    with pytest.raises(MediaError) as info:
        _probe(CORPUS / "small__FlashVideo.flv")
    assert info.value.code == "corrupt_media"
    assert info.value.hint


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    sniffed = Sniffed("video", "mp4", "video/mp4", "mov", "MPEG-4 movie")
    with pytest.raises(InputError) as info:
        probe_av(tmp_path / "gone.mp4", sniffed)
    assert info.value.code == "not_found"


def test_probe_dispatch_sends_audio_and_video_to_pyav(av_files: dict[str, Path]) -> None:
    path = av_files["mkv_h264_aac"]
    info = probe(path, sniff_path(path))
    assert (info.kind, info.video_codec, info.mime) == ("video", "h264", "video/x-matroska")


def test_probing_leaves_the_source_untouched(av_files: dict[str, Path]) -> None:
    path = av_files["mp4_h264_aac"]
    before = (sha256_file(path), path.stat().st_mtime_ns)
    _probe(path)
    _validate(path)
    assert (sha256_file(path), path.stat().st_mtime_ns) == before


# Validation.


def test_whole_audio_validates_with_its_decoded_length(av_files: dict[str, Path]) -> None:
    result = _validate(av_files["flac"])
    assert result.method == "full-decode"
    assert result.decoded_s == pytest.approx(2.0, abs=0.01)
    assert result.audio_samples == 88200
    assert result.warnings == []


def test_truncated_mp3_whose_header_claims_more_is_corrupt(av_files: dict[str, Path]) -> None:
    with pytest.raises(MediaError) as info:
        _validate(av_files["mp3_truncated"])
    assert info.value.code == "corrupt_media"
    assert "claims 5.00 s" in info.value.message and "1.2" in info.value.message


def test_truncated_flac_is_corrupt(av_files: dict[str, Path]) -> None:
    with pytest.raises(MediaError) as info:
        _validate(av_files["flac_truncated"])
    assert info.value.code == "corrupt_media"


def test_mp4_with_mdat_cut_short_is_corrupt(av_files: dict[str, Path]) -> None:
    with pytest.raises(MediaError) as info:
        _validate(av_files["mp4_mdat_cut"])
    assert info.value.code == "corrupt_media"


def test_mp4_without_moov_is_corrupt(av_files: dict[str, Path]) -> None:
    with pytest.raises(MediaError) as info:
        _validate(av_files["mp4_no_moov"])
    assert info.value.code == "corrupt_media"


def test_truncated_webm_is_corrupt_although_ffmpeg_exits_zero(av_files: dict[str, Path]) -> None:
    with pytest.raises(MediaError) as info:
        _validate(av_files["webm_truncated"])
    assert info.value.code == "corrupt_media"
    assert "truncated" in info.value.message


def test_wav_with_header_but_no_samples_is_empty() -> None:
    with pytest.raises(MediaError) as info:
        _validate(CORPUS / "pydub__test1_empty.wav")
    assert info.value.code == "empty"


def test_video_with_no_decodable_frame_is_empty() -> None:
    with pytest.raises(MediaError) as info:
        _validate(CORPUS / "small__WindowsMediaVideo.wmv")
    assert info.value.code == "empty"


def test_streamed_wav_with_placeholder_sizes_trusts_the_decoded_length(av_files: dict[str, Path]) -> None:
    result = _validate(av_files["wav_streamed"])
    assert result.claimed_s is None
    assert result.decoded_s == pytest.approx(3.0, abs=0.01)


def test_silent_audio_is_reported_not_refused(av_files: dict[str, Path]) -> None:
    result = _validate(av_files["wav_silent"])
    assert result.silent
    assert result.peak_dbfs is not None and math.isinf(result.peak_dbfs)
    assert any("silent" in w for w in result.warnings)


def test_audible_audio_has_a_peak_level(av_files: dict[str, Path]) -> None:
    result = _validate(av_files["wav_pcm16_16k_mono"])
    assert not result.silent
    assert result.peak_dbfs is not None and -30 < result.peak_dbfs < 0


def test_video_validation_decodes_first_and_last_gops_only(av_files: dict[str, Path]) -> None:
    # 6 s at 5 fps with a keyframe every 25 frames: 30 frames in 2 GOPs, both decoded.
    result = _validate(av_files["mp4_long"])
    assert result.method == "demux+first-last-gop"
    assert result.decoded_s == pytest.approx(6.0, abs=0.1)
    assert 0 < result.video_frames <= 30


def test_single_frame_video_claiming_a_second_is_not_truncated() -> None:
    result = _validate(CORPUS / "small__webm.webm")
    assert result.video_frames == 1


def test_validation_is_cached_on_the_info(av_files: dict[str, Path]) -> None:
    path = av_files["opus"]
    sniffed = sniff_path(path)
    info = probe_av(path, sniffed)
    first = validate_av(path, sniffed, info)
    assert validate_av(path, sniffed, info) is first
