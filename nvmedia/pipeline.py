"""The flow: sources -> sniff -> probe -> normalize -> plan -> deliver -> emit.

``run`` yields one ``(items, request)`` pair per request, in input order, so the
CLI can write the manifest as it goes. Normalization runs on a pool of ``jobs``
workers (``workers.py``: threads by default, forked processes for the CLI, small
files batched so that handing results over costs less than the work); uploads run
on a second, shared pool of connections.

Converted files live in a temporary folder only while their item is in flight: each
is removed once its request is delivered (and its ``--keep`` copy written), so the
disk a run needs grows with the work in flight, not with the size of the run.
Interrupted (``KeyboardInterrupt``, or the CLI's SIGTERM/SIGINT), a run stops its
workers, lets the uploads in progress finish, and yields the requests it had
planned, so that every upload made is in the manifest.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import signals
from .errors import (
    AssetAPIError,
    AuthError,
    ConfigError,
    InputError,
    MediaError,
    NVMediaError,
    ProcessingError,
    no_space_error,
)
from .items import Item, Request
from .keep import plan_kept_names, remove_leftovers, write_kept
from .memory import MemoryBudget
from .outputs_cache import cache_for, configured_max_bytes, normalize_cached
from .plan import Mode, inline_budget, plan_request
from .profiles import DEFAULT_PROFILE, Profile
from .resume import EarlierManifest, resume_record
from .sniff import sniff_path
from .source_state import SourceState
from .sources import Group, Source, SourceLike, claims_media, expand
from .wire import AudioPartStyle, asset_headers, asset_uri, b64_len, b64encode, inline_uri, media_part, tag, tags
from .workdirs import work_folder
from .workers import PoolKind, Workers, batches, meet_test_hooks

if TYPE_CHECKING:
    from .assets import AssetClient
    from .cache import AssetCache
    from .fetch import FetchPolicy
    from .testing import NVCFEmulator

DEFAULT_ASSETS_URL = "https://api.nvcf.nvidia.com/v2/nvcf/assets"
EMULATOR_KEY = "nvapi-emulator-local-key"
UPLOADS_PER_JOB = 4
LOOKAHEAD_PER_JOB = 8
MAX_UPLOAD_CONNECTIONS = 16

ProgressFn = Callable[[str, int, int, str], None]
"""``progress(stage, done, total, name)``: stage is ``normalize`` or ``upload``; ``name`` is the
input in progress (the first one not finished), or the last one when all are done."""


@dataclass
class Settings:
    """Everything a run needs to know; the CLI and the library both build one."""

    mode: Mode = "auto"
    profile: Profile = DEFAULT_PROFILE
    inline_limit: int | None = None
    request_limit: int | None = None
    group: Group = "file"
    assets_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    dry_run: bool = False
    emulate: bool = False
    keep: Path | None = None
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    pool: PoolKind = "thread"
    use_cache: bool = True
    cache_dir: Path | None = None
    audio_part: AudioPartStyle = "audio_url"
    keep_metadata: bool = False
    background: tuple[int, int, int] = (255, 255, 255)
    trim_s: float | None = None
    split_long_audio: bool = False
    description: str = "nvmedia upload"
    allow_insecure_http: bool = False
    max_memory: int | None = None
    """Bytes that image decodes may hold at once across the run's workers (None: a quarter of RAM)."""
    output_cache_bytes: int = field(default_factory=configured_max_bytes)
    """Cap of the normalized-output cache (``outputs_cache.py``) in ``cache_dir``; 0 turns it off."""
    fetch: FetchPolicy | None = None
    """How http(s) sources are fetched; None refuses them (``fetch_urls=False``, no ``--fetch-urls``)."""

    @property
    def effective_inline_limit(self) -> int:
        return self.inline_limit if self.inline_limit is not None else self.profile.inline_limit

    @property
    def effective_request_limit(self) -> int:
        if self.request_limit is not None:
            return self.request_limit
        if self.profile.request_limit is not None:
            return self.profile.request_limit
        return self.effective_inline_limit


