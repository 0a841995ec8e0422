"""The errors libav's decoders report while this thread decodes: ``decoder_log``.

Many decoding faults reach nobody but libav's log: H.264 conceals a damaged
macroblock ("error while decoding MB 3 9"), AAC drops a bad frame ("Number of
bands (13) exceeds limit (8)"), the MP3 decoder pads a frame cut short ("invalid
new backstep -1"), and the decode call itself succeeds. PyAV hands that log to
Python through ``av.logging``, whose state is process-wide:

- nothing is delivered until a level is set (PyAV installs a null callback);
- ``Capture(local=True)`` collects what is logged on the capturing thread only, so
  the decoder must not pass frames to worker threads of its own (the caller sets
  ``thread_count = 1``); ``Capture(local=False)`` would mix concurrent validations;
- identical consecutive messages are held back process-wide (``skip_repeated``)
  and released later into whichever capture is open then: a second file with the
  same fault would go unseen, and the first one's message would land elsewhere.

So while at least one ``decoder_log`` block is open, the level is at least ERROR
and repeats are not held back; the last block to close puts back what was there.
Messages logged meanwhile on other threads go to the ``libav`` logger, which gets
a ``NullHandler`` so that they reach an application's own handlers but never
stderr through logging's last-resort handler. A forked worker starts with no
block open. Frames flagged corrupt (``Frame.is_corrupt``) are the other,
thread-proof signal; callers check both.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager

__all__ = ["DecoderLog", "decoder_log"]

_state_lock = threading.Lock()
_open_blocks = 0
_saved: tuple[int | None, bool] | None = None
"""The level and skip_repeated setting found when the first block opened."""


class DecoderLog:
    """What libav has logged on this thread since the ``decoder_log`` block opened (live while it is open)."""

    def __init__(self, captured: list[tuple[int, str, str]]) -> None:
        self._captured = captured

    @property
    def records(self) -> list[tuple[int, str, str]]:
        """``(libav level, context name, message)`` in order; the name is the codec's (``h264``, ``aac``,
        ``mp3float``) for decoder messages, the demuxer's for demuxer ones."""
        return [(int(level), str(name or ""), str(message)) for level, name, message in self._captured]

    def mark(self) -> int:
        """A position in the log, for ``forget_since``."""
        return len(self._captured)

    def forget_since(self, mark: int) -> None:
        """Drop what was logged after ``mark`` (messages the caller knows to be expected)."""
        del self._captured[mark:]

    def errors(self, sources: Collection[str]) -> list[str]:
        """Messages at ERROR or worse logged by the contexts named in ``sources``, stripped, in order."""
        import av.logging

        return [
            message.strip() for level, name, message in self.records if level <= av.logging.ERROR and name in sources
        ]


@contextmanager
def decoder_log() -> Iterator[DecoderLog]:
    """Collect what libav logs on this thread while the block runs (see the module docstring).

    Records at or above the level the application itself asked PyAV for are passed on to the
    ``libav.*`` loggers afterwards, as PyAV would have done.
    """
    import av.logging

    before = _enter()
    records: list[tuple[int, str, str]] = []
    try:
        with av.logging.Capture(local=True) as captured:
            log = DecoderLog(captured)
            try:
                yield log
            finally:
                records = log.records
    finally:
        _leave()
        if before is not None:
            for level, name, message in records:
                if level <= before:
                    logging.getLogger(f"libav.{name}" if name else "libav.generic").log(
                        av.logging.adapt_level(level), message.strip()
                    )


def _enter() -> int | None:
    """Open a block; return the level the application had set (None: PyAV's silence)."""
    import av.logging

    global _open_blocks, _saved
    with _state_lock:
        if _open_blocks == 0:
            _saved = (av.logging.get_level(), bool(av.logging.get_skip_repeated()))
            libav_logger = logging.getLogger("libav")
            if not any(isinstance(h, logging.NullHandler) for h in libav_logger.handlers):
                libav_logger.addHandler(logging.NullHandler())
            level = _saved[0]
            if level is None or level < av.logging.ERROR:
                av.logging.set_level(av.logging.ERROR)
            av.logging.set_skip_repeated(False)
        _open_blocks += 1
        assert _saved is not None
        return _saved[0]


def _leave() -> None:
    global _open_blocks
    with _state_lock:
        _open_blocks -= 1
        if _open_blocks == 0:
            _restore()


def _restore() -> None:
    global _saved
    if _saved is None:
        return
    import av.logging

    level, skip = _saved
    av.logging.set_level(level)
    av.logging.set_skip_repeated(skip)
    _saved = None


def _after_fork_in_child() -> None:
    # The threads that held blocks open did not come along; the lock may have been held by one.
    global _state_lock, _open_blocks
    _state_lock = threading.Lock()
    if _open_blocks:
        _open_blocks = 0
        _restore()


if hasattr(os, "register_at_fork"):  # POSIX only; elsewhere nothing forks
    os.register_at_fork(after_in_child=_after_fork_in_child)
