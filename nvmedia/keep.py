"""``--keep DIR``: where each output is kept, decided before any work, and how it is written.

The kept-name rule (README, "Kept files"):

- an input keeps its path relative to the folder it was found in (its file name when it was
  given as a file) with the output's extension: ``trip/cat.heic`` -> ``DIR/trip/cat.jpg``;
- inputs whose names differ only in their extension (``a.gif`` and ``a.bmp``, ``photo.mov``
  and ``photo.mp4``) keep their whole name instead, and add the output's extension when it is
  not already theirs: ``a.gif.png``, ``a.bmp.png``, ``photo.mov.mp4``, ``photo.mp4``;
- when a name is still taken (``d1/x.png`` and ``d2/x.png`` given as two arguments, or a name
  that is an input file's own path) ``~2``, ``~3``... goes after the stem, in input order:
  ``x.png``, ``x~2.png``;
- pieces of split audio add ``.partN`` before the extension: ``talk.part2.mp3``;
- a name that would be longer than the keep folder's file system allows (NAME_MAX, 255
  bytes on most) has its stem cut to fit and ``~`` plus 8 hex digits of the SHA-256 of the
  whole stem appended: still unique, and the same on every run.

Names are compared without regard to case (the keep folder may be on a case-insensitive file
system). Each input's name is fixed from the list of inputs alone, before anything is read,
so the same inputs always get the same names whatever ``-j``, and no two ever share one
whatever their outputs turn out to be: each input claims every name it could produce.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import secrets
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .formats import OUTPUT_FORMATS

SUFFIX_FOR_MIME = {f.mime: f.suffix for f in OUTPUT_FORMATS}
"""The extension each output type is kept under."""

_SAME_AS = {".jpeg": ".jpg", ".jpe": ".jpg", ".jfif": ".jpg", ".wave": ".wav", ".qt": ".mov"}
"""Other spellings of an output extension: ``a.jpeg`` passing through stays ``a.jpeg``."""

_PIECE = re.compile(r"(.*)\.part\d+", re.DOTALL)

DEFAULT_NAME_MAX = 255
"""The longest file name, in bytes, when the file system does not say (Linux, macOS, Windows: 255)."""
_DIGEST_CHARS = 8


def name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system of ``folder`` (or of its nearest existing parent) allows."""
    for candidate in (folder, *folder.parents):
        try:
            return int(os.pathconf(candidate, "PC_NAME_MAX"))
        except (OSError, ValueError):
            continue
    return DEFAULT_NAME_MAX


def _fit_name(stem: str, tail: str, limit: int) -> str:
    """``stem + tail``, or, when longer than ``limit`` bytes, the stem cut to fit with ``~`` and its digest."""
    if len(os.fsencode(stem + tail)) <= limit:
        return stem + tail
    digest = "~" + hashlib.sha256(os.fsencode(stem)).hexdigest()[:_DIGEST_CHARS]
    budget = limit - len(os.fsencode(digest + tail))
    cut = stem
    while cut and len(os.fsencode(cut)) > budget:
        cut = cut[:-1]  # by characters, so a multi-byte one is never split
    return cut + digest + tail


def _canonical(suffix: str) -> str:
    lower = suffix.lower()
    return _SAME_AS.get(lower, lower)


_OUTPUT_SUFFIXES = frozenset(SUFFIX_FOR_MIME.values())


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def _split_name(name: str) -> tuple[str, str]:
    """``(stem, suffix)`` as ``PurePosixPath`` splits a name (``a.tar.gz`` -> ``a.tar``, ``.gz``), on plain strings."""
    dot = name.rfind(".")
    return (name[:dot], name[dot:]) if 0 < dot < len(name) - 1 else (name, "")


@dataclass(frozen=True)
class KeptName:
    """Where one input's outputs go, relative to the keep folder.

    Attributes:
        folder: the folder, relative to the keep folder (``/``-separated, ``""`` for the keep folder itself).
        stem: the name before any extension, with its ``~N`` when it needed one.
        own_suffix: the input's own extension when it keeps its whole name, else None.
    """

    folder: str
    stem: str
    own_suffix: str | None = None
    name_max: int = DEFAULT_NAME_MAX

    def path_for(self, mime: str, piece: int | None = None) -> str:
        """The ``/``-separated relative path of the output of type ``mime`` (of piece ``piece`` of a split input)."""
        ext = SUFFIX_FOR_MIME[mime]
        part = f".part{piece}" if piece is not None else ""
        if self.own_suffix is None:
            stem, tail = self.stem, f"{part}{ext}"
        elif piece is None and _canonical(self.own_suffix) == ext:
            stem, tail = self.stem, self.own_suffix
        else:
            stem, tail = self.stem, f"{self.own_suffix}{part}{ext}"
        return _join(self.folder, _fit_name(stem, tail, self.name_max))


_Claim = tuple[str, str | None, bool]
"""(stem, extension, stem is followed by any ``.partN``): the names ``stem[.partN]ext``; extension None: any."""


