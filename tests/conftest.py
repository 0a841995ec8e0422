"""Shared fixtures: the committed corpus and generated media."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings
from support import CORPUS

# No Hypothesis test may fail on time: a loaded 2-core machine runs any example slower than 200 ms.
settings.register_profile("nvmedia", deadline=None)
settings.load_profile("nvmedia")


@pytest.fixture(scope="session")
def corpus() -> Path:
    return CORPUS


@pytest.fixture(scope="session")
def av_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Audio and video made with the real ffmpeg by fixtures/make_av.py, once per test session."""
    from make_av import make_av

    return make_av(tmp_path_factory.getbasetemp() / "av")
