"""Turning what the user passed (paths, folders, bytes, file objects) into a list of sources.

Folders are walked recursively in sorted order. Hidden entries, links that lead
outside the folder, links to folders (which could loop) and broken links are
kept as skipped sources with a reason, so the manifest accounts for every name.
The run's own outputs (the manifest being written) are not inputs: a walk passes
over them.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO, Literal

if TYPE_CHECKING:
    from .keep import KeptName

from .fetch import display_url, is_remote_url, url_name

SourceLike = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO
Group = Literal["file", "dir", "all"]

MEDIA_EXTENSIONS = frozenset(
    # images
    ".png .apng .jpg .jpeg .jpe .jfif .webp .gif .bmp .dib .tif .tiff .heic .heif .hif .avif .ico .cur .psd "
    ".jp2 .j2k .jpf .jpx .jxl .tga .dds .qoi .pcx .ppm .pgm .pbm .pnm .bpg .svg .emf .wmf .mpo "
    # audio
    ".wav .wave .mp3 .flac .ogg .oga .opus .m4a .m4b .aac .aif .aiff .aifc .amr .caf .au .snd .wma .weba "
    ".mka .mid .midi "
    # video
    ".mp4 .m4v .mov .qt .mkv .webm .avi .wmv .asf .flv .mpg .mpeg .m2ts .mts .ts .3gp .3g2 .ogv .vob".split()
)
"""Extensions that claim a file is media: behind one, bytes that are not media are an error, not a skip."""


def claims_media(name: str) -> bool:
    """True when the file name's extension says it is an image, audio or video."""
    return os.path.splitext(name)[1].lower() in MEDIA_EXTENSIONS


@dataclass
class Source:
    """One input.

    Attributes:
        name: how the manifest names it (the path as given, or joined under the folder given).
        path: the file to read, or None for in-memory data.
        data: the bytes of an in-memory input.
        rel: the path relative to the folder it was found in (used by ``--keep``).
        explicit: named by the user (not found in a folder walk): non-media is an error, not a skip.
        url: an ``http(s)`` URL to fetch (``name`` then shows it without its query string).
        group: which request it belongs to.
        skip_reason: set when the source is skipped without being read.
        kept: where ``--keep`` writes its outputs (set by the pipeline before any work).
    """

    name: str
    path: Path | None = None
    data: bytes | None = None
    rel: PurePosixPath = PurePosixPath(".")
    explicit: bool = True
    group: str = ""
    skip_reason: str | None = None
    url: str | None = None
    kept: KeptName | None = None

    @property
    def label(self) -> str:
        """A short name for progress: the path inside the folder it was found in, else its name."""
        return self.name if self.explicit else str(self.rel)

    @property
    def keep_rel(self) -> str:
        """The ``/``-separated path ``--keep`` names it by: relative to its folder, or its own name when given alone."""
        rel = str(self.rel)
        return rel if rel != "." else os.path.basename(self.name)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def identity(path: str | os.PathLike[str]) -> str:
    """A path with its folder's links resolved but not its own last part (a link is its own entry)."""
    head, tail = os.path.split(os.path.abspath(path))
    return os.path.join(os.path.realpath(head), tail)


def _walk(root: Path, given: str, exclude: Collection[str]) -> Iterator[Source]:
    real_root = root.resolve()

    def visit(folder: Path, rel: PurePosixPath) -> Iterator[Source]:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            yield Source(
                _join(given, rel), folder, rel=rel, explicit=False, skip_reason=f"unreadable folder: {exc.strerror}"
            )
            return
        if exclude:
            real_folder = os.path.realpath(folder)
            entries = [e for e in entries if os.path.join(real_folder, e.name) not in exclude]
        for entry in entries:
            child_rel = rel / entry.name
            name = _join(given, child_rel)
            path = Path(entry.path)
            if _is_hidden(entry.name):
                yield Source(name, path, rel=child_rel, explicit=False, skip_reason="hidden")
                continue
            if entry.is_symlink():
                target = Path(os.path.realpath(path))
                if not target.exists():
                    yield Source(name, path, rel=child_rel, explicit=False, skip_reason="broken link")
                    continue
                if not _inside(target, real_root):
                    yield Source(
                        name, path, rel=child_rel, explicit=False, skip_reason="link points outside the folder"
                    )
                    continue
                if target.is_dir():
                    yield Source(
                        name,
                        path,
                        rel=child_rel,
                        explicit=False,
                        skip_reason="link to a folder (not followed: it could loop)",
                    )
                    continue
            if entry.is_dir(follow_symlinks=False):
                yield from visit(path, child_rel)
            elif entry.is_file():
                yield Source(name, path, rel=child_rel, explicit=False)
            else:
                yield Source(name, path, rel=child_rel, explicit=False, skip_reason="not a regular file")

    yield from visit(root, PurePosixPath("."))


def _join(given: str, rel: PurePosixPath) -> str:
    if str(rel) == ".":
        return given
    return os.path.join(given, *rel.parts) if given not in ("", ".") else str(rel)


def expand(inputs: Iterable[SourceLike], group: Group = "file", exclude: Iterable[Path] = ()) -> list[Source]:
    """Expand paths, folders, bytes and binary file objects into sources, in order.

    A missing path is kept as a source (the pipeline reports it as ``not_found``).
    ``exclude`` names files a folder walk passes over without a record (the run's own outputs).
    """
    excluded = {identity(p) for p in exclude}
    sources: list[Source] = []
    for index, item in enumerate(inputs):
        if isinstance(item, (bytes, bytearray, memoryview)):
            sources.append(Source(f"<bytes #{index}>", data=bytes(item), group=f"bytes:{index}"))
            continue
        if hasattr(item, "read"):
            fobj = item
            label = getattr(fobj, "name", None)
            name = str(label) if isinstance(label, str) else f"<file object #{index}>"
            data = fobj.read()
            if not isinstance(data, (bytes, bytearray)):
                raise TypeError(f"{name}: file objects must be opened in binary mode")
            sources.append(Source(name, data=bytes(data), group=f"fobj:{index}"))
            continue
        given = os.fspath(item)
        if is_remote_url(given):
            sources.append(Source(display_url(given), url=given, rel=PurePosixPath(url_name(given)), group=given))
            continue
        path = Path(given)
        if path.is_dir():
            for source in _walk(path, given, excluded):
                source.group = str(PurePosixPath(given) / source.rel.parent)
                sources.append(source)
        else:
            sources.append(Source(given, path, rel=PurePosixPath(path.name), group=str(PurePosixPath(given).parent)))
    for number, source in enumerate(sources):
        if group == "file":
            source.group = f"file:{number}"
        elif group == "all":
            source.group = "all"
    return sources
