"""SIGTERM and SIGINT: stop a run where stopping leaves nothing half done.

The CLI runs inside ``stop_on_signals()``. The first SIGTERM or SIGINT is remembered and
raised as ``Interrupted`` (a ``KeyboardInterrupt``) in the main thread, but only where that
is safe: during a wait the run declared ``interruptible()`` (for a worker's result, for an
upload), or at its next ``checkpoint()``. A signal that arrives while the main thread is
writing the manifest therefore never cuts a line in half. Later signals are ignored while the
run finishes what it must: the uploads in progress, the manifest, the temporary files.

Without ``stop_on_signals()`` (the library), these calls do nothing and Ctrl-C is Python's
own ``KeyboardInterrupt``.

``chat`` and ``batch`` hold no half-written state a signal could cut (their answers file
is line-oriented, and ``--resume`` drops a torn line), so they run inside
``interrupt_on_signals()`` instead: SIGTERM, like Ctrl-C, raises ``Interrupted`` at once,
and their ``finally`` blocks delete what they uploaded.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(KeyboardInterrupt):
    """A stop signal, raised at a safe point.

    Attributes:
        signum: the signal number.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        """``SIGTERM`` or ``SIGINT``."""
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        """The status a process ended by this signal reports in a shell: 143 for SIGTERM, 130 for SIGINT."""
        return 128 + self.signum


class _State:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.active = False
        self.signum: int | None = None
        self.raised = False
        self.waits = 0


_state = _State()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Runs in the main thread between two bytecodes: touch no lock, only these fields.
    if _state.signum is not None:
        return  # already stopping
    _state.signum = signum
    if _state.waits:
        _state.raised = True
        raise Interrupted(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into ``Interrupted`` at safe points while the block runs.

    Only the main thread can own signal handlers; elsewhere this does nothing.
    """
    if not _main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _on_signal) for signum in STOP_SIGNALS}
    _state.reset()
    _state.active = True
    try:
        yield
    finally:
        _state.active = False
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def received() -> int | None:
    """The stop signal received while ``stop_on_signals()`` was active, if any."""
    return _state.signum


def checkpoint() -> None:
    """Raise ``Interrupted`` here if a stop signal arrived and was not raised yet."""
    if _state.active and _state.signum is not None and not _state.raised and _main_thread():
        _state.raised = True
        raise Interrupted(_state.signum)


@contextmanager
def interruptible() -> Iterator[None]:
    """A wait that a stop signal may cut short by raising ``Interrupted`` (main thread only)."""
    if not (_state.active and _main_thread()):
        yield
        return
    checkpoint()
    _state.waits += 1
    try:
        yield
    finally:
        _state.waits -= 1


@contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """Raise ``Interrupted`` in the main thread at the first SIGTERM or SIGINT while the block runs.

    SIGTERM thus gets the clean-up Ctrl-C gets. Later signals are ignored while that clean-up
    runs. Only the main thread can own signal handlers; elsewhere this does nothing.
    """
    if not _main_thread():
        yield
        return
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stopping:
            return  # already stopping: let the clean-up finish
        stopping.append(signum)
        raise Interrupted(signum)

    previous = {signum: signal.signal(signum, on_signal) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
