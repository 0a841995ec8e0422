"""The per-call options of ``Client.prepare`` and ``Client.inspect``, typed, and the ``Settings`` they make.

``PrepareOptions`` and ``InspectOptions`` are the keyword arguments the calls accept
(``typing_extensions.Unpack``), so a type checker sees each option; the names are those
of the option table's ``call`` rows (``option_table.py``), which a test holds them to.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict, get_args

from .config import cache_folder, output_cache_cap, parse_size
from .errors import ConfigError
from .option_table import ref
from .plan import MODES, Mode
from .profiles import Profile, get_profile
from .settings import DEFAULT_DESCRIPTION, ProgressFn, Settings
from .sources import Group
from .wire import AudioPartStyle
from .workers import PoolKind

OnError = Literal["raise", "keep"]
ProfileLike = str | os.PathLike[str] | Profile | None


class InspectOptions(TypedDict, total=False):
    """What ``inspect`` takes: the options that shape what ``prepare`` would do to a file."""

    mode: Mode
    profile: ProfileLike
    inline_limit: int | None
    request_limit: int | None
    keep_metadata: bool
    trim_s: float | None
    split_long_audio: bool
    fetch_urls: bool
    url_allow: Sequence[str]


class PrepareOptions(InspectOptions, total=False):
    """What ``prepare`` takes (every option is described in ``Client.prepare``)."""

    group: Group
    dry_run: bool
    keep: str | os.PathLike[str] | None
    audio_part: AudioPartStyle
    resume: str | os.PathLike[str] | None
    on_error: OnError
    keep_assets: bool
    progress: ProgressFn | None


PREPARE_KEYS = frozenset(PrepareOptions.__annotations__) | frozenset(InspectOptions.__annotations__)
INSPECT_KEYS = frozenset(InspectOptions.__annotations__)


def checked(options: Mapping[str, Any], allowed: frozenset[str], call: str) -> dict[str, Any]:
    """``options`` as a dict, after refusing names the call does not take (as Python does for a function).

    Raises:
        TypeError: an unknown option.
    """
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"{call}() got an unexpected keyword argument {unknown[0]!r}")
    return dict(options)


def _profile_arg(profile: ProfileLike) -> str | Path | Profile | None:
    return os.fspath(profile) if isinstance(profile, os.PathLike) else profile


def _choice(name: str, value: object, allowed: Sequence[str]) -> None:
    if value not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise ConfigError(f"{ref(name)} must be one of {shown}, got {value!r}", hint=f"pass one of {shown}")


@dataclass(frozen=True)
class ClientConfig:
    """What a client holds for every call (resolved and checked once, at construction)."""

    profile: Profile | None
    jobs: int
    pool: PoolKind
    cache: bool
    cache_dir: Path
    """The caches' folder, resolved when the client is made (``$NVMEDIA_CACHE_DIR`` or the platform's)."""
    max_memory: int | None
    output_cache_bytes: int
    description: str = DEFAULT_DESCRIPTION


def client_config(
    *,
    profile: ProfileLike,
    jobs: int | None,
    pool: PoolKind,
    cache: bool,
    cache_dir: str | os.PathLike[str] | None,
    max_memory: int | str | None,
    output_cache: bool | int | str,
    description: str,
) -> ClientConfig:
    """Check and resolve a client's options.

    Raises:
        ConfigError: an option out of range (jobs < 1, an unknown pool, a size that is not one, an unknown profile).
    """
    if jobs is not None and (isinstance(jobs, bool) or jobs < 1):
        raise ConfigError(f"{ref('jobs')} must be at least 1, got {jobs}", hint=f"pass {ref('jobs', 1)} or more")
    _choice("pool", pool, get_args(PoolKind))
    return ClientConfig(
        profile=get_profile(_profile_arg(profile)) if profile is not None else None,
        jobs=jobs if jobs is not None else (os.cpu_count() or 1),
        pool=pool,
        cache=cache,
        cache_dir=cache_folder(cache_dir),
        max_memory=parse_size(max_memory, what=ref("max_memory")) if max_memory is not None else None,
        output_cache_bytes=output_cache_bytes(output_cache),
        description=description,
    )


def output_cache_bytes(output_cache: bool | int | str) -> int:
    """The converted-file cache's cap: ``True`` (the environment's or 2 GiB), ``False`` (0: off), or a size."""
    if isinstance(output_cache, bool):
        return output_cache_cap() if output_cache else 0
    return parse_size(output_cache, what=ref("output_cache"), allow_zero=True)


def call_settings(config: ClientConfig, options: Mapping[str, Any], *, group: Group = "all") -> Settings:
    """The ``Settings`` of one call: the client's configuration with the call's options.

    Raises:
        ConfigError: an option has a value it cannot take.
    """
    from .fetch import FetchPolicy

    mode = options.get("mode", "auto")
    _choice("mode", mode, MODES)
    chosen_group = options.get("group", group)
    _choice("group", chosen_group, get_args(Group))
    audio_part = options.get("audio_part", "audio_url")
    _choice("audio_part", audio_part, get_args(AudioPartStyle))
    _choice("on_error", options.get("on_error", "raise"), get_args(OnError))
    url_allow = tuple(options.get("url_allow", ()))
    if url_allow and not options.get("fetch_urls", False):
        raise ConfigError(f"{ref('url_allow')} only applies to fetched URLs", hint=f"add {ref('fetch_urls', True)}")
    profile = options.get("profile")
    keep = options.get("keep")
    return Settings(
        mode=mode,
        profile=get_profile(_profile_arg(profile)) if profile is not None else config.profile or get_profile(None),
        inline_limit=options.get("inline_limit"),
        request_limit=options.get("request_limit"),
        group=chosen_group,
        dry_run=bool(options.get("dry_run", False)),
        keep=Path(keep) if keep is not None else None,
        jobs=config.jobs,
        pool=config.pool,
        cache_dir=config.cache_dir,
        audio_part=audio_part,
        keep_metadata=bool(options.get("keep_metadata", False)),
        trim_s=options.get("trim_s"),
        split_long_audio=bool(options.get("split_long_audio", False)),
        description=config.description,
        max_memory=config.max_memory,
        output_cache_bytes=config.output_cache_bytes,
        fetch=FetchPolicy(allow=url_allow) if options.get("fetch_urls", False) else None,
    )
