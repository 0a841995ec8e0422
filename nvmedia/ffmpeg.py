"""Locating and safely running the ffmpeg executable.

Every ffmpeg run in nvmedia goes through this module. Commands are built with
ffmpeg-python and run here with the same guard rails:

- ``-nostdin`` and stdin closed: ffmpeg never waits on (or reads) a terminal;
- ``-protocol_whitelist file,pipe`` and the input format forced from the
  sniffer (``-f mov``, ``-f matroska``...): a playlist or concat script
  disguised as media is read as that container and fails, instead of being
  followed to other files (some builds follow HLS with ``file`` allowed);
- input and output paths made absolute with a ``file:`` prefix, so a name
  starting with ``-`` is never an option and ``a:b.mp4`` is never a protocol
  (``%d`` patterns only mean something to the image2 demuxer, which a forced
  format never selects);
- ``-v error`` and any stderr output treated as a failure: ffmpeg exits 0 on a
  truncated WEBM and only prints "File ended prematurely";
- a timeout (see ``timeout_for``); on timeout or failure the process is killed
  and partial outputs are removed.

Failures are ``ProcessingError`` with code ``ffmpeg_failed`` (the message holds
the last lines of stderr, file paths shortened to their names) or ``timeout``.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from .config import FFMPEG_ENV, env_ffmpeg
from .errors import ConfigError, MediaError, ProcessingError
from .option_table import ref

PROTOCOL_WHITELIST = "file,pipe"
GLOBAL_ARGS: tuple[str, ...] = ("-nostdin", "-hide_banner", "-nostats", "-v", "error", "-y")
STDERR_TAIL_LINES = 5
BASE_TIMEOUT_S = 30.0
"""Fixed part of every timeout: process start, probing, muxing."""


def find_ffmpeg() -> str:
    """Return the ffmpeg executable nvmedia uses.

    ``NVMEDIA_FFMPEG`` wins; else imageio-ffmpeg's bundled build; else ``ffmpeg`` on PATH.

    Raises:
        ConfigError: ``NVMEDIA_FFMPEG`` names no executable file, or no ffmpeg can be found.
    """
    return _find_ffmpeg(env_ffmpeg())


@functools.lru_cache(maxsize=8)
def _find_ffmpeg(env_value: str) -> str:
    if env_value:
        found = shutil.which(env_value)
        if found is None:
            raise ConfigError(
                f"{FFMPEG_ENV}={env_value!r} is not an executable file",
                hint=f"point {FFMPEG_ENV} at an ffmpeg executable, or unset it to use the bundled one",
            )
        return found
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):
        pass
    found = shutil.which("ffmpeg")
    if found is None:
        raise ConfigError(
            "no ffmpeg executable found (imageio-ffmpeg has no bundled build for this platform, none on PATH)",
            hint=f"install ffmpeg, or set {FFMPEG_ENV} to the path of an ffmpeg executable",
        )
    return found


def ffmpeg_version() -> tuple[str, str]:
    """Return ``(path, version line)`` of the ffmpeg executable in use.

    Example:
        >>> ffmpeg_version()  # doctest: +SKIP
        ('/.../ffmpeg-linux-x86_64-v9.0.2', 'ffmpeg version n9.0.2 Copyright (c) 2000-2026 the FFmpeg developers')

    Raises:
        ConfigError: no ffmpeg can be found, or it does not run.
    """
    exe = find_ffmpeg()
    return exe, _version_line(exe)


def usable_ffmpeg() -> str:
    """The ffmpeg executable, once proven to be a working ffmpeg (checked once per process and path).

    Every ffmpeg command is built on it, so an ``NVMEDIA_FFMPEG`` that runs but is no ffmpeg (``/bin/true``,
    a wrapper missing its libraries, another program) stops the work as a configuration error the first
    time ffmpeg is needed, instead of failing each file as if the media were damaged. The check is one
    ``ffmpeg -version`` run (about 20 ms; see benchmarks/README.md).

    Raises:
        ConfigError: no ffmpeg can be found, it does not run, or ``-version`` does not answer as ffmpeg does.
    """
    return ffmpeg_version()[0]


@functools.lru_cache(maxsize=8)
def _version_line(exe: str) -> str:
    hint = f"point {FFMPEG_ENV} at a working ffmpeg, or unset it to use the bundled one"
    try:
        done = subprocess.run(
            [exe, "-hide_banner", "-version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=BASE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"ffmpeg at {exe} does not run: {exc}", hint=hint) from None
    said = [line.strip() for line in done.stdout.decode("utf-8", "replace").splitlines() if line.strip()]
    if done.returncode != 0:
        errors = [line.strip() for line in done.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
        status = f"killed by {_signal_name(-done.returncode)}" if done.returncode < 0 else f"exit {done.returncode}"
        reason = f": {errors[-1][:200]}" if errors else ""
        raise ConfigError(f"ffmpeg at {exe} does not run ({status} on -version){reason}", hint=hint)
    if not said:
        raise ConfigError(f"ffmpeg at {exe} does not run: -version printed nothing", hint=hint)
    if not said[0].lower().startswith("ffmpeg version"):
        raise ConfigError(f"{exe} is not ffmpeg: -version printed {said[0][:80]!r}", hint=hint)
    return said[0]


def timeout_for(duration_s: float | None, *, per_second: float = 4.0, base_s: float = BASE_TIMEOUT_S) -> float:
    """A timeout scaled to the media's duration.

    Args:
        duration_s: the media's duration (None or 0: only the fixed part applies).
        per_second: allowed wall-clock seconds per second of media. 4.0 leaves room for a
            4K-to-1080p transcode on two cores; audio and stream copies are far faster.
        base_s: fixed part (process start, probing, muxing).
    """
    return base_s + per_second * max(0.0, duration_s or 0.0)


def file_url(path: Path) -> str:
    """``file:`` + absolute path: never read as an option, a protocol or (with a forced format) a pattern."""
    return "file:" + str(Path(path).absolute())


def input_stream(path: Path, ffmpeg_format: str | None, **options: Any) -> Any:
    """An ffmpeg-python input node reading ``path`` with the demuxer forced.

    Args:
        path: the source file.
        ffmpeg_format: the demuxer from the sniffer (``Sniffed.ffmpeg_format``).
        **options: further input options (``t=12.5`` to read only the first 12.5 s...).

    Raises:
        MediaError: ``unsupported_format`` when no demuxer is known: ffmpeg is never left to guess.
    """
    import ffmpeg

    if not ffmpeg_format:
        raise MediaError(
            f"{Path(path).name}: no ffmpeg demuxer is known for this file",
            code="unsupported_format",
            hint="pass audio (WAV/MP3/FLAC...) or video (MP4/MOV/MKV/WEBM...)",
        )
    return ffmpeg.input(file_url(path), f=ffmpeg_format, protocol_whitelist=PROTOCOL_WHITELIST, **options)


def build_args(stream: Any) -> list[str]:
    """The full command line for an ffmpeg-python output node, global guard rails first."""
    import ffmpeg

    args = [a for a in ffmpeg.get_args(stream) if a != "-y"]
    return [usable_ffmpeg(), *GLOBAL_ARGS, *args]


def output_path(workdir: Path, source: Path, suffix: str) -> Path:
    """Reserve a fresh file in ``workdir`` named after ``source`` (safe characters only, never option-like).

    Args:
        workdir: the folder outputs go to (created if missing).
        source: the input whose name the output recalls.
        suffix: the output's extension, with its dot.
    """
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.stem).lstrip("-.")[:40] or "media"
    workdir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{stem}-", suffix=suffix, dir=workdir)
    os.close(fd)
    return Path(name)


def run(
    stream: Any,
    *,
    outputs: Sequence[Path] = (),
    timeout_s: float,
    redact: Sequence[Path] = (),
) -> None:
    """Run an ffmpeg-python output node to completion.

    Args:
        stream: the output node (``ffmpeg.output(...)``), built on ``input_stream``.
        outputs: files the command writes; removed if it fails or times out.
        timeout_s: wall-clock limit (see ``timeout_for``).
        redact: more paths to shorten to their names in error messages.

    Raises:
        ProcessingError: ``ffmpeg_failed`` (non-zero exit or any stderr output) or ``timeout``.
    """
    args = build_args(stream)
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except OSError as exc:
        raise ProcessingError(
            f"cannot start ffmpeg: {exc.strerror}", code="ffmpeg_failed", hint=f"set {FFMPEG_ENV} to a working ffmpeg"
        ) from None
    try:
        _, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill(proc)
        _remove(outputs)
        raise _timeout_error(timeout_s) from None
    except BaseException:
        _kill(proc)
        _remove(outputs)
        raise
    if proc.returncode != 0 or err.strip():
        _remove(outputs)
        raise _failure(proc.returncode, err, [*_paths_in(args), *redact])


def run_to_file(stream_factory: Any, output: Path, *, timeout_s: float, redact: Sequence[Path] = ()) -> Path:
    """Run ``stream_factory(url)`` writing to a temporary name beside ``output``, then rename it into place.

    A failed or interrupted run leaves nothing at ``output``.

    Args:
        stream_factory: called with the ``file:`` URL to write; returns the ffmpeg-python output node.
        output: the final path.
        timeout_s: wall-clock limit.
        redact: more paths to shorten in error messages.

    Returns:
        ``output``.
    """
    partial = output.with_name(f".{output.stem}.partial{output.suffix}")
    run(stream_factory(file_url(partial)), outputs=[partial], timeout_s=timeout_s, redact=redact)
    os.replace(partial, output)
    return output


@contextmanager
def open_pipe(stream: Any, *, timeout_s: float, chunk_size: int = 1 << 16) -> Iterator[Iterator[bytes]]:
    """Run an ffmpeg-python node writing to ``pipe:`` and yield its stdout in chunks.

    Memory stays flat whatever the media's length: the caller consumes chunks as they come.
    stderr is drained by a thread (so ffmpeg never blocks on it) and checked when the
    output ends; a watchdog kills ffmpeg when ``timeout_s`` passes.

    Example:
        >>> node = ffmpeg.output(input_stream(p, "mp3"), "pipe:", f="s16le", ac=1, ar=8000)  # doctest: +SKIP
        >>> with open_pipe(node, timeout_s=60) as chunks:  # doctest: +SKIP
        ...     total = sum(len(c) for c in chunks)

    Raises:
        ProcessingError: ``ffmpeg_failed`` or ``timeout``, when the chunks run out.
    """
    args = build_args(stream)
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise ProcessingError(
            f"cannot start ffmpeg: {exc.strerror}", code="ffmpeg_failed", hint=f"set {FFMPEG_ENV} to a working ffmpeg"
        ) from None
    assert proc.stdout is not None and proc.stderr is not None
    err_chunks: list[bytes] = []
    stderr = proc.stderr
    drain = threading.Thread(target=lambda: err_chunks.extend(iter(lambda: stderr.read(4096), b"")), daemon=True)
    drain.start()
    timed_out = threading.Event()

    def _expire() -> None:
        timed_out.set()
        _kill(proc, wait=False)

    watchdog = threading.Timer(timeout_s, _expire)
    watchdog.daemon = True
    watchdog.start()
    stdout = proc.stdout

    def _chunks() -> Iterator[bytes]:
        while True:
            chunk = stdout.read(chunk_size)
            if not chunk:
                break
            yield chunk
        proc.wait()
        drain.join()
        if timed_out.is_set():
            raise _timeout_error(timeout_s)
        err = b"".join(err_chunks)
        if proc.returncode != 0 or err.strip():
            raise _failure(proc.returncode, err, _paths_in(args))

    try:
        yield _chunks()
    finally:
        watchdog.cancel()
        _kill(proc)
        drain.join(timeout=5)
        stdout.close()
        stderr.close()


def _kill(proc: subprocess.Popen[bytes], *, wait: bool = True) -> None:
    if proc.poll() is None:
        with suppress(OSError):
            proc.kill()
    if wait:
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def _remove(paths: Sequence[Path]) -> None:
    for path in paths:
        with suppress(FileNotFoundError):
            Path(path).unlink()


def _paths_in(args: Sequence[str]) -> list[Path]:
    return [Path(a[len("file:") :]) for a in args if a.startswith("file:")]


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _timeout_error(timeout_s: float) -> ProcessingError:
    return ProcessingError(
        f"ffmpeg ran longer than the {timeout_s:g} s allowed and was stopped",
        code="timeout",
        hint="the file may be damaged or unusually slow to decode; "
        f"try a shorter clip ({ref('trim_s')}) or re-export it",
    )


def _failure(returncode: int | None, err: bytes, paths: Sequence[Path]) -> ProcessingError:
    text = err.decode("utf-8", "replace")
    for path in sorted(paths, key=lambda p: len(str(p)), reverse=True):
        # Paths shrink to their names: messages stay short and never show where files live.
        text = text.replace("file:" + str(path), path.name).replace(str(path), path.name)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    tail = " | ".join(lines[-STDERR_TAIL_LINES:]) or "no message"
    if returncode is not None and returncode < 0:
        status = f"killed by {_signal_name(-returncode)}"
        if -returncode == getattr(signal, "SIGXFSZ", None):
            # The kernel's answer to a write past RLIMIT_FSIZE: name it as the write error the
            # pipeline turns into no_space ("File too large"), not as damaged media.
            tail = f"{os.strerror(errno.EFBIG)}: the file size limit of this process was reached"
    else:
        status = f"exit status {returncode}" if returncode else "exit status 0 but it reported errors"
    return ProcessingError(
        f"ffmpeg failed ({status}): {tail}",
        code="ffmpeg_failed",
        hint="the media is probably damaged or uses a feature this ffmpeg lacks; re-export it or convert it yourself",
    )
