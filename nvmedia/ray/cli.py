"""The CLI on Ray: ``nvmedia prepare --engine ray [--address …]``.

``run_on_ray`` yields what ``pipeline.run`` yields (each source's items, in input
order), so the command writes the same manifest whichever engine ran, with the
same ``--keep`` names (planned here, on the driver, before any work), ``--resume``
(the earlier manifest's records still holding are read back here and only the rest
goes to Ray) and stop on SIGTERM/SIGINT (the manifest keeps every source finished).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Final

from .. import signals
from ..client import Client
from ..errors import ConfigError
from ..items import Item, Request
from ..normalize_stage import plan_keep
from ..resume import EarlierManifest
from ..settings import ProgressFn, Settings
from ..sources import SourceLike, expand
from .jobs import job_description, new_job_id
from .session import check_address, import_ray, quiet_ray_data, ray_session

MAX_BLOCKS: Final = 4096
"""At most this many blocks of sources: a million files make blocks of 245, each a task's work."""


def run_on_ray(
    paths: Sequence[SourceLike],
    settings: Settings,
    client: Client,
    *,
    address: str | None = None,
    progress: ProgressFn | None = None,
    exclude: Iterable[Path] = (),
    resume: EarlierManifest | None = None,
    on_stop: Callable[[int], None] | None = None,
    log: IO[str] | None = None,
    announce_job: bool = True,
) -> Generator[tuple[list[Item], Request | None], None, None]:
    """``pipeline.run`` on Ray: each source's items, in input order (never a request record).

    Folders are walked here, on the driver, and ``--keep`` names planned as ``pipeline.run``
    plans them; each file is one row of the Dataset. Without ``address`` a one-node cluster
    on loopback is started with ``settings.jobs`` CPUs.

    Interrupted (``KeyboardInterrupt``, or the CLI's SIGTERM/SIGINT at a safe point), it calls
    ``on_stop(0)``, stops the Ray job (the sources in flight are dropped: an upload they had
    started may leave an asset, described with the job's id), yields the earlier manifest's
    records still ahead when resuming, then raises the interruption again: what was yielded
    before is every source finished, in input order.

    Args:
        client: the run's connection to the asset service: with ``resume``, it checks the kept
            records' asset ids; the workers' uploads go where it sends, with its key.
        exclude: files a folder walk passes over (the run's own outputs).
        resume: the earlier manifest whose records still holding are kept (``resume.py``).
        on_stop: told, once interrupted, that no upload is waited for (Ray's are dropped).
        log: where the job's id is announced when it uploads (default stderr).
        announce_job: announce it (not for an emulator's run: its assets go when it stops).

    Raises:
        ConfigError: Ray is missing or unreachable, ``--group`` is not ``file``, ``--keep`` is
            among the inputs, or an upload needs a key that is missing or an asset API that cannot
            be reached.
    """
    if settings.group != "file":
        raise ConfigError(
            f"--group {settings.group} is not available with --engine ray: each file is its own request there",
            hint="drop --group, or use --engine local",
        )
    if address is not None:
        address = check_address(address)
    ray = import_ray(local=address is None)
    from .dataset import DEFAULT_BATCH_SIZE, DEFAULT_UPLOADS_PER_NODE, build, release_registry, workers_cache_dir
    from .stages import CWD_COLUMN, ITEMS_COLUMN, SOURCE_COLUMN

    sources = expand(paths, "file", exclude)
    if settings.keep is not None:
        plan_keep(paths, sources, settings.keep, exclude, pieces=settings.split_long_audio)
    workers: Client | None = None
    given_keep = settings.keep
    try:
        kept = resume.keep(sources, client.live_asset_ids) if resume is not None else None
        todo = [s for s in sources if kept is None or s.group not in kept]
        job = new_job_id()
        cache_dir = workers_cache_dir(settings.cache_dir)
        # A job references only its own assets (dedupe is per job): no cache reuse, see prepare_dataset.
        workers = Client(**client.configuration(cache=False, cache_dir=cache_dir, description=job_description(job)))
        settings = dataclasses.replace(
            settings,
            cache_dir=cache_dir,
            keep=settings.keep.absolute() if settings.keep is not None else None,  # workers move to this cwd
            description=job_description(job),
        )
        uploads = not (settings.dry_run or settings.mode == "inline")
        if uploads and announce_job:
            print(
                f"nvmedia: Ray job {job}: its uploads are described '{job_description(job)}' "
                f"(nvmedia assets delete --job {job} removes them)",
                file=log if log is not None else sys.stderr,
            )
        cwd = os.getcwd()
        rows = [{SOURCE_COLUMN: pickle.dumps(s, protocol=5), CWD_COLUMN: cwd} for s in todo]
        try:
            if rows:
                with ray_job(ray, address, settings.jobs):
                    blocks = min(MAX_BLOCKS, -(-len(rows) // DEFAULT_BATCH_SIZE))
                    prepared = build(
                        ray.data.from_items(rows, override_num_blocks=blocks),
                        column=SOURCE_COLUMN,
                        settings=settings,
                        client=workers,
                        job=job,
                        filesystem=None,
                        batch_size=DEFAULT_BATCH_SIZE,
                        uploads_per_node=DEFAULT_UPLOADS_PER_NODE,
                        output="items",
                    )
                    try:
                        done = 0
                        for batch in finished_blocks(prepared):
                            for blob in batch.column(ITEMS_COLUMN).to_pylist():
                                items: list[Item] = pickle.loads(blob)
                                for item in items:
                                    if isinstance(item.error, ConfigError):
                                        raise item.error
                                    item.kept = _as_given(item.kept, settings.keep, given_keep)
                                source = todo[done]
                                done += 1
                                for kept_items in kept.before(source.group) if kept is not None else ():
                                    yield kept_items, None
                                if progress is not None:
                                    progress("prepare", done, len(todo), source.label)
                                yield items, None
                    except KeyboardInterrupt:
                        if on_stop is not None:
                            on_stop(0)
                        raise
                    finally:
                        release_registry(job)
            for kept_items in kept.before(None) if kept is not None else ():
                yield kept_items, None
        except KeyboardInterrupt:
            # The earlier manifest's records still ahead were complete: an interrupted --resume run
            # keeps them too, so its manifest never holds less than before (as pipeline.run does).
            for kept_items in kept.before(None) if kept is not None else ():
                yield kept_items, None
            raise
    finally:
        if workers is not None:
            workers.close()  # the driver's copy: its configuration went to the upload actors


def _as_given(kept: str | None, absolute: Path | None, given: Path | None) -> str | None:
    """A kept path the workers wrote under the absolute keep folder, under the folder as the user gave it.

    The local engine's records name kept files under ``--keep`` as given (``kept/x.png``); the
    workers, which run in other folders, were handed its absolute form.
    """
    if kept is None or absolute is None or given is None:
        return kept
    return os.path.join(given, os.path.relpath(kept, absolute))


def finished_blocks(dataset: Any) -> Iterator[Any]:
    """The Dataset's blocks as pyarrow tables, in order, each as soon as it is done.

    Between blocks a stop signal is honoured (``signals``): waiting for the next block is
    interruptible. No prefetching: Ray Data's prefetch thread held finished blocks back until
    the next one was done, and the CLI writes its output as sources finish.
    """
    batches = iter(dataset.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=0))
    while True:
        signals.checkpoint()
        with signals.interruptible():
            batch = next(batches, None)
        if batch is None:
            return
        yield batch


@contextmanager
def ray_job(ray: Any, address: str | None, cpus: int) -> Iterator[None]:
    """A Ray session set up for the CLI: input order kept, no progress bars or log lines of Ray Data's own.

    The stop signals stay the CLI's: ``ray.init`` sets its own SIGTERM handler (which exits at once).
    """
    main_thread = threading.current_thread() is threading.main_thread()  # only it may set handlers
    handlers = {signum: signal.getsignal(signum) for signum in signals.STOP_SIGNALS} if main_thread else {}
    try:
        with ray_session(address, num_cpus=cpus):
            for signum, handler in handlers.items():
                if handler is not None:
                    signal.signal(signum, handler)
            with quiet_ray_data():
                context = ray.data.DataContext.get_current()
                saved = (context.execution_options.preserve_order, context.enable_progress_bars)
                saved_print = context.print_on_execution_start
                context.execution_options.preserve_order = True  # the manifest is in input order
                context.enable_progress_bars = False  # nvmedia draws its own, on a terminal only
                context.print_on_execution_start = False
                try:
                    yield
                finally:
                    (context.execution_options.preserve_order, context.enable_progress_bars) = saved
                    context.print_on_execution_start = saved_print
    finally:
        for signum, handler in handlers.items():
            if handler is not None:
                signal.signal(signum, handler)
