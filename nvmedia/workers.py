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

A worker process never outlives the run: it leads its own process group (with the
ffmpeg it starts), so ``terminate`` ends both at once; it asks the kernel to send it
SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), on which it ends its group;
and it holds none of the parent's standard streams, so a supervisor reading the
manifest from a pipe sees it close when nvmedia ends, even when nvmedia is killed.

Test hooks (read in worker processes only, never in the parent or in threads): a
worker that meets the file named by ``NVMEDIA_TEST_WORKER_EXIT`` kills itself, as the
out-of-memory killer would (only the first time when ``NVMEDIA_TEST_WORKER_EXIT_ONCE``
names a marker file to create); one that meets ``NVMEDIA_TEST_WORKER_HOLD`` stops
there until it is killed.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor, Executor, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from pathlib import Path
from types import FrameType
from typing import Any, Generic, Literal, TypeVar

from .config import TEST_WORKER_EXIT_ENV, TEST_WORKER_EXIT_ONCE_ENV, TEST_WORKER_HOLD_ENV
from .signals import interruptible

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
        executor: a thread pool to run on instead of one of its own (a client's, reused across runs;
            never shut down here). Only for ``kind="thread"``.
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
        executor: Executor | None = None,
    ) -> None:
        self._fn = fn
        self._args_for = args_for
        self._crashed = crashed
        self._on_done = on_done
        self._worker_init = worker_init
        self._on_pool_lost = on_pool_lost
        self._others = {child.pid for child in multiprocessing.active_children()}
        self._borrowed = executor is not None and kind == "thread"
        self._pool: Executor | None = executor if self._borrowed else _pool(kind, jobs, worker_init)
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
                with interruptible():
                    return future.result()
            except BrokenExecutor:
                self._lose_pool()
        return [self._run_alone(index) for index in indexes]

    def finished(self, key: int) -> list[T] | None:
        """The results of batch ``key`` if its worker has already delivered them, else None (never waits)."""
        entry = self._batches.get(key)
        if entry is None or entry[1] is None:
            return None
        future = entry[1]
        if not future.done() or future.cancelled() or future.exception() is not None:
            return None
        del self._batches[key]
        return future.result()

    def terminate(self) -> None:
        """Stop now: drop the batches not started, and kill the worker processes (and their ffmpeg).

        Worker threads cannot be killed: each finishes the source it holds.
        """
        for _, future in self._batches.values():
            if future is not None:
                future.cancel()
        for child in multiprocessing.active_children():
            if child.pid is not None and child.pid not in self._others:
                _kill_group(child.pid)
        self.close()

    def close(self) -> None:
        if self._borrowed:
            for _, future in self._batches.values():
                if future is not None:
                    future.cancel()
            pending = [f for _, f in self._batches.values() if f is not None]
            wait_futures(pending)  # a borrowed pool lives on: wait for this run's work only
        for pool in (None if self._borrowed else self._pool, self._solo):
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
            with interruptible():
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
            max_workers=jobs, mp_context=context, initializer=_start_worker, initargs=(os.getpid(), worker_init)
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
        max_workers=1,
        mp_context=context,
        initializer=_start_worker,
        initargs=(os.getpid(), worker_init if fork else None),
    )


def end_child_processes() -> None:
    """SIGKILL every child process of this one, with the processes each started (Linux).

    For a program that owns all its children (the CLI): the worker processes and their ffmpeg,
    and the ffmpeg that worker threads run, which a thread cannot be made to stop otherwise.
    """
    try:
        tasks = list(Path("/proc/self/task").iterdir())
    except OSError:
        return
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for pid in children:
            _kill_group(int(pid))


def _kill_group(pid: int) -> None:
    """SIGKILL a worker and the processes it started (its group), or the worker alone if it has no group yet."""
    try:
        os.killpg(pid, signal.SIGKILL)
        return
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def single_threaded() -> bool:
    """True when this process has one OS thread (Linux): a fork then copies no lock another thread holds.

    Counted by the kernel, since libav's decoder threads are invisible to ``threading``.
    """
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _start_worker(parent: int, worker_init: Callable[[], None] | None) -> None:
    """Set up a worker process, then run the caller's hook (see ``Workers``).

    ``parent`` is the pid of the process that started the pool.
    """
    _detach_stdio()
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    if os.getpgrp() == os.getpid():
        signal.signal(signal.SIGTERM, _end_group)
    _die_with(parent)
    read_test_hooks()
    if worker_init is not None:
        worker_init()


def _detach_stdio() -> None:
    """Point file descriptors 0, 1 and 2 at /dev/null.

    A worker reads nothing and prints nothing (progress is drawn by the parent, errors come
    back as results), and holding the parent's stdout would keep a supervisor's pipe open
    after nvmedia ends. C libraries print their own complaints on 2 (libtiff's "TIFFFillStrip:
    Read error on strip 0" for a broken TIFF) while the manifest already reports the file.
    """
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _end_group(signum: int, frame: FrameType | None) -> None:
    """SIGTERM in a worker (its parent died, or asked): end the worker and the ffmpeg it runs."""
    os.killpg(0, signal.SIGKILL)


def _die_with(parent: int) -> None:
    """Ask the kernel for SIGTERM when the parent dies (Linux), and end now if it already has."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return  # not Linux: the parent's terminate() is the only way workers end early
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


_exit_on: str | None = None
_exit_once: str | None = None
_hold_on: str | None = None


def read_test_hooks() -> None:
    """In a worker process (of this pool, or of another engine's): read the test hooks of the module docstring."""
    global _exit_on, _exit_once, _hold_on
    exit_on, hold_on = os.environ.get(TEST_WORKER_EXIT_ENV), os.environ.get(TEST_WORKER_HOLD_ENV)
    _exit_on = os.path.realpath(exit_on) if exit_on else None
    _exit_once = os.environ.get(TEST_WORKER_EXIT_ONCE_ENV) or None
    _hold_on = os.path.realpath(hold_on) if hold_on else None


def meet_test_hooks(path: Path | None) -> None:
    """A worker process is about to read ``path``: apply the test hooks of the module docstring, if set."""
    if path is None or (_exit_on is None and _hold_on is None):
        return
    real = os.path.realpath(path)
    if real == _exit_on:
        if _exit_once is not None:
            try:
                os.close(os.open(_exit_once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
        os.kill(os.getpid(), signal.SIGKILL)
    if real == _hold_on:
        while True:
            signal.pause()
