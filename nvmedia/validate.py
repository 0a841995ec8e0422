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
  streams fully decoded. Measured on a 60 s 720p30 H.264/AAC MOV (2 cores,
  frame-threaded then; one decoder thread now costs about the same CPU):
  full video decode 2.2-3.5 s, demux + first/last GOP 0.16-0.29 s (12-14x
  cheaper); a 2-minute 4K clip would need ~40 s to decode fully. Truncation
  shows up in the demux pass (packets stop short of the claimed duration,
  "partial file"), in the Matroska segment size and in the last GOP; a broken
  bitstream at the start shows in the first GOP. Damage confined to the middle
  of a video is not caught here: the transcoder, when it runs, still fails on
  it (any ffmpeg stderr output is an error).

Decoders conceal damage and go on ("error while decoding MB", a dropped AAC
frame, "invalid new backstep" for an MP3 cut inside a frame), so the decode
calls succeed. What they log at level error on the validating thread (see
``avlog.py``; decoding is single-threaded here for that), and frames they flag
corrupt, are failures. After the seek to the last GOP, and before a stream's
first keyframe, the errors of pictures that reference frames before it (an open
GOP's leading B-frames) are expected and ignored: the decoder drops them.

With ``stop_after_s`` (the caller's duration limit), decoding stops once past
it: a 10-hour file is not decoded whole to be refused as too long.

Outcomes: nothing decodes -> ``empty``; a decoder error, or less decodes than
the header claims (beyond a tolerance) -> ``corrupt_media``. A silent track is
not an error, only a warning.

``check_output`` reads back a converted file: it must have samples or frames
and last as long as what was converted.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .avlog import DecoderLog, decoder_log
from .errors import MediaError
from .media_info import MediaInfo
from .probe_av import open_container, real_video_streams
from .sniff import Sniffed

SILENCE_DBFS = -60.0
"""A track whose peak stays below this is reported as silent."""

SHORTFALL_TOLERANCE_S = 0.5
SHORTFALL_TOLERANCE_RATIO = 0.05
"""Decoding may fall short of the claimed duration by max(0.5 s, 5 %) before it counts as truncation
(encoder priming, padding and per-stream rounding stay well inside this)."""
SHORTFALL_WARNING_S = 0.1
"""A smaller shortfall than the tolerance, but over this, is reported as a warning (a tail cut off)."""


@dataclass(frozen=True)
class Validation:
    """What validation measured.

    Attributes:
        decoded_s: seconds of media actually readable (audio: decoded samples / rate); when ``complete`` is
            False, a lower bound: decoding stopped once it passed ``stop_after_s``.
        claimed_s: seconds the headers claim (None when they say nothing or cannot be trusted).
        video_frames: video frames decoded (first and last GOPs only).
        audio_samples: audio samples decoded (all of them, or up to where decoding stopped).
        peak_dbfs: the audio's peak level (None without audio; -inf for digital silence).
        method: ``full-decode`` (audio) or ``demux+first-last-gop`` (video).
        warnings: things to tell the user (a silent track).
        video_packets: video frames in the file (packets demuxed), 1 for a still.
        complete: False when decoding stopped early at ``stop_after_s`` (the rest was not read).
        last_audio_packet: the first 4 bytes and the size of the last audio packet demuxed (None without
            audio, or when decoding stopped early): a frame cut short by a missing tail shows there.
    """

    decoded_s: float
    claimed_s: float | None
    video_frames: int
    audio_samples: int
    peak_dbfs: float | None
    method: str
    warnings: list[str] = field(default_factory=list)
    video_packets: int = 0
    complete: bool = True
    last_audio_packet: tuple[bytes, int] | None = None

    @property
    def silent(self) -> bool:
        return self.peak_dbfs is not None and self.peak_dbfs < SILENCE_DBFS


def validate_av(path: Path, sniffed: Sniffed, info: MediaInfo, *, stop_after_s: float | None = None) -> Validation:
    """Decode enough of ``path`` to prove it is whole; cache the result in ``info.extra["validation"]``.

    Args:
        path: the file (already probed).
        sniffed: the sniffer's verdict (its demuxer is forced).
        info: ``probe_av``'s result; its ``kind`` picks the method.
        stop_after_s: stop once more than this many seconds have been read (the caller refuses or cuts
            anything longer, so the rest need not be decoded); the result is then not ``complete``.

    Returns:
        The measurements. ``info.duration_s`` is not changed; callers use ``decoded_s``.

    Raises:
        MediaError: ``empty`` (nothing decodes) or ``corrupt_media`` (decoder errors or truncation).
    """
    cached = info.extra.get("validation")
    if isinstance(cached, Validation) and (
        cached.complete or (stop_after_s is not None and cached.decoded_s > stop_after_s)
    ):
        return cached
    result = _validate(path, sniffed, info, stop_after_s)
    info.extra["validation"] = result
    return result


def _validate(path: Path, sniffed: Sniffed, info: MediaInfo, stop_after_s: float | None) -> Validation:
    import av

    if sniffed.container == "wav":
        _check_wav_data_size(path, info)
    claimed = _trusted_claim(path, sniffed, info)
    with open_container(path, sniffed) as container, decoder_log() as log:
        videos = real_video_streams(container) if info.kind == "video" else []
        vstream = videos[0] if videos else None
        astream = container.streams.audio[0] if container.streams.audio else None
        decoders = {s.type: s.codec_context.codec.name for s in (vstream, astream) if s is not None}
        for stream in (vstream, astream):
            if stream is not None:
                # Decode on this thread only: what the decoder logs is then this file's (see avlog.py).
                stream.thread_count = 1
        scan = _Scan(astream, stop_after_s)
        try:
            last_key = _demux_pass(container, vstream, astream, scan, log)
            if vstream is not None and last_key is not None and scan.keyframes > 1 and not scan.stopped:
                container.seek(last_key, stream=vstream, backward=True, any_frame=False)
                for packet in container.demux(vstream):
                    scan.video_decoded(_decode_video(packet, last_key, log), last_key)
        except (av.error.FFmpegError, EOFError, ValueError) as exc:
            reported = _decoder_errors(log, decoders)
            raise _corrupt(path, f"decoding failed ({_reason(exc)}){'; ' + reported if reported else ''}") from None
        reported = _decoder_errors(log, decoders)
    if reported:
        raise _corrupt(path, reported)
    _check_corrupt_frames(path, scan)
    decoded = scan.decoded_s(vstream is not None)
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
        and not scan.stopped
        and claimed - decoded > max(SHORTFALL_TOLERANCE_S, SHORTFALL_TOLERANCE_RATIO * claimed)
    ):
        raise _corrupt(path, f"the header claims {claimed:.2f} s but only {decoded:.2f} s can be read (truncated)")
    warnings = []
    if claimed is not None and not still and not scan.stopped and claimed - decoded > SHORTFALL_WARNING_S:
        # Within the tolerance but more than priming explains: the tail is most likely cut off.
        warnings.append(f"the file is shorter than its header says: {decoded:.2f} of {claimed:.2f} s can be read")
    peak = scan.peak_dbfs()
    if peak is not None and peak < SILENCE_DBFS:
        level = "-inf" if math.isinf(peak) else f"{peak:.0f}"
        warnings.append(f"the audio is silent (peak {level} dBFS over {scan.audio_s():.2f} s)")
    return Validation(
        decoded_s=decoded,
        claimed_s=claimed,
        video_frames=scan.video_frames,
        audio_samples=scan.audio_samples,
        peak_dbfs=peak,
        method="demux+first-last-gop" if info.kind == "video" else "full-decode",
        warnings=warnings,
        video_packets=scan.video_packets,
        complete=not scan.stopped,
        last_audio_packet=None if scan.last_audio is None or scan.stopped else scan.last_audio,
    )


class _Scan:
    """Running totals of one validation pass."""

    def __init__(self, astream: Any, stop_after_s: float | None = None) -> None:
        self.stop_after_s = stop_after_s
        self.stopped = False
        self.rate = int(astream.codec_context.sample_rate or 0) if astream is not None else 0
        self.video_frames = 0
        self.video_packets = 0
        self.audio_samples = 0
        self.keyframes = 0
        self.corrupt_frames: list[tuple[str, float]] = []
        self.last_audio: tuple[bytes, int] | None = None
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

    def video_decoded(self, frames: list[Any], start_pts: int | None) -> None:
        """Count decoded video frames; note those flagged corrupt from the keyframe at ``start_pts`` on."""
        self.video_frames += len(frames)
        if start_pts is not None:
            self._note_corrupt("video", [f for f in frames if f.pts is None or f.pts >= start_pts])

    def _note_corrupt(self, kind: str, frames: list[Any]) -> None:
        for frame in frames:
            if frame.is_corrupt:
                self.corrupt_frames.append((kind, float(frame.time) if frame.time is not None else 0.0))

    def audio_frame(self, frame: Any) -> None:
        self.audio_samples += int(frame.samples)
        self._note_corrupt("audio", [frame])
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

    def audio_s(self) -> float:
        return self.audio_samples / self.rate if self.rate else 0.0

    def decoded_s(self, has_video: bool) -> float:
        if not has_video:
            return self.audio_s()
        spans = [last - first for first, last in self.spans.values()]
        return max([*spans, self.audio_s()], default=0.0)

    def past_limit(self, has_video: bool) -> bool:
        """Whether more than ``stop_after_s`` has been read (then ``stopped`` is set)."""
        if self.stop_after_s is not None and self.decoded_s(has_video) > self.stop_after_s:
            self.stopped = True
        return self.stopped


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


def _demux_pass(container: Any, vstream: Any, astream: Any, scan: _Scan, log: DecoderLog) -> int | None:
    """Demux every packet; decode all audio and the video's first GOP. Returns the last keyframe's pts."""
    streams = [s for s in (vstream, astream) if s is not None]
    last_key = None
    first_key = None
    rate = vstream.average_rate if vstream is not None else None
    # Matroska gives H.264 packets no duration: count one frame interval each (ignored for odd rates).
    interval = 1 / float(rate) if rate and 1 <= float(rate) <= 240 else 0.0
    has_video = vstream is not None
    for packet in container.demux(*streams):
        if scan.past_limit(has_video):
            break
        scan.packet_end(packet, interval if packet.stream is vstream else 0.0)
        if packet.stream is vstream:
            if packet.size:
                scan.video_packets += 1
                if packet.is_keyframe:
                    scan.keyframes += 1
                    last_key = packet.pts
                    if first_key is None:
                        first_key = packet.pts
            if scan.keyframes <= 1:
                scan.video_decoded(_decode_video(packet, first_key, log), first_key)
        else:
            if packet.size:
                scan.last_audio = (bytes(memoryview(packet)[:4]), packet.size)
            for frame in packet.decode():
                scan.audio_frame(frame)
    return last_key


def _decode_video(packet: Any, start_pts: int | None, log: DecoderLog) -> list[Any]:
    """Decode one video packet of a pass that started at the keyframe at ``start_pts`` (None: none yet).

    Errors logged for packets before that keyframe, or for its leading pictures (later in decode order,
    earlier on screen: an open GOP's B-frames that reference the GOP before), are expected wherever
    decoding starts mid-stream (after a seek, or in a clip cut from a longer one); the decoder drops those
    pictures and shows none of them, so their errors are forgotten.
    """
    leading = start_pts is None or (packet.pts is not None and packet.pts < start_pts)
    mark = log.mark()
    frames: list[Any] = packet.decode()
    if leading:
        log.forget_since(mark)
    return frames


def _decoder_errors(log: DecoderLog, decoders: dict[str, str]) -> str | None:
    """What the decoders (``{"video": "h264", ...}``) logged as errors, for a message; None when nothing.

    Decoders conceal damage (grey macroblocks, a dropped or silenced audio frame) and go on, so such a file
    plays, but not as it was recorded, and the service's own decoder may refuse it.
    """
    for kind, codec in decoders.items():
        errors = log.errors({codec})
        if errors:
            shown = "; ".join(dict.fromkeys(errors[:2]))
            count = f"{len(errors)} errors" if len(errors) > 1 else "an error"
            return f"the {kind} decoder ({codec}) reports {count}: {shown}"
    return None


def _check_corrupt_frames(path: Path, scan: _Scan) -> None:
    """Frames the decoder flagged corrupt (concealed errors, missing references): ``corrupt_media``."""
    if scan.corrupt_frames:
        kind, at = scan.corrupt_frames[0]
        count = len(scan.corrupt_frames)
        raise _corrupt(
            path,
            f"{count} {kind} frame{'s' if count > 1 else ''} decoded with errors concealed, the first at {at:.2f} s",
        )


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


def exact_duration(path: Path, sniffed: Sniffed, info: MediaInfo) -> float | None:
    """The header's duration when the container records an exact count, else None.

    Exact: a WAV's data size (real sizes only), a FLAC's STREAMINFO sample count (0 means unknown), an
    MP3's Xing/Info/VBRI frame count, an MP4/MOV's sample tables. Other containers' durations are a
    muxer's note or libav's estimate: enough to warn, not to refuse a file without reading it.
    """
    claimed = _trusted_claim(path, sniffed, info)
    if claimed is None:
        return None
    if sniffed.ffmpeg_format == "flac":
        return claimed if _flac_total_samples(path) else None
    return claimed if sniffed.ffmpeg_format in ("wav", "mp3", "mov") else None


def _flac_total_samples(path: Path) -> int:
    """The total sample count in a FLAC's STREAMINFO (0: unknown, or no STREAMINFO where it belongs)."""
    with path.open("rb") as fh:
        head = fh.read(10)
        start = _id3_size(head)
        fh.seek(start)
        block = fh.read(4 + 4 + 34)
    if len(block) < 42 or block[:4] != b"fLaC" or block[4] & 0x7F != 0:
        return 0
    info = block[8:]
    return (info[13] & 0x0F) << 32 | int.from_bytes(info[14:18], "big")


def _id3_size(head: bytes) -> int:
    """Bytes an ID3v2 tag at the start of ``head`` takes (0 without one)."""
    if head[:3] != b"ID3" or len(head) < 10:
        return 0
    return 10 + ((head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F))


def _mp3_has_frame_count(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(16 * 1024)
    start = _id3_size(head)
    if start:
        with path.open("rb") as fh:
            fh.seek(start)
            head = fh.read(2048)
        start = 0
    window = head[start : start + 2048]
    return any(tag in window for tag in (b"Xing", b"Info", b"VBRI"))


def _check_wav_data_size(path: Path, info: MediaInfo) -> None:
    """Refuse a WAV whose ``data`` chunk declares more bytes than the file holds (it was cut short).

    The placeholder sizes streaming recorders leave (0, 0xFFFFFFFF) say nothing and are let through.

    Raises:
        MediaError: ``corrupt_media`` naming the declared and the held sizes (and durations, when known).
    """
    located = wav_data_chunk(path)
    if located is None or located[1] in (0, 0xFFFFFFFF):
        return
    offset, declared = located
    held = max(0, path.stat().st_size - offset)
    if held >= declared:
        return
    seconds = ""
    if info.sample_rate and info.channels and info.bit_depth:  # PCM: the byte rate is fixed
        rate = info.sample_rate * info.channels * info.bit_depth / 8
        seconds = f" ({held / rate:.2f} of {declared / rate:.2f} s)"
    raise _corrupt(
        path, f"its header declares {declared:,} bytes of sound but the file holds only {held:,}{seconds} (truncated)"
    )


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


def packet_span_s(path: Path, sniffed: Sniffed) -> float:
    """How long the first video and audio streams' packets last, start to end (their longest); no decoding.

    This is what validation measures (``Validation.decoded_s``): a stream copy cut by decode order keeps
    packets shown past the cut, which the sample tables' total does not reveal.
    """
    with open_container(path, sniffed) as container:
        vstream = next(iter(real_video_streams(container)), None)
        astream = container.streams.audio[0] if container.streams.audio else None
        streams = [s for s in (vstream, astream) if s is not None]
        scan = _Scan(None)
        rate = vstream.average_rate if vstream is not None else None
        interval = 1 / float(rate) if rate and 1 <= float(rate) <= 240 else 0.0
        for packet in container.demux(*streams):
            scan.packet_end(packet, interval if packet.stream is vstream else 0.0)
    return scan.decoded_s(True)


def check_output(output: Path, source: Path, kind: str, expected_s: float) -> float:
    """Prove a converted file holds media lasting ``expected_s``, without decoding it all.

    Each stream is decoded until its first frame comes out, with the decoders' log watched. Its length
    comes from the header when ffmpeg wrote an exact one (MP4 sample tables, whose last sample must lie
    inside the file; a WAV's data size; an MP3's Xing frame count: ffmpeg writes these once everything
    is encoded), else from the timestamps of every packet. The rest was written by ffmpeg's encoder,
    whose errors already fail the run. On a 60 s 720p remux this costs a few milliseconds (see
    benchmarks/README.md).

    Args:
        output: the converted file (MP4, WAV or MP3).
        source: the input it was made from (for messages).
        kind: ``audio`` or ``video`` (for messages).
        expected_s: how long the output must last (the input's decoded length, the trim, the piece...).

    Returns:
        The output's measured duration in seconds.

    Raises:
        MediaError: ``empty`` when a stream yields no frame or sample; ``ffmpeg_failed`` when the duration
            is off by more than max(0.5 s, 5 %), the file is cut short, or a decoder reports an error.
    """
    import av

    from .sniff import sniff_path

    sniffed = sniff_path(output)
    with open_container(output, sniffed) as container, decoder_log() as log:
        streams = [*real_video_streams(container)[:1], *container.streams.audio[:1]]
        decoders = {s.type: s.codec_context.codec.name for s in streams}
        for stream in streams:
            stream.thread_count = 1
        recorded = _recorded_lengths(output, sniffed, container, streams, source, kind)
        scan = _Scan(None)
        firsts = {s.type: 0 for s in streams}  # frames (video) or samples (audio) of the first decoded frame
        try:
            for packet in container.demux(*streams):
                scan.packet_end(packet, 0.0)
                kind_of = packet.stream.type
                if not firsts[kind_of]:
                    for frame in packet.decode():
                        firsts[kind_of] += int(frame.samples) if kind_of == "audio" else 1
                if recorded and all(firsts.values()):
                    break  # the header's lengths are exact: nothing more to learn from the packets
        except (av.error.FFmpegError, EOFError, ValueError) as exc:
            raise _bad_output(source, kind, f"cannot be read back ({_reason(exc)})") from None
        reported = _decoder_errors(log, decoders)
    if reported:
        raise _bad_output(source, kind, f"does not decode cleanly: {reported}")
    missing = [stream_kind for stream_kind, count in firsts.items() if not count] or ([] if firsts else [kind])
    if missing:
        unit = "audio samples" if missing[0] == "audio" else "video frames"
        raise MediaError(
            f"{source.name}: the converted {kind} holds no {unit} ({_span_text(expected_s)} of input was converted)",
            code="empty",
            hint="the source is too short (or too damaged) to convert into anything playable; re-export it",
        )
    lasts = max(recorded.values()) if recorded else scan.decoded_s(True)
    tolerance = max(SHORTFALL_TOLERANCE_S, SHORTFALL_TOLERANCE_RATIO * expected_s)
    if abs(lasts - expected_s) > tolerance:
        raise _bad_output(
            source,
            kind,
            f"lasts {lasts:.2f} s but {expected_s:.2f} s were converted (more than {tolerance:.2f} s apart)",
        )
    return lasts


def _recorded_lengths(
    output: Path, sniffed: Sniffed, container: Any, streams: list[Any], source: Path, kind: str
) -> dict[str, float] | None:
    """Each stream's length in seconds from the output's header, when ffmpeg wrote an exact one; else None.

    Raises:
        MediaError: ``ffmpeg_failed`` when an MP4's sample tables point past the end of the file.
    """
    fmt = sniffed.ffmpeg_format
    if fmt == "mov":
        size = output.stat().st_size
        lengths: dict[str, float] = {}
        for stream in streams:
            entries = stream.index_entries
            if not len(entries) or not stream.duration or stream.time_base is None:
                return None
            last = entries[len(entries) - 1]
            if last.pos + last.size > size:
                raise _bad_output(
                    source,
                    kind,
                    f"is cut short: it holds {size:,} bytes, its last frame ends at {last.pos + last.size:,}",
                )
            lengths[stream.type] = float(stream.duration * stream.time_base)
        return lengths
    exact = (fmt == "wav" and not _wav_size_is_placeholder(output)) or (fmt == "mp3" and _mp3_has_frame_count(output))
    if exact and streams and container.duration:
        return {streams[0].type: float(container.duration) / 1_000_000}
    return None


def _span_text(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 0.1 else f"{seconds * 1000:.2f} ms"


def _bad_output(source: Path, kind: str, why: str) -> MediaError:
    return MediaError(
        f"{source.name}: the converted {kind} {why}",
        code="ffmpeg_failed",
        hint="the source's timestamps or frames may be damaged; re-export it (report it if it plays well elsewhere)",
    )


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
