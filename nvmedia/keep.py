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
- pieces of split audio add ``.partN`` before the extension: ``talk.part2.mp3``.

Names are compared without regard to case (the keep folder may be on a case-insensitive file
system). Each input's name is fixed from the list of inputs alone, before anything is read,
so the same inputs always get the same names whatever ``-j``, and no two ever share one
whatever their outputs turn out to be: each input claims every name it could produce.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

SUFFIX_FOR_MIME = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "audio/wav": ".wav",
    "audio/mpeg": ".mp3",
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "video/webm": ".webm",
}
"""The extension each output type is kept under."""

_SAME_AS = {".jpeg": ".jpg", ".jpe": ".jpg", ".jfif": ".jpg", ".wave": ".wav", ".qt": ".mov"}
"""Other spellings of an output extension: ``a.jpeg`` passing through stays ``a.jpeg``."""

_PIECE = re.compile(r"(.*)\.part\d+", re.DOTALL)


def _canonical(suffix: str) -> str:
    lower = suffix.lower()
    return _SAME_AS.get(lower, lower)


_OUTPUT_SUFFIXES = frozenset(SUFFIX_FOR_MIME.values())


@dataclass(frozen=True)
class KeptName:
    """Where one input's outputs go, relative to the keep folder.

    Attributes:
        folder: the folder, relative to the keep folder.
        stem: the name before any extension, with its ``~N`` when it needed one.
        own_suffix: the input's own extension when it keeps its whole name, else None.
    """

    folder: PurePosixPath
    stem: str
    own_suffix: str | None = None

    def path_for(self, mime: str, piece: int | None = None) -> PurePosixPath:
        """The relative path of the output of type ``mime`` (of piece number ``piece`` of a split input)."""
        ext = SUFFIX_FOR_MIME[mime]
        part = f".part{piece}" if piece is not None else ""
        if self.own_suffix is None:
            return self.folder / f"{self.stem}{part}{ext}"
        if piece is None and _canonical(self.own_suffix) == ext:
            return self.folder / f"{self.stem}{self.own_suffix}"
        return self.folder / f"{self.stem}{self.own_suffix}{part}{ext}"


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
    base = str(name.folder / name.stem).casefold()
    if name.own_suffix is None:
        return [(base, None, False), *([(base, None, True)] if pieces else [])]
    whole = base + name.own_suffix.casefold()
    claims: list[_Claim] = [(whole, None, False), *([(whole, None, True)] if pieces else [])]
    if _canonical(name.own_suffix) in _OUTPUT_SUFFIXES:
        claims.append((base, name.own_suffix.casefold(), False))
    return claims


def plan_kept_names(
    relative_paths: Sequence[PurePosixPath | None],
    keep_dir: Path,
    protected: Iterable[Path],
    *,
    pieces: bool,
) -> list[KeptName | None]:
    """Give every input its kept name (see the module for the rule).

    Args:
        relative_paths: each input's path relative to its folder (None: the input keeps nothing).
        keep_dir: the keep folder.
        protected: files no kept name may land on: every input, the manifest.
        pieces: inputs may be split into ``.partN`` pieces.

    Returns:
        One ``KeptName`` per input (None where ``relative_paths`` has None).
    """
    natural = [(rel.parent, rel.stem, rel.suffix) if rel is not None else None for rel in relative_paths]
    siblings: dict[str, int] = {}
    for entry in natural:
        if entry is not None:
            key = str(entry[0] / entry[1]).casefold()
            siblings[key] = siblings.get(key, 0) + 1
    taken = _Taken()
    taken.add(_protected_claims(protected, keep_dir, {entry[0] for entry in natural if entry is not None}))
    names: list[KeptName | None] = []
    for entry in natural:
        if entry is None:
            names.append(None)
            continue
        folder, stem, suffix = entry
        whole = siblings[str(folder / stem).casefold()] > 1
        number = 1
        while True:
            candidate = KeptName(folder, stem if number == 1 else f"{stem}~{number}", suffix if whole else None)
            claims = _claims(candidate, pieces)
            if not taken.clashes(claims):
                break
            number += 1
        taken.add(claims)
        names.append(candidate)
    return names


def _protected_claims(protected: Iterable[Path], keep_dir: Path, folders: set[PurePosixPath]) -> list[_Claim]:
    """Exact-name claims for the protected files that sit in a folder kept files go to (links resolved)."""
    by_real: dict[str, list[PurePosixPath]] = {}
    for folder in folders:
        by_real.setdefault(os.path.realpath(keep_dir.joinpath(*folder.parts)), []).append(folder)
    real_dirs: dict[str, str] = {}
    claims: list[_Claim] = []
    for path in protected:
        parent = os.path.dirname(os.path.abspath(path))
        real = real_dirs.setdefault(parent, os.path.realpath(parent))
        name = PurePosixPath(os.path.basename(path))
        if real in by_real and name.suffix:
            for folder in by_real[real]:
                claims.append((str(folder / name.stem).casefold(), name.suffix.casefold(), False))
    return claims


def write_kept(output: Path, target: Path, run_token: str) -> None:
    """Copy ``output`` to ``target`` through a temporary name beside it, renamed into place.

    An interrupted or failed copy leaves nothing at ``target``; its temporary file is removed
    here, or (when the process is killed) by ``remove_leftovers`` at the end of the run.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{run_token}.part")
    try:
        shutil.copyfile(output, partial)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def remove_leftovers(keep_dir: Path, folders: Iterable[PurePosixPath], run_token: str) -> None:
    """Remove the temporary files of this run's kept copies that a killed worker left behind."""
    ending = f".{run_token}.part"
    for folder in set(folders):
        try:
            entries = list(os.scandir(keep_dir.joinpath(*folder.parts)))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(ending):
                Path(entry.path).unlink(missing_ok=True)
