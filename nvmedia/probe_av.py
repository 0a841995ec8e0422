"""Audio and video properties with PyAV: ``probe_av``.

PyAV runs libavformat in process (no ffprobe is pip-installable), about a
millisecond per small file. The container is opened the way ffmpeg is run (see
``ffmpeg.py``): demuxer forced from the sniffer, only the ``file`` protocol
allowed, and metadata that is not UTF-8 tolerated (``pydub__creative_common.mp4``
carries Latin-1 handler names).

The sniffer's kind is refined from the streams for containers that hold either
audio or video (MP4, MOV, Matroska/WebM, Ogg, ASF...): no video stream other than
cover art means audio. For audio-only containers (MP3, FLAC, WAV...) the kind
stays audio even when a cover picture shows up as a video stream.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import InputError, MediaError
from .ffmpeg import file_url
from .media_info import MediaInfo
from .sniff import Kind, Sniffed

AUDIO_ONLY_CONTAINERS = frozenset({"wav", "mp3", "flac", "aiff", "aac", "amr", "caf", "au"})
"""Containers whose kind is audio whatever streams they show (an MP3's cover art is a 'video' stream)."""

_AUDIO_MIME = {
    "mp4": "audio/mp4",
    "mov": "audio/mp4",
    "m4a": "audio/mp4",
    "3gp": "audio/3gpp",
    "webm": "audio/webm",
    "matroska": "audio/x-matroska",
    "ogg": "audio/ogg",
    "asf": "audio/x-ms-wma",
    "avi": "audio/x-msvideo",
    "flv": "audio/x-flv",
    "mpegts": "audio/mp2t",
    "mpegps": "audio/mpeg",
}
_VIDEO_MIME = {"ogg": "video/ogg", "m4a": "video/mp4"}

_ATTACHED_PIC = 0x400  # AV_DISPOSITION_ATTACHED_PIC
_ROTATION_CONTAINERS = frozenset({"mp4", "mov", "m4a", "3gp", "matroska", "webm"})
_PCM_BITS = re.compile(r"^pcm_[suf](\d+)")

# Demuxers whose headers describe every stream: a short probe is enough (a 1 MB WAV otherwise costs
# ~15 ms while libav reads ahead). Transport and program streams keep libav's defaults, since their
# streams only show up in the packets.
_HEADER_FORMATS = frozenset({"mov", "matroska", "wav", "aiff", "flac", "mp3", "ogg", "caf", "au", "w64", "asf"})
_SHORT_PROBE = {"probesize": "65536", "analyzeduration": "200000"}
_PCM_HEADER_FORMATS = frozenset({"wav", "aiff", "au", "w64"})
_HEADER_ONLY = {"probesize": "32", "analyzeduration": "0"}
"""Containers whose header states the codec, rate, channels and size: libav needs to read no
packets to describe them (reading 64 KB took 2.5 ms of a 3 ms WAV probe)."""


def _probe_options(ffmpeg_format: str) -> dict[str, str]:
    if ffmpeg_format in _PCM_HEADER_FORMATS:
        return _HEADER_ONLY
    return _SHORT_PROBE if ffmpeg_format in _HEADER_FORMATS else {}


@contextmanager
def open_container(path: Path, sniffed: Sniffed) -> Iterator[Any]:
    """Open ``path`` with PyAV, demuxer forced from the sniffer, ``file`` protocol only.

    Raises:
        InputError: ``not_found`` or ``unreadable``.
        MediaError: ``unsupported_format`` (no demuxer known) or ``corrupt_media`` (libav cannot read it).
    """
    import av

    if not sniffed.ffmpeg_format:
        raise MediaError(
            f"{path.name}: {sniffed.description or sniffed.container} is not audio or video",
            code="unsupported_format",
            hint="pass audio (WAV/MP3/FLAC...) or video (MP4/MOV/MKV/WEBM...)",
        )
    try:
        container = av.open(
            file_url(path),
            format=sniffed.ffmpeg_format,
            metadata_errors="ignore",
            container_options={
                "protocol_whitelist": "file",
                **_probe_options(sniffed.ffmpeg_format),
            },
        )
    except FileNotFoundError:
        raise InputError(f"{path.name}: no such file", code="not_found", hint="check the path") from None
    except PermissionError:
        raise InputError(
            f"{path.name}: permission denied", code="unreadable", hint="check the file's permissions"
        ) from None
    except (av.error.FFmpegError, EOFError, OSError, ValueError) as exc:
        raise MediaError(
            f"{path.name}: cannot be read as {sniffed.description or sniffed.container} ({_reason(exc)})",
            code="corrupt_media",
            hint="the file is damaged or truncated; re-export or re-download it",
        ) from None
    try:
        yield container
    finally:
        container.close()


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text).split(":")[0].strip().lower() or type(exc).__name__