class Delivery:
    """The connection to the asset service for one run: client, cache, and (with ``emulate``) the emulator."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._emulator: NVCFEmulator | None = None
        self._client: AssetClient | None = None
        self._cache: AssetCache | None = None
        self._known_ids: set[str] | None = None
        self._lock = threading.Lock()
        self._digest_locks: dict[tuple[str, str], threading.Lock] = {}
        self._run_ids: dict[tuple[str, str], str] = {}
        self.uploaded: list[str] = []

    @property
    def assets_url(self) -> str:
        if self._emulator is not None:
            return self._emulator.assets_url
        return self.settings.assets_url or os.environ.get("NVMEDIA_ASSETS_URL") or DEFAULT_ASSETS_URL

    @property
    def api_key(self) -> str | None:
        if self._emulator is not None:
            return EMULATOR_KEY
        return self.settings.api_key or os.environ.get("NVIDIA_API_KEY") or None

    def client(self) -> AssetClient:
        """The asset client, started on first use (and the emulator with it under ``emulate``)."""
        with self._lock:
            if self._client is None:
                if self.settings.emulate and self._emulator is None:
                    from .testing import NVCFEmulator

                    self._emulator = NVCFEmulator()
                    self._emulator.start()
                if not self.api_key:
                    raise ConfigError(
                        "an upload is needed but no API key is set",
                        hint="set NVIDIA_API_KEY or pass --api-key (or use --emulate, --dry-run or --mode inline)",
                    )
                from .assets import AssetClient

                self._client = AssetClient(
                    api_key=self.api_key,
                    base_url=self.assets_url,
                    allow_insecure_http=self.settings.allow_insecure_http,
                )
                if self.settings.use_cache and not self.settings.emulate:
                    from .cache import AssetCache

                    cache_path = self.settings.cache_dir / "assets.sqlite3" if self.settings.cache_dir else None
                    self._cache = AssetCache(cache_path)
            return self._client

    def preflight(self) -> None:
        """Before any work: fail now (``ConfigError``) if an upload may be needed but cannot happen.

        Checks that a key is set and that the asset API answers with it (listing this key's assets,
        which the run needs anyway). With ``emulate`` there is nothing to check.
        """
        if self.settings.emulate:
            return
        if not self.api_key:
            raise ConfigError(
                f"no API key, and in --mode {self.settings.mode} files too big to send inline are uploaded",
                hint="set NVIDIA_API_KEY or pass --api-key (or use --mode inline, --dry-run or --emulate)",
            )
        self.known_ids()

    def known_ids(self) -> set[str]:
        """The ids the service holds for this key, fetched once per run (checks the service is reachable)."""
        client = self.client()
        with self._lock:
            if self._known_ids is None:
                try:
                    self._known_ids = set(client.list())
                except AuthError as exc:
                    raise ConfigError(
                        f"the asset API refused the key: {exc.message}", code="auth_failed", hint=exc.hint
                    ) from None
                except AssetAPIError as exc:
                    if exc.status_code is None:
                        from ._redact import redact_url

                        raise ConfigError(
                            f"the asset API at {redact_url(self.assets_url)} is unreachable: {exc.message}",
                            code="asset_api_error",
                            hint="check --assets-url / NVMEDIA_ASSETS_URL and the network, or use --dry-run",
                        ) from None
                    raise
            return self._known_ids

    def upload(self, item: Item, progress: Callable[[int], None] | None = None) -> str:
        """Upload an item's normalized file (or reuse a cached upload) and return the asset id."""
        assert item.output is not None and item.output_path is not None
        known = self.known_ids()
        digest = item.output.sha256 or _sha256(item.output_path)
        mime = item.output.mime
        with self._lock:
            same_bytes = self._digest_locks.setdefault((digest, mime), threading.Lock())
        with same_bytes:  # identical outputs in one run upload once, even with uploads in parallel
            earlier = self._run_ids.get((digest, mime))
            if earlier is not None and earlier in self.uploaded:
                return earlier
            asset_id = self._upload_new(item, digest, mime, known, progress)
            self._run_ids[(digest, mime)] = asset_id
            return asset_id

    def _upload_new(
        self, item: Item, digest: str, mime: str, known: set[str], progress: Callable[[int], None] | None
    ) -> str:
        assert item.output_path is not None
        client = self.client()
        if self._cache is not None:
            cached = self._cache.get(digest, mime, self.assets_url, self.api_key or "")
            if cached is not None and cached in known:
                return cached
            if cached is not None:
                self._cache.forget(cached)
        asset_id = client.upload_file(item.output_path, mime, description=self.settings.description, progress=progress)
        with self._lock:
            self.uploaded.append(asset_id)
            known.add(asset_id)
        item.uploaded = True
        if self._cache is not None:
            self._cache.put(digest, mime, self.assets_url, self.api_key or "", asset_id)
        return asset_id

    def delete(self, asset_ids: Sequence[str]) -> None:
        """Delete assets this run uploaded (404 counts as done) and drop them from the cache."""
        if not asset_ids or self._client is None:
            return
        for asset_id in asset_ids:
            self._client.delete(asset_id)
            if self._cache is not None:
                self._cache.forget(asset_id)
            with self._lock:
                if asset_id in self.uploaded:
                    self.uploaded.remove(asset_id)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cache is not None:
            self._cache.close()
            self._cache = None
        if self._emulator is not None:
            self._emulator.stop()
            self._emulator = None


