"""The run-wide memory budget for image decodes: ``MemoryBudget``.

A 3 KB lossless WEBP can declare 9400x9400 pixels and take over a gigabyte to
decode; four of them on four workers took 5.3 GB. Every image decode therefore
first reserves its estimated bytes (``nvmedia.image_open.decode_estimate``, read
from the header) from one budget shared by the whole run, and gives them back
when the image is encoded. A decode that does not fit waits until enough is
released; one whose estimate alone is over the budget is ``too_large``.

One budget serves both pools of ``nvmedia.workers``:

- threads (the library) share the object itself;
- forked worker processes (the CLI) inherit its primitives, which live in
  shared memory (``multiprocessing`` semaphores and a shared array), through
  the pool's initializer; the tasks sent to a worker carry only the budget's
  token, which ``MemoryBudget.__reduce__`` turns back into the inherited object.

Waiters are served first come, first served (tickets), so a large decode is
never starved by a stream of small ones, and the order is deterministic.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import uuid
from collections.abc import Callable, Iterator, MutableSequence
from contextlib import contextmanager
from typing import Any, Final

from .errors import MediaError
from .option_table import ref

BudgetEvent = Callable[[str, str, int], None]
"""``observer(event, label, nbytes)``; event is ``waiting``, ``acquired`` or ``released``."""

DEFAULT_SHARE: Final = 4
"""The default budget is the machine's RAM divided by this."""

FALLBACK_RAM: Final = 8 << 30
"""RAM assumed where the platform does not say (no ``sysconf``)."""

_USED, _NEXT_TICKET, _SERVING = 0, 1, 2

# Budgets inherited by this process (through a worker pool's initializer), by token.
_inherited: dict[str, MemoryBudget] = {}


def physical_memory() -> int:
    """The machine's RAM in bytes (``FALLBACK_RAM`` where the platform does not say)."""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return FALLBACK_RAM
    return pages * page_size if pages > 0 and page_size > 0 else FALLBACK_RAM


def default_limit() -> int:
    """The default budget: a quarter of the machine's RAM."""
    return physical_memory() // DEFAULT_SHARE


def format_size(nbytes: int) -> str:
    """``1.41 GB``, ``512 MB``, ``900 KB``: binary units, for messages.

    Example:
        >>> format_size(1_513_619_200)
        '1.41 GB'
    """
    for unit, shift in (("TB", 40), ("GB", 30), ("MB", 20), ("KB", 10)):
        if nbytes >= 1 << shift:
            value = nbytes / (1 << shift)
            return f"{value:.2f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{nbytes} bytes"


