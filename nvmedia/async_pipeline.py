"""The async run: the stages of ``pipeline.run``, with uploads on the event loop and everything blocking off it.

A thin shell over the same stage functions: sources are expanded, their kept names
planned and an earlier manifest read on a worker thread; ``normalize_stage.normalize_batch``
runs on worker threads, ``jobs`` at a time (a ``CapacityLimiter``); each request is
planned (``assembly``) as soon as its sources are normalized, and its uploads start as
tasks performing ``delivery.upload_flow``: creates and PUTs through the
``AsyncAssetClient`` on the loop, SQLite and hashing on worker threads. Files are read,
encoded and removed on worker threads too, so the loop only ever does bookkeeping.

Cancelled, the run stops starting work, waits for the normalizations in progress (a
thread cannot be stopped), and removes its temporary files; deleting what it uploaded
is the caller's (``AsyncClient``), shielded from the cancellation.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.to_thread

from ._flow import FlowRunner
from .assembly import (
    deliver_inline_items,
    finish_request,
    groups,
    inline_share,
    media_per_group,
    plan_requests,
    to_upload,
)
from .delivery import Blocking, Delivery, DeliveryStep, UploadKey, upload_flow, upload_key
from .items import Item, Request
from .keep import remove_leftovers
from .memory import MemoryBudget
from .normalize_stage import normalize_batch, plan_keep, source_size
from .settings import ProgressFn, Settings
from .sources import Source, SourceLike, expand
from .workdirs import owned_tempdir, remove_stale
from .workers import batches

if TYPE_CHECKING:
    from .assets import AsyncAssetClient
    from .resume import EarlierManifest, KeptRequests


class AsyncSender:
    """How an async run sends: the async asset client, and how many uploads may run at once.

    Args:
        assets: returns the asset client; raises ``ConfigError`` when no upload can be made (no key).
        limiter: bounds the uploads in flight.
    """

    def __init__(self, assets: Callable[[], AsyncAssetClient], limiter: anyio.CapacityLimiter) -> None:
        self.assets = assets
        self.limiter = limiter

    async def perform(self, step: DeliveryStep) -> Any:
        """One step of a delivery flow: blocking work on a worker thread, the upload on the loop."""
        if isinstance(step, Blocking):
            return await anyio.to_thread.run_sync(functools.partial(step.fn, *step.args))
        client = self.assets()
        return await client.upload_file(step.path, step.content_type, step.description, on_created=step.on_created)


async def adeliver(item: Item, delivery: Delivery, sender: AsyncSender, locks: dict[UploadKey, anyio.Lock]) -> None:
    """Deliver one asset item (``delivery.upload_flow``); identical outputs of a call upload once."""
    async with locks.setdefault(upload_key(item), anyio.Lock()), sender.limiter:
        runner = FlowRunner(upload_flow(item, delivery))
        for step in runner:
            with runner.capture():
                runner.outcome = await sender.perform(step)


@dataclass
class _Plan:
    """A run's inputs, resolved on a worker thread before any work."""

    workdir: Path
    sources: list[Source]
    sizes: list[int]
    kept: KeptRequests | None
    earlier: EarlierManifest | None

    def close(self, settings: Settings) -> None:
        if self.earlier is not None:
            self.earlier.close()
        if settings.keep is not None:
            folders = {s.kept.folder for s in self.sources if s.kept is not None}
            remove_leftovers(settings.keep, folders, self.workdir.name)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _plan(
    inputs: Sequence[SourceLike], settings: Settings, delivery: Delivery, resume: str | os.PathLike[str] | None
) -> _Plan:
    from .resume import EarlierManifest

    sources = expand(inputs, settings.group)
    if settings.keep is not None:
        plan_keep(inputs, sources, settings.keep, (), pieces=settings.split_long_audio)
    remove_stale()  # the work folders killed runs left (workdirs.py)
    workdir = owned_tempdir()
    earlier = kept = None
    try:
        if resume is not None:
            earlier = EarlierManifest.load(Path(resume), settings)
            store = delivery.store
            kept = earlier.keep(sources, lambda: store.live.ids() if store is not None else set())
            sources = [s for s in sources if s.group not in kept]
    except BaseException:
        if earlier is not None:
            earlier.close()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return _Plan(workdir, sources, [source_size(s) for s in sources], kept, earlier)