class _Taken:
    """The names claimed so far, casefolded."""

    def __init__(self) -> None:
        self._exts: dict[str, set[str | None]] = {}
        self._pieces: set[str] = set()  # stems whose .partN names are claimed
        self._piece_stems: set[str] = set()  # plain stems that look like X.partN, by X

    def clashes(self, claims: Sequence[_Claim]) -> bool:
        for stem, ext, pieces in claims:
            if pieces:
                if stem in self._pieces or stem in self._piece_stems:
                    return True
                continue
            known = self._exts.get(stem)
            if known is not None and (ext is None or None in known or ext in known):
                return True
            match = _PIECE.fullmatch(stem)
            if match is not None and match.group(1) in self._pieces:
                return True
        return False

    def add(self, claims: Sequence[_Claim]) -> None:
        for stem, ext, pieces in claims:
            if pieces:
                self._pieces.add(stem)
                continue
            self._exts.setdefault(stem, set()).add(ext)
            match = _PIECE.fullmatch(stem)
            if match is not None:
                self._piece_stems.add(match.group(1))


def _claims(name: KeptName, pieces: bool) -> list[_Claim]:
    base = _join(name.folder, name.stem).casefold()
    if name.own_suffix is None:
        return [(base, None, False), *([(base, None, True)] if pieces else [])]
    whole = base + name.own_suffix.casefold()
    claims: list[_Claim] = [(whole, None, False), *([(whole, None, True)] if pieces else [])]
    if _canonical(name.own_suffix) in _OUTPUT_SUFFIXES:
        claims.append((base, name.own_suffix.casefold(), False))
    return claims


def plan_kept_names(
    relative_paths: Sequence[str | None],
    keep_dir: Path,
    protected: Iterable[Path],
    *,
    pieces: bool,
) -> list[KeptName | None]:
    """Give every input its kept name (see the module for the rule).

    Args:
        relative_paths: each input's ``/``-separated path relative to its folder (None: it keeps nothing).
        keep_dir: the keep folder.
        protected: files no kept name may land on: every input, the manifest.
        pieces: inputs may be split into ``.partN`` pieces.

    Returns:
        One ``KeptName`` per input (None where ``relative_paths`` has None).
    """
    natural: list[tuple[str, str, str] | None] = []
    siblings: dict[str, int] = {}
    for rel in relative_paths:
        if rel is None:
            natural.append(None)
            continue
        folder, name = posixpath.split(rel)
        stem, suffix = _split_name(name)
        natural.append((folder, stem, suffix))
        key = _join(folder, stem).casefold()
        siblings[key] = siblings.get(key, 0) + 1
    longest = name_max(keep_dir)
    taken = _Taken()
    taken.add(_protected_claims(protected, keep_dir, {entry[0] for entry in natural if entry is not None}))
    names: list[KeptName | None] = []
    tried: dict[tuple[str, str], int] = {}  # the last number tried for a name: many equal names stay linear
    for entry in natural:
        if entry is None:
            names.append(None)
            continue
        folder, stem, suffix = entry
        key = _join(folder, stem).casefold()
        whole = siblings[key] > 1
        number = tried.get((key, suffix.casefold()), 1)
        while True:
            numbered = stem if number == 1 else f"{stem}~{number}"
            candidate = KeptName(folder, numbered, suffix if whole else None, longest)
            claims = _claims(candidate, pieces)
            if not taken.clashes(claims):
                break
            number += 1
        tried[(key, suffix.casefold())] = number
        taken.add(claims)
        names.append(candidate)
    return names


def _protected_claims(protected: Iterable[Path], keep_dir: Path, folders: set[str]) -> list[_Claim]:
    """Exact-name claims for the protected files that sit in a folder kept files go to (links resolved)."""
    by_real: dict[str, list[str]] = {}
    for folder in folders:
        by_real.setdefault(os.path.realpath(os.path.join(keep_dir, folder)), []).append(folder)
    real_dirs: dict[str, str] = {}
    claims: list[_Claim] = []
    for path in protected:
        parent, name = os.path.split(os.path.abspath(path))
        real = real_dirs.get(parent)
        if real is None:
            real = real_dirs[parent] = os.path.realpath(parent)
        stem, suffix = _split_name(name)
        if real in by_real and suffix:
            for folder in by_real[real]:
                claims.append((_join(folder, stem).casefold(), suffix.casefold(), False))
    return claims


def write_kept(output: Path, target: Path, run_token: str) -> None:
    """Copy ``output`` to ``target`` through a temporary name beside it, renamed into place.

    An interrupted or failed copy leaves nothing at ``target``; its temporary file is removed
    here, or (when the process is killed) by ``remove_leftovers`` at the end of the run.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    # A short random name: the target's own may already be as long as the file system allows.
    partial = target.with_name(f".{secrets.token_hex(4)}.{run_token}.part")
    try:
        shutil.copyfile(output, partial)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def remove_leftovers(keep_dir: Path, folders: Iterable[str], run_token: str) -> None:
    """Remove the temporary files of this run's kept copies that a killed worker left behind."""
    ending = f".{run_token}.part"
    for folder in set(folders):
        try:
            entries = list(os.scandir(os.path.join(keep_dir, folder)))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(ending):
                Path(entry.path).unlink(missing_ok=True)
