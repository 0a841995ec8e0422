"""What every normalizer takes and gives: ``NormalizeOptions`` in, ``NormalizedMedia`` out.

The normalizer modules (``image.py``, ``audio.py``, ``video.py``) import these from
here, and the package's ``normalize`` dispatches to them through its registry, so
no module imports the package it belongs to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..media_info import MediaInfo
from ..memory import MemoryBudget
from ..plan import InlineShare
from ..profiles import Profile
from ..sniff import Sniffed


@dataclass(frozen=True)
class NormalizeOptions:
    """How to normalize, beyond what the profile says.

    Attributes:
        workdir: folder where converted outputs are written (owned by the caller).
        fit_chars: in inline mode, the base64 length the output must stay under (None: no budget).
        fit_share: in inline mode, the request's budget and how many items share it, so that an
            input sent as several pieces (``split_long_audio``) fits each piece to its share.
        keep_metadata: keep EXIF/XMP/IPTC/text metadata instead of stripping it.
        background: RGB colour that transparency is flattened onto when the output cannot carry alpha.
        trim_s: cut video/audio longer than the profile's limit to its first ``trim_s`` seconds.
        split_long_audio: cut audio longer than the profile's limit into pieces at its pauses.
        budget: the run's memory budget, which image decodes reserve their estimated bytes from
            (None: no budget).
    """

    workdir: Path
    fit_chars: int | None = None
    fit_share: InlineShare | None = None
    keep_metadata: bool = False
    background: tuple[int, int, int] = (255, 255, 255)
    trim_s: float | None = None
    split_long_audio: bool = False
    budget: MemoryBudget | None = None


@dataclass
class NormalizedMedia:
    """The result of normalizing one input.

    Attributes:
        path: the file whose bytes are sent (the source itself on passthrough).
        info: properties of the output (``mime`` is one the profile accepts).
        actions: what was done, in order (``exif-transpose``, ``strip-metadata``, ``encode:jpeg``...);
            empty on passthrough.
        warnings: things the user should know (``animated: kept the first of 31 frames``...).
        span: for a piece of a split input, its start and end in the source, in seconds.
        pieces: when the input was split (``split_long_audio``), one result per piece, in order;
            the fields above then describe the first piece.
    """

    path: Path
    info: MediaInfo
    actions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    span: tuple[float, float] | None = None
    pieces: list[NormalizedMedia] = field(default_factory=list)


Normalizer = Callable[[Path, Sniffed, MediaInfo, Profile, NormalizeOptions], NormalizedMedia]
"""``normalizer(source, sniffed, info, profile, options)``: one kind's normalizer."""


def dropped_tracks(info: MediaInfo) -> list[str]:
    """The warning for the audio tracks a conversion leaves out (only the first is kept), or [].

    Example:
        >>> dropped_tracks(MediaInfo(kind="video", container="mp4", mime="video/mp4", bytes=1,
        ...                          extra={"audio_streams": 2}))
        ['audio: kept the first of 2 tracks']
    """
    count = info.extra.get("audio_streams")
    return [f"audio: kept the first of {count} tracks"] if isinstance(count, int) and count > 1 else []