def _sha256(path: Path) -> str:
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
    source: Source, settings: Settings, workdir: Path, fit_chars: int | None, budget: MemoryBudget | None = None
) -> Item:
    """Stage one for one source: read, sniff, probe, normalize (and keep a copy under ``--keep``).

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
            fit_chars=fit_chars,
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
        if settings.keep is not None and source.kept is not None:
            for sent in item.expanded():
                sent.kept = _keep(sent, source, settings.keep, workdir)
    except ConfigError:
        _release_all(item, workdir)
        raise  # the keep folder cannot be written: the run stops
    except NVMediaError as exc:
        item.fail(exc)
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop a folder run
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
        _release_all(item, workdir)
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
            f"cannot write {what}: {exc.strerror}", hint="check that the --keep folder can be written"
        ) from None
    return str(target)


def _release_all(item: Item, workdir: Path) -> None:
    for sent in [item, *item.pieces]:
        _release(sent, workdir)
    item.pieces = []


def _release(item: Item, workdir: Path) -> None:
    """Remove the item's converted file once it is no longer needed (never a source: only files in ``workdir``)."""
    path, item.output_path = item.output_path, None
    if path is not None and path.parent == workdir:
        path.unlink(missing_ok=True)


def normalize_batch(
    sources: list[Source],
    settings: Settings,
    workdir: Path,
    fit_chars: list[int | None],
    budget: MemoryBudget | None = None,
) -> list[Item]:
    """Stage one for a few consecutive sources, on a worker thread or process.

    The outputs of likely inline items are base64-encoded here too, off the calling thread.
    """
    items = []
    for source, fits in zip(sources, fit_chars, strict=True):
        item = normalize_source(source, settings, workdir, fits, budget)
        for sent in item.expanded():
            _encode_if_inline_candidate(sent, settings)
        items.append(item)
    return items


def _groups(sources: list[Source]) -> list[list[int]]:
    order: dict[str, list[int]] = {}
    for index, source in enumerate(sources):
        order.setdefault(source.group, []).append(index)
    return list(order.values())


def _fit_chars(settings: Settings, n_media: int) -> int | None:
    if settings.mode != "inline":
        return None
    return inline_budget(
        n_media, inline_limit=settings.effective_inline_limit, request_limit=settings.effective_request_limit
    )


