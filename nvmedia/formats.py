"""The formats nvmedia sends: one table from container to MIME type, file suffix and kind.

Every output is one of these (``Profile`` names them by container); the manifest's
MIME types, the suffixes of converted and kept files and Pillow's encoder names all
come from this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .sniff import Kind


@dataclass(frozen=True)
class OutputFormat:
    """One format an output can have.

    Attributes:
        container: nvmedia's name for it (as in profiles and ``encode:`` actions).
        mime: the MIME type sent in data URIs and asset content types.
        suffix: the file suffix of converted and kept files.
        kind: ``image``, ``audio`` or ``video``.
        pillow: Pillow's encoder name, for images.
    """

    container: str
    mime: str
    suffix: str
    kind: Kind
    pillow: str | None = None


OUTPUT_FORMATS: Final = (
    OutputFormat("png", "image/png", ".png", "image", "PNG"),
    OutputFormat("jpeg", "image/jpeg", ".jpg", "image", "JPEG"),
    OutputFormat("webp", "image/webp", ".webp", "image", "WEBP"),
    OutputFormat("wav", "audio/wav", ".wav", "audio"),
    OutputFormat("mp3", "audio/mpeg", ".mp3", "audio"),
    OutputFormat("mp4", "video/mp4", ".mp4", "video"),
    OutputFormat("mov", "video/quicktime", ".mov", "video"),
    OutputFormat("webm", "video/webm", ".webm", "video"),
)

BY_CONTAINER: Final = {f.container: f for f in OUTPUT_FORMATS}
BY_MIME: Final = {f.mime: f for f in OUTPUT_FORMATS}


def output_format(container: str) -> OutputFormat:
    """The output format named ``container`` (``png``, ``mp3``...).

    Raises:
        KeyError: nvmedia sends no such format.
    """
    return BY_CONTAINER[container]
