"""Stage one, per source: read, sniff, probe, normalize, keep a copy.

``normalize_source`` takes one ``Source`` to an ``Item`` whose output file waits in the
run's work folder; ``normalize_batch`` does it for a few consecutive sources on a worker
thread or process (``workers.py``) and base64-encodes the outputs that will most likely
go inline, off the calling thread. Both are plain functions of picklable arguments, so
any engine can map them over sources: the local pipeline, the async client, Ray.

Nothing here sends anything. A source that fails becomes an ``error`` item; nothing of
it is left in the work folder. A converted file is removed by ``release`` once its
request no longer needs it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from .errors import ConfigError, InputError, MediaError, NVMediaError, ProcessingError, no_space_error
from .items import Item
from .keep import plan_kept_names, write_kept
from .memory import MemoryBudget
from .option_table import ref
from .outputs_cache import cache_for, normalize_cached
from .plan import InlineShare
from .resume import resume_record
from .settings import Settings
from .sniff import sniff_path
from .source_state import SourceState
from .sources import Source, SourceLike, claims_media
from .wire import b64_len, b64encode
from .workers import meet_test_hooks


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _materialize(source: Source, workdir: Path, settings: Settings) -> Path:
    """The path to read: the source's own, or a temp copy of in-memory data or of a fetched URL."""
    if source.path is not None:
        return source.path
    if source.url is not None:
        from .fetch import fetch_source

        return fetch_source(source.url, workdir, settings.fetch)
    assert source.data is not None
    fd, name = tempfile.mkstemp(dir=workdir, prefix="input-")
    with os.fdopen(fd, "wb") as fh:
        fh.write(source.data)
    return Path(name)


def _check_readable(path: Path) -> int:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(f"{path} does not exist", code="not_found", hint="check the path") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}", code="unreadable", hint="check permissions") from None
    if not path.is_file():
        raise InputError(f"{path} is not a regular file", code="unreadable", hint="pass a file or a folder")
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise InputError(
            f"cannot read {path}: {exc.strerror}", code="unreadable", hint="check the file's permissions"
        ) from None
    if st.st_size == 0:
        raise InputError(f"{path} is empty (0 bytes)", code="empty", hint="re-export or re-copy the file")
    return st.st_size


def normalize_source(
    source: Source, settings: Settings, workdir: Path, fit: InlineShare | None, budget: MemoryBudget | None = None
) -> Item:
    """Stage one for one source: read, sniff, probe, normalize (and keep a copy under ``keep``).

    Image decodes reserve their estimated memory from ``budget`` (the run's) first. On failure
    nothing of the source is left in ``workdir``.
    """
    from .normalize import NormalizeOptions, normalize
    from .probe import probe

    item = Item(source=source.name, group=source.group)
    if source.skip_reason is not None:
        item.status, item.reason = "skipped", source.skip_reason
        return item
    meet_test_hooks(source.path)
    path: Path | None = None
    try:
        path = _materialize(source, workdir, settings)
        size = _check_readable(path)
        state = SourceState.of(path) if source.data is None else None  # before reading: what --resume compares
        sniffed = sniff_path(path)
        if not sniffed.is_media:
            if not source.explicit and not claims_media(source.name):
                item.status, item.reason = "skipped", f"not media ({sniffed.description})"
                item.resume = resume_record(state, None, settings)
                return item
            raise _not_media(source, sniffed.description)
        item.kind = sniffed.kind
        info = probe(path, sniffed, max_pixels=settings.profile.safety_max_image_pixels)
        item.kind, item.input = info.kind, info
        options = NormalizeOptions(
            workdir=workdir,
            fit_chars=fit.each() if fit is not None else None,
            fit_share=fit,
            keep_metadata=settings.keep_metadata,
            background=settings.background,
            trim_s=settings.trim_s,
            split_long_audio=settings.split_long_audio,
            budget=budget,
        )
        try:
            converted = normalize_cached(
                cache_for(settings.cache_dir, settings.output_cache_bytes),
                path,
                state,
                settings.profile,
                options,
                lambda: normalize(path, sniffed, info, settings.profile, options),
            )
        except (OSError, ProcessingError) as exc:
            # A full disk is no_space, however it shows: an OSError from Pillow, a message from ffmpeg.
            refused = exc if isinstance(exc, OSError) else _write_refusal(exc.message)
            what = f"a converted copy of {source.name} in {workdir}"
            no_space = None if refused is None else no_space_error(refused, workdir, what, size, approximate=True)
            if no_space is None:
                raise
            raise no_space from None
        result = converted.result
        item.resume = resume_record(state, converted.source_sha256, settings)
        item.reused_from = "output_cache" if converted.reused else None
        item.output, item.output_path = result.info, result.path
        item.actions, item.warnings = list(result.actions), list(result.warnings)
        for number, piece in enumerate(result.pieces, 1):
            assert piece.span is not None
            part = Item(source=source.name, group=source.group, kind=item.kind, input=info, output=piece.info)
            part.output_path, part.actions, part.warnings = piece.path, list(piece.actions), list(piece.warnings)
            part.piece = (number, len(result.pieces), *piece.span)
            part.resume, part.reused_from = item.resume, item.reused_from
            item.pieces.append(part)
        for sent in item.expanded():
            if sent.output is not None and sent.output_path is not None and sent.output.sha256 is None:
                sent.output = sent.output.replace(sha256=sha256_of(sent.output_path))  # what uploads are keyed by
        if settings.keep is not None and source.kept is not None:
            for sent in item.expanded():
                sent.kept = _keep(sent, source, settings.keep, workdir)
    except ConfigError:
        release_all(item, workdir)
        raise  # the keep folder cannot be written: the run stops
    except NVMediaError as exc:
        item.fail(exc)
    except Exception as exc:  # one bad file must never stop a folder run
        item.fail(
            MediaError(
                f"{source.name}: unexpected {type(exc).__name__}: {exc}",
                code="corrupt_media",
                hint="the file could not be processed; if it opens elsewhere, please report it",
            )
        )
    finally:
        if path is not None and source.path is None and path != item.output_path:
            path.unlink(missing_ok=True)  # the temporary copy of in-memory data
    if not item.ok:
        release_all(item, workdir)
    return item


