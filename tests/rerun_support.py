"""Helpers for the tests of repeated runs (``--resume``, the output cache): real folders, real CLI runs.

Import as ``from rerun_support import ...``.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image
from support import CORPUS

DAY_NS = 86_400 * 1_000_000_000

LAYOUT = {
    ".hidden.png": CORPUS / "pillow__hopper.png",  # skipped: hidden
    "1_talk.flac": CORPUS / "pydub__test-192khz-32bit.flac",  # converted by ffmpeg (192 kHz FLAC -> MP3)
    "3_cat.bmp": CORPUS / "pillow__hopper.bmp",  # converted by Pillow (BMP -> PNG)
    "4_plain.webp": CORPUS / "pillow__hopper.webp",  # passes through
    "5_broken.png": CORPUS / "pillow__truncated_image.png",  # error: corrupt_media
    "sub/7_anim.gif": CORPUS / "pillow__hopper.gif",  # converted by Pillow (GIF -> PNG)
}
"""The mixed folder: one of each fate. ``2_photo.jpg`` (resized) and ``6_notes.txt`` (skipped) are made."""


def age(root: Path, ns_ago: int = DAY_NS) -> None:
    """Give every file under ``root`` an mtime ``ns_ago`` in the past (distinct per file, stable order)."""
    base = time.time_ns() - ns_ago
    for offset, path in enumerate(sorted(p for p in root.rglob("*") if p.is_file())):
        os.utime(path, ns=(base + offset * 1000, base + offset * 1000))


def mixed_folder(root: Path) -> Path:
    """A folder of real media needing every kind of treatment, all last modified a day ago."""
    root.mkdir(parents=True)
    for name, source in LAYOUT.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, root / name)
    photo = Image.radial_gradient("L").resize((2300, 1700)).convert("RGB")  # 3.9 MP: over the 3.4 MP cap
    photo.save(root / "2_photo.jpg", quality=85)
    (root / "6_notes.txt").write_text("shopping list\n")
    age(root)
    return root


def logging_ffmpeg(folder: Path) -> tuple[Path, Path]:
    """A real ffmpeg behind a script that appends each command line to a log: ``(script, log)``.

    Point ``NVMEDIA_FFMPEG`` at the script; the log's lines count the ffmpeg runs.
    """
    from nvmedia.ffmpeg import find_ffmpeg

    real = find_ffmpeg()
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "ffmpeg.log"
    log.touch()
    script = folder / "ffmpeg"
    script.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{real}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, log


def conversions(log: Path) -> list[str]:
    """The ffmpeg runs in ``log`` that converted something (``-version`` checks aside)."""
    return [line for line in log.read_text().splitlines() if "-version" not in line.split()]


def cli(*args: str | Path) -> tuple[int, str]:
    """``nvmedia ARGS`` run by ``nvmedia.cli.main`` in this process: ``(status, stderr)``."""
    from nvmedia.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main([str(arg) for arg in args])
    return status, err.getvalue()


def nvmedia(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m nvmedia ARGS`` with this environment plus ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "nvmedia", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def nvmedia_on_a_terminal(*args: str | Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``python -m nvmedia ARGS`` with stderr on a pseudo-terminal: ``(status, what the terminal showed)``."""
    import pty

    main_fd, tty_fd = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nvmedia", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=tty_fd,
        env={**os.environ, **(env or {})},
    )
    os.close(tty_fd)
    shown = b""
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(main_fd)
    status = proc.wait(timeout=300)
    return status, shown.decode("utf-8", "replace")


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)
