"""SIGTERM and SIGINT end a run the same clean way; a killed parent takes its workers with it.

The CLI runs as a subprocess with its output piped, as under a supervisor. Nothing here waits
on time: a worker is held on a named file with the test hook ``NVMEDIA_TEST_WORKER_HOLD``
(README, "Development"), the test reads the pipe until the CLI has reported a given file, and
only then sends the signal; timeouts are safety nets against a hang, never the verdict.
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import pytest
from rerun_support import age
from support import CORPUS, read_until

from nvmedia.testing import NVCFEmulator

KEY = "nvapi-test-key-signals"
HANG_GUARD_S = 180


def _read_until(fd: int, needle: bytes) -> bytes:
    return read_until(fd, needle, HANG_GUARD_S)


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").iterdir():
            children = [int(c) for c in (task / "children").read_text().split()]
            found.extend(children)
            todo.extend(children)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has ended; only its exit status waits to be collected


def _wait_until_gone(pids: list[int]) -> None:
    """Wait for processes that are not our children to end (a pidfd turns readable when they do)."""
    deadline = time.monotonic() + HANG_GUARD_S
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        finally:
            os.close(fd)


def _held_run(tmp_path: Path) -> tuple[Path, list[str], dict[str, str]]:
    """16 BMPs (two batches of 8), the 6th a broken file, the worker of the second batch held at the 13th.

    Runs use ``--mode asset --dry-run``: records without base64 stay far below a pipe's buffer,
    so the CLI never waits on the test reading its stdout.
    """
    folder = tmp_path / "in"
    folder.mkdir()
    names = [f"{i:02d}.bmp" for i in range(16)]
    names[5] = "05-broken.png"
    for name in names:
        source = "pillow__truncated_image.png" if "broken" in name else "pillow__hopper.bmp"
        shutil.copy(CORPUS / source, folder / name)
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "NVMEDIA_TEST_WORKER_HOLD": str(folder / names[12])}
    return folder, names, env


@pytest.mark.parametrize(
    ("signum", "status", "to_file"), [(signal.SIGTERM, 143, False), (signal.SIGINT, 130, True)], ids=["TERM", "INT"]
)
def test_a_signal_mid_run_ends_every_process_removes_temp_files_and_keeps_finished_records(
    tmp_path: Path, signum: int, status: int, to_file: bool
) -> None:
    folder, names, env = _held_run(tmp_path)
    kept, out = tmp_path / "kept", tmp_path / "out" / "m.jsonl"
    out.parent.mkdir()
    args = ["prepare", str(folder), "--dry-run", "--mode", "asset", "-j", "2", "--pool", "process", "--keep", str(kept)]
    args += ["-o", str(out)] if to_file else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "nvmedia", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert proc.stderr is not None
    _read_until(proc.stderr.fileno(), b"05-broken.png: corrupt_media: ")  # the first batch is being written
    run_pids = _descendants(proc.pid)
    assert run_pids, "the workers should be running"
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=HANG_GUARD_S)

    assert proc.returncode == status, stderr
    assert not [pid for pid in run_pids if _alive(pid)]
    manifest = out.read_text() if to_file else stdout.decode()
    records = [json.loads(line) for line in manifest.splitlines()]  # every line whole
    written = [Path(r["source"]).name for r in records]
    assert names[:6] == written[:6] and written == names[: len(written)] and len(written) < 12
    assert list((tmp_path / "tmp").iterdir()) == []
    assert not [p for p in kept.rglob("*") if p.name.endswith(".part") or p.name.startswith(".")]
    assert sorted(p.name for p in out.parent.iterdir()) == (["m.jsonl"] if to_file else [])
    assert signal.Signals(signum).name in stderr.decode().splitlines()[-1]


def test_workers_end_with_their_parent_even_when_it_is_killed(tmp_path: Path) -> None:
    # SIGKILL cannot be caught: the workers must notice on their own, or a supervisor reading the
    # manifest pipe waits forever on the copies of it they hold.
    folder, _, env = _held_run(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "nvmedia", "prepare", str(folder), "--dry-run", "--mode", "asset", "-j", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stderr is not None
    _read_until(proc.stderr.fileno(), b"05-broken.png: corrupt_media: ")
    run_pids = _descendants(proc.pid)
    assert run_pids
    proc.kill()
    proc.communicate(timeout=HANG_GUARD_S)  # returns once no process holds the pipes
    assert proc.returncode == -signal.SIGKILL
    _wait_until_gone(run_pids)  # the kernel tells each worker its parent died; they end on their own
    assert not [pid for pid in run_pids if _alive(pid)]


def _noise_wav(path: Path, seconds: float, seed: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(44_100)
        w.writeframes(random.Random(seed).randbytes(int(44_100 * seconds) * 2))


def test_a_signal_while_uploads_are_in_flight_finishes_them_and_records_them(tmp_path: Path) -> None:
    folder = tmp_path / "memos"
    folder.mkdir()
    for i in range(3):
        _noise_wav(folder / f"memo{i}.wav", 2.0, seed=i)  # each too big to inline: an upload
    out = tmp_path / "m.jsonl"
    with NVCFEmulator() as emu:
        emu.hold_uploads()
        args = ["prepare", str(folder), "-j", "1", "--no-cache", "-o", str(out)]
        args += ["--assets-url", emu.assets_url, "--api-key", KEY]
        proc = subprocess.Popen(
            [sys.executable, "-m", "nvmedia", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        assert proc.stderr is not None
        try:
            assert emu.wait_uploads_in_flight(3, timeout=HANG_GUARD_S)
            proc.send_signal(signal.SIGTERM)
            _read_until(proc.stderr.fileno(), b"uploads in progress")  # it has the signal and waits for them
        finally:
            emu.release_uploads()
        proc.communicate(timeout=HANG_GUARD_S)
        assert proc.returncode == 143
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert [Path(r["source"]).name for r in records] == ["memo0.wav", "memo1.wav", "memo2.wav"]
        assert all(r["status"] == "ok" and r["delivery"] == "asset" for r in records)
        assert {r["asset_id"] for r in records} == {a.asset_id for a in emu.assets(KEY)}


def test_an_interrupted_resume_keeps_the_earlier_records_it_had_not_reached(tmp_path: Path) -> None:
    # The earlier manifest's records past the interruption were complete: losing them would leave
    # the manifest holding less than before the resumed run started.
    folder, names, env = _held_run(tmp_path)
    age(folder)  # files modified long before the run are compared by size and mtime (README, --resume)
    out = tmp_path / "m.jsonl"
    args = [sys.executable, "-m", "nvmedia", "prepare", str(folder), "--dry-run", "--mode", "asset", "-j", "2"]
    unheld = {k: v for k, v in env.items() if k != "NVMEDIA_TEST_WORKER_HOLD"}
    subprocess.run([*args, "-o", str(out)], env=unheld, check=False, capture_output=True, timeout=HANG_GUARD_S)
    full = out.read_text().splitlines()
    assert len(full) == 16
    out.write_text("".join(line + "\n" for i, line in enumerate(full) if not 4 <= i <= 12))  # 4..12 to redo

    proc = subprocess.Popen(
        [*args, "-o", str(out), "--resume"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert proc.stderr is not None
    _read_until(proc.stderr.fileno(), b"05-broken.png: corrupt_media: ")  # 4..11 are done; 12 is held
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=HANG_GUARD_S)

    assert proc.returncode == 143, stderr
    written = [Path(json.loads(line)["source"]).name for line in out.read_text().splitlines()]
    assert written == names[:12] + names[13:]
