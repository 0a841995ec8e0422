"""Audio the profile accepts: ``normalize_audio``.

Rules, in order:

1. The file is validated first (full decode, or up to just past the limit,
   see ``validate.py``); its decoded length is trusted over the header. Zero samples is ``empty``; a silent track
   only adds a warning.
2. Longer than ``profile.max_audio_s``: ``too_long``, unless ``options.trim_s``
   asks for the first N seconds (N within the limit). A header that records an
   exact length (WAV data size, FLAC sample count, MP3 Xing frame count, MP4
   sample tables) refuses it before any decoding; otherwise decoding stops as
   soon as it passes the limit ("at least N s").
3. **Passthrough** (the source's bytes, no actions) for a WAV or MP3 the profile
   lists, with a sample rate in ``[min_sample_rate, max_sample_rate]``, at most
   two channels, linear PCM (8, 16 or 24-bit) for WAV with real header sizes,
   and, in inline mode, small enough to fit. Such a file carrying metadata
   (ID3v2/ID3v1/APE/Lyrics3 tags and cover pictures in an MP3; ``LIST``,
   ``id3 ``, ``bext``, ``iXML``, ``cue `` and other non-audio chunks in a WAV)
   loses it losslessly instead: the MP3 frames, or the WAV ``fmt ``/``data``
   chunks, are copied byte for byte (``strip-metadata``, see
   ``audio_metadata.py``). ``options.keep_metadata`` sends the file as it is.
4. Otherwise ffmpeg re-encodes it (streamed from file to file: memory stays
   flat whatever the length) at ``profile.audio_sample_rate`` and
   ``profile.audio_channels`` (16 kHz mono by default, what the model
   consumes); below ``min_sample_rate`` this resamples up, with a warning.
   **Size-aware format rule**: WAV (PCM s16, lossless) when the WAV would fit
   inline (its base64 under ``fit_chars``, else under the profile's inline
   limit); MP3 otherwise (48 kbps per channel: 21.6 MB per hour of 16 kHz mono
   instead of 115 MB of WAV). Only the audio stream is read (no cover picture),
   and the output carries no tag at all: no global or stream metadata, no
   encoder name (``-fflags +bitexact``), no ID3 tag in an MP3, no ``LIST`` chunk
   in a WAV, unless ``options.keep_metadata`` asks for the source's tags.
5. Every output is read back before it is reported (``validate.check_output``):
   it holds samples and lasts as long as what was converted (within the
   validation tolerance), else ``empty`` / ``ffmpeg_failed``.
6. Inline mode (``options.fit_chars``): if that output does not fit, an MP3
   ladder is walked (lower bitrates, then 8 kHz), sizes predicted from the
   duration so that only candidates that can fit are encoded; when even the
   smallest cannot fit, ``cannot_fit_inline``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from .. import ffmpeg as ff
from ..errors import MediaError
from ..formats import output_format
from ..media_info import MediaInfo
from ..option_table import ref
from ..probe_av import probe_av, with_digest
from ..profiles import Profile
from ..sniff import Sniffed, sniff_path
from ..validate import Validation, check_output, exact_duration, validate_av, wav_data_chunk
from ..wire import b64_len
from .audio_metadata import audio_rewrite, mpeg_frame_length, write_rewrite
from .base import NormalizedMedia, NormalizeOptions, dropped_tracks
from .limits import check_duration, decode_limit, exceeds
from .metadata import MalformedContainerError

PASSTHROUGH_WAV_CODECS = frozenset({"pcm_s16le", "pcm_s24le", "pcm_u8"})
"""Linear PCM every WAV reader handles; u-law/A-law, float and ADPCM WAVs are re-encoded."""

MP3_KBPS_PER_CHANNEL = 48
MP3_LADDER: tuple[tuple[int, int], ...] = ((16_000, 32), (16_000, 24), (16_000, 16), (8_000, 16), (8_000, 8))
"""Inline-mode fallbacks, mono, smallest last: (sample rate, kbps)."""

WAV_HEADER_BYTES = 78
MP3_OVERHEAD_BYTES = 2_048
"""Allowance for the Xing/LAME frame, padding and rounding when predicting an MP3's size."""


AUDIO_TIMEOUT_PER_S = 1.0
"""Allowed wall-clock seconds per second of audio (ffmpeg converts a 1-hour MP3 in a few seconds)."""


@dataclass(frozen=True)
class _Encoding:
    fmt: str  # "wav" or "mp3"
    rate: int
    channels: int
    kbps: int | None = None

    def predicted_bytes(self, duration_s: float) -> int:
        if self.fmt == "wav":
            return WAV_HEADER_BYTES + math.ceil(duration_s * self.rate) * self.channels * 2
        assert self.kbps is not None
        return MP3_OVERHEAD_BYTES + math.ceil(duration_s * self.kbps * 1000 / 8)

    def describe(self) -> str:
        layout = "mono" if self.channels == 1 else f"{self.channels} channels"
        if self.fmt == "wav":
            return f"WAV 16-bit {self.rate} Hz {layout}"
        return f"MP3 {self.kbps} kbps {self.rate} Hz {layout}"


