"""Making media acceptable to a profile: one module per kind.

Every normalizer takes the source path, its ``MediaInfo`` and the profile, and
returns a ``NormalizedMedia``: the file holding the bytes to send (the source
itself when it passes through untouched), the output's ``MediaInfo``, and the
``actions`` and ``warnings`` that go into the manifest. Outputs are written only
inside ``NormalizeOptions.workdir``; sources are opened read-only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MediaError
from ..memory import MemoryBudget
from ..probe import MediaInfo
from ..profiles import Profile
from ..sniff import Sniffed


@dataclass(frozen=True)
class NormalizeOptions:
    """How to normalize, beyond what the profile says.

    Attributes:
        workdir: folder where converted outputs are written (owned by the caller).
        fit_chars: in inline mode, the base64 length the output must stay under (None: no budget).
        keep_metadata: keep EXIF/XMP/IPTC/text metadata instead of stripping it.
        background: RGB colour that transparency is flattened onto when the output cannot carry alpha.
        trim_s: cut video/audio longer than the profile's limit to its first ``trim_s`` seconds.
        split_long_audio: cut audio longer than the profile's limit into pieces at its pauses.
        budget: the run's memory budget, which image decodes reserve their estimated bytes from
            (None: no budget).
    """

    workdir: Path
    fit_chars: int | None = None
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


def dropped_tracks(info: MediaInfo) -> list[str]:
    """The warning for the audio tracks a conversion leaves out (only the first is kept), or [].

    Example:
        >>> dropped_tracks(MediaInfo(kind="video", container="mp4", mime="video/mp4", bytes=1,
        ...                          extra={"audio_streams": 2}))
        ['audio: kept the first of 2 tracks']
    """
    count = info.extra.get("audio_streams")
    return [f"audio: kept the first of {count} tracks"] if isinstance(count, int) and count > 1 else []


def normalize(
    source: Path, sniffed: Sniffed, info: MediaInfo, profile: Profile, options: NormalizeOptions
) -> NormalizedMedia:
    """Dispatch to the normalizer for ``info.kind``."""
    if info.kind == "image":
        from .image import normalize_image

        return normalize_image(source, sniffed, info, profile, options)
    if info.kind == "audio":
        from .audio import normalize_audio

        return normalize_audio(source, sniffed, info, profile, options)
    if info.kind == "video":
        from .video import normalize_video

        return normalize_video(source, sniffed, info, profile, options)
    raise MediaError(f"no normalizer for kind {info.kind!r}", code="unsupported_format")
