"""Video the profile accepts: ``normalize_video``.

Rules, in order:

1. The file is validated first (every packet demuxed, first and last GOPs
   decoded, see ``validate.py``). An MP4 holding only audio never gets here:
   probing makes it kind ``audio``.
2. Longer than ``profile.max_video_s``: ``too_long``, unless ``options.trim_s``
   asks for the first N seconds (N within the limit). An MP4/MOV whose sample
   tables say so is refused before anything is read; otherwise reading stops
   as soon as it passes the limit ("at least N s").
3. **Passthrough** when the container is one the profile lists and the codecs
   satisfy it (default profile: MP4 with H.264 4:2:0 and AAC or no audio), no
   rotation is pending, the short side is within ``max_video_lines`` and, in
   inline mode, it fits, and it carries nothing but its picture and sound: a
   clip with tags (title, dates, place, device, encoder), chapters, or any
   stream besides the video and audio sent (subtitles, timecode and other data
   tracks such as GoPro ``gpmd`` or ``camm`` location tracks, cover pictures,
   attachments) is remuxed with all of that dropped (``strip-metadata``), unless
   ``options.keep_metadata``. Where the ``moov`` box sits does not matter for
   passthrough: the file is uploaded or inlined whole, never streamed
   progressively, so rewriting it to move ``moov`` would only cost bytes-identity.
4. **Remux before transcode**: streams that are acceptable as they are get
   copied (``-c copy``) into MP4 with ``+faststart`` (action ``remux:mp4``); an
   audio track the profile does not take is re-encoded to AAC on its own
   (``transcode:aac``) while the video is still copied. A trimmed copy must end by
   the trim: ffmpeg stops a copy in decode order, so with B-frames it keeps frames
   shown past the cut; the packets' span is measured, the cut moved back by the
   overshoot once, and a copy still too long (or ending over a second early) is
   transcoded (exact to the frame).
5. Otherwise ffmpeg transcodes the video to H.264 (libx264 ``veryfast``, CRF 23,
   yuv420p, even dimensions) with AAC audio in MP4: the display rotation is
   applied (``rotate``; many decoders ignore the display matrix, so a rotated
   video is always re-encoded upright), the short side is scaled down to
   ``max_video_lines`` (``scale``; 4K becomes 1080p), an audio-less video stays
   audio-less, timestamps are kept (variable frame rate is not padded out).
   Whatever ffmpeg writes carries only the video and audio streams it maps,
   with no global or stream metadata, no chapters and no encoder name
   (``-map_metadata -1 -map_chapters -1 -fflags +bitexact``) unless
   ``options.keep_metadata``; the display rotation is applied to the pixels.
   A still (a single-frame video) is never passed through: its frame is held
   at ``STILL_FPS`` for its duration (its header's or its audio's), at least
   ``STILL_MIN_S`` (``extend-still:N``), instead of becoming a clip of one
   frame interval.
6. Every output is read back before it is reported (``validate.check_output``):
   it holds frames (and samples, with audio) and lasts as long as what was
   converted (within the validation tolerance), else ``empty`` / ``ffmpeg_failed``.
7. Inline mode (``options.fit_chars``): when the result does not fit, a ladder
   of sizes (720, 480, 360, 240, 144 lines) with a bitrate computed from the
   budget and the duration is walked; when even the smallest cannot carry a
   watchable bitrate, ``cannot_fit_inline``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import ffmpeg as ff
from ..errors import MediaError
from ..formats import output_format
from ..media_info import MediaInfo
from ..option_table import ref
from ..probe_av import open_container, probe_av, with_digest
from ..profiles import Profile
from ..sniff import Sniffed, sniff_path
from ..validate import Validation, check_output, exact_duration, packet_span_s, validate_av
from ..wire import b64_len
from .base import NormalizedMedia, NormalizeOptions, dropped_tracks
from .limits import check_duration, decode_limit

CONTAINER_NAMES = {"mp4": "mp4", "mov": "mov", "webm": "webm", "matroska": "mkv", "3gp": "3gp", "m4a": "mp4"}
"""Sniffer container -> the name profiles use in ``video_formats``."""

MP4_VIDEO_CODECS = frozenset({"h264", "hevc", "av1", "vp9", "mpeg4"})
MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "opus", "ac3", "eac3", "alac", "flac"})
"""Codecs the MP4 muxer can carry as they are (a remux is possible)."""

PLAIN_PIXEL_FORMATS = frozenset({"yuv420p", "yuvj420p"})
"""What every H.264 decoder handles; 10-bit and 4:2:2/4:4:4 H.264 are re-encoded under a strict profile."""

X264_PRESET = "veryfast"
X264_CRF = 23
AAC_KBPS_PER_CHANNEL = 64
REMUX_TIMEOUT_PER_S = 0.5
TRANSCODE_TIMEOUT_PER_S = 4.0

TRIM_SLACK_S = 0.05
"""How far a trimmed output may run past ``--trim``: the last audio frame (an AAC frame lasts 21-46 ms)."""
COPY_CUT_TRIES = 2
"""Stream copies tried (the second cut earlier by the first's overshoot) before a trim is re-encoded."""
COPY_SHORTFALL_MAX_S = 1.0
"""How much shorter than ``--trim`` a stream copy may end (it stops at a packet) before the trim is re-encoded."""

STILL_MIN_S = 1.0
"""A single-frame video becomes a clip at least this long (longer when its header or its audio says so)."""
STILL_FPS = 5
"""Frame rate of the clip a still becomes: more than the 1-2 frames per second a model samples, and few
frames to encode when the still sits beside a long soundtrack."""

INLINE_RUNGS: tuple[tuple[int, int], ...] = ((720, 300), (480, 150), (360, 80), (240, 40), (144, 16))
"""Inline ladder: (short side in lines, lowest video kbps still worth sending at that size)."""
INLINE_AUDIO_KBPS = 32
INLINE_MARGIN = 0.92
"""Share of the byte budget given to the encoder's bitrate target (rate control overshoots a little)."""
INLINE_TRIES_PER_RUNG = 3

PLAIN_CONTAINER_TAGS = frozenset({"major_brand", "minor_version", "compatible_brands", "encoder"})
PLAIN_STREAM_TAGS = frozenset({"language", "vendor_id", "encoder", "duration"})
"""Tags (lower-cased) that say nothing about anyone: the file type, the muxing software, the codec's name
in the sample entry, a track's language, Matroska's track duration."""
PLAIN_HANDLER_NAMES = frozenset(
    {
        "",
        # ffmpeg (also what every remux here writes)
        "videohandler",
        "soundhandler",
        "subtitlehandler",
        "datahandler",
        "timecodehandler",
        # Apple (iPhone, QuickTime, AVFoundation)
        "core media video",
        "core media audio",
        "core media metadata",
        "core media data handler",
        "apple video media handler",
        "apple sound media handler",
        "apple alias data handler",
        # Android's MediaMuxer / MPEG4Writer
        "videohandle",
        "soundhandle",
        "metahandle",
        # Google (Android camera apps, YouTube)
        "iso media file produced by google inc.",
        # muxing tools (x264's, MP4Box, MainConcept)
        "l-smash video handler",
        "l-smash audio handler",
        "gpac iso video handler",
        "gpac iso audio handler",
        "mainconcept video media handler",
        "mainconcept mp4 sound media handler",
    }
)
"""Stream ``handler_name`` values (lower-cased, trimmed) that software writes for everyone. Any other name
can hold a device model, a serial number or an owner's name ("GoPro AVC HERO9 SN ...", "Jane's iPhone"),
or a date ("... produced by Google Inc. Created on: 03/12/2021."), so it makes the clip be remuxed without it."""


@dataclass
class _Plan:
    """What the ffmpeg run does."""

    copy_video: bool
    copy_audio: bool
    has_audio: bool
    size: tuple[int, int]
    video_kbps: int | None = None
    audio_kbps: int | None = None
    audio_channels: int | None = None
    audio_rate: int | None = None
    hold_s: float | None = None  # a still's frame is repeated this long
    actions: list[str] = field(default_factory=list)


def normalize_video(
    source: Path, sniffed: Sniffed, info: MediaInfo, profile: Profile, options: NormalizeOptions
) -> NormalizedMedia:
    """Make ``source`` a video the profile accepts (see the module docstring for the rules).

    Args:
        source: the input file (never modified).
        sniffed: its sniffer verdict (the ffmpeg demuxer is forced from it).
        info: ``probe_av``'s result for it (kind ``video``).
        profile: what the target accepts.
        options: workdir for outputs, inline budget, trim.

    Returns:
        The output file (the source itself on passthrough), its ``MediaInfo`` (with ``sha256``),
        the actions taken (``trim:N``, ``remux:mp4``, ``transcode:h264``, ``rotate``, ``scale``,
        ``transcode:aac``, ``bitrate:Nk``) and warnings.

    Raises:
        MediaError: ``empty``, ``corrupt_media``, ``too_long`` or ``cannot_fit_inline``.
        ProcessingError: ffmpeg failed or timed out.
    """
    validation, duration = _validate_within(source, sniffed, info, profile.max_video_s, refuse=options.trim_s is None)
    warnings = list(validation.warnings)
    trim = check_duration(
        source,
        "video",
        duration,
        profile.max_video_s,
        options.trim_s,
        basis="decoded" if validation.complete else "at-least",
    )
    kept = trim if trim is not None else duration
    hold = _still_hold(validation, kept)
    length = hold or kept
    limit = options.fit_chars
    width, height = _upright(info)

    video_ok = _video_acceptable(info, profile)
    audio_ok = _audio_acceptable(info, profile)
    container_ok = CONTAINER_NAMES.get(sniffed.container) in profile.video_formats
    fits = limit is None or b64_len(info.bytes) < limit
    # Phones and cameras write where, when and with what a clip was shot: like image EXIF, it is not sent unless asked.
    stripping = not options.keep_metadata and bool(_carried_metadata(source, sniffed, info))
    if container_ok and video_ok and audio_ok and trim is None and fits and not stripping and hold is None:
        return NormalizedMedia(path=source, info=with_digest(source, info), actions=[], warnings=warnings)

    copy_video = video_ok and info.video_codec in MP4_VIDEO_CODECS and hold is None
    copy_audio = audio_ok and (info.audio_codec is None or info.audio_codec in MP4_AUDIO_CODECS)
    plan = _Plan(
        copy_video=copy_video,
        copy_audio=copy_audio,
        has_audio=info.audio_codec is not None,
        size=(width, height) if copy_video else _target_size(width, height, profile.max_video_lines),
    )
    if not copy_video:
        plan.copy_audio = copy_audio = copy_audio and info.audio_codec == "aac"
    plan.hold_s = hold
    _describe(plan, info, trim, stripping)
    warnings += dropped_tracks(info)  # a second language or commentary track is not sent: say so
    if trim is not None and plan.copy_video:
        output, out_info = _trimmed_copy(source, sniffed, info, profile, plan, trim, stripping, options)
    else:
        output, out_info = _run(source, sniffed, info, plan, trim, length, options)
    if limit is not None and b64_len(out_info.bytes) >= limit:
        output.unlink()
        output, out_info, plan = _fit_inline(
            source, sniffed, info, profile, trim, length, limit, options, stripping, hold
        )
    return NormalizedMedia(path=output, info=out_info, actions=plan.actions, warnings=warnings)


def _validate_within(
    source: Path, sniffed: Sniffed, info: MediaInfo, max_s: float | None, *, refuse: bool
) -> tuple[Validation, float]:
    """Validate ``source``, reading no more of it than the limit ``max_s`` needs; also return its duration.

    A header that records an exact length over the limit refuses it before anything is read (``refuse``);
    otherwise the demux stops once past the limit, and the duration is then a lower bound.

    Raises:
        MediaError: ``too_long`` from the header, or validation's ``empty``/``corrupt_media``.
    """
    if refuse:
        exact = exact_duration(source, sniffed, info)
        if exact is not None:
            check_duration(source, "video", exact, max_s, None, basis="header")
    validation = validate_av(source, sniffed, info, stop_after_s=decode_limit(max_s))
    if not validation.complete:
        return validation, validation.decoded_s
    return validation, max(validation.decoded_s, info.duration_s or 0.0)


def _still_hold(validation: Validation, duration: float) -> float | None:
    """How long a single-frame video's frame is held once converted; None for a real video.

    A still (a one-frame WEBM or MP4, maybe with sound) would otherwise become a clip of one frame interval
    beside its audio. Its frame is held for the whole of its duration (header, streams and audio, whichever
    is longest), and at least ``STILL_MIN_S``; so a still is always converted, never passed through.
    """
    if validation.video_packets != 1:
        return None
    return max(duration, STILL_MIN_S)


def _hold_still(video: Any, plan: _Plan) -> Any:
    """The filters that repeat a still's frame for ``plan.hold_s`` seconds (at ``STILL_FPS``)."""
    if plan.hold_s is None:
        return video
    # eof_action=pass: a lone frame lasting 1 ms would otherwise round to no frame at all at STILL_FPS.
    return video.filter("fps", fps=STILL_FPS, eof_action="pass").filter(
        "tpad", stop_mode="clone", stop_duration=f"{plan.hold_s:.3f}"
    )


def _carried_metadata(source: Path, sniffed: Sniffed, info: MediaInfo) -> list[str]:
    """What the clip carries besides the picture and sound sent (``['tag location', 'data stream 2']``, or [])."""
    sent = {info.extra.get("video_index"), info.extra.get("audio_index")}
    with open_container(source, sniffed) as container:
        found = [f"tag {key}" for key in container.metadata if key.lower() not in PLAIN_CONTAINER_TAGS]
        for stream in container.streams:
            if stream.index not in sent:
                found.append(f"{stream.type} stream {stream.index}")
                continue
            found += [f"stream {stream.index} tag {k}" for k, v in stream.metadata.items() if not _plain_tag(k, v)]
        if container.chapters():
            found.append("chapters")
    return found


def _trimmed_copy(
    source: Path,
    sniffed: Sniffed,
    info: MediaInfo,
    profile: Profile,
    plan: _Plan,
    trim: float,
    stripping: bool,
    options: NormalizeOptions,
) -> tuple[Path, MediaInfo]:
    """Copy the first ``trim`` seconds without re-encoding when a copy can end there, else transcode them.

    ffmpeg stops copying at the first packet *decoded* at ``trim`` or later; with B-frames the packets before
    it still show frames up to the reorder delay past ``trim`` (0.4 s at 5 fps). The cut is moved back by
    the overshoot measured and tried again; when the copy still runs over, or ends more than
    ``COPY_SHORTFALL_MAX_S`` early, the video is re-encoded, which cuts on the exact frame. Mutates ``plan``
    (its actions) when it falls back to a transcode.
    """
    cut = trim
    for _ in range(COPY_CUT_TRIES):
        output, out_info = _run(source, sniffed, info, plan, cut, cut, options, check=False)
        try:
            # The header (edit list, sample tables) and the packets must both end within the window.
            lengths = (out_info.duration_s or 0.0, packet_span_s(output, sniff_path(output)))
            if trim - COPY_SHORTFALL_MAX_S <= min(lengths) and max(lengths) <= trim + TRIM_SLACK_S:
                check_output(output, source, "video", max(lengths))  # never ok with no frames
                return output, out_info
        except BaseException:
            output.unlink(missing_ok=True)
            raise
        output.unlink()
        over = max(lengths) - trim
        if over <= TRIM_SLACK_S or over >= cut:
            break  # too short already, or nothing would be left: only a transcode cuts right
        cut -= over
    plan.copy_video = False
    plan.copy_audio = plan.copy_audio and info.audio_codec == "aac"
    plan.size = _target_size(*_upright(info), profile.max_video_lines)
    _describe(plan, info, trim, stripping)
    return _run(source, sniffed, info, plan, trim, trim, options)


def _plain_tag(key: str, value: str) -> bool:
    """Whether a stream tag says nothing about anyone (see ``PLAIN_STREAM_TAGS``, ``PLAIN_HANDLER_NAMES``)."""
    if key.lower() == "handler_name":
        return value.strip(" \0").lower() in PLAIN_HANDLER_NAMES
    return key.lower() in PLAIN_STREAM_TAGS


def _upright(info: MediaInfo) -> tuple[int, int]:
    width, height = info.width or 0, info.height or 0
    return (height, width) if info.rotation in (90, 270) else (width, height)


def _video_acceptable(info: MediaInfo, profile: Profile) -> bool:
    if info.rotation:
        return False
    if profile.video_codecs:
        if info.video_codec not in profile.video_codecs:
            return False
        if info.video_codec == "h264" and info.mode not in PLAIN_PIXEL_FORMATS:
            return False
    lines = min(info.width or 0, info.height or 0)
    return profile.max_video_lines is None or lines <= profile.max_video_lines


def _audio_acceptable(info: MediaInfo, profile: Profile) -> bool:
    if info.audio_codec is None or not profile.audio_codecs_in_video:
        return True
    return info.audio_codec in profile.audio_codecs_in_video


def _target_size(width: int, height: int, max_lines: int | None) -> tuple[int, int]:
    """Size after scaling the short side down to ``max_lines``, both sides even (at least 2)."""
    short = min(width, height)
    factor = max_lines / short if max_lines is not None and short > max_lines else 1.0
    return _even(width * factor), _even(height * factor)


def _even(value: float) -> int:
    # Rounded down to even: yuv420p needs even sides, and down never exceeds the line limit.
    return max(2, int(value + 1e-6) // 2 * 2)


def _describe(plan: _Plan, info: MediaInfo, trim: float | None, stripping: bool) -> None:
    actions = [f"trim:{trim:g}"] if trim is not None else []
    if plan.hold_s is not None:
        actions.append(f"extend-still:{plan.hold_s:g}")
    if stripping:
        actions.append("strip-metadata")
    if plan.copy_video:
        actions.append("remux:mp4")
    else:
        actions.append("transcode:h264")
        if info.rotation:
            actions.append("rotate")
        if plan.size != _upright(info):
            actions.append("scale")
        if plan.video_kbps is not None:
            actions.append(f"bitrate:{plan.video_kbps}k")
    if plan.has_audio and not plan.copy_audio:
        actions.append("transcode:aac")
    plan.actions = actions


def _run(
    source: Path,
    sniffed: Sniffed,
    info: MediaInfo,
    plan: _Plan,
    trim: float | None,
    length: float,
    options: NormalizeOptions,
    *,
    check: bool = True,
) -> tuple[Path, MediaInfo]:
    """Run the plan's ffmpeg command; with ``check``, prove the output holds ``length`` seconds of media."""
    import ffmpeg

    output = ff.output_path(options.workdir, source, output_format("mp4").suffix)
    in_options = {"t": f"{trim:.3f}"} if trim is not None else {}
    vindex = info.extra.get("video_index")
    aindex = info.extra.get("audio_index")
    keep_metadata = options.keep_metadata

    def node(url: str) -> Any:
        inp = ff.input_stream(source, sniffed.ffmpeg_format, **in_options)
        video = inp[str(vindex) if isinstance(vindex, int) else "v:0"]
        options: dict[str, Any] = {"f": "mp4", "movflags": "+faststart"}
        if not keep_metadata:
            options.update({"map_metadata": -1, "map_chapters": -1, "fflags": "+bitexact"})
        if plan.copy_video:
            options["c:v"] = "copy"
        else:
            width, height = plan.size
            # ffmpeg applies the display rotation itself (autorotate) before this filter.
            video = _hold_still(video.filter("scale", width, height).filter("setsar", 1), plan)
            options.update({"c:v": "libx264", "preset": X264_PRESET, "pix_fmt": "yuv420p", "fps_mode": "vfr"})
            if plan.video_kbps is None:
                options["crf"] = X264_CRF
            else:
                kbps = plan.video_kbps
                options.update({"b:v": f"{kbps}k", "maxrate": f"{kbps}k", "bufsize": f"{2 * kbps}k"})
        if plan.hold_s is not None:
            options["t"] = f"{plan.hold_s:.3f}"
        streams = [video]
        if plan.has_audio:
            streams.append(inp[str(aindex) if isinstance(aindex, int) else "a:0"])
            if plan.copy_audio:
                options["c:a"] = "copy"
            else:
                channels = plan.audio_channels or min(info.channels or 2, 2)
                kbps = plan.audio_kbps or AAC_KBPS_PER_CHANNEL * channels
                options.update({"c:a": "aac", "b:a": f"{kbps}k", "ac": channels})
                rate = plan.audio_rate or (48_000 if (info.sample_rate or 0) > 48_000 else None)
                if rate:
                    options["ar"] = rate
        return ffmpeg.output(*streams, url, **options)

    per_second = REMUX_TIMEOUT_PER_S if plan.copy_video else TRANSCODE_TIMEOUT_PER_S
    try:
        ff.run_to_file(node, output, timeout_s=ff.timeout_for(length, per_second=per_second))
        if check:
            check_output(output, source, "video", length)  # never ok with no frames, or cut short
        return output, with_digest(output, probe_av(output, sniff_path(output)))
    except BaseException:
        output.unlink(missing_ok=True)
        raise


def _fit_inline(
    source: Path,
    sniffed: Sniffed,
    info: MediaInfo,
    profile: Profile,
    trim: float | None,
    length: float,
    limit: int,
    options: NormalizeOptions,
    stripping: bool,
    hold_s: float | None = None,
) -> tuple[Path, MediaInfo, _Plan]:
    """Walk the size ladder until the output's base64 is under ``limit`` (a still held ``hold_s`` seconds)."""
    budget_bytes = (limit - 1) // 4 * 3
    width, height = _upright(info)
    has_audio = info.audio_codec is not None
    audio_kbps = INLINE_AUDIO_KBPS if has_audio else 0
    seconds = max(length, 0.1)
    top = min(width, height, profile.max_video_lines or min(width, height))
    floors: dict[int, int] = {}
    for lines, floor_kbps in INLINE_RUNGS:
        # A rung above the video's own size collapses onto it, keeping the lowest floor that applies.
        floors[min(lines, top)] = floor_kbps
    rungs = sorted(floors.items(), reverse=True)
    target_kbps = int(budget_bytes * INLINE_MARGIN * 8 / seconds / 1000) - audio_kbps
    last_chars = None
    for lines, floor_kbps in rungs:
        kbps = target_kbps
        for _ in range(INLINE_TRIES_PER_RUNG):
            if kbps < floor_kbps:
                break
            plan = _Plan(
                copy_video=False,
                copy_audio=False,
                has_audio=has_audio,
                size=_target_size(width, height, lines),
                video_kbps=kbps,
                audio_kbps=INLINE_AUDIO_KBPS,
                audio_channels=1,
                audio_rate=min(info.sample_rate or 44_100, 44_100),
                hold_s=hold_s,
            )
            _describe(plan, info, trim, stripping)
            output, out_info = _run(source, sniffed, info, plan, trim, length, options)
            chars = b64_len(out_info.bytes)
            if chars < limit:
                return output, out_info, plan
            output.unlink()
            last_chars = chars
            # Rate control overshoots on short clips: scale the target by the miss and retry.
            kbps = int(kbps * limit / chars * INLINE_MARGIN)
    smallest = rungs[-1]
    needed = last_chars or b64_len(math.ceil((smallest[1] + audio_kbps) * 1000 / 8 * seconds))
    raise MediaError(
        f"{source.name}: {seconds:.1f} s of video cannot fit inline: even at {smallest[0]} lines and "
        f"{smallest[1]} kbps it takes about {needed:,} base64 characters; the limit is {limit:,}",
        code="cannot_fit_inline",
        hint=f"use {ref('mode', 'auto')} or {ref('mode', 'asset')} to upload it, "
        f"or {ref('trim_s')} to send a shorter part",
    )