def normalize_audio(
    source: Path, sniffed: Sniffed, info: MediaInfo, profile: Profile, options: NormalizeOptions
) -> NormalizedMedia:
    """Make ``source`` a WAV or MP3 the profile accepts (see the module docstring for the rules).

    Args:
        source: the input file (never modified).
        sniffed: its sniffer verdict (the ffmpeg demuxer is forced from it).
        info: ``probe_av``'s result for it (kind ``audio``).
        profile: what the target accepts.
        options: workdir for outputs, inline budget, trim.

    Returns:
        The output file (the source itself on passthrough), its ``MediaInfo`` (with ``sha256``),
        the actions taken (``trim:N``, ``resample:16000``, ``downmix:mono``, ``encode:wav``/``encode:mp3``,
        ``bitrate:48k``) and warnings.

    Raises:
        MediaError: ``empty``, ``corrupt_media``, ``too_long`` or ``cannot_fit_inline``.
        ProcessingError: ffmpeg failed or timed out.
    """
    max_s = profile.max_audio_s
    splitting = options.split_long_audio and options.trim_s is None and max_s is not None
    validation = _validate_within(source, sniffed, info, max_s, whole=splitting, refuse=options.trim_s is None)
    duration = validation.decoded_s
    warnings = [*validation.warnings, *dropped_tracks(info), *_cut_last_frame(sniffed, validation)]
    if splitting and exceeds(duration, max_s):
        assert max_s is not None
        return _split(source, sniffed, info, profile, options, duration, max_s, warnings)
    trim = check_duration(
        source, "audio", duration, max_s, options.trim_s, basis="decoded" if validation.complete else "at-least"
    )
    length = trim if trim is not None else duration
    if trim is None and _passes_through(source, sniffed, info, profile):
        as_it_is = _as_it_is(source, sniffed, info.replace(duration_s=duration), options)
        if as_it_is is not None:
            as_it_is.warnings = warnings
            return as_it_is
    rate, channels = _target(info, profile, warnings)
    output, out_info, chosen = _encode_to_fit(
        source, sniffed, info, profile, options, (rate, channels), 0.0, trim, length
    )
    return NormalizedMedia(path=output, info=out_info, actions=_actions(info, chosen, trim), warnings=warnings)


def _cut_last_frame(sniffed: Sniffed, validation: Validation) -> list[str]:
    """A warning when an MP3's last frame is shorter than its header says: the file's tail is missing.

    An MP3 without a Xing/Info/VBRI frame count records no length to compare the decoded one with; a tail
    cut at any byte but a frame boundary still shows in the last frame. libav decodes what is there.
    """
    if sniffed.container != "mp3" or validation.last_audio_packet is None:
        return []
    head, size = validation.last_audio_packet
    expected = mpeg_frame_length(head)
    if expected is None or size >= expected:
        return []
    return [f"the last MP3 frame is cut short ({size} of {expected} bytes): the end of the recording is missing"]


def _validate_within(
    source: Path, sniffed: Sniffed, info: MediaInfo, max_s: float | None, *, whole: bool, refuse: bool
) -> Validation:
    """Validate ``source``, reading no more of it than the limit ``max_s`` needs.

    Audio over the limit is refused from its header's exact length when there is one (``refuse``) and
    otherwise decoded only until it passes the limit (a 10-hour FLAC is not decoded for 30 s to be refused);
    ``whole`` (splitting) decodes it all.

    Raises:
        MediaError: ``too_long`` from the header, or validation's ``empty``/``corrupt_media``.
    """
    if refuse and not whole:
        exact = exact_duration(source, sniffed, info)
        if exact is not None:
            check_duration(source, "audio", exact, max_s, None, basis="header")
    return validate_av(source, sniffed, info, stop_after_s=None if whole else decode_limit(max_s))


def _target(info: MediaInfo, profile: Profile, warnings: list[str]) -> tuple[int, int]:
    """The sample rate and channel count a re-encode produces (warning when that resamples up)."""
    rate = min(max(profile.audio_sample_rate, profile.min_sample_rate), profile.max_sample_rate)
    if info.sample_rate and info.sample_rate < profile.min_sample_rate:
        warnings.append(
            f"sample rate {info.sample_rate} Hz is below the {profile.min_sample_rate} Hz minimum: resampled up to "
            f"{rate} Hz (this adds no detail)"
        )
    return rate, min(profile.audio_channels, info.channels or profile.audio_channels)