def _encode_if_inline_candidate(item: Item, settings: Settings) -> None:
    """Base64-encode an output that will most likely go inline, on the worker thread.

    The plan may still promote it to an asset (request limit); the string is then dropped.
    """
    if not item.ok or settings.mode == "asset" or item.output is None or item.output_path is None:
        return
    if b64_len(item.output.bytes) < min(settings.effective_inline_limit, settings.effective_request_limit):
        item.b64 = b64encode(item.output_path.read_bytes())


def _deliver_inline(item: Item, settings: Settings) -> None:
    assert item.output is not None and item.output_path is not None and item.kind is not None
    b64 = item.b64 if item.b64 is not None else b64encode(item.output_path.read_bytes())
    item.b64 = None
    url = inline_uri(item.output.mime, b64)
    item.delivery = "inline"
    item.part = media_part(item.kind, item.output.mime, url, audio_part=settings.audio_part, b64=b64)
    item.tag = tag(item.kind, url)


def _plan_group(items: list[Item], settings: Settings) -> None:
    media = [it for it in items if it.ok]
    if not media:
        return
    sizes = [b64_len(it.output.bytes) for it in media if it.output is not None]
    try:
        plan = plan_request(
            sizes,
            mode=settings.mode,
            inline_limit=settings.effective_inline_limit,
            request_limit=settings.effective_request_limit,
            max_assets=settings.profile.max_assets,
        )
    except NVMediaError as exc:
        for it in media:
            it.fail(exc)
        return
    for it, delivery in zip(media, plan.deliveries, strict=True):
        it.delivery = delivery
    for index in plan.promoted:
        media[index].warnings.append("uploaded as an asset to keep the request under --request-limit")


