"""Shared fixtures: the committed corpus and generated media."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import CORPUS


@pytest.fixture(scope="session")
def corpus() -> Path:
    return CORPUS
