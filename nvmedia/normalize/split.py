"""Where to cut audio that is longer than the profile allows (``--split-long-audio``).

Loudness is measured once over the whole file, streaming (PyAV decodes, the
audio is resampled to 8 kHz mono 16-bit, pydub gives the RMS of each
``WINDOW_S`` window), then each cut goes at the middle of the quietest second
found in the last ``SEARCH_S`` seconds before the limit, so that pieces end in
a pause rather than mid-word. A stretch with no pause is cut at the limit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..media_info import MediaInfo
from ..probe_av import open_container
from ..sniff import Sniffed
from ..validate import load_pydub

WINDOW_S = 0.25
"""Length of one loudness measurement."""

QUIET_SPAN_S = 1.0
"""How long a pause a cut looks for."""

SEARCH_S = 60.0
"""How far before the limit a cut may fall (at most half a piece)."""

PIECE_MARGIN_S = 0.5
"""Pieces stay this far under the limit, for encoder priming and container rounding."""

ANALYSIS_RATE = 8_000


def loudness(path: Path, sniffed: Sniffed, info: MediaInfo) -> list[float]:
    """RMS level (16-bit scale) of each ``WINDOW_S`` window of the audio, in order."""
    import av

    window_bytes = int(ANALYSIS_RATE * WINDOW_S) * 2
    levels: list[float] = []
    pending = bytearray()
    with open_container(path, sniffed) as container:
        index = info.extra.get("audio_index")
        stream = container.streams[index] if isinstance(index, int) else container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=ANALYSIS_RATE)

        def take(frames: list[Any]) -> None:
            for out in frames:
                pending.extend(bytes(out.planes[0])[: out.samples * 2])
            while len(pending) >= window_bytes:
                levels.append(rms(bytes(pending[:window_bytes])))
                del pending[:window_bytes]

        for packet in container.demux(stream):
            for frame in packet.decode():
                take(resampler.resample(frame))
        take(resampler.resample(None))  # what the resampler still holds
    if pending:
        levels.append(rms(bytes(pending)))
    return levels


def rms(pcm: bytes) -> float:
    """RMS of mono 16-bit PCM at ``ANALYSIS_RATE``, by pydub."""
    segment = load_pydub().AudioSegment(data=pcm, sample_width=2, frame_rate=ANALYSIS_RATE, channels=1)
    return float(segment.rms)


def cut_points(duration: float, max_s: float, levels: Sequence[float], window_s: float = WINDOW_S) -> list[float]:
    """Where to cut ``duration`` seconds into pieces of at most ``max_s - PIECE_MARGIN_S`` seconds.

    Each cut is at the middle of the quietest ``QUIET_SPAN_S`` (by mean RMS, the latest
    one on ties) that lies within ``SEARCH_S`` (and half a piece) before the limit.

    Returns:
        The cut times, increasing; no cuts when the audio fits as it is.
    """
    longest = max(max_s - PIECE_MARGIN_S, max_s / 2)
    span = max(1, round(QUIET_SPAN_S / window_s))
    prefix = [0.0]
    for level in levels:
        prefix.append(prefix[-1] + level)
    cuts: list[float] = []
    start = 0.0
    while duration - start > longest:
        hi = start + longest
        lo = max(start + longest / 2, hi - SEARCH_S)
        first = math.ceil(lo / window_s - 1e-9)
        last = min(math.floor(hi / window_s + 1e-9) - span, len(levels) - span)
        best: int | None = None
        best_level = math.inf
        for i in range(first, last + 1):
            level = (prefix[i + span] - prefix[i]) / span
            if level <= best_level:
                best, best_level = i, level
        cut = hi if best is None else (best + span / 2) * window_s
        cuts.append(min(max(cut, lo), hi))
        start = cuts[-1]
    return cuts
