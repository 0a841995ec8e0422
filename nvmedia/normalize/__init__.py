"""Making media acceptable to a profile: one module per kind, found through a registry.

Every normalizer takes the source path, its ``MediaInfo`` and the profile, and
returns a ``NormalizedMedia``: the file holding the bytes to send (the source
itself when it passes through untouched), the output's ``MediaInfo``, and the
``actions`` and ``warnings`` that go into the manifest. Outputs are written only
inside ``NormalizeOptions.workdir``; sources are opened read-only.

``NORMALIZERS`` names each kind's normalizer (module and function); a module is
imported the first time its kind is met, so reading images never loads the
audio and video code. ``register`` adds or replaces one.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import cast

from ..errors import MediaError
from ..media_info import MediaInfo
from ..profiles import Profile
from ..sniff import Kind, Sniffed
from .base import NormalizedMedia, NormalizeOptions, Normalizer

__all__ = ["NORMALIZERS", "NormalizedMedia", "NormalizeOptions", "Normalizer", "normalize", "register"]

NORMALIZERS: dict[str, tuple[str, str]] = {
    "image": ("nvmedia.normalize.image", "normalize_image"),
    "audio": ("nvmedia.normalize.audio", "normalize_audio"),
    "video": ("nvmedia.normalize.video", "normalize_video"),
}
"""kind -> (module, function) of its normalizer."""

_loaded: dict[str, Normalizer] = {}


def register(kind: Kind, normalizer: Normalizer) -> None:
    """Use ``normalizer`` for media of ``kind`` from now on."""
    _loaded[kind] = normalizer


def _normalizer_for(kind: str) -> Normalizer | None:
    found = _loaded.get(kind)
    if found is None and kind in NORMALIZERS:
        module, name = NORMALIZERS[kind]
        found = _loaded[kind] = cast(Normalizer, getattr(importlib.import_module(module), name))
    return found


def normalize(
    source: Path, sniffed: Sniffed, info: MediaInfo, profile: Profile, options: NormalizeOptions
) -> NormalizedMedia:
    """Normalize ``source`` with the normalizer registered for ``info.kind``.

    Raises:
        MediaError: ``unsupported_format`` when no normalizer handles that kind; else the normalizer's errors.
    """
    normalizer = _normalizer_for(info.kind)
    if normalizer is None:
        raise MediaError(f"no normalizer for kind {info.kind!r}", code="unsupported_format")
    return normalizer(source, sniffed, info, profile, options)
