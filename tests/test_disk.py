"""Disk: temporary outputs live only while their item is in flight, and a full disk is `no_space`, never lost work.

Real failures, no mocks: a full device is ``/dev/full`` (every write fails with ENOSPC); a
file-size limit (``RLIMIT_FSIZE``, as ``ulimit -f`` sets) makes the kernel refuse writes past
it with EFBIG, in nvmedia's own process, so each write site meets a real refusal.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from support import CORPUS

from nvmedia.pipeline import LOOKAHEAD_PER_JOB, run
from nvmedia.settings import Settings
from nvmedia.workers import BATCH_ITEMS

PLAIN_WEBP = CORPUS / "pillow__hopper.webp"


def _files_under(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("keep", [False, True])
def test_temp_outputs_are_released_once_their_item_is_delivered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: bool
) -> None:
    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))  # where the run's temporary folder goes
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(60):
        shutil.copy(CORPUS / "pillow__hopper.bmp", folder / f"{i:02d}.bmp")  # each becomes a PNG in the temp folder
    settings = Settings(dry_run=True, jobs=1, pool="thread", group="file", keep=tmp_path / "kept" if keep else None)
    in_temp = [_files_under(temp_root) for _ in run([folder], settings)]
    assert len(in_temp) == 60
    # At most the sources workers may run ahead of the request being planned, plus one batch.
    assert max(in_temp) <= LOOKAHEAD_PER_JOB * settings.jobs + BATCH_ITEMS + 1, in_temp
    assert list(temp_root.iterdir()) == []


def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_device_under_the_manifest_is_exit_2_with_one_line() -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "nvmedia", "prepare", str(PLAIN_WEBP), "--dry-run"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert (
        line.startswith("nvmedia: error: ")
        and "no space left on the device" in line
        and "[" not in line
        and "stdout" in line
    ), line


def test_a_failed_manifest_write_leaves_the_previous_manifest_untouched(tmp_path: Path) -> None:
    folder, out_dir = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    out_dir.mkdir()
    for i in range(4):
        shutil.copy(PLAIN_WEBP, folder / f"{i}.webp")  # inline records of ~9 KB each: over the limit by the third
    out = out_dir / "m.jsonl"
    out.write_text("the previous run's manifest\n")
    done = subprocess.run(
        [sys.executable, "-m", "nvmedia", "prepare", str(folder), "--dry-run", "--mode", "inline", "-o", str(out)],
        capture_output=True,
        text=True,
        preexec_fn=_file_size_limit(16_384),
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert (
        line.startswith("nvmedia: error: ")
        and str(out) in line
        and "file size limit" in line
        and "[no_space]" not in line
    ), line
    assert out.read_text() == "the previous run's manifest\n"
    assert [p.name for p in out_dir.iterdir()] == ["m.jsonl"]  # no temporary file left beside it


def _noise_png(path: Path) -> None:
    import random

    from PIL import Image

    Image.frombytes("RGB", (100, 100), random.Random(3).randbytes(30_000)).save(path)  # plain: passes through


def test_an_output_that_cannot_be_written_is_no_space_and_leaves_nothing_behind(tmp_path: Path) -> None:
    folder, kept, temp_root = tmp_path / "in", tmp_path / "kept", tmp_path / "tmp"
    folder.mkdir()
    temp_root.mkdir()
    shutil.copy(CORPUS / "pillow__hopper.bmp", folder / "a.bmp")  # converted: a PNG over the limit in the temp folder
    _noise_png(folder / "b.png")  # passes through as it is: its kept copy is over the limit
    shutil.copy(PLAIN_WEBP, folder / "c.webp")  # small enough: ok
    out = tmp_path / "m.jsonl"
    args = ["prepare", str(folder), "--dry-run", "--mode", "asset", "--keep", str(kept), "-o", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "nvmedia", *args],
        capture_output=True,
        text=True,
        preexec_fn=_file_size_limit(16_384),
        env={**os.environ, "TMPDIR": str(temp_root)},
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    records = {Path(r["source"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    converted, copied = records["a.bmp"], records["b.png"]
    for record, folder_named in ((converted, temp_root), (copied, kept)):
        assert record["status"] == "error" and record["error"]["code"] == "no_space", record
        assert str(folder_named) in record["error"]["message"] and record["error"]["hint"]
    assert str((folder / "b.png").stat().st_size) in copied["error"]["message"]  # the bytes needed
    assert records["c.webp"]["status"] == "ok"
    assert sorted(p.name for p in kept.rglob("*")) == ["c.webp"]  # no .part file, no torn copy
    assert list(temp_root.iterdir()) == []