def _encode_to_fit(
    source: Path,
    sniffed: Sniffed,
    info: MediaInfo,
    profile: Profile,
    options: NormalizeOptions,
    layout: tuple[int, int],
    start: float,
    cut: float | None,
    length: float,
) -> tuple[Path, MediaInfo, _Encoding]:
    """Encode by the size-aware rule (walking the ladder under a budget) from ``start``, ``cut`` seconds
    of it (None: to the end), which last ``length`` seconds."""
    limit = options.fit_chars
    rate, channels = layout
    chosen = _first_choice(length, rate, channels, profile, limit)
    if limit is not None and b64_len(chosen.predicted_bytes(length)) >= limit:
        chosen = _ladder_start(source, length, profile, limit)
    while True:
        output, out_info = _encode(source, sniffed, info, chosen, start, cut, length, options)
        if limit is None or b64_len(out_info.bytes) < limit:
            return output, out_info, chosen
        output.unlink()
        chosen = _next_rung(source, chosen, length, profile, limit, b64_len(out_info.bytes))


def _split(
    source: Path,
    sniffed: Sniffed,
    info: MediaInfo,
    profile: Profile,
    options: NormalizeOptions,
    duration: float,
    max_s: float,
    warnings: list[str],
) -> NormalizedMedia:
    """Cut ``source`` at its pauses into pieces of at most ``max_s``, each re-encoded by the usual rule."""
    from .split import cut_points, loudness

    cuts = cut_points(duration, max_s, loudness(source, sniffed, info))
    bounds = list(zip([0.0, *cuts], [*cuts, duration], strict=True))
    layout = _target(info, profile, warnings)
    if options.fit_share is not None:  # the pieces share one request with the other items: each fits its share
        options = dataclasses.replace(options, fit_chars=options.fit_share.each(len(bounds)))
    pieces: list[NormalizedMedia] = []
    try:
        for number, (start, end) in enumerate(bounds, 1):
            length = end - start
            output, out_info, chosen = _encode_to_fit(
                source, sniffed, info, profile, options, layout, start, length, length
            )
            actions = [f"split:{number}/{len(bounds)}", *_actions(info, chosen, None)]
            pieces.append(NormalizedMedia(output, out_info, actions, list(warnings), span=(start, end)))
    except BaseException:
        for piece in pieces:
            piece.path.unlink(missing_ok=True)
        raise
    first = pieces[0]
    return NormalizedMedia(first.path, first.info, first.actions, first.warnings, first.span, pieces)


def _as_it_is(source: Path, sniffed: Sniffed, info: MediaInfo, options: NormalizeOptions) -> NormalizedMedia | None:
    """The source's own audio, with its metadata cut out losslessly unless kept (None: it must be re-encoded).

    None when the result would not fit the inline budget, or when the container cannot be walked
    (the re-encode then drops the metadata as well).
    """
    limit = options.fit_chars
    rewrite = None
    if not options.keep_metadata:
        try:
            rewrite = audio_rewrite(source, sniffed.container)
        except MalformedContainerError:
            return None
    size = info.bytes if rewrite is None else rewrite.size
    if limit is not None and b64_len(size) >= limit:
        return None
    if rewrite is None:
        return NormalizedMedia(path=source, info=with_digest(source, info))
    output = ff.output_path(options.workdir, source, "." + sniffed.container)
    try:
        write_rewrite(source, rewrite, output)
        stripped = with_digest(output, probe_av(output, sniff_path(output)).replace(duration_s=info.duration_s))
    except MalformedContainerError:
        output.unlink(missing_ok=True)
        return None
    except BaseException:
        output.unlink(missing_ok=True)
        raise
    return NormalizedMedia(path=output, info=stripped, actions=["strip-metadata"])


def _passes_through(source: Path, sniffed: Sniffed, info: MediaInfo, profile: Profile) -> bool:
    rate_ok = info.sample_rate is not None and profile.min_sample_rate <= info.sample_rate <= profile.max_sample_rate
    if not rate_ok or not info.channels or info.channels > 2:
        return False
    if sniffed.container == "mp3":
        return "mp3" in profile.audio_formats and info.audio_codec == "mp3"
    if sniffed.container == "wav":
        if "wav" not in profile.audio_formats or info.audio_codec not in PASSTHROUGH_WAV_CODECS:
            return False
        data = wav_data_chunk(source)
        # Streamed WAVs (sizes 0 or 0xFFFFFFFF) or sizes past the end confuse readers: rewrite those.
        return data is not None and 0 < data[1] != 0xFFFFFFFF and data[0] + data[1] <= info.bytes + 1
    return False


