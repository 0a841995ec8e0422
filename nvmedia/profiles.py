"""Profiles: what a target model accepts, as data.

Code reads a ``Profile``; it never branches on a model name. Two profiles are
built in; users can load their own from a TOML or JSON file whose keys are the
field names below (unknown keys are an error, missing keys take the defaults of
``generic``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULT_INLINE_LIMIT = 180_000
MAX_ASSETS_PER_REQUEST = 10


@dataclass(frozen=True)
class Profile:
    """What a target accepts.

    Attributes:
        name: the profile's name.
        image_formats: accepted image containers, in order of preference (``png``, ``jpeg``, ``webp``).
        audio_formats: accepted audio containers (``wav``, ``mp3``).
        video_formats: accepted video containers (``mp4``, ``mov``, ``webm``).
        video_codecs: accepted video codecs when passing through (empty: any the container allows).
        audio_codecs_in_video: accepted audio codecs inside video (empty: any).
        max_image_pixels: images above this many pixels are downscaled (aspect kept).
        safety_max_image_pixels: images declaring more pixels than this are refused before decode.
        min_sample_rate: audio below this is resampled up (Hz).
        max_sample_rate: audio above this is resampled down (Hz).
        audio_sample_rate: sample rate used whenever audio is re-encoded (Hz).
        audio_channels: channel count used whenever audio is re-encoded.
        max_audio_s: longest accepted audio, in seconds (None: no cap).
        max_video_s: longest accepted video, in seconds (None: no cap).
        max_video_lines: the shorter side of a video is scaled down to this (None: no cap).
        video_transcode_codec: the ffmpeg encoder used when a video must be re-encoded.
        jpeg_quality: JPEG quality for re-encoded photographs.
        inline_limit: base64 characters above which an item is uploaded.
        request_limit: base64 characters of inline media one request may carry (None: the inline limit).
        max_assets: assets one request may reference.
    """

    name: str
    image_formats: tuple[str, ...] = ("png", "jpeg", "webp")
    audio_formats: tuple[str, ...] = ("wav", "mp3")
    video_formats: tuple[str, ...] = ("mp4", "mov", "webm")
    video_codecs: tuple[str, ...] = ()
    audio_codecs_in_video: tuple[str, ...] = ()
    max_image_pixels: int | None = None
    safety_max_image_pixels: int = 89_478_485
    min_sample_rate: int = 8_000
    max_sample_rate: int = 48_000
    audio_sample_rate: int = 16_000
    audio_channels: int = 1
    max_audio_s: float | None = None
    max_video_s: float | None = None
    max_video_lines: int | None = None
    video_transcode_codec: str = "libx264"
    jpeg_quality: int = 90
    inline_limit: int = DEFAULT_INLINE_LIMIT
    request_limit: int | None = None
    max_assets: int = MAX_ASSETS_PER_REQUEST
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def effective_request_limit(self) -> int:
        return self.request_limit if self.request_limit is not None else self.inline_limit

    def replace(self, **changes: Any) -> Profile:
        return dataclasses.replace(self, **changes)


NEMOTRON_3_NANO_OMNI = Profile(
    name="nemotron-3-nano-omni",
    video_formats=("mp4",),
    video_codecs=("h264",),
    audio_codecs_in_video=("aac",),
    max_image_pixels=3_407_872,  # 13,312 patches of 16x16
    max_audio_s=3600.0,
    max_video_s=120.0,
    max_video_lines=1080,
)

GENERIC = Profile(name="generic")

BUILTIN_PROFILES: dict[str, Profile] = {p.name: p for p in (NEMOTRON_3_NANO_OMNI, GENERIC)}
DEFAULT_PROFILE = NEMOTRON_3_NANO_OMNI


def get_profile(name_or_path: str | Path | Profile | None) -> Profile:
    """Return a built-in profile by name, or load one from a TOML/JSON file.

    Raises:
        ConfigError: the name is unknown and no such file exists, or the file is invalid.
    """
    if name_or_path is None:
        return DEFAULT_PROFILE
    if isinstance(name_or_path, Profile):
        return name_or_path
    key = str(name_or_path)
    if key in BUILTIN_PROFILES:
        return BUILTIN_PROFILES[key]
    path = Path(key)
    if path.suffix.lower() in (".toml", ".json") or path.exists():
        return load_profile_file(path)
    known = ", ".join(sorted(BUILTIN_PROFILES))
    raise ConfigError(
        f"unknown profile {key!r}; known profiles: {known}",
        hint="pass one of the known names, or a path to a .toml or .json profile file",
    )


_TUPLE_FIELDS = {f.name for f in dataclasses.fields(Profile) if str(f.type).startswith("tuple")}


def load_profile_file(path: Path) -> Profile:
    """Load a profile from a TOML or JSON file (keys are ``Profile`` field names)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read profile file {path}: {exc.strerror}", hint="check the path") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(raw)
        else:
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"profile file {path} is not valid: {exc}", hint="fix the file's syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"profile file {path} must hold a table of settings", hint="see README: Profiles")
    names = ({f.name for f in dataclasses.fields(Profile)} - {"extra"}) | {"base"}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"profile file {path} has unknown settings: {', '.join(unknown)}",
            hint=f"known settings: {', '.join(sorted(names))}",
        )
    base = BUILTIN_PROFILES.get(str(data.pop("base", "generic")), GENERIC)
    values: dict[str, Any] = {k: tuple(v) if k in _TUPLE_FIELDS else v for k, v in data.items()}
    values.setdefault("name", path.stem)
    try:
        return dataclasses.replace(base, **values)
    except TypeError as exc:
        raise ConfigError(f"profile file {path} is not valid: {exc}", hint="see README: Profiles") from None
