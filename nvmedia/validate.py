"""Catching truncated and corrupt audio/video before it is sent: ``validate_av``.

A header can claim 5 s while 1.2 s decodes (a download cut short, a recorder
that crashed), and ffmpeg exits 0 on a truncated WEBM. Probing reads headers
only, so validation reads the media itself with PyAV:

- **Audio: full decode** of the audio stream. It is cheap (a 1-hour 44.1 kHz
  stereo MP3 validates in 2.2-3.3 s on one core, under 0.1 % of its duration;
  the 18 probe-able corpus audio/video files take 124 ms in all) and gives the
  true length, which is trusted over the header (a streamed WAV whose header
  sizes are 0xFFFFFFFF reads as hours long otherwise).
- **Video: every packet demuxed, the first and last GOPs decoded**, audio
  streams fully decoded. Measured on a 60 s 720p30 H.264/AAC MOV (2 cores):
  full video decode 2.2-3.5 s, demux + first/last GOP 0.16-0.29 s (12-14x
  cheaper); a 2-minute 4K clip would need ~40 s to decode fully. Truncation
  shows up in the demux pass (packets stop short of the claimed duration,
  "partial file"), in the Matroska segment size and in the last GOP; a broken
  bitstream at the start shows in the first GOP. Damage confined to the middle
  of a video is not caught here: the transcoder, when it runs, still fails on
  it (any ffmpeg stderr output is an error).

Outcomes: nothing decodes -> ``empty``; a decoder error, or less decodes than
the header claims (beyond a tolerance) -> ``corrupt_media``. A silent track is
not an error, only a warning.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import MediaError
from .probe import MediaInfo
from .probe_av import open_container, real_video_streams
from .sniff import Sniffed

SILENCE_DBFS = -60.0
"""A track whose peak stays below this is reported as silent."""

SHORTFALL_TOLERANCE_S = 0.5
SHORTFALL_TOLERANCE_RATIO = 0.05
"""Decoding may fall short of the claimed duration by max(0.5 s, 5 %) before it counts as truncation
(encoder priming, padding and per-stream rounding stay well inside this)."""


@dataclass(frozen=True)
class Validation:
    """What validation measured.

    Attributes:
        decoded_s: seconds of media actually readable (audio: decoded samples / rate).
        claimed_s: seconds the headers claim (None when they say nothing or cannot be trusted).
        video_frames: video frames decoded (first and last GOPs only).
        audio_samples: audio samples decoded (all of them).
        peak_dbfs: the audio's peak level (None without audio; -inf for digital silence).
        method: ``full-decode`` (audio) or ``demux+first-last-gop`` (video).
        warnings: things to tell the user (a silent track).
    """

    decoded_s: float
    claimed_s: float | None
    video_frames: int
    audio_samples: int
    peak_dbfs: float | None
    method: str
    warnings: list[str] = field(default_factory=list)

    @property
    def silent(self) -> bool:
        return self.peak_dbfs is not None and self.peak_dbfs < SILENCE_DBFS


def validate_av(path: Path, sniffed: Sniffed, info: MediaInfo) -> Validation:
    """Decode enough of ``path`` to prove it is whole; cache the result in ``info.extra["validation"]``.

    Args:
        path: the file (already probed).
        sniffed: the sniffer's verdict (its demuxer is forced).
        info: ``probe_av``'s result; its ``kind`` picks the method.

    Returns:
        The measurements. ``info.duration_s`` is not changed; callers use ``decoded_s``.

    Raises:
        MediaError: ``empty`` (nothing decodes) or ``corrupt_media`` (decoder errors or truncation).
    """
    cached = info.extra.get("validation")
    if isinstance(cached, Validation):
        return cached
    result = _validate(path, sniffed, info)
    info.extra["validation"] = result
    return result


def _validate(path: Path, sniffed: Sniffed, info: MediaInfo) -> Validation:
    import av

    claimed = _trusted_claim(path, sniffed, info)
    with open_container(path, sniffed) as container:
        videos = real_video_streams(container) if info.kind == "video" else []
        vstream = videos[0] if videos else None
        astream = container.streams.audio[0] if container.streams.audio else None
        if vstream is not None:
            vstream.thread_type = "AUTO"
        scan = _Scan(astream)
        try:
            last_key = _demux_pass(container, vstream, astream, scan)
            if vstream is not None and last_key is not None and scan.keyframes > 1:
                container.seek(last_key, stream=vstream, backward=True, any_frame=False)
                for packet in container.demux(vstream):
                    scan.video_frames += len(packet.decode())
        except (av.error.FFmpegError, EOFError, ValueError) as exc:
            raise _corrupt(path, f"decoding failed ({_reason(exc)})") from None
    decoded = scan.decoded_s(astream, vstream)
    if scan.video_frames == 0 and scan.audio_samples == 0:
        what = "video frame" if info.kind == "video" else "audio sample"
        raise MediaError(
            f"{path.name}: no {what} decodes (0 frames, 0.00 s of media)",
            code="empty",
            hint="the file holds no playable media; re-export it",
        )
    if info.kind == "video" and scan.video_frames == 0:
        raise _corrupt(path, "its video stream has no decodable frame")
    if sniffed.ffmpeg_format == "matroska":
        _check_matroska_size(path)
    still = scan.video_packets <= 1 and scan.audio_samples == 0
    # A single-frame video may legitimately claim any duration: that frame is shown for all of it.
    if (
        claimed is not None
        and not still
        and claimed - decoded > max(SHORTFALL_TOLERANCE_S, SHORTFALL_TOLERANCE_RATIO * claimed)
    ):
        raise _corrupt(path, f"the header claims {claimed:.2f} s but only {decoded:.2f} s can be read (truncated)")
    warnings = []
    peak = scan.peak_dbfs()
    if peak is not None and peak < SILENCE_DBFS:
        level = "-inf" if math.isinf(peak) else f"{peak:.0f}"
        warnings.append(f"the audio is silent (peak {level} dBFS over {scan.audio_s(astream):.2f} s)")
    return Validation(
        decoded_s=decoded,
        claimed_s=claimed,
        video_frames=scan.video_frames,
        audio_samples=scan.audio_samples,
        peak_dbfs=peak,
        method="demux+first-last-gop" if info.kind == "video" else "full-decode",
        warnings=warnings,
    )


class _Scan:
    """Running totals of one validation pass."""

    def __init__(self, astream: Any) -> None:
        self.video_frames = 0
        self.video_packets = 0
        self.audio_samples = 0
        self.keyframes = 0
        self.spans: dict[int, tuple[float, float]] = {}
        self.peak = 0
        self._astream = astream
        self._resampler: Any = None
        self._loud = False

    def packet_end(self, packet: Any, frame_interval: float) -> None:
        if packet.pts is None or packet.time_base is None or not packet.size:
            return
        start = float(packet.pts * packet.time_base)
        end = start + (float(packet.duration * packet.time_base) if packet.duration else frame_interval)
        index = packet.stream.index
        first, last = self.spans.get(index, (start, end))
        self.spans[index] = (min(first, start), max(last, end))

    def audio_frame(self, frame: Any) -> None:
        self.audio_samples += int(frame.samples)
        if not self._loud:
            self._measure_peak(frame)

    def _measure_peak(self, frame: Any) -> None:
        # Only until the first loud frame: a normal recording costs a few frames, a silent one all of them.
        import av

        if self._resampler is None:
            self._resampler = av.AudioResampler(format="s16", layout="mono")
        for out in self._resampler.resample(frame):
            self.peak = max(self.peak, _peak_s16(bytes(out.planes[0])[: out.samples * 2], out.sample_rate))
        if self.peak > 32767 * 10 ** (SILENCE_DBFS / 20):
            self._loud = True

    def peak_dbfs(self) -> float | None:
        if self._astream is None or self.audio_samples == 0:
            return None
        return 20 * math.log10(self.peak / 32768) if self.peak else -math.inf

    def audio_s(self, astream: Any) -> float:
        rate = astream.codec_context.sample_rate if astream is not None else 0
        return self.audio_samples / rate if rate else 0.0

    def decoded_s(self, astream: Any, vstream: Any) -> float:
        if vstream is None:
            return self.audio_s(astream)
        spans = [last - first for first, last in self.spans.values()]
        return max([*spans, self.audio_s(astream)], default=0.0)


def _peak_s16(data: bytes, rate: int) -> int:
    """Peak absolute sample of mono 16-bit PCM, measured with pydub (audioop underneath)."""
    segment = load_pydub().AudioSegment(data=data, sample_width=2, frame_rate=rate, channels=1)
    return int(segment.max)


@functools.lru_cache(maxsize=1)
def load_pydub() -> Any:
    """Import pydub quietly.

    pydub warns at import when no ``ffmpeg`` is on PATH (nvmedia passes it raw PCM, so it never
    needs one) and Python 3.11-3.12 flag its ``audioop`` import as deprecated.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pydub

    return pydub