def with_digest(path: Path, info: MediaInfo) -> MediaInfo:
    """``info`` for the file at ``path`` with its byte count and sha256 (hex), hashed in 1 MB chunks.

    Validation results cached in ``extra`` are dropped: they describe the input, not this file.
    """
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    extra = {k: v for k, v in info.extra.items() if k != "validation"}
    return info.replace(bytes=size, sha256=digest.hexdigest(), extra=extra)


def real_video_streams(container: Any) -> list[Any]:
    """Video streams that are not cover art (attached pictures)."""
    return [s for s in container.streams.video if not int(s.disposition) & _ATTACHED_PIC]


def probe_av(path: Path, sniffed: Sniffed) -> MediaInfo:
    """Probe an audio or video file with PyAV.

    Args:
        path: the file.
        sniffed: the sniffer's verdict (its ``ffmpeg_format`` is forced).

    Returns:
        ``MediaInfo`` with kind refined from the streams, codecs (``h264``, ``aac``, ``mp3``...),
        duration, size, rotation, frame rate, sample rate, channels, sample format and bit depth.
        ``extra`` holds ``format`` (libav's demuxer), ``claimed_duration_s`` (what the header says),
        stream counts and the chosen streams' indexes.

    Raises:
        InputError: the file is missing or unreadable.
        MediaError: ``unsupported_format`` (not audio/video, or only subtitle/data streams),
            ``empty`` (no streams at all), ``corrupt_media`` (unreadable, or a 0x0 video).
    """
    with open_container(path, sniffed) as container:
        size = path.stat().st_size
        videos = real_video_streams(container)
        audios = list(container.streams.audio)
        kind = _refine_kind(path, sniffed, container, videos, audios)
        vstream = _decodable(path, videos, "video") if kind == "video" and videos else None
        astream = None
        if audios:
            # A video's audio track libav cannot decode is left out (the video goes without it);
            # for an audio file it is the whole point.
            astream = _decodable(path, audios, "audio", required=kind == "audio")
        main = vstream if vstream is not None else astream
        claimed = _duration(container, main)
        info = MediaInfo(
            kind=kind,
            container=sniffed.container,
            mime=_mime(sniffed, kind),
            bytes=size,
            duration_s=claimed,
            bit_rate=int(container.bit_rate) if container.bit_rate else None,
            extra={
                "format": container.format.name,
                "claimed_duration_s": claimed,
                "video_streams": len(videos),
                "audio_streams": len(audios),
                "other_streams": len(container.streams) - len(videos) - len(audios),
                "location_tags": _location_tags(container),
            },
        )
        if astream is not None:
            _audio_props(info, astream)
        if vstream is not None:
            _video_props(path, info, container, vstream, sniffed)
    return info


def _decodable(path: Path, streams: list[Any], kind: str, *, required: bool = True) -> Any:
    """The first of ``streams`` that libav has a decoder for.

    A stream whose codec libav does not know (a WAV with an unknown format tag) has no codec
    context at all in PyAV; reading its properties would be an ``AttributeError``.

    Returns:
        The stream, or None when none is decodable and the stream is not ``required``.

    Raises:
        MediaError: ``unsupported_format`` when no stream of this kind can be decoded.
    """
    for stream in streams:
        if stream.codec_context is not None and stream.codec_context.codec is not None:
            return stream
    if not required:
        return None
    tag = getattr(streams[0], "codec_tag", None)
    named = f" (codec tag {tag!r})" if tag else ""
    raise MediaError(
        f"{path.name}: its {kind} stream uses a codec libav has no decoder for{named}",
        code="unsupported_format",
        hint=f"convert the {kind} to a common codec first (for example with ffmpeg on a machine that can read it)",
    )


