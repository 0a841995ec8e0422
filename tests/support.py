"""Helpers shared by the tests (import as ``from support import ...``)."""

from __future__ import annotations

import hashlib
import json
import sys
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
