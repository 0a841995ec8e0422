"""What a media file's properties are (a ``MediaInfo``, ``media_info.py``).

Images are probed with Pillow from the header only (no pixel decode); audio and
video with PyAV in ``probe_av``. The sniffer decides which prober runs; the
prober may refine the kind (an MP4 holding only audio is audio).
"""

from __future__ import annotations

from pathlib import Path

from .errors import MediaError
from .media_info import RECORD_FIELDS, MediaInfo
from .probe_av import probe_av
from .sniff import Sniffed

__all__ = ["RECORD_FIELDS", "MediaInfo", "probe", "probe_av", "probe_image"]


def probe(path: Path, sniffed: Sniffed, *, max_pixels: int = 89_478_485) -> MediaInfo:
    """Probe ``path`` (already sniffed) and return its properties.

    Raises:
        MediaError: ``unsupported_format``, ``corrupt_media``, ``too_large`` or ``empty``.
    """
    if sniffed.kind == "image":
        return probe_image(path, sniffed, max_pixels=max_pixels)
    if sniffed.kind in ("audio", "video"):
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