class MemoryBudget:
    """Bytes that decodes reserve before they run, shared by threads and forked worker processes.

    Args:
        limit: the budget in bytes (default: a quarter of the machine's RAM).
        observer: called on every ``waiting``, ``acquired`` and ``released`` event, in the
            process and thread where it happens (for progress displays and tests).

    Example:
        >>> budget = MemoryBudget(1 << 30)
        >>> with budget.reserve(400 << 20, "cat.webp"):
        ...     decode()
    """

    def __init__(self, limit: int | None = None, *, observer: BudgetEvent | None = None) -> None:
        self.limit = default_limit() if limit is None else limit
        self.observer = observer
        self.token = uuid.uuid4().hex
        self._new_primitives()

    def _new_primitives(self) -> None:
        # used bytes, next ticket, ticket being served; guarded by the condition's lock.
        self._state: MutableSequence[int]
        self._changed: Any
        try:
            context = multiprocessing.get_context("fork") if hasattr(os, "fork") else multiprocessing.get_context()
            self._state = context.RawArray("q", 3)
            self._changed = context.Condition(context.Lock())
        except OSError:
            # No shared-memory semaphores here (some containers lack /dev/shm): threads still share
            # the budget; forked workers would each get a copy.
            self._state = [0, 0, 0]
            self._changed = threading.Condition(threading.Lock())

    @property
    def used(self) -> int:
        """Bytes reserved right now, across every process sharing the budget."""
        with self._changed:
            return int(self._state[_USED])

    def check(self, nbytes: int, label: str, what: str) -> None:
        """Refuse a decode whose estimate alone is over the budget.

        Raises:
            MediaError: ``too_large``, naming the estimate and the limit.
        """
        if nbytes > self.limit:
            raise MediaError(
                f"{label}: decoding {what} needs about {format_size(nbytes)} of memory (estimated from its header), "
                f"over the memory budget of {format_size(self.limit)}",
                code="too_large",
                hint=f"raise the budget with {ref('max_memory')} if the machine has the "
                "memory, or downscale the image first",
            )

    def acquire(self, nbytes: int, label: str) -> None:
        """Wait for ``nbytes`` to be free (first come, first served), then reserve them.

        ``nbytes`` must be at most ``limit`` (see ``check``); it is capped there so a caller
        that skipped the check still cannot wait forever. The observer is called outside the
        lock, so it may block (a test holding a decode) without stopping anyone else.
        """
        nbytes = max(0, min(nbytes, self.limit))
        with self._changed:
            ticket = self._state[_NEXT_TICKET]
            self._state[_NEXT_TICKET] = ticket + 1
            free = self._fits(ticket, nbytes)
            if free:
                self._take(nbytes)
        if not free:
            self._notify("waiting", label, nbytes)
            with self._changed:
                while not self._fits(ticket, nbytes):
                    self._changed.wait()
                self._take(nbytes)
        self._notify("acquired", label, nbytes)

    def _fits(self, ticket: int, nbytes: int) -> bool:
        return bool(self._state[_SERVING] == ticket and self._state[_USED] + nbytes <= self.limit)

    def _take(self, nbytes: int) -> None:
        self._state[_USED] += nbytes
        self._state[_SERVING] += 1
        self._changed.notify_all()  # the next ticket may fit too

    def release(self, nbytes: int, label: str) -> None:
        """Give back bytes reserved by ``acquire`` (the observer hears of it just before)."""
        nbytes = max(0, min(nbytes, self.limit))
        self._notify("released", label, nbytes)
        with self._changed:
            self._state[_USED] = max(0, self._state[_USED] - nbytes)
            self._changed.notify_all()

    @contextmanager
    def reserve(self, nbytes: int, label: str) -> Iterator[None]:
        """``acquire`` on entry, ``release`` on exit (also when the body raises)."""
        self.acquire(nbytes, label)
        try:
            yield
        finally:
            self.release(nbytes, label)

    def renew(self) -> None:
        """Start over with nothing reserved and fresh primitives.

        For the parent after a worker pool broke: a worker killed while it held a reservation
        (or the lock itself) leaves the old state unusable. Only call it when no process still
        uses the budget; pools forked afterwards inherit the new primitives.
        """
        self._new_primitives()

    def inherit(self) -> None:
        """In a worker process: make tasks that name this budget's token use this (inherited) object."""
        _inherited[self.token] = self

    def _notify(self, event: str, label: str, nbytes: int) -> None:
        if self.observer is not None:
            self.observer(event, label, nbytes)

    def __reduce__(self) -> tuple[Any, ...]:
        # Semaphores cannot be pickled into a task: send the token; the worker has the object.
        return (_lookup, (self.token, self.limit))

    def __repr__(self) -> str:
        return f"MemoryBudget(limit={self.limit}, token={self.token[:8]})"


def _lookup(token: str, limit: int) -> MemoryBudget:
    budget = _inherited.get(token)
    if budget is None:
        # Not inherited (a spawned worker): a budget of its own, which still refuses over-limit decodes.
        budget = MemoryBudget(limit)
        budget.token = token
        _inherited[token] = budget
    return budget


class Reservation:
    """What one task holds in a budget, changed as its plan changes, released on exit.

    Args:
        budget: the run's budget (None: no budget, nothing is reserved or refused).
        label: the task's name in messages and observer events (the file name).
    """

    def __init__(self, budget: MemoryBudget | None, label: str) -> None:
        self.budget = budget
        self.label = label
        self.held = 0

    def hold(self, nbytes: int, what: str) -> None:
        """Hold ``nbytes`` instead of what is held now (waiting for them if need be).

        Raises:
            MediaError: ``too_large`` when ``nbytes`` alone is over the budget.
        """
        if self.budget is None:
            return
        self.budget.check(nbytes, self.label, what)
        self.release()
        self.budget.acquire(nbytes, self.label)
        self.held = nbytes

    def release(self) -> None:
        if self.budget is not None and self.held:
            held, self.held = self.held, 0
            self.budget.release(held, self.label)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