def _demux_pass(container: Any, vstream: Any, astream: Any, scan: _Scan) -> int | None:
    """Demux every packet; decode all audio and the video's first GOP. Returns the last keyframe's pts."""
    streams = [s for s in (vstream, astream) if s is not None]
    last_key = None
    rate = vstream.average_rate if vstream is not None else None
    # Matroska gives H.264 packets no duration: count one frame interval each (ignored for odd rates).
    interval = 1 / float(rate) if rate and 1 <= float(rate) <= 240 else 0.0
    for packet in container.demux(*streams):
        scan.packet_end(packet, interval if packet.stream is vstream else 0.0)
        if packet.stream is vstream:
            if packet.size:
                scan.video_packets += 1
                if packet.is_keyframe:
                    scan.keyframes += 1
                    last_key = packet.pts
            if scan.keyframes <= 1:
                scan.video_frames += len(packet.decode())
        else:
            for frame in packet.decode():
                scan.audio_frame(frame)
    return last_key


def _trusted_claim(path: Path, sniffed: Sniffed, info: MediaInfo) -> float | None:
    """The header's duration when it is a real count, not an estimate."""
    claimed = info.extra.get("claimed_duration_s", info.duration_s)
    if not isinstance(claimed, (int, float)) or claimed <= 0:
        return None
    if sniffed.container == "mp3" and not _mp3_has_frame_count(path):
        # Without a Xing/Info/VBRI frame count, libav estimates an MP3's length from its bitrate.
        return None
    if sniffed.container == "wav" and _wav_size_is_placeholder(path):
        return None
    return float(claimed)


