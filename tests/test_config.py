"""One place for sizes, environment variables and defaults (``nvmedia.config``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import CORPUS

from nvmedia.cli import main

HOPPER = CORPUS / "pillow__hopper.png"


@pytest.mark.parametrize("size", ["1.5G", "1_000_000", "64KiB", "512m"])
def test_max_memory_and_output_cache_size_read_sizes_alike(size: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["prepare", str(HOPPER), "--dry-run", "--max-memory", size, "--output-cache-size", size]
    assert main(args) == 0, capsys.readouterr().err


def test_a_size_that_is_not_one_names_the_flag_it_came_with(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", str(HOPPER), "--dry-run", "--output-cache-size", "lots"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--output-cache-size" in err and "'lots' is not a size" in err


def test_output_cache_size_from_the_environment_reads_sizes_like_the_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NVMEDIA_OUTPUT_CACHE_SIZE", "1.5G")
    assert main(["prepare", str(HOPPER), "--dry-run"]) == 0, capsys.readouterr().err
