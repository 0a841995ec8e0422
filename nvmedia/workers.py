"""Stage one's workers: a pool of threads or forked processes that survives a worker dying.

Most of the work (Pillow's decoders, resampling and encoders into files, ffmpeg,
hashing) releases the GIL, so threads scale; but on folders of small files the
Python around it (header parsing, metadata walks, base64) dominates and only
processes run it in parallel (benchmarks/README.md has the figures). Processes
are forked, and only from a process with a single OS thread, where fork is
safe; otherwise threads are used.

With processes a worker can die (a decoder crashing on a hostile file, the
system's out-of-memory killer) without taking nvmedia with it. The pool is then
broken and every batch still in it is lost: ``Workers`` redoes each lost source
alone in a one-process pool, so the source that kills its worker again is found
and reported as an error, and the run goes on.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor, Executor, Future, ThreadPoolExecutor
from typing import Any, Generic, Literal, TypeVar

PoolKind = Literal["thread", "process"]
"""Where stage one runs: threads (safe inside any application) or forked processes (the CLI)."""

BATCH_BYTES = 1 << 20
BATCH_ITEMS = 8

T = TypeVar("T")


class Workers(Generic[T]):
    """Runs ``fn(*args_for(indexes))`` -> one result per index, for batches of source indexes.

    Args:
        kind: ``thread`` or ``process`` (processes only where forking is safe, see the module).
        jobs: how many workers.
        fn: a module-level function (it may cross into a worker process).
        args_for: the arguments of ``fn`` for some source indexes.
        crashed: the result to give for an index whose worker died while it ran alone.
        on_done: called with the indexes of each batch once its results are in (for progress).
        worker_init: run in each worker process as it starts (before any task), inherited through
            fork rather than pickled: how the run's memory budget reaches the workers.
        on_pool_lost: called once the workers of a broken pool are gone (nothing they held is in use).
    """

    def __init__(
        self,
        kind: PoolKind,
        jobs: int,
        fn: Callable[..., list[T]],
        args_for: Callable[[Sequence[int]], tuple[Any, ...]],
        crashed: Callable[[int], T],
        on_done: Callable[[Sequence[int]], None] | None = None,
        worker_init: Callable[[], None] | None = None,
        on_pool_lost: Callable[[], None] | None = None,
    ) -> None:
        self._fn = fn
        self._args_for = args_for
        self._crashed = crashed
        self._on_done = on_done
        self._worker_init = worker_init
        self._on_pool_lost = on_pool_lost
        self._pool: Executor | None = _pool(kind, jobs, worker_init)
        self._solo: Executor | None = None
        self._batches: dict[int, tuple[Sequence[int], Future[list[T]] | None]] = {}

    def submit(self, key: int, indexes: Sequence[int]) -> None:
        """Start the batch ``key`` (after a worker died: queue it to be run one source at a time)."""
        future = None
        if self._pool is not None:
            future = self._pool.submit(self._fn, *self._args_for(indexes))
            if self._on_done is not None:
                future.add_done_callback(lambda f: self._report(f, indexes))
        self._batches[key] = (indexes, future)

    def result(self, key: int) -> list[T]:
        """The results of batch ``key``, in index order (waits for them)."""
        indexes, future = self._batches.pop(key)
        if future is not None:
            try:
                return future.result()
            except BrokenExecutor:
                self._lose_pool()
        return [self._run_alone(index) for index in indexes]

    def cancel(self) -> None:
        """Drop the batches not started yet."""
        for _, future in self._batches.values():
            if future is not None:
                future.cancel()

    def close(self) -> None:
        for pool in (self._pool, self._solo):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self._pool = self._solo = None

    def __enter__(self) -> Workers[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _report(self, future: Future[list[T]], indexes: Sequence[int]) -> None:
        if not future.cancelled() and future.exception() is None and self._on_done is not None:
            self._on_done(indexes)

    def _lose_pool(self) -> None:
        """A worker died: keep what finished, and run everything else alone from now on."""
        if self._pool is None:
            return
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None
        if self._on_pool_lost is not None:
            self._on_pool_lost()
        for key, (indexes, future) in list(self._batches.items()):
            if future is not None and (future.cancelled() or future.exception() is not None):
                self._batches[key] = (indexes, None)

    def _run_alone(self, index: int) -> T:
        if self._solo is None:
            self._solo = _solo_pool(self._worker_init)
        try:
            (result,) = self._solo.submit(self._fn, *self._args_for([index])).result()
        except BrokenExecutor:
            self._solo.shutdown(wait=True)
            self._solo = None
            if self._on_pool_lost is not None:
                self._on_pool_lost()
            result = self._crashed(index)
        if self._on_done is not None:
            self._on_done([index])
        return result


def batches(sizes: Sequence[int]) -> list[range]:
    """Consecutive sources (of these sizes in bytes) cut into worker tasks: small files share one,
    so that handing results between workers (a wake-up each, tens of microseconds) does not cost
    more than the work itself; a large file is a task of its own."""
    cut: list[range] = []
    start, size = 0, 0
    for index, nbytes in enumerate(sizes):
        if index > start and (size + nbytes > BATCH_BYTES or index - start >= BATCH_ITEMS):
            cut.append(range(start, index))
            start, size = index, 0
        size += nbytes
    if start < len(sizes):
        cut.append(range(start, len(sizes)))
    return cut


def _pool(kind: PoolKind, jobs: int, worker_init: Callable[[], None] | None = None) -> Executor:
    if kind == "process" and jobs > 1 and single_threaded():
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("fork")
        return ProcessPoolExecutor(
            max_workers=jobs, mp_context=context, initializer=_init_process, initargs=(worker_init,)
        )
    return ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="nvmedia-normalize")


def _solo_pool(worker_init: Callable[[], None] | None = None) -> Executor:
    """One worker process, to run a source alone: forked where that is safe, else spawned."""
    from concurrent.futures import ProcessPoolExecutor

    fork = single_threaded()
    context = multiprocessing.get_context("fork" if fork else "spawn")
    # A spawned worker inherits nothing: it goes without worker_init (the budget then refuses only
    # decodes that alone exceed it, which is all a single worker needs).
    return ProcessPoolExecutor(
        max_workers=1, mp_context=context, initializer=_init_process, initargs=(worker_init if fork else None,)
    )


def _init_process(worker_init: Callable[[], None] | None) -> None:
    """A worker process's start: quiet stderr, then the caller's hook (see ``Workers``)."""
    _quiet_stderr()
    if worker_init is not None:
        worker_init()


def single_threaded() -> bool:
    """True when this process has one OS thread (Linux): a fork then copies no lock another thread holds.

    Counted by the kernel, since libav's decoder threads are invisible to ``threading``.
    """
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _quiet_stderr() -> None:
    """In a worker process: send file descriptor 2 to /dev/null.

    C libraries print their own complaints there (libtiff's "TIFFFillStrip: Read error on
    strip 0" for a broken TIFF) while nvmedia already reports the file in the manifest; a
    worker has nothing else to say on stderr (progress is drawn by the parent, and errors
    come back as results).
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