def run(
    inputs: Sequence[SourceLike],
    settings: Settings,
    *,
    delivery: Delivery | None = None,
    progress: ProgressFn | None = None,
    budget: MemoryBudget | None = None,
    resume: EarlierManifest | None = None,
    exclude: Iterable[Path] = (),
    on_stop: Callable[[int], None] | None = None,
) -> Generator[tuple[list[Item], Request | None], None, None]:
    """Process ``inputs`` and yield each request's items (and its request record), in input order.

    Three overlapping stages: normalization on a pool of ``jobs`` workers, at most
    ``LOOKAHEAD_PER_JOB * jobs`` sources ahead of the request being planned; uploads on
    one shared pool of connections, so one-file requests (``--group file``) upload in
    parallel too; and this generator, which yields each request once its uploads finish,
    keeping at most ``lookahead`` planned requests in flight. With ``resume``, the requests
    whose earlier records still hold are read back from that manifest instead (``resume.py``).

    Image decodes on every worker reserve their estimated memory from one budget first:
    ``budget``, or one of ``settings.max_memory`` bytes (default: a quarter of RAM).

    Interrupted (``KeyboardInterrupt``), it stops the workers, calls ``on_stop`` with the
    number of uploads still in progress, lets them finish, yields the requests already planned
    (leaving out the items whose upload never started), then raises the interruption again.

    Args:
        exclude: files a folder walk passes over (the run's own outputs, such as its manifest).
        on_stop: told, once interrupted and before the workers are stopped, how many uploads it waits for.

    Raises:
        ConfigError: an upload is needed but the key is missing or the asset API cannot be reached;
            ``--keep`` is inside an input folder or cannot be written.
    """
    sources = expand(inputs, settings.group, exclude)
    if settings.keep is not None:
        plan_keep(inputs, sources, settings.keep, exclude, pieces=settings.split_long_audio)
    budget = budget or MemoryBudget(settings.max_memory)
    own_delivery = delivery is None
    delivery = delivery or Delivery(settings)
    try:
        kept = resume.keep(sources, delivery.known_ids) if resume is not None else None
    except BaseException:
        if own_delivery:
            delivery.close()
        raise
    if kept is not None:
        sources = [s for s in sources if s.group not in kept]
    groups = _groups(sources)
    group_sizes = {s.group: 0 for s in sources}
    for s in sources:
        if s.skip_reason is None:
            group_sizes[s.group] += 1
    total = len(sources)
    finished = bytearray(total)
    done = first_unfinished = 0
    done_lock = threading.Lock()

    def args_for(indexes: Sequence[int]) -> tuple[object, ...]:
        chosen = [sources[i] for i in indexes]
        fits = [_fit_chars(settings, group_sizes[source.group]) for source in chosen]
        return chosen, settings, workdir, fits, budget

    def report(indexes: Sequence[int]) -> None:
        nonlocal done, first_unfinished
        assert progress is not None
        with done_lock:
            for index in indexes:
                done += not finished[index]
                finished[index] = 1
            while first_unfinished < total and finished[first_unfinished]:
                first_unfinished += 1
            shown = sources[min(first_unfinished, total - 1)]
            progress("normalize", done, total, shown.label)

    jobs = max(1, settings.jobs)
    lookahead = LOOKAHEAD_PER_JOB * jobs
    cut = batches([_size(source) for source in sources])
    batch_of = [b for b, batch in enumerate(cut) for _ in batch]
    results: dict[int, list[Item]] = {}
    unread = [len(batch) for batch in cut]
    uploads = _Uploads(delivery, min(UPLOADS_PER_JOB * jobs, MAX_UPLOAD_CONNECTIONS), progress)
    with work_folder() as workdir:  # also removes the work folders killed runs left (workdirs.py)
        crashed = functools.partial(_crashed_item, sources)
        on_done = report if progress is not None else None
        try:
            with Workers(
                settings.pool,
                jobs,
                normalize_batch,
                args_for,
                crashed,
                on_done,
                worker_init=budget.inherit,
                on_pool_lost=budget.renew,
            ) as workers:

                def take(index: int) -> Item:
                    b = batch_of[index]
                    if b not in results:
                        results[b] = workers.result(b)
                    item = results[b][index - cut[b].start]
                    unread[b] -= 1
                    if not unread[b]:
                        del results[b]
                    return item

                # Planned requests whose delivery has started, oldest first. A request leaves it only
                # once yielded, so an interruption finds every upload started in here.
                pending: deque[tuple[list[Item], list[Future[None]]]] = deque()
                position = unplanned = 0  # the group being planned; the first not handed to delivery
                taken: dict[int, Item] = {}  # its items taken so far

                def finished_item(index: int) -> Item | None:
                    """The worker's result for a source if it is already there (never waits)."""
                    if index in taken:
                        return taken[index]
                    b = batch_of[index]
                    if b not in results:
                        ready = workers.finished(b)
                        if ready is None:
                            return None
                        results[b] = ready
                    return results[b][index - cut[b].start]

                try:
                    # Workers run at most `lookahead` items ahead of the request being planned, and
                    # at most `lookahead` requests wait on uploads, so memory stays flat over a large
                    # folder (each item may hold its base64 or its data URI).
                    submitted = 0
                    for position, indexes in enumerate(groups):
                        taken.clear()
                        signals.checkpoint()
                        while submitted < len(cut) and cut[submitted].start <= max(indexes) + lookahead:
                            workers.submit(submitted, cut[submitted])
                            submitted += 1
                        for kept_items in kept.before(sources[indexes[0]].group) if kept is not None else ():
                            pending.append((kept_items, []))
                            yield from _ready(pending, lookahead, settings, workdir)
                        for i in indexes:
                            taken[i] = take(i)
                        items = [piece for i in indexes for piece in taken[i].expanded()]
                        _plan_group(items, settings)
                        started: list[Future[None]] = []
                        pending.append((items, started))
                        unplanned = position + 1
                        _start_delivery(items, settings, delivery, uploads, started)
                        yield from _ready(pending, lookahead, settings, workdir)
                    for kept_items in kept.before(None) if kept is not None else ():
                        pending.append((kept_items, []))
                        yield from _ready(pending, lookahead, settings, workdir)
                    while pending:
                        finished_request = _finish_delivery(*pending[0], settings, workdir)
                        pending.popleft()
                        yield finished_request
                except KeyboardInterrupt:
                    running = uploads.stop()
                    if on_stop is not None:
                        on_stop(running)
                    workers.terminate()
                    uploads.close()
                    while pending:
                        yield _salvage(*pending.popleft(), settings, workdir)
                    # Sources the workers had finished are recorded too, as far as they need no upload.
                    for indexes in groups[unplanned:]:
                        done_items = [finished_item(i) for i in indexes]
                        if any(it is None for it in done_items):
                            break
                        for kept_items in kept.before(sources[indexes[0]].group) if kept is not None else ():
                            yield _salvage(kept_items, [], settings, workdir)
                        items = [piece for it in done_items if it is not None for piece in it.expanded()]
                        _plan_group(items, settings)
                        for it in items:
                            if it.ok and it.delivery == "inline":
                                _deliver_inline(it, settings)
                        yield _salvage(items, [], settings, workdir)
                    # The earlier manifest's records still ahead were complete: an interrupted
                    # --resume run keeps them too, so its manifest never holds less than before.
                    for kept_items in kept.before(None) if kept is not None else ():
                        yield _salvage(kept_items, [], settings, workdir)
                    raise
                except BaseException:
                    workers.terminate()
                    uploads.stop()
                    raise
        finally:
            uploads.close()
            if own_delivery:
                delivery.close()
            if settings.keep is not None:
                remove_leftovers(settings.keep, {s.kept.folder for s in sources if s.kept is not None}, workdir.name)


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
                    f"--keep {os.fsdecode(keep_dir)} is inside the input folder {os.fsdecode(given)}: "
                    "kept files could land on the inputs, and the next run would read them as inputs",
                    hint="choose a --keep folder outside the folders you pass",
                )
    try:
        keep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the --keep folder {os.fsdecode(keep_dir)}: {exc.strerror}", hint="check the path"
        ) from None
    protected = [s.path for s in sources if s.path is not None] + [Path(p) for p in exclude]
    relative = [s.keep_rel if s.skip_reason is None else None for s in sources]
    for source, name in zip(sources, plan_kept_names(relative, keep_dir, protected, pieces=pieces), strict=True):
        source.kept = name


