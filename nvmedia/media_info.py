"""``MediaInfo``: the properties of one media file, input or output.

The probers fill it in (``probe.py`` for images, ``probe_av.py`` for audio and
video), the normalizers describe their outputs with it, and the manifest writes
the fields of ``RECORD_FIELDS`` that apply.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .sniff import Kind

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
