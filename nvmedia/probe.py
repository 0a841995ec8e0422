"""What a media file's properties are: ``MediaInfo``.

Images are probed with Pillow from the header only (no pixel decode); audio and
video with PyAV in ``probe_av``. The sniffer decides which prober runs; the
prober may refine the kind (an MP4 holding only audio is audio).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import MediaError
from .sniff import Kind, Sniffed

RECORD_FIELDS = (
    "mime",
    "bytes",
    "sha256",
    "width",
    "height",
    "duration_s",
    "sample_rate",
    "channels",
    "video_codec",
    "audio_codec",
)


@dataclass
class MediaInfo:
    """Properties of one media file (input or output).

    Only ``kind``, ``container``, ``mime`` and ``bytes`` are always set; the rest
    apply to some kinds only and stay None otherwise.
    """

    kind: Kind
    container: str
    mime: str
    bytes: int
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    # Properties used by the normalizers, not written to the manifest.
    mode: str | None = None
    frames: int | None = None
    orientation: int | None = None
    rotation: int | None = None
    frame_rate: float | None = None
    bit_depth: int | None = None
    sample_format: str | None = None
    bit_rate: int | None = None
    has_alpha: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pixels(self) -> int | None:
        if self.width is None or self.height is None:
            return None
        return self.width * self.height

    def to_record(self) -> dict[str, Any]:
        """The manifest's ``input``/``output`` object: the contract's fields that apply."""
        record: dict[str, Any] = {}
        for name in RECORD_FIELDS:
            value = getattr(self, name)
            if value is not None:
                record[name] = round(value, 3) if isinstance(value, float) else value
        return record

    def replace(self, **changes: Any) -> MediaInfo:
        return dataclasses.replace(self, **changes)


def probe(path: Path, sniffed: Sniffed, *, max_pixels: int = 89_478_485) -> MediaInfo:
    """Probe ``path`` (already sniffed) and return its properties.

    Raises:
        MediaError: ``unsupported_format``, ``corrupt_media``, ``too_large`` or ``empty``.
    """
    if sniffed.kind == "image":
        return probe_image(path, sniffed, max_pixels=max_pixels)
    if sniffed.kind in ("audio", "video"):
        from .probe_av import probe_av

        return probe_av(path, sniffed)
    raise MediaError(
        f"{sniffed.description or sniffed.container} is not media",
        code="unsupported_format",
        hint="pass an image (PNG/JPEG/WEBP...), audio (WAV/MP3...) or video (MP4/MOV/WEBM...) file",
    )


def probe_image(path: Path, sniffed: Sniffed, *, max_pixels: int = 89_478_485) -> MediaInfo:
    """Read an image's header with Pillow (no pixel decode).

    The pixel cap is checked here, before anything is decoded. The orientation is read
    from EXIF where that needs no decode; for a PNG it is read only when the eXIf chunk
    precedes the pixels, since Pillow otherwise decodes the image to look for it (and
    swallows decode errors on the way). The normalizer reads it again after decoding.
    """
    from .image_open import image_orientation, open_image

    size = path.stat().st_size
    with open_image(path, sniffed, max_pixels=max_pixels) as im:
        width, height = im.size
        frames = int(getattr(im, "n_frames", 1) or 1)
        mode = im.mode
        has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
        orientation = image_orientation(im) if im.format != "PNG" or "exif" in im.info else None
        bit_depth = {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}.get(mode, 8)
        return MediaInfo(
            kind="image",
            container=sniffed.container,
            mime=sniffed.mime,
            bytes=size,
            width=width,
            height=height,
            mode=mode,
            frames=frames,
            orientation=orientation,
            bit_depth=bit_depth,
            has_alpha=has_alpha,
            extra={"format": im.format},
        )
