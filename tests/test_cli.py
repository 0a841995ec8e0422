"""The `nvmedia` command end to end: manifest records, exit codes, bad input."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support import CORPUS, sha256_file

from nvmedia.cli import main

HOPPER = CORPUS / "pillow__hopper.png"
PLAIN_WEBP = CORPUS / "pillow__hopper.webp"  # compliant and without metadata


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, Any]], str]:
    code = main(args)
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
    return code, records, captured.err


def test_compliant_image_passes_through_inline_with_contract_fields(capsys: pytest.CaptureFixture[str]) -> None:
    code, records, _ = run_cli(["prepare", str(PLAIN_WEBP), "--mode", "inline"], capsys)
    assert code == 0
    (rec,) = records
    assert rec["type"] == "item" and rec["status"] == "ok" and rec["kind"] == "image"
    assert rec["input"] == {"mime": "image/webp", "bytes": PLAIN_WEBP.stat().st_size, "width": 128, "height": 128}
    assert rec["output"]["sha256"] == sha256_file(PLAIN_WEBP)
    assert rec["actions"] == [] and rec["delivery"] == "inline" and rec["asset_id"] is None
    url = rec["part"]["image_url"]["url"]
    assert rec["part"]["type"] == "image_url" and url.startswith("data:image/webp;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == PLAIN_WEBP.read_bytes()
    assert rec["tag"] == f'<img src="{url}" />'
    assert rec["headers"] == {} and rec["warnings"] == []


def test_manifest_goes_to_the_output_file_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.jsonl"
    code, records, _ = run_cli(["prepare", str(HOPPER), "-o", str(out), "--dry-run"], capsys)
    assert code == 0 and records == []
    assert json.loads(out.read_text())["source"] == str(HOPPER)


def test_folder_run_reports_every_file_and_one_bad_file_does_not_stop_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(HOPPER, folder / "a.png")
    shutil.copy(CORPUS / "pillow__truncated_image.png", folder / "b.png")
    (folder / "c.jpg").write_text("<html><body>not a photo</body></html>")
    shutil.copy(HOPPER, folder / "d.png")
    code, records, _ = run_cli(["prepare", str(folder), "--dry-run"], capsys)
    assert code == 1
    assert [Path(r["source"]).name for r in records] == ["a.png", "b.png", "c.jpg", "d.png"]
    assert [r["status"] for r in records] == ["ok", "error", "skipped", "ok"]
    assert records[1]["error"]["code"] == "corrupt_media" and records[1]["error"]["hint"]
    assert records[2]["reason"].startswith("not media")


def test_html_named_jpg_given_explicitly_is_unsupported_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = tmp_path / "photo.jpg"
    fake.write_text("<!doctype html><html></html>")
    code, records, _ = run_cli(["prepare", str(fake), "--dry-run"], capsys)
    assert code == 1 and records[0]["error"]["code"] == "unsupported_format"


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("small__yaml.yml", "empty"),
        ("pillow__truncated_jpeg.jpg", "corrupt_media"),
        ("pillow__truncated_image.png", "corrupt_media"),
        ("small__webp.webp", "corrupt_media"),
        ("small__svg.svg", "unsupported_format"),
        ("pillow__decompression_bomb.gif", "too_large"),
    ],
)
def test_bad_input_gets_a_stable_code_and_a_hint(name: str, code: str, capsys: pytest.CaptureFixture[str]) -> None:
    exit_code, records, _ = run_cli(["prepare", str(CORPUS / name), "--dry-run"], capsys)
    assert exit_code == 1
    assert records[0]["status"] == "error"
    assert records[0]["error"]["code"] == code
    assert records[0]["error"]["message"] and records[0]["error"]["hint"]


def test_missing_path_is_not_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, records, _ = run_cli(["prepare", str(tmp_path / "nope.png"), "--dry-run"], capsys)
    assert code == 1 and records[0]["error"]["code"] == "not_found"


def test_unreadable_file_is_unreadable(capsys: pytest.CaptureFixture[str]) -> None:
    # /proc/self/mem is a regular file that fails to read at offset 0 for every user, root included
    # (root ignores permission bits, so chmod 000 would not make a file unreadable in CI).
    code, records, _ = run_cli(["prepare", "/proc/self/mem", "--dry-run"], capsys)
    assert code == 1 and records[0]["error"]["code"] == "unreadable"


def test_symlink_loop_and_outside_link_are_skipped_with_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    shutil.copy(HOPPER, root / "sub" / "a.png")
    os.symlink(root, root / "sub" / "loop")
    secret = tmp_path / "outside.png"
    shutil.copy(HOPPER, secret)
    os.symlink(secret, root / "escape.png")
    code, records, _ = run_cli(["prepare", str(root), "--dry-run"], capsys)
    assert code == 0
    by_name = {Path(r["source"]).name: r for r in records}
    assert by_name["escape.png"]["status"] == "skipped" and "outside" in by_name["escape.png"]["reason"]
    assert by_name["loop"]["status"] == "skipped" and "loop" in by_name["loop"]["reason"]
    assert by_name["a.png"]["status"] == "ok"


def test_odd_file_names_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = ["with space.png", "ünïcødé 写真.png", "-leading-dash.png", "%d pattern.png"]
    for name in names:
        shutil.copy(HOPPER, tmp_path / name)
    os.chdir(tmp_path)
    code, records, _ = run_cli(["prepare", "--dry-run", "--", *names], capsys)
    assert code == 0
    assert [r["source"] for r in records] == names
    assert all(r["status"] == "ok" for r in records)


def test_sources_are_never_modified(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    shutil.copytree(CORPUS, folder)
    before = {p.name: sha256_file(p) for p in folder.iterdir()}
    run_cli(["prepare", str(folder), "--dry-run", "--keep", str(tmp_path / "kept")], capsys)
    after = {p.name: sha256_file(p) for p in folder.iterdir()}
    assert before == after


def test_keep_writes_normalized_copies_at_relative_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "photos"
    (folder / "trip").mkdir(parents=True)
    shutil.copy(CORPUS / "pillow__hopper.bmp", folder / "trip" / "cat.bmp")
    kept = tmp_path / "kept"
    code, records, _ = run_cli(["prepare", str(folder), "--dry-run", "--keep", str(kept)], capsys)
    assert code == 0
    assert records[0]["kept"] == str(kept / "trip" / "cat.png")
    assert (kept / "trip" / "cat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_profile_is_exit_2_with_known_names(capsys: pytest.CaptureFixture[str]) -> None:
    code, records, err = run_cli(["prepare", str(HOPPER), "--profile", "nope"], capsys)
    assert code == 2 and records == []
    assert "nemotron-3-nano-omni" in err and err.count("\n") == 1


def test_bad_flag_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["prepare", str(HOPPER), "--mode", "sideways"])
    assert exc.value.code == 2


def test_upload_without_a_key_is_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("NVIDIA_API_KEY", raising=False)
    code, _, err = run_cli(["prepare", str(HOPPER), "--mode", "asset", "--no-cache"], capsys)
    assert code == 2
    assert "NVIDIA_API_KEY" in err and err.count("\n") == 1


def test_dry_run_reports_asset_delivery_without_parts(capsys: pytest.CaptureFixture[str]) -> None:
    code, records, _ = run_cli(["prepare", str(HOPPER), "--dry-run", "--mode", "asset"], capsys)
    assert code == 0
    (rec,) = records
    assert rec["delivery"] == "asset" and rec["asset_id"] is None
    assert "part" not in rec and "tag" not in rec and "headers" not in rec


def test_python_dash_m_and_console_script_behave_the_same(tmp_path: Path) -> None:
    args = ["prepare", str(HOPPER), "--dry-run"]
    via_module = subprocess.run([sys.executable, "-m", "nvmedia", *args], capture_output=True, text=True)
    script = Path(sys.executable).with_name("nvmedia")
    via_script = subprocess.run([str(script), *args], capture_output=True, text=True)
    assert via_module.returncode == via_script.returncode == 0
    assert via_module.stdout == via_script.stdout
    assert json.loads(via_module.stdout)["status"] == "ok"


def test_help_lists_the_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "nvmedia", "--help"], capture_output=True, text=True).stdout
    for command in ("prepare", "inspect", "assets", "emulator"):
        assert command in out


def test_progress_shows_on_a_terminal_and_never_in_the_manifest(tmp_path: Path) -> None:
    import pty

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        shutil.copy(PLAIN_WEBP, folder / f"{i}.webp")
    main_fd, tty_fd = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nvmedia", "prepare", str(folder), "--dry-run"],
        stdout=subprocess.PIPE,
        stderr=tty_fd,
    )
    os.close(tty_fd)
    out, _ = proc.communicate(timeout=60)
    shown = b""
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(main_fd)
    assert proc.returncode == 0
    assert b"3/3" in shown and b"normalize" in shown
    assert b"3 inputs: 3 ok, 0 skipped, 0 errors; 0 uploaded" in shown
    assert b"normalize" not in out and len(out.splitlines()) == 3


def test_no_progress_when_stderr_is_not_a_terminal() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nvmedia", "prepare", str(PLAIN_WEBP), "--dry-run"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stderr == ""


def test_forked_worker_processes_give_the_same_manifest_as_one_thread(tmp_path: Path) -> None:
    # A fresh `nvmedia` process has no other thread, so -j 2 forks two worker processes there;
    # every record (images, audio, video, broken files) must match the single-thread run's.
    manifests = {}
    for pool, jobs in (("process", "2"), ("thread", "1")):
        out = tmp_path / f"{pool}.jsonl"
        args = ["prepare", str(CORPUS), "--dry-run", "-j", jobs, "--pool", pool, "-o", str(out)]
        done = subprocess.run([sys.executable, "-m", "nvmedia", *args], capture_output=True, text=True)
        assert done.returncode == 1, done.stderr  # the corpus holds broken files on purpose
        manifests[pool] = out.read_text()
        if pool == "process":
            assert done.stderr == ""  # not even libtiff's own complaint about the broken TIFF
    assert manifests["process"] == manifests["thread"]
    assert manifests["process"].count("\n") == len([p for p in CORPUS.iterdir() if p.is_file()])


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").iterdir():
            children = [int(c) for c in (task / "children").read_text().split()]
            found.extend(children)
            todo.extend(children)
    return found


def _kill_workers_while_running(cmd: list[str], *, holding: str | None = None, times: int = 1) -> tuple[int, str, int]:
    """Run ``cmd`` and SIGKILL nvmedia's worker processes under it, as the OOM killer would.

    Kills a worker ``times`` times: any forked worker (``holding`` None) or one that has the
    file named ``holding`` open. Returns the exit status, stderr, and how many were killed.
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed = 0
    while proc.poll() is None and killed < times:
        try:
            for child in _descendants(proc.pid):
                if holding is None:
                    hit = Path(f"/proc/{child}/cmdline").read_bytes() == Path(f"/proc/{proc.pid}/cmdline").read_bytes()
                else:
                    hit = any(os.readlink(fd).endswith(holding) for fd in Path(f"/proc/{child}/fd").iterdir())
                if hit:
                    os.kill(child, signal.SIGKILL)
                    killed += 1
                    time.sleep(0.05)  # let the pool notice before looking again
                    break
        except (FileNotFoundError, ProcessLookupError):
            continue  # a process ended while we looked
    _, stderr = proc.communicate(timeout=300)
    return proc.returncode, stderr, killed


