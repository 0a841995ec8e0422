"""What media some bytes really are, as the emulator judges them.

This is deliberately independent of ``nvmedia.sniff``: the emulator stands in
for the service, so it must not share the client's idea of what a file is (a bug
there would otherwise pass its own test). It only knows the formats the hosted
endpoints accept.
"""

from __future__ import annotations

import io
from typing import Final

ACCEPTED: Final[dict[str, frozenset[str]]] = {
    "image": frozenset({"image/png", "image/jpeg", "image/webp"}),
    "audio": frozenset({"audio/wav", "audio/mpeg"}),
    "video": frozenset({"video/mp4", "video/quicktime", "video/webm"}),
}
"""MIME types the endpoints accept, per kind (canonical spellings)."""

_ALIASES: Final = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "audio/mp3": "audio/mpeg",
    "audio/x-mp3": "audio/mpeg",
    "audio/mpeg3": "audio/mpeg",
}

_ISO_BMFF: Final = frozenset({"video/mp4", "video/quicktime"})

HEAD_BYTES: Final = 64
"""How many leading bytes ``media_type_of`` needs."""


def canonical_mime(mime: str) -> str:
    """The canonical spelling of a MIME type (``image/jpg`` -> ``image/jpeg``), lower-cased."""
    lowered = mime.strip().lower()
    return _ALIASES.get(lowered, lowered)


def kind_of_mime(mime: str) -> str | None:
    """``image``, ``audio`` or ``video`` when ``mime`` is one the endpoints accept, else None."""
    canon = canonical_mime(mime)
    for kind, mimes in ACCEPTED.items():
        if canon in mimes:
            return kind
    return None


def _mp3_frame(head: bytes) -> bool:
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version = (head[1] >> 3) & 0x3
    layer = (head[1] >> 1) & 0x3
    return version != 1 and layer != 0 and head[2] >> 4 != 0xF and (head[2] >> 2) & 0x3 != 0x3


_IMAGE_BRANDS: Final = {
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"mif1": "image/heif",
    b"msf1": "image/heif",
    b"avif": "image/avif",
    b"avis": "image/avif",
}
_AUDIO_BRANDS: Final = {b"M4A ", b"M4B ", b"M4P ", b"F4A "}


def _ftyp(head: bytes) -> str:
    major = head[8:12]
    if major in _IMAGE_BRANDS:
        return _IMAGE_BRANDS[major]
    if major in _AUDIO_BRANDS:
        return "audio/mp4"
    return "video/quicktime" if major == b"qt  " else "video/mp4"


def media_type_of(head: bytes) -> str | None:
    """The MIME type of accepted media from its first ``HEAD_BYTES`` bytes, or None.

    The formats the endpoints take are recognised; ISO-BMFF images and audio (HEIF,
    AVIF, M4A) are named so they are not mistaken for MP4 video; anything else (GIF,
    FLAC, Matroska that is not WebM, text...) is None.

    Example:
        >>> media_type_of(b"\\x89PNG\\r\\n\\x1a\\n\\x00\\x00")
        'image/png'
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"ID3") or _mp3_frame(head):
        return "audio/mpeg"
    if head[4:8] == b"ftyp":
        return _ftyp(head)
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return "video/quicktime"
    if head.startswith(b"\x1a\x45\xdf\xa3") and b"webm" in head:
        return "video/webm"
    return None


def matches(claimed: str, actual: str | None) -> bool:
    """True when bytes of type ``actual`` may be sent as ``claimed`` (MP4 and QuickTime are interchangeable)."""
    if actual is None:
        return False
    canon = canonical_mime(claimed)
    return canon == actual or (canon in _ISO_BMFF and actual in _ISO_BMFF)


def decode_problem(data: bytes, mime: str) -> str | None:
    """Why ``data`` of type ``mime`` cannot be decoded, or None when it can.

    Images are verified with Pillow; audio and video must open with PyAV and hold a
    stream of their kind. When those libraries are missing only the magic bytes count.
    """
    kind = kind_of_mime(mime)
    if kind == "image":
        return _image_problem(data)
    if kind in ("audio", "video"):
        return _av_problem(io.BytesIO(data), kind)
    return None


def file_decode_problem(path: str, mime: str) -> str | None:
    """Like ``decode_problem`` for a file on disk (images are verified, audio/video opened)."""
    kind = kind_of_mime(mime)
    if kind == "image":
        with open(path, "rb") as fh:
            return _image_problem(fh.read())
    if kind in ("audio", "video"):
        return _av_problem(path, kind)
    return None


def _image_problem(data: bytes) -> str | None:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency of nvmedia
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except Exception as exc:  # Pillow raises many types for broken data
        return f"the image does not decode ({type(exc).__name__}: {exc})"
    return None


def _av_problem(source: str | io.BytesIO, kind: str) -> str | None:
    try:
        import av
    except ImportError:  # pragma: no cover - PyAV is a dependency of nvmedia
        return None
    try:
        with av.open(source, metadata_errors="ignore") as container:
            streams = container.streams.audio if kind == "audio" else container.streams.video
            if not streams:
                return f"the file has no {kind} stream"
    except Exception as exc:  # PyAV raises many types for broken data
        return f"the {kind} does not open ({type(exc).__name__}: {exc})"
    return None
