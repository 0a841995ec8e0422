"""The sync run: sources -> normalize (workers) -> plan -> deliver (upload threads) -> requests, in order.

``run`` yields one ``(items, request)`` pair per request, in input order, so the CLI can
write the manifest as it goes. It is a thin shell over the stage functions:
``normalize_stage`` (on a pool of ``jobs`` workers, ``workers.py``: threads, or forked
processes for the CLI, small files batched so that handing results over costs less than
the work), ``assembly`` (grouping, planning, request records) and ``delivery`` (one
item's upload flow, performed here on a pool of upload threads).

Converted files live in a temporary folder only while their item is in flight: each
is removed once its request is delivered (and its ``keep`` copy written), so the
disk a run needs grows with the work in flight, not with the size of the run.
Interrupted (``KeyboardInterrupt``, or the CLI's SIGTERM/SIGINT), a run stops its
workers, lets the uploads in progress finish, and yields the requests it had
planned, so that every upload made is in the manifest.
"""

from __future__ import annotations

import functools
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from concurrent.futures import wait as wait_futures
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import signals
from ._flow import FlowRunner
from .assembly import (
    deliver_inline_items,
    finish_request,
    groups,
    inline_share,
    media_per_group,
    plan_requests,
    salvage,
    to_upload,
)
from .delivery import Blocking, Delivery, DeliveryStep, upload_flow, upload_key
from .errors import ConfigError
from .items import Item, Request
from .keep import remove_leftovers
from .memory import MemoryBudget
from .normalize_stage import crashed_item, normalize_batch, plan_keep, source_size
from .resume import EarlierManifest
from .settings import ProgressFn, Settings
from .sources import SourceLike, expand
from .workdirs import work_folder
from .workers import Workers, batches

if TYPE_CHECKING:
    from .assets import AssetClient

UPLOADS_PER_JOB = 4
LOOKAHEAD_PER_JOB = 8
MAX_UPLOAD_CONNECTIONS = 16


def upload_threads(jobs: int) -> int:
    """Upload threads for ``jobs`` workers: uploads wait on the network, not the CPU, hence more than jobs."""
    return min(UPLOADS_PER_JOB * max(1, jobs), MAX_UPLOAD_CONNECTIONS)


class Sender:
    """How a sync run sends: the asset client (started on first use) and the pool its uploads run on.

    Args:
        assets: returns the asset client; raises ``ConfigError`` when no upload can be made (no key).
        pool: the upload threads (shared by the client's calls).
    """

    def __init__(self, assets: Callable[[], AssetClient], pool: Executor) -> None:
        self.assets = assets
        self.pool = pool

    def perform(self, step: DeliveryStep) -> Any:
        """One step of a delivery flow, on the calling thread."""
        if isinstance(step, Blocking):
            return step.fn(*step.args)
        return self.assets().upload_file(step.path, step.content_type, step.description, on_created=step.on_created)


def deliver(item: Item, delivery: Delivery, sender: Sender) -> None:
    """Deliver one asset item on this thread (``delivery.upload_flow``); identical outputs upload once."""
    with delivery.lock_for(upload_key(item)):
        runner = FlowRunner(upload_flow(item, delivery))
        for step in runner:
            with runner.capture():
                runner.outcome = sender.perform(step)


