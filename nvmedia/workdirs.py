"""Temporary work folders that a killed run leaves behind, and their removal by the next run.

A run keeps its converted copies in ``$TMPDIR/nvmedia-<random>`` (the emulator its uploaded bytes
in ``nvmedia-emulator-<random>``) and removes the folder when it ends. A SIGKILL, an out-of-memory
kill or a power cut leaves no chance to, and those folders hold copies of private media. So
each folder holds an owner file naming the process that made it: its pid, its start time
(``/proc/PID/stat``) and the boot it ran in, so that a pid reused by a later process, or after
a reboot, is never taken for the owner. ``remove_stale()``, run as each run starts, removes
every ``nvmedia-*`` folder of this user whose owner is gone. A folder without a readable owner
file (made by an older nvmedia, by someone else, or an instant ago by a run still writing it),
another user's folder and a folder whose owner is alive are never touched.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

logger = logging.getLogger(__name__)

PREFIX: Final = "nvmedia-"
"""What the name of every temporary folder nvmedia makes starts with."""
OWNER_FILE: Final = ".nvmedia-owner"
"""The file in such a folder that names the process owning it."""


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot; None where /proc does not say (not Linux)."""
    stat = _read_text(f"/proc/{pid}/stat")
    if stat is None:
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _boot_id() -> str | None:
    text = _read_text("/proc/sys/kernel/random/boot_id")
    return text.strip() if text else None


@dataclass(frozen=True)
class Owner:
    """The process that made a work folder.

    Attributes:
        pid: its process id.
        started: its start time (clock ticks since boot), None where unknown.
        boot_id: the boot it ran in, None where unknown.
    """

    pid: int
    started: str | None
    boot_id: str | None

    @classmethod
    def current(cls) -> Owner:
        """This process."""
        return cls(os.getpid(), _start_time(os.getpid()), _boot_id())

    def alive(self) -> bool:
        """Whether this process still runs (when unsure, True: a folder is only removed when sure)."""
        boot = _boot_id()
        if self.boot_id is not None and boot is not None and boot != self.boot_id:
            return False  # the machine restarted since
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, run by another user
        if self.started is None:
            return True
        started = _start_time(self.pid)
        return started is None or started == self.started  # another start time: the pid was reused

    def write(self, folder: Path) -> None:
        """Mark ``folder`` as this owner's (written whole, then renamed, so a reader never sees half of it)."""
        partial = folder / f"{OWNER_FILE}.part"
        partial.write_text(json.dumps(asdict(self)), encoding="ascii")
        os.replace(partial, folder / OWNER_FILE)

    @classmethod
    def of(cls, folder: Path) -> Owner | None:
        """The owner ``folder`` names, or None when it names none (or not readably)."""
        text = _read_text(str(folder / OWNER_FILE))
        try:
            data = json.loads(text) if text is not None else None
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
            return None
        started, boot_id = data.get("started"), data.get("boot_id")
        return cls(
            data["pid"],
            started if isinstance(started, str) else None,
            boot_id if isinstance(boot_id, str) else None,
        )


def owned_tempdir(prefix: str = PREFIX) -> Path:
    """A new temporary folder named ``prefix…`` (which must start with ``nvmedia-``), marked as this process's."""
    if not prefix.startswith(PREFIX):
        raise ValueError(f"a work folder's prefix starts with {PREFIX!r}, not {prefix!r}")
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        Owner.current().write(folder)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def remove_stale(parent: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the ``nvmedia-*`` work folders of runs that are gone; returns the folders removed.

    Args:
        parent: where to look (default: the temporary folder, ``$TMPDIR`` or ``/tmp``).
    """
    where = Path(parent if parent is not None else tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = [e for e in os.scandir(where) if e.name.startswith(PREFIX)]
    except OSError:
        return removed
    uid = os.getuid() if hasattr(os, "getuid") else None
    for entry in entries:
        try:
            if not entry.is_dir(follow_symlinks=False) or (uid is not None and entry.stat().st_uid != uid):
                continue
        except OSError:
            continue
        folder = Path(entry.path)
        owner = Owner.of(folder)
        if owner is None or owner.alive():
            continue
        shutil.rmtree(folder, ignore_errors=True)
        logger.info("removed %s, left by process %d which is gone", folder, owner.pid)
        removed.append(folder)
    return removed


@contextmanager
def work_folder(prefix: str = PREFIX) -> Iterator[Path]:
    """A run's temporary work folder: stale ones of dead runs go first, this one when the block ends."""
    remove_stale()
    folder = owned_tempdir(prefix)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
