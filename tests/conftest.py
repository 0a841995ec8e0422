"""Shared fixtures: the committed corpus and generated media."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from support import CORPUS

from nvmedia.testing import NVCFEmulator

# No Hypothesis test may fail on time: a loaded 2-core machine runs any example slower than 200 ms.
settings.register_profile("nvmedia", deadline=None)
settings.load_profile("nvmedia")


@pytest.fixture(autouse=True)
def _own_cache_folder(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets an empty cache folder, and no output cache unless it asks for one.

    Tests never read or fill the user's own caches, and a conversion one test cached never
    stands in for the conversion another test means to exercise.
    """
    monkeypatch.setenv("NVMEDIA_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("NVMEDIA_OUTPUT_CACHE_SIZE", "0")


@pytest.fixture(scope="session")
def corpus() -> Path:
    return CORPUS


@pytest.fixture(scope="session")
def av_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Audio and video made with the real ffmpeg by fixtures/make_av.py, once per test session."""
    from make_av import make_av

    return make_av(tmp_path_factory.getbasetemp() / "av")


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as the test runs.

    The socket is bound but never listens: nobody else can bind the port meanwhile,
    and a connection to it is refused at once, however loaded the machine is.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.fixture
def emu_in_process() -> Iterator[NVCFEmulator]:
    """An emulator that is never started: it is reached through ``emu_in_process.transport`` only."""
    emulator = NVCFEmulator()
    yield emulator
    emulator.stop()