def run(
    inputs: Sequence[SourceLike],
    settings: Settings,
    *,
    delivery: Delivery | None = None,
    sender: Sender | None = None,
    pool: Executor | None = None,
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

    Uploads go through ``delivery`` (who owns them, what is reused) and ``sender`` (the asset
    client and the upload threads); a dry run needs neither. With ``pool`` (the client's
    threads), normalization runs there instead of a pool of its own.

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
    kept = resume.keep(sources, _live_ids(delivery)) if resume is not None else None
    if kept is not None:
        sources = [s for s in sources if s.group not in kept]
    request_groups = groups(sources)
    group_sizes = media_per_group(sources)
    total = len(sources)
    finished = bytearray(total)
    done = first_unfinished = 0
    done_lock = threading.Lock()

    def args_for(indexes: Sequence[int]) -> tuple[object, ...]:
        chosen = [sources[i] for i in indexes]
        fits = [inline_share(settings, group_sizes[source.group]) for source in chosen]
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
    cut = batches([source_size(source) for source in sources])
    batch_of = [b for b, batch in enumerate(cut) for _ in batch]
    results: dict[int, list[Item]] = {}
    unread = [len(batch) for batch in cut]
    uploads = _Uploads(delivery, sender, progress)
    with work_folder() as workdir:  # also removes the work folders killed runs left (workdirs.py)
        crashed = functools.partial(crashed_item, sources)
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
                executor=pool,
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
                    for position, indexes in enumerate(request_groups):
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
                        requests = plan_requests(items, settings)
                        for request_items in requests:
                            deliver_inline_items(request_items, settings)
                        starts: list[tuple[list[Item], list[Future[None]]]] = [(r, []) for r in requests]
                        pending.extend(starts)
                        unplanned = position + 1
                        for request_items, started in starts:
                            started.extend(uploads.start(to_upload(request_items, settings)))
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
                    uploads.wait()
                    while pending:
                        yield _salvage(*pending.popleft(), settings, workdir)
                    # Sources the workers had finished are recorded too, as far as they need no upload.
                    for indexes in request_groups[unplanned:]:
                        done_items = [finished_item(i) for i in indexes]
                        if any(it is None for it in done_items):
                            break
                        for kept_items in kept.before(sources[indexes[0]].group) if kept is not None else ():
                            yield _salvage(kept_items, [], settings, workdir)
                        items = [piece for it in done_items if it is not None for piece in it.expanded()]
                        for request_items in plan_requests(items, settings):
                            deliver_inline_items(request_items, settings)
                            yield _salvage(request_items, [], settings, workdir)
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
            uploads.wait()
            if settings.keep is not None:
                remove_leftovers(settings.keep, {s.kept.folder for s in sources if s.kept is not None}, workdir.name)


def _live_ids(delivery: Delivery | None) -> Callable[[], set[str]]:
    """What ``--resume`` checks kept asset ids against: the service's listing (none without a service)."""

    def live() -> set[str]:
        if delivery is None or delivery.store is None:
            return set()
        return delivery.store.live.ids()

    return live


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


class _Uploads:
    """A run's uploads on the sender's pool, with progress over the run."""

    def __init__(self, delivery: Delivery | None, sender: Sender | None, progress: ProgressFn | None) -> None:
        self._delivery = delivery
        self._sender = sender
        self._progress = progress
        self._lock = threading.Lock()
        self._submitted = 0
        self._done = 0
        self._futures: list[Future[None]] = []
        self._running: dict[int, str] = {}  # id(item) -> source, oldest first

    def start(self, items: list[Item]) -> list[Future[None]]:
        """Start uploading these items (after checking an upload can be made at all: ``ConfigError`` if not)."""
        if not items:
            return []
        if self._delivery is None or self._sender is None:
            raise ConfigError("an upload is needed but this run has no asset client", hint="use nvmedia.Client")
        self._sender.assets()  # fail fast (exit 2) when no key is set
        with self._lock:
            self._submitted += len(items)
        started = [self._sender.pool.submit(self._upload_one, item) for item in items]
        self._futures = [f for f in self._futures if not f.done()] + started
        return started

    def _upload_one(self, item: Item) -> None:
        assert self._delivery is not None and self._sender is not None
        self._report(item, started=True)
        try:
            deliver(item, self._delivery, self._sender)
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
        for future in self._futures:
            future.cancel()
        return sum(1 for f in self._futures if not f.done())

    def wait(self) -> None:
        """Wait for every upload of this run that started."""
        wait_futures(self._futures)


def _finish_delivery(
    items: list[Item], started: list[Future[None]], settings: Settings, workdir: Path
) -> tuple[list[Item], Request | None]:
    """Wait for a request's uploads, then give its items their header and the request record."""
    for future in started:
        with signals.interruptible():
            future.result()  # re-raises a ConfigError from an upload
    return finish_request(items, settings, workdir)


def _salvage(
    items: list[Item], started: list[Future[None]], settings: Settings, workdir: Path
) -> tuple[list[Item], Request | None]:
    """A planned request after an interruption, once the uploads that ran are over (``assembly.salvage``)."""
    for future in started:
        if not future.cancelled():
            future.exception()
    return salvage(items, settings, workdir)