def _ready(
    pending: deque[tuple[list[Item], list[Future[None]]]], lookahead: int, settings: Settings, workdir: Path
) -> Iterator[tuple[list[Item], Request | None]]:
    """The requests at the head of ``pending`` whose uploads are done (or the head, when too many wait).

    A request leaves ``pending`` only once finished, so an interruption meanwhile still salvages it.
    """
    while pending and (len(pending) > lookahead or all(f.done() for f in pending[0][1])):
        finished_request = _finish_delivery(*pending[0], settings, workdir)
        pending.popleft()
        yield finished_request


def _size(source: Source) -> int:
    if source.data is not None:
        return len(source.data)
    try:
        return source.path.stat().st_size if source.path is not None else 0
    except OSError:
        return 0  # normalize_source reports it


def _crashed_item(sources: list[Source], index: int) -> Item:
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


class _Uploads:
    """The run's shared upload pool: a few connections per worker, bounded; progress over the run."""

    def __init__(self, delivery: Delivery, workers: int, progress: ProgressFn | None) -> None:
        self._delivery = delivery
        self._workers = workers
        self._progress = progress
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._submitted = 0
        self._done = 0
        self._futures: list[Future[None]] = []
        self._running: dict[int, str] = {}  # id(item) -> source, oldest first

    def submit(self, item: Item) -> Future[None]:
        if self._pool is None:
            # Uploads wait on the network, not the CPU, hence more threads than jobs.
            self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="nvmedia-upload")
        with self._lock:
            self._submitted += 1
        future = self._pool.submit(self._upload_one, item)
        self._futures = [f for f in self._futures if not f.done()]
        self._futures.append(future)
        return future

    def _upload_one(self, item: Item) -> None:
        self._report(item, started=True)
        try:
            asset_id = self._delivery.upload(item)
        except ConfigError:
            raise
        except NVMediaError as exc:
            item.fail(exc)
        else:
            assert item.output is not None and item.kind is not None
            item.asset_id = asset_id
            url = asset_uri(item.output.mime, asset_id)
            item.part = media_part(item.kind, item.output.mime, url)
            item.tag = tag(item.kind, url)
        finally:
            self._report(item, started=False)  # failed uploads count as done too, so the bar ends

    def _report(self, item: Item, *, started: bool) -> None:
        with self._lock:
            if started:
                self._running[id(item)] = item.source
            else:
                self._running.pop(id(item), None)
                self._done += 1
            if self._progress is not None:
                shown = next(iter(self._running.values()), item.source)
                self._progress("upload", self._done, self._submitted, shown)

    def stop(self) -> int:
        """Drop the uploads not started; return how many are still running (they go on to the end)."""
        if self._pool is None:
            return 0
        for future in self._futures:
            future.cancel()
        return sum(1 for f in self._futures if not f.done())

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _start_delivery(
    items: list[Item], settings: Settings, delivery: Delivery, uploads: _Uploads, started: list[Future[None]]
) -> None:
    """Deliver a request's inline items now and start its uploads, adding their futures to ``started``."""
    for it in items:
        if it.ok and it.delivery == "inline":
            _deliver_inline(it, settings)
    to_upload = [it for it in items if it.ok and it.delivery == "asset"]
    if not to_upload or settings.dry_run:
        return
    delivery.known_ids()  # fail fast (exit 2) when the key is missing or the API unreachable
    for it in to_upload:
        started.append(uploads.submit(it))


