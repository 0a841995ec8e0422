"""Helpers shared by the tests (import as ``from support import ...``)."""

from __future__ import annotations

import hashlib
import json
import os
import select
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
CORPUS = FIXTURES / "corpus"

# The fixture generators (fixtures/make_*.py) are scripts, not a package: make them importable.
if str(FIXTURES) not in sys.path:
    sys.path.insert(0, str(FIXTURES))


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def corpus_expectations() -> list[dict[str, Any]]:
    data = json.loads((CORPUS / "expectations.json").read_text(encoding="utf-8"))
    files: list[dict[str, Any]] = data["files"]
    return files


def read_until(fd: int, needle: bytes, guard_s: float) -> bytes:
    """Read a pipe until ``needle`` shows up; ``guard_s`` only guards against a hang, never the verdict."""
    seen = b""
    deadline = time.monotonic() + guard_s
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"never saw {needle!r}; got {seen[-3000:]!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, f"the pipe closed before {needle!r}; got {seen[-3000:]!r}"
            seen += chunk
    return seen
