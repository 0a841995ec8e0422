"""Converted once, reused: a size-capped cache of normalized outputs, shared by runs and processes.

A run that meets a source it converted before (same bytes, same profile, same options
that shape the output, same code) copies the earlier output instead of converting
again. The cache lives in ``outputs/`` beside the asset-id cache (``$NVMEDIA_CACHE_DIR``,
else the platform's user cache folder)::

    outputs/entries/<key>.entry   one converted source: a header line, a JSON header, the output bytes
    outputs/seen/<id>.seen        "the file at this path, size and mtime was converted here before"

The key is the SHA-256 of the source's bytes, the profile, every ``NormalizeOptions``
field but the work folder, and a fingerprint of the code (nvmedia's modules, Pillow,
pillow-heif, PyAV). Hashing a source costs a full read, which a file sent as it is
(passthrough) would pay for nothing; so a source is hashed and looked up only when a
``seen`` mark says it was converted before at the same path, size and mtime (or when it
is in-memory data). A source converted for the first time is hashed once, to store it.

Safety: an entry is written to a temporary file and renamed into place, so a reader
sees a whole entry or none; the header carries its own SHA-256 and every output's
SHA-256 is checked as it is copied out, so a truncated or damaged entry is a miss (and
is removed), never a wrong output. A source modified less than two seconds before it
was read (``SourceState.recent``), or modified while it was converted, is not stored.
Any failure of the cache itself (full disk, permissions) is a miss; the run goes on.

Size: once the folder holds more than its cap (2 GiB,
``$NVMEDIA_OUTPUT_CACHE_SIZE`` or ``--output-cache-size``), the least recently used
files go (a hit refreshes an entry's mtime) until it holds 90 % of the cap. Sizes are
counted in file-system blocks, at least one 4 KiB block per file. Each process checks
the size on its first store and then after every 1/32 of the cap it stores; an output
larger than a quarter of the cap is not stored.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from .config import cache_folder
from .media_info import MediaInfo
from .normalize import NormalizedMedia, NormalizeOptions
from .profiles import Profile
from .source_state import SourceState, file_sha256

logger = logging.getLogger(__name__)

FOLDER: Final = "outputs"

_MAGIC: Final = b"nvmedia-output-cache 1"
_TRIM_TO: Final = 0.9
_LARGEST_SHARE: Final = 4
_TRIM_EVERY_SHARE: Final = 32
_MIN_FILE_BYTES: Final = 4096
_STALE_TMP_NS: Final = 3600 * 1_000_000_000
_CHUNK: Final = 1 << 20


def default_folder(cache_dir: Path | None) -> Path:
    """``outputs/`` in ``cache_dir``, else in the caches' folder (``config.cache_folder``)."""
    return cache_folder(cache_dir) / FOLDER


@functools.cache
def code_fingerprint() -> str:
    """What the outputs depend on besides their inputs: nvmedia's own modules and the decoders' versions."""
    from importlib.metadata import PackageNotFoundError, version

    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for module in sorted(package.rglob("*.py")):
        rel = module.relative_to(package)
        if rel.parts[0] == "testing":
            continue
        digest.update(str(rel).encode() + b"\0" + module.read_bytes() + b"\0")
    for dist in ("Pillow", "pillow-heif", "av"):
        try:
            digest.update(f"{dist} {version(dist)}\0".encode())
        except PackageNotFoundError:
            digest.update(f"{dist} -\0".encode())
    return digest.hexdigest()


def _jsonable(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"{type(value).__name__} is not part of a cache key")


_NOT_SHAPING: Final = frozenset({"workdir", "budget"})
"""Normalize options that say where and how the work runs, not what it produces."""