def _refine_kind(path: Path, sniffed: Sniffed, container: Any, videos: list[Any], audios: list[Any]) -> Kind:
    if sniffed.kind == "audio" and sniffed.container in AUDIO_ONLY_CONTAINERS:
        if audios:
            return "audio"
    elif videos:
        return "video"
    elif audios:
        return "audio"
    others = sorted({str(s.type) for s in container.streams if s.type not in ("audio", "video")})
    if not len(container.streams):
        raise MediaError(
            f"{path.name}: the {sniffed.description or sniffed.container} holds no streams (0 audio, 0 video)",
            code="empty",
            hint="the file has no media in it; re-export it",
        )
    raise MediaError(
        f"{path.name}: the {sniffed.description or sniffed.container} holds only {', '.join(others) or 'cover art'} "
        "streams (0 audio, 0 video)",
        code="unsupported_format",
        hint="pass a file with an audio or video track",
    )


_LOCATION_KEYS = ("location", "gps", "\xa9xyz", "iso6709")


def _location_tags(container: Any) -> list[str]:
    """Metadata keys that carry a place (``location``, ``com.apple.quicktime.location.ISO6709``...)."""
    found: set[str] = set()
    for metadata in (container.metadata, *(s.metadata for s in container.streams)):
        found.update(k for k in metadata if any(word in k.lower() for word in _LOCATION_KEYS))
    return sorted(found)


def _mime(sniffed: Sniffed, kind: Kind) -> str:
    if kind == sniffed.kind:
        return sniffed.mime
    if kind == "audio":
        return _AUDIO_MIME.get(sniffed.container, sniffed.mime.replace("video/", "audio/"))
    return _VIDEO_MIME.get(sniffed.container, sniffed.mime.replace("audio/", "video/"))


def _duration(container: Any, stream: Any | None) -> float | None:
    # The main stream's own duration first; WEBM and MP3 only give one for the container.
    if stream is not None and stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return float(container.duration) / 1_000_000
    return None


def _audio_props(info: MediaInfo, stream: Any) -> None:
    ctx = stream.codec_context
    info.audio_codec = ctx.codec.canonical_name
    info.sample_rate = int(ctx.sample_rate) or None
    info.channels = int(ctx.channels) or None
    info.sample_format = ctx.format.name if ctx.format is not None else None
    pcm = _PCM_BITS.match(ctx.codec.name)
    if pcm:
        info.bit_depth = int(pcm.group(1))
    elif ctx.codec.canonical_name in ("flac", "alac", "wavpack", "tta") and ctx.format is not None:
        info.bit_depth = int(ctx.format.bits)
    info.extra["audio_index"] = stream.index
    info.extra["audio_bit_rate"] = int(ctx.bit_rate) if ctx.bit_rate else None
    info.extra["audio_layout"] = ctx.layout.name if ctx.layout is not None else None


def _video_props(path: Path, info: MediaInfo, container: Any, stream: Any, sniffed: Sniffed) -> None:
    ctx = stream.codec_context
    info.video_codec = ctx.codec.canonical_name
    info.width = int(ctx.width)
    info.height = int(ctx.height)
    info.mode = ctx.format.name if ctx.format is not None else None
    rate = stream.average_rate or stream.guessed_rate
    info.frame_rate = round(float(rate), 3) if rate else None
    info.frames = int(stream.frames) or None
    info.extra["video_index"] = stream.index
    info.extra["video_bit_rate"] = int(ctx.bit_rate) if ctx.bit_rate else None
    if not info.width or not info.height:
        raise MediaError(
            f"{path.name}: the video stream declares {info.width}x{info.height} pixels",
            code="corrupt_media",
            hint="the file's headers are damaged; re-export it",
        )
    info.rotation = _rotation(container, stream) if sniffed.container in _ROTATION_CONTAINERS else 0


def _rotation(container: Any, stream: Any) -> int:
    """Clockwise display rotation (0, 90, 180, 270) from the display matrix.

    PyAV exposes the display matrix only on decoded frames, so the first frame is
    decoded (about 2 ms at 720p, 20 ms at 4K). A file whose first frame does not
    decode reports 0 here; validation reports the damage.
    """
    import av

    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                # VideoFrame.rotation is counter-clockwise degrees; normalise to clockwise 0..270.
                return int(round(-float(frame.rotation) / 90.0)) % 4 * 90
    except (av.error.FFmpegError, EOFError, ValueError):
        return 0
    return 0
