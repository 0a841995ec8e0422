"""Environment variables, defaults and sizes: the one place nvmedia reads its configuration from.

Every environment variable nvmedia reads is named here, with the default that
applies when it is unset. Explicit arguments (``Client(...)`` keywords, command-line
flags) always win over the environment.

========================== ============================================================ =====================
variable                   meaning                                                      default
========================== ============================================================ =====================
``NVIDIA_API_KEY``         bearer key for the asset API (and the chat endpoint)         none
``NVMEDIA_ASSETS_URL``     asset API base                                               ``DEFAULT_ASSETS_URL``
``NVMEDIA_FFMPEG``         ffmpeg executable                                            bundled, else PATH
``NVMEDIA_CACHE_DIR``      folder of the asset-id cache and the converted-file cache    platform cache folder
``NVMEDIA_OUTPUT_CACHE_SIZE`` cap of the converted-file cache (``2G``; ``0``: off)      2 GiB
========================== ============================================================ =====================

Three more are test hooks read by worker processes only (``workers.py``):
``NVMEDIA_TEST_WORKER_EXIT``, ``NVMEDIA_TEST_WORKER_EXIT_ONCE`` and ``NVMEDIA_TEST_WORKER_HOLD``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

from .errors import ConfigError

API_KEY_ENV: Final = "NVIDIA_API_KEY"
ASSETS_URL_ENV: Final = "NVMEDIA_ASSETS_URL"
FFMPEG_ENV: Final = "NVMEDIA_FFMPEG"
CACHE_DIR_ENV: Final = "NVMEDIA_CACHE_DIR"
OUTPUT_CACHE_SIZE_ENV: Final = "NVMEDIA_OUTPUT_CACHE_SIZE"
TEST_WORKER_EXIT_ENV: Final = "NVMEDIA_TEST_WORKER_EXIT"
TEST_WORKER_EXIT_ONCE_ENV: Final = "NVMEDIA_TEST_WORKER_EXIT_ONCE"
TEST_WORKER_HOLD_ENV: Final = "NVMEDIA_TEST_WORKER_HOLD"

CLIENT_ENV: Final = (API_KEY_ENV, ASSETS_URL_ENV, CACHE_DIR_ENV, OUTPUT_CACHE_SIZE_ENV)
"""The variables a client reads when it is made."""

DEFAULT_ASSETS_URL: Final = "https://api.nvcf.nvidia.com/v2/nvcf/assets"
DEFAULT_OUTPUT_CACHE_BYTES: Final = 2 * 1024**3
"""The converted-file cache's cap when neither an argument nor ``NVMEDIA_OUTPUT_CACHE_SIZE`` says: 2 GiB."""
ASSET_CACHE_FILE: Final = "assets.sqlite3"

_UNITS: Final = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_SIZE_HINT: Final = "give bytes, or a number with K, M, G or T (powers of 1024), for example 1G or 512M"


def parse_size(text: str | int, *, what: str, allow_zero: bool = False) -> int:
    """Bytes from ``1G``, ``512M``, ``64KiB``, ``1.5G``, ``1_000_000`` or a plain number (K = 1024).

    Args:
        text: the size as written (or already a number of bytes).
        what: where it came from, for the message (``--max-memory``, ``max_memory=``, a variable).
        allow_zero: whether 0 is a valid value (it turns a cache off).

    Raises:
        ConfigError: the text is not a size, or it is negative (or 0 when that is not allowed).

    Example:
        >>> parse_size("1.5K", what="--max-memory")
        1536
    """
    if isinstance(text, bool):
        raise ConfigError(f"{what}: {text!r} is not a size", hint=_SIZE_HINT)
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE.match(text.replace("_", ""))
        if match is None:
            raise ConfigError(f"{what}: {text!r} is not a size", hint=_SIZE_HINT)
        value = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    least = 0 if allow_zero else 1
    if value < least:
        unit = "byte" if least == 1 else "bytes"
        raise ConfigError(f"{what} must be at least {least} {unit}, got {value}", hint=_SIZE_HINT)
    return value


def env_api_key() -> str | None:
    """``$NVIDIA_API_KEY`` without surrounding blanks, or None when unset or blank."""
    return os.environ.get(API_KEY_ENV, "").strip() or None


def env_assets_url() -> str:
    """``$NVMEDIA_ASSETS_URL``, else ``DEFAULT_ASSETS_URL``."""
    return os.environ.get(ASSETS_URL_ENV, "").strip() or DEFAULT_ASSETS_URL


def env_ffmpeg() -> str:
    """``$NVMEDIA_FFMPEG``, or ``""`` when unset."""
    return os.environ.get(FFMPEG_ENV, "")


def cache_folder(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the caches live: ``cache_dir``, else ``$NVMEDIA_CACHE_DIR``, else the platform's user cache folder."""
    if cache_dir is not None:
        return Path(cache_dir)
    folder = os.environ.get(CACHE_DIR_ENV)
    if folder:
        return Path(folder).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("nvmedia"))


def output_cache_cap() -> int:
    """The converted-file cache's cap from ``$NVMEDIA_OUTPUT_CACHE_SIZE``, else 2 GiB (0 turns it off).

    Raises:
        ConfigError: the variable holds something that is not a size.
    """
    text = os.environ.get(OUTPUT_CACHE_SIZE_ENV, "").strip()
    if not text:
        return DEFAULT_OUTPUT_CACHE_BYTES
    try:
        return parse_size(text, what=OUTPUT_CACHE_SIZE_ENV, allow_zero=True)
    except ConfigError as exc:
        raise ConfigError(f"{OUTPUT_CACHE_SIZE_ENV}={text!r} is not a size", hint=exc.hint) from None