def entry_key(source_sha256: str, profile: Profile, options: NormalizeOptions) -> str:
    """The key of the output of these bytes under this profile and these options."""
    shaping = {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name not in _NOT_SHAPING}
    text = json.dumps(
        {
            "source": source_sha256,
            "profile": dataclasses.asdict(profile),
            "options": shaping,
            "code": code_fingerprint(),
        },
        sort_keys=True,
        default=_jsonable,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _info_record(info: MediaInfo) -> dict[str, Any]:
    # ``extra`` holds the normalizers' working notes about an input; an output needs none of it.
    return {f.name: getattr(info, f.name) for f in dataclasses.fields(info) if f.name != "extra"}


def _outputs_of(result: NormalizedMedia) -> list[NormalizedMedia]:
    return result.pieces if result.pieces else [result]


class _Damaged(Exception):
    """An entry that is not what it claims to be: a miss, and the entry goes."""


class OutputCache:
    """The normalized-output cache in ``folder``, kept under ``max_bytes``.

    Safe to use from several threads and processes at once (see the module docstring).

    Example:
        >>> cache = OutputCache(Path("~/.cache/nvmedia/outputs").expanduser(), 2 * 1024**3)  # doctest: +SKIP
        >>> cache.fetch(key, workdir)  # doctest: +SKIP
    """

    def __init__(self, folder: Path, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be 1 or more, got {max_bytes}")
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self._entries = self.folder / "entries"
        self._seen = self.folder / "seen"
        self._stored_since_trim: int | None = None  # None: this process has not trimmed yet

    def __repr__(self) -> str:
        return f"OutputCache(folder={str(self.folder)!r}, max_bytes={self.max_bytes})"

    def entry_path(self, key: str) -> Path:
        return self._entries / f"{key}.entry"

    # -- seen marks ------------------------------------------------------------------

    def _seen_path(self, source: Path, state: SourceState) -> Path:
        name = os.fsencode(os.path.abspath(source)) + f"\0{state.bytes}\0{state.mtime_ns}".encode()
        return self._seen / f"{hashlib.sha256(name).hexdigest()[:40]}.seen"

    def converted_before(self, source: Path, state: SourceState) -> bool:
        """Whether this file, at this size and mtime, was converted and stored before (then worth hashing)."""
        mark = self._seen_path(source, state)
        try:
            os.utime(mark)
        except OSError:
            return False
        return True

    def _mark_seen(self, source: Path, state: SourceState) -> None:
        mark = self._seen_path(source, state)
        mark.parent.mkdir(exist_ok=True, mode=0o700)
        mark.touch(mode=0o600)

    # -- entries ---------------------------------------------------------------------

    def fetch(self, key: str, workdir: Path) -> NormalizedMedia | None:
        """The stored outputs for ``key``, copied into ``workdir`` (checked byte for byte), or None."""
        path = self.entry_path(key)
        copies: list[Path] = []
        try:
            with path.open("rb") as fh:
                header = _read_header(fh, key)
                outputs = [self._copy_out(fh, out, workdir, copies) for out in header["outputs"]]
                if fh.read(1):
                    raise _Damaged("bytes after the last output")
        except FileNotFoundError:
            return None
        except _Damaged as exc:
            self._discard(copies)
            logger.debug("output cache entry %s is damaged (%s): removed", path.name, exc)
            path.unlink(missing_ok=True)
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._discard(copies)
            logger.debug("output cache entry %s could not be read: %s", path.name, exc)
            return None
        try:
            os.utime(path)  # least recently used goes first
        except OSError:
            pass
        first = outputs[0]
        if not header["split"]:
            return first
        return NormalizedMedia(first.path, first.info, first.actions, first.warnings, first.span, outputs)

    def _copy_out(self, fh: IO[bytes], out: dict[str, Any], workdir: Path, copies: list[Path]) -> NormalizedMedia:
        try:
            info = MediaInfo(**out["info"])
            actions, warnings, suffix = list(out["actions"]), list(out["warnings"]), str(out["suffix"])
            span = (float(out["span"][0]), float(out["span"][1])) if out["span"] is not None else None
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise _Damaged(f"bad output description: {exc}") from None
        if info.sha256 is None or "/" in suffix:
            raise _Damaged("bad output description")
        fd, name = tempfile.mkstemp(dir=workdir, prefix="cached-", suffix=suffix)
        target = Path(name)
        copies.append(target)
        digest = hashlib.sha256()
        left = info.bytes
        with os.fdopen(fd, "wb") as dst:
            while left:
                chunk = fh.read(min(left, _CHUNK))
                if not chunk:
                    raise _Damaged("truncated")
                digest.update(chunk)
                dst.write(chunk)
                left -= len(chunk)
        if digest.hexdigest() != info.sha256:
            raise _Damaged("an output's SHA-256 does not match")
        return NormalizedMedia(target, info, actions, warnings, span)

    @staticmethod
    def _discard(copies: list[Path]) -> None:
        for copy in copies:
            copy.unlink(missing_ok=True)

    def store(self, key: str, result: NormalizedMedia, source: Path | None, state: SourceState | None) -> None:
        """Keep ``result``'s outputs under ``key`` (and mark ``source`` as converted); never raises."""
        outputs = _outputs_of(result)
        total = sum(out.info.bytes for out in outputs)
        if total > self.max_bytes // _LARGEST_SHARE or any(out.info.sha256 is None for out in outputs):
            return
        try:
            header = json.dumps(
                {
                    "key": key,
                    "split": bool(result.pieces),
                    "outputs": [
                        {
                            "info": _info_record(out.info),
                            "actions": out.actions,
                            "warnings": out.warnings,
                            "span": out.span,
                            "suffix": out.path.suffix,
                        }
                        for out in outputs
                    ],
                }
            ).encode()
        except (TypeError, ValueError) as exc:
            logger.debug("output cache: %s cannot be described (%s); not stored", key, exc)
            return
        try:
            self._write_entry(key, header, outputs)
            if source is not None and state is not None:
                self._mark_seen(source, state)
            self._stored(total)
        except (OSError, _Damaged) as exc:
            logger.debug("output cache: %s not stored (%s)", key, exc)

    def _write_entry(self, key: str, header: bytes, outputs: list[NormalizedMedia]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)  # outputs of private media: the owner's only
        self._entries.mkdir(exist_ok=True, mode=0o700)
        fd, name = tempfile.mkstemp(dir=self._entries, prefix=".tmp-", suffix=".entry")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(b"%s %d %s\n" % (_MAGIC, len(header), hashlib.sha256(header).hexdigest().encode()))
                fh.write(header)
                for out in outputs:
                    digest = hashlib.sha256()
                    with out.path.open("rb") as src:
                        for chunk in iter(lambda: src.read(_CHUNK), b""):  # noqa: B023 - used at once
                            digest.update(chunk)
                            fh.write(chunk)
                    if digest.hexdigest() != out.info.sha256:
                        raise _Damaged(f"{out.path.name} changed since it was hashed")
            os.replace(tmp, self.entry_path(key))  # readers see the whole entry or none
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    # -- size ------------------------------------------------------------------------

    def _stored(self, nbytes: int) -> None:
        if self._stored_since_trim is not None:
            self._stored_since_trim += nbytes
            if self._stored_since_trim < self.max_bytes // _TRIM_EVERY_SHARE:
                return
        self.trim()

    def trim(self) -> int:
        """Remove the least recently used files while the folder holds more than the cap; returns how many."""
        self._stored_since_trim = 0
        files: list[tuple[int, int, str]] = []
        now = time.time_ns()
        for folder in (self._entries, self._seen):
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if entry.name.startswith(".tmp-"):
                    if st.st_mtime_ns < now - _STALE_TMP_NS:  # left by a process that was killed mid-write
                        _unlink(entry.path)
                    continue
                files.append((st.st_mtime_ns, max(st.st_blocks * 512, st.st_size, _MIN_FILE_BYTES), entry.path))
        total = sum(size for _, size, _ in files)
        if total <= self.max_bytes:
            return 0
        removed = 0
        for _, size, path in sorted(files):
            if total <= self.max_bytes * _TRIM_TO:
                break
            _unlink(path)
            total -= size
            removed += 1
        return removed


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _read_header(fh: IO[bytes], key: str) -> dict[str, Any]:
    first = fh.readline(256)
    parts = first.rstrip(b"\n").rsplit(b" ", 2)
    if len(parts) != 3 or parts[0] != _MAGIC or not first.endswith(b"\n"):
        raise _Damaged("not an entry")
    try:
        length = int(parts[1])
    except ValueError:
        raise _Damaged("bad header length") from None
    header = fh.read(length)
    if len(header) != length or hashlib.sha256(header).hexdigest().encode() != parts[2]:
        raise _Damaged("header does not match its SHA-256")
    try:
        parsed = json.loads(header)
    except ValueError:
        raise _Damaged("header is not JSON") from None
    if not isinstance(parsed, dict) or parsed.get("key") != key or not isinstance(parsed.get("outputs"), list):
        raise _Damaged("header is for another entry")
    if not parsed["outputs"]:
        raise _Damaged("no outputs")
    return parsed


def cache_for(cache_dir: Path | None, max_bytes: int) -> OutputCache | None:
    """The process's cache for these settings (one object, so its size bookkeeping is shared); None when off.

    The folder is resolved at each call: without ``cache_dir`` it follows ``$NVMEDIA_CACHE_DIR`` as it is now.
    """
    if max_bytes <= 0:
        return None
    return _cache_in(default_folder(cache_dir), max_bytes)


@functools.lru_cache(maxsize=8)
def _cache_in(folder: Path, max_bytes: int) -> OutputCache:
    return OutputCache(folder, max_bytes)


@dataclass
class Converted:
    """What ``normalize_cached`` gives.

    Attributes:
        result: the normalized outputs.
        reused: they came from the cache.
        source_sha256: the SHA-256 of the bytes they were made from, when it was computed on the way
            (a cache lookup or store, or a passthrough whose output is the source); else None.
    """

    result: NormalizedMedia
    reused: bool
    source_sha256: str | None


def normalize_cached(
    cache: OutputCache | None,
    source: Path,
    state: SourceState | None,
    profile: Profile,
    options: NormalizeOptions,
    convert: Callable[[], NormalizedMedia],
) -> Converted:
    """``convert()``, unless the cache holds its outputs for these bytes, profile and options.

    Args:
        cache: the output cache, or None (then this is ``convert()``).
        source: the file being normalized.
        state: what it looked like before it was read (None for in-memory data: always looked up).
            A converted source is hashed once read whole, unless it is ``recent``.
        profile: the profile ``convert`` normalizes to.
        options: the options ``convert`` normalizes with (outputs are copied into ``options.workdir``).
        convert: the normalization itself.
    """
    digest: str | None = None
    if cache is not None and (state is None or cache.converted_before(source, state)):
        digest = file_sha256(source)
        hit = cache.fetch(entry_key(digest, profile, options), options.workdir)
        if hit is not None:
            return Converted(hit, True, digest)
    result = convert()
    outputs = _outputs_of(result)
    if all(out.path == source for out in outputs):
        return Converted(result, False, result.info.sha256)  # passthrough: the output's bytes are the source's
    if (state is None and cache is None) or (state is not None and state.recent):
        return Converted(result, False, None)
    # Hashed with the cache off too, so that a manifest does not depend on the cache being on.
    digest = digest or file_sha256(source)
    if state is not None and not state.still(source):
        return Converted(result, False, None)  # changed while converting: the hash is of newer bytes
    if cache is not None:
        cache.store(entry_key(digest, profile, options), result, source if state is not None else None, state)
    return Converted(result, False, digest)