needs_proc = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the workers")


@needs_proc
def test_a_worker_killed_mid_run_loses_nothing(tmp_path: Path) -> None:
    # The OOM killer takes a worker: the work it held is redone, and the manifest is the one a
    # quiet run writes.
    folder = tmp_path / "many"
    for copy in range(6):
        shutil.copytree(CORPUS, folder / f"copy{copy}")
    args = [sys.executable, "-m", "nvmedia", "prepare", str(folder), "--dry-run", "-j", "2"]
    status, stderr, killed = _kill_workers_while_running([*args, "-o", str(tmp_path / "killed.jsonl")])
    assert killed == 1, "the run ended before a worker could be killed"
    assert status == 1 and "Traceback" not in stderr, stderr  # 1: the corpus holds broken files on purpose
    quiet = subprocess.run([*args, "-o", str(tmp_path / "quiet.jsonl")], capture_output=True, text=True)
    assert quiet.returncode == 1, quiet.stderr
    assert (tmp_path / "killed.jsonl").read_text() == (tmp_path / "quiet.jsonl").read_text()


@needs_proc
def test_a_file_that_kills_its_worker_every_time_is_an_error_and_the_run_goes_on(tmp_path: Path) -> None:
    # A file whose reading kills the worker again when it is read alone (as a decoder that
    # crashes on it would) ends as an error record; every other file is processed.
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("pillow__hopper.webp", "pillow__flower.jpg", "pillow__hopper.png"):
        shutil.copy(CORPUS / name, folder / name)
    with (folder / "m_long.wav").open("wb") as fh:  # 6 minutes of silence: a few hundred ms to validate
        data = 44_100 * 2 * 2 * 360
        fh.write(b"RIFF" + (36 + data).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little"))
        fh.write((1).to_bytes(2, "little") + (2).to_bytes(2, "little") + (44_100).to_bytes(4, "little"))
        fh.write((44_100 * 4).to_bytes(4, "little") + (4).to_bytes(2, "little") + (16).to_bytes(2, "little"))
        fh.write(b"data" + data.to_bytes(4, "little"))
        fh.truncate(44 + data)
    out = tmp_path / "m.jsonl"
    cmd = [sys.executable, "-m", "nvmedia", "prepare", str(folder), "--dry-run", "-j", "2", "-o", str(out)]
    status, stderr, killed = _kill_workers_while_running(cmd, holding="m_long.wav", times=2)
    assert killed == 2
    assert status == 1 and "Traceback" not in stderr, stderr
    records = {Path(r["source"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert records["m_long.wav"]["status"] == "error"
    assert records["m_long.wav"]["error"]["code"] == "corrupt_media"
    assert "died" in records["m_long.wav"]["error"]["message"]
    assert [records[n]["status"] for n in sorted(records) if n != "m_long.wav"] == ["ok", "ok", "ok"]


def test_workers_are_threads_when_the_process_already_runs_other_threads() -> None:
    # Forking copies no other thread, so a lock another thread holds (the import lock, malloc's,
    # libav's) stays locked in the child forever: with another thread alive, nvmedia must not fork.
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from nvmedia.workers import _pool

    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        with _pool("process", 2) as pool:
            assert isinstance(pool, ThreadPoolExecutor)
    finally:
        stop.set()
        other.join()