def _assemble(planned: list[list[list[Item]]], plan: _Plan, settings: Settings) -> tuple[list[Item], list[Request]]:
    """The records in input order (earlier records kept by ``resume`` in their places); files released."""
    items: list[Item] = []
    requests: list[Request] = []

    def add(record: tuple[list[Item], Request | None]) -> None:
        items.extend(record[0])
        if record[1] is not None:
            requests.append(record[1])

    request_groups = groups(plan.sources)
    for indexes, group_requests in zip(request_groups, planned, strict=True):
        for kept_items in plan.kept.before(plan.sources[indexes[0]].group) if plan.kept is not None else ():
            add(finish_request(kept_items, settings, plan.workdir))
        for request_items in group_requests:
            add(finish_request(request_items, settings, plan.workdir))
    for kept_items in plan.kept.before(None) if plan.kept is not None else ():
        add(finish_request(kept_items, settings, plan.workdir))
    return items, requests


async def arun(
    inputs: Sequence[SourceLike],
    settings: Settings,
    *,
    delivery: Delivery,
    sender: AsyncSender,
    limiter: anyio.CapacityLimiter,
    budget: MemoryBudget,
    progress: ProgressFn | None = None,
    resume: str | os.PathLike[str] | None = None,
) -> tuple[list[Item], list[Request]]:
    """Process ``inputs``: every item (in input order) and every request record.

    Raises:
        ConfigError: an upload is needed but cannot be made (no key), or ``keep``/``resume`` are unusable.
    """
    plan = await anyio.to_thread.run_sync(_plan, inputs, settings, delivery, resume)
    try:
        planned = await _deliver_all(plan, settings, delivery, sender, limiter, budget, progress)
        return await anyio.to_thread.run_sync(_assemble, planned, plan, settings)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(plan.close, settings)


async def _deliver_all(
    plan: _Plan,
    settings: Settings,
    delivery: Delivery,
    sender: AsyncSender,
    limiter: anyio.CapacityLimiter,
    budget: MemoryBudget,
    progress: ProgressFn | None,
) -> list[list[list[Item]]]:
    """Each group's requests (one, or several when split to fit), their items delivered."""
    sources = plan.sources
    cut = batches(plan.sizes)
    batch_of = [b for b, batch in enumerate(cut) for _ in batch]
    per_group = media_per_group(sources)
    results: list[list[Item]] = [[] for _ in cut]
    normalized = [anyio.Event() for _ in cut]
    locks: dict[UploadKey, anyio.Lock] = {}
    failure: list[BaseException] = []
    counts = {"normalize": 0, "upload": 0, "uploads": 0}

    async def guarded(tasks: anyio.abc.TaskGroup, work: Callable[[], Any]) -> None:
        # Tasks never raise into the group (that would make an exception group): the first
        # failure is kept, the rest of the run is cancelled, and the failure raised after.
        try:
            await work()
        except Exception as exc:
            if not failure:
                failure.append(exc)
            tasks.cancel_scope.cancel()

    async def normalize(b: int) -> None:
        chosen = [sources[i] for i in cut[b]]
        fits = [inline_share(settings, per_group[s.group]) for s in chosen]
        run_batch = functools.partial(normalize_batch, chosen, settings, plan.workdir, fits, budget)
        results[b] = await anyio.to_thread.run_sync(run_batch, limiter=limiter)
        normalized[b].set()
        counts["normalize"] += len(chosen)
        if progress is not None:
            progress("normalize", counts["normalize"], len(sources), chosen[-1].label)

    async def upload(item: Item) -> None:
        await adeliver(item, delivery, sender, locks)
        counts["upload"] += 1
        if progress is not None:
            progress("upload", counts["upload"], counts["uploads"], item.source)

    planned: list[list[list[Item]]] = []

    async def plan_and_send(tasks: anyio.abc.TaskGroup) -> None:
        for indexes in groups(sources):
            for b in sorted({batch_of[i] for i in indexes}):
                await normalized[b].wait()
            taken = [results[batch_of[i]][i - cut[batch_of[i]].start] for i in indexes]
            items = [piece for it in taken for piece in it.expanded()]
            requests = plan_requests(items, settings)
            for request_items in requests:
                await anyio.to_thread.run_sync(deliver_inline_items, request_items, settings)
            planned.append(requests)
            uploads = [it for request_items in requests for it in to_upload(request_items, settings)]
            if uploads:
                sender.assets()  # no key: a ConfigError now, before anything is sent
                counts["uploads"] += len(uploads)
            for item in uploads:
                tasks.start_soon(guarded, tasks, functools.partial(upload, item))

    async with anyio.create_task_group() as tasks:
        for b in range(len(cut)):
            tasks.start_soon(guarded, tasks, functools.partial(normalize, b))
        tasks.start_soon(guarded, tasks, functools.partial(plan_and_send, tasks))
    if failure:
        raise failure[0]
    return planned