def _mp3_has_frame_count(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(16 * 1024)
    start = 0
    if head[:3] == b"ID3" and len(head) >= 10:
        start = 10 + ((head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F))
        with path.open("rb") as fh:
            fh.seek(start)
            head = fh.read(2048)
        start = 0
    window = head[start : start + 2048]
    return any(tag in window for tag in (b"Xing", b"Info", b"VBRI"))


def _wav_size_is_placeholder(path: Path) -> bool:
    """True for the 0 / 0xFFFFFFFF sizes streaming recorders leave in a WAV header."""
    located = wav_data_chunk(path)
    return located is None or located[1] in (0, 0xFFFFFFFF)


def wav_data_chunk(path: Path) -> tuple[int, int] | None:
    """``(offset, size)`` of a RIFF WAVE file's ``data`` chunk payload, or None when it is not found."""
    with path.open("rb") as fh:
        header = fh.read(12)
        if len(header) < 12 or header[:4] not in (b"RIFF", b"RF64", b"BW64") or header[8:12] != b"WAVE":
            return None
        offset = 12
        for _ in range(64):  # a real WAV has a handful of chunks before its data
            fh.seek(offset)
            chunk = fh.read(8)
            if len(chunk) < 8:
                return None
            size = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                return offset + 8, size
            offset += 8 + size + (size & 1)
    return None


def _check_matroska_size(path: Path) -> None:
    """A Matroska Segment that declares more bytes than the file holds was cut short.

    libav only logs "File ended prematurely" for this and keeps going, so it is checked here.
    """
    with path.open("rb") as fh:
        head = fh.read(64)
        size = fh.seek(0, 2)
    ebml = _ebml_element(head, 0)
    if ebml is None or ebml[0] != 0x1A45DFA3 or ebml[2] is None:
        return
    segment = _ebml_element(head, ebml[1] + ebml[2])
    if segment is None or segment[0] != 0x18538067 or segment[2] is None:
        return
    declared_end = segment[1] + segment[2]
    if declared_end > size:
        raise _corrupt(path, f"the file holds {size:,} bytes but its header declares {declared_end:,} (truncated)")


def _ebml_element(data: bytes, at: int) -> tuple[int, int, int | None] | None:
    """``(id, payload offset, payload size or None when unknown)`` of the EBML element at ``at``."""
    ident = _vint(data, at, keep_marker=True)
    if ident is None:
        return None
    value, length = ident
    size = _vint(data, at + length, keep_marker=False)
    if size is None:
        return None
    size_value, size_length = size
    unknown = size_value == (1 << (7 * size_length)) - 1
    return value, at + length + size_length, None if unknown else size_value


def _vint(data: bytes, at: int, *, keep_marker: bool) -> tuple[int, int] | None:
    if at >= len(data) or data[at] == 0:
        return None
    length = 8 - data[at].bit_length() + 1
    if at + length > len(data):
        return None
    value = int.from_bytes(data[at : at + length], "big")
    if not keep_marker:
        value &= (1 << (7 * length)) - 1
    return value, length


def _corrupt(path: Path, why: str) -> MediaError:
    return MediaError(
        f"{path.name}: {why}",
        code="corrupt_media",
        hint="the file is damaged or was cut short; re-export or re-download it",
    )


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "strerror", None) or exc or type(exc).__name__)
    return text.split(":")[0].strip().lower()