def _finish_delivery(
    items: list[Item], started: list[Future[None]], settings: Settings, workdir: Path
) -> tuple[list[Item], Request | None]:
    """Wait for a request's uploads, then give its items their header and the request record.

    The items' converted files are released here: from now on a record is all that is left.
    """
    for future in started:
        with signals.interruptible():
            future.result()  # re-raises a ConfigError from an upload
    ids = [it.asset_id for it in items if it.ok and it.asset_id]
    headers = asset_headers(ids)
    for it in items:
        if it.ok and not (settings.dry_run and it.delivery == "asset"):
            it.headers = headers
    request = _request_for(items) if settings.group != "file" else None
    for it in items:
        _release(it, workdir)
        it.b64 = None
    return items, request


def _salvage(
    items: list[Item], started: list[Future[None]], settings: Settings, workdir: Path
) -> tuple[list[Item], Request | None]:
    """A planned request after an interruption: its items whose delivery completed (uploads included).

    Items whose upload was dropped before it started are left out; the request record is
    written only when none was.
    """
    for future in started:
        if not future.cancelled():
            future.exception()  # the uploads that ran are over: wait for the last of them
    delivered = [
        it for it in items if not (it.ok and it.delivery == "asset" and not settings.dry_run and it.asset_id is None)
    ]
    complete = len(delivered) == len(items)
    ids = [it.asset_id for it in delivered if it.ok and it.asset_id]
    for it in delivered:
        if it.ok and not (settings.dry_run and it.delivery == "asset"):
            it.headers = asset_headers(ids)
    request = _request_for(delivered) if settings.group != "file" and complete else None
    for it in items:
        _release(it, workdir)
        it.b64 = None
    return delivered, request


def _request_for(items: list[Item]) -> Request | None:
    included = [it for it in items if it.ok and it.part is not None]
    if not items:
        return None
    ids = [it.asset_id for it in included if it.asset_id]
    return Request(
        sources=[it.source for it in included],
        content=[it.part for it in included if it.part is not None],
        tags=tags(it.tag for it in included if it.tag),
        headers=asset_headers(ids),
    )