def _first_choice(length: float, rate: int, channels: int, profile: Profile, limit: int | None) -> _Encoding:
    wav = _Encoding("wav", rate, channels)
    mp3 = _Encoding("mp3", rate, channels, MP3_KBPS_PER_CHANNEL * channels)
    if "mp3" not in profile.audio_formats:
        return wav
    if "wav" not in profile.audio_formats:
        return mp3
    budget = limit if limit is not None else profile.inline_limit
    return wav if b64_len(wav.predicted_bytes(length)) < budget else mp3


def _ladder(profile: Profile) -> list[_Encoding]:
    floor = max(8_000, profile.min_sample_rate)
    return [_Encoding("mp3", max(rate, floor), 1, kbps) for rate, kbps in MP3_LADDER]


def _ladder_start(source: Path, length: float, profile: Profile, limit: int) -> _Encoding:
    if "mp3" not in profile.audio_formats:
        wav = _Encoding("wav", max(8_000, profile.min_sample_rate), 1)
        if b64_len(wav.predicted_bytes(length)) < limit:
            return wav
        raise _cannot_fit(source, length, wav, b64_len(wav.predicted_bytes(length)), limit)
    for rung in _ladder(profile):
        if b64_len(rung.predicted_bytes(length)) < limit:
            return rung
    smallest = _ladder(profile)[-1]
    raise _cannot_fit(source, length, smallest, b64_len(smallest.predicted_bytes(length)), limit)


def _next_rung(source: Path, current: _Encoding, length: float, profile: Profile, limit: int, got: int) -> _Encoding:
    rungs = _ladder(profile) if "mp3" in profile.audio_formats else []
    smaller = [r for r in rungs if r.predicted_bytes(length) < current.predicted_bytes(length) and r != current]
    for rung in smaller:
        if b64_len(rung.predicted_bytes(length)) < limit:
            return rung
    raise _cannot_fit(source, length, current, got, limit)


def _cannot_fit(source: Path, length: float, encoding: _Encoding, chars: int, limit: int) -> MediaError:
    return MediaError(
        f"{source.name}: {length:.1f} s of audio cannot fit inline: as {encoding.describe()} it takes about "
        f"{chars:,} base64 characters; the limit is {limit:,}",
        code="cannot_fit_inline",
        hint=f"use {ref('mode', 'auto')} or {ref('mode', 'asset')} to upload it, "
        f"or {ref('trim_s')} to send a shorter part",
    )


def _encode(
    source: Path,
    sniffed: Sniffed,
    info: MediaInfo,
    enc: _Encoding,
    start: float,
    cut: float | None,
    length: float,
    options: NormalizeOptions,
) -> tuple[Path, MediaInfo]:
    """Re-encode ``source`` from ``start``, ``cut`` seconds of it (None: to the end), ``length`` seconds in all."""
    import ffmpeg

    output = ff.output_path(options.workdir, source, output_format(enc.fmt).suffix)
    in_options = {"ss": f"{start:.3f}"} if start > 0 else {}
    if cut is not None:
        in_options["t"] = f"{cut:.3f}"
    index = info.extra.get("audio_index")
    stream_spec = str(index) if isinstance(index, int) else "a:0"
    codec: dict[str, object] = (
        {"c:a": "pcm_s16le"} if enc.fmt == "wav" else {"c:a": "libmp3lame", "b:a": f"{enc.kbps}k"}
    )
    if not options.keep_metadata:
        # No tag from the source, no encoder name, and for an MP3 no ID3 tag at all (only padding otherwise).
        codec.update({"map_metadata": -1, "map_chapters": -1, "fflags": "+bitexact"})
        if enc.fmt == "mp3":
            codec["id3v2_version"] = 0

    def node(url: str) -> object:
        inp = ff.input_stream(source, sniffed.ffmpeg_format, **in_options)
        return ffmpeg.output(
            inp[stream_spec],
            url,
            f=enc.fmt,
            ar=enc.rate,
            ac=enc.channels,
            **codec,
        )

    try:
        ff.run_to_file(node, output, timeout_s=ff.timeout_for(length, per_second=AUDIO_TIMEOUT_PER_S))
        check_output(output, source, "audio", length)  # never ok with no samples, or cut short
    except BaseException:
        output.unlink(missing_ok=True)
        raise
    out_sniffed = sniff_path(output)
    return output, with_digest(output, probe_av(output, out_sniffed))


def _actions(info: MediaInfo, enc: _Encoding, trim: float | None) -> list[str]:
    actions = []
    if trim is not None:
        actions.append(f"trim:{trim:g}")
    if info.sample_rate != enc.rate:
        actions.append(f"resample:{enc.rate}")
    if info.channels and info.channels > enc.channels:
        actions.append("downmix:mono" if enc.channels == 1 else f"downmix:{enc.channels}ch")
    actions.append(f"encode:{enc.fmt}")
    if enc.kbps is not None:
        actions.append(f"bitrate:{enc.kbps}k")
    return actions
