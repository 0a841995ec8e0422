"""Has a source changed since it was read? Its size, mtime and inode, and when in doubt its bytes.

``SourceState`` is what a run notes about a file just before reading it. A later
run trusts size + mtime (+ inode) the way ``make`` and ``rsync`` do, except when
the note itself says the mtime could not tell: a file modified less than
``RECENT_NS`` before it was read could be modified again within the same tick of
a coarse file-system clock (FAT counts in 2-second steps) without its mtime
moving. Such a state is ``recent``, and its bytes must be compared instead.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

RECENT_NS: Final = 2_000_000_000
"""A file modified less than this before it was read is ``recent`` (two seconds: FAT's mtime step)."""

_CHUNK: Final = 1 << 20


@dataclass(frozen=True)
class SourceState:
    """What a file looked like when a run read it.

    Attributes:
        bytes: its size.
        mtime_ns: its modification time (nanoseconds since the epoch).
        ino: its inode number (a file replaced by another one under the same name gets a new one).
        recent: modified less than ``RECENT_NS`` before it was read: mtime and size alone cannot prove
            it unchanged since.
    """

    bytes: int
    mtime_ns: int
    ino: int
    recent: bool = False

    @classmethod
    def of(cls, path: Path) -> SourceState:
        """The state of the file at ``path`` now (following links, as reading it does).

        Raises:
            OSError: the file cannot be examined.
        """
        st = path.stat()
        now = time.time_ns()
        return cls(bytes=st.st_size, mtime_ns=st.st_mtime_ns, ino=st.st_ino, recent=st.st_mtime_ns > now - RECENT_NS)

    def same_stat(self, other: SourceState) -> bool:
        """Same size, mtime and inode (``recent`` aside)."""
        return (self.bytes, self.mtime_ns, self.ino) == (other.bytes, other.mtime_ns, other.ino)

    def still(self, path: Path) -> bool:
        """The file at ``path`` still has this size, mtime and inode."""
        try:
            return self.same_stat(SourceState.of(path))
        except OSError:
            return False

    def to_record(self) -> dict[str, Any]:
        """The manifest's form (``recent`` only when true, so that most records stay short)."""
        record: dict[str, Any] = {"bytes": self.bytes, "mtime_ns": self.mtime_ns, "ino": self.ino}
        if self.recent:
            record["recent"] = True
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SourceState:
        """The inverse of ``to_record``.

        Raises:
            KeyError, TypeError, ValueError: the record is not a state.
        """
        values = (record["bytes"], record["mtime_ns"], record["ino"])
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise ValueError(f"not a source state: {record!r}")
        return cls(*values, recent=record.get("recent") is True)


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of the file at ``path``, read in 1 MB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