def _write_refusal(message: str) -> OSError | None:
    """The write refusal an ffmpeg message reports ("...: No space left on device"), if any."""
    for number in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        if os.strerror(number) in message:
            return OSError(number, os.strerror(number))
    return None


def _not_media(source: Source, description: str) -> MediaError:
    hint = "pass images (PNG/JPEG/WEBP/HEIC...), audio (WAV/MP3/FLAC...) or video (MP4/MOV/MKV...)"
    if source.explicit:
        return MediaError(f"{source.name} is not media (found: {description})", code="unsupported_format", hint=hint)
    suffix = os.path.splitext(source.name)[1]
    return MediaError(
        f"{source.name} is named like media ({suffix}) but is not media (found: {description})",
        code="unsupported_format",
        hint="the file may be damaged, truncated or mislabelled; re-export or re-download it",
    )


def _keep(item: Item, source: Source, keep_dir: Path, workdir: Path) -> str:
    """Write ``item``'s output to its kept path (``keep.py``) and return that path."""
    assert item.output is not None and item.output_path is not None and source.kept is not None
    piece = item.piece[0] if item.piece is not None else None
    target = keep_dir.joinpath(*source.kept.path_for(item.output.mime, piece).split("/"))
    try:
        write_kept(item.output_path, target, run_token=workdir.name)
    except OSError as exc:
        what = f"the kept copy of {source.name} in {target.parent}"
        no_space = no_space_error(exc, target.parent, what, item.output.bytes)
        if no_space is not None:
            raise no_space from None
        raise ConfigError(
            f"cannot write {what}: {exc.strerror}", hint=f"check that the {ref('keep')} folder can be written"
        ) from None
    return str(target)


def release_all(item: Item, workdir: Path) -> None:
    for sent in [item, *item.pieces]:
        release(sent, workdir)
    item.pieces = []


def release(item: Item, workdir: Path) -> None:
    """Remove the item's converted file once it is no longer needed (never a source: only files in ``workdir``)."""
    path, item.output_path = item.output_path, None
    if path is not None and path.parent == workdir:
        path.unlink(missing_ok=True)


def normalize_batch(
    sources: list[Source],
    settings: Settings,
    workdir: Path,
    fits: list[InlineShare | None],
    budget: MemoryBudget | None = None,
) -> list[Item]:
    """Stage one for a few consecutive sources, on a worker thread or process.

    The outputs of likely inline items are base64-encoded here too, off the calling thread.
    """
    items = []
    for source, fit in zip(sources, fits, strict=True):
        item = normalize_source(source, settings, workdir, fit, budget)
        for sent in item.expanded():
            encode_if_inline_candidate(sent, settings)
        items.append(item)
    return items


def encode_if_inline_candidate(item: Item, settings: Settings) -> None:
    """Base64-encode an output that will most likely go inline, on the worker thread.

    The plan may still promote it to an asset (request limit); the string is then dropped.
    """
    if not item.ok or settings.mode == "asset" or item.output is None or item.output_path is None:
        return
    if b64_len(item.output.bytes) < min(settings.effective_inline_limit, settings.effective_request_limit):
        item.b64 = b64encode(item.output_path.read_bytes())


def plan_keep(
    inputs: Sequence[SourceLike], sources: list[Source], keep_dir: Path, exclude: Iterable[Path], *, pieces: bool
) -> None:
    """Refuse a keep folder among the inputs, create it, and give every source its kept name (``keep.py``)."""
    real_keep = os.path.realpath(keep_dir)
    for given in inputs:
        if isinstance(given, (str, os.PathLike)) and os.path.isdir(given):
            real_input = os.path.realpath(given)
            if real_keep == real_input or real_keep.startswith(real_input.rstrip(os.sep) + os.sep):
                raise ConfigError(
                    f"{ref('keep', os.fsdecode(keep_dir))} is inside the input folder {os.fsdecode(given)}: "
                    "kept files could land on the inputs, and the next run would read them as inputs",
                    hint=f"choose a {ref('keep')} folder outside the folders you pass",
                )
    try:
        keep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the {ref('keep')} folder {os.fsdecode(keep_dir)}: {exc.strerror}", hint="check the path"
        ) from None
    protected = [s.path for s in sources if s.path is not None] + [Path(p) for p in exclude]
    relative = [s.keep_rel if s.skip_reason is None else None for s in sources]
    for source, name in zip(sources, plan_kept_names(relative, keep_dir, protected, pieces=pieces), strict=True):
        source.kept = name


def source_size(source: Source) -> int:
    if source.data is not None:
        return len(source.data)
    try:
        return source.path.stat().st_size if source.path is not None else 0
    except OSError:
        return 0  # normalize_source reports it


def crashed_item(sources: list[Source], index: int) -> Item:
    source = sources[index]
    item = Item(source=source.name, group=source.group)
    item.fail(
        MediaError(
            f"{source.name}: the worker process reading it died, and died again when it was read alone "
            "(a decoder crashed on it, or the system ran out of memory)",
            code="corrupt_media",
            hint="check that the file opens elsewhere; if it does, please report it with the file",
        )
    )
    return item
