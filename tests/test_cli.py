"""The `nvmedia` command end to end: manifest records, exit codes, bad input."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
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
    assert [r["status"] for r in records] == ["ok", "error", "error", "ok"]
    assert records[1]["error"]["code"] == "corrupt_media" and records[1]["error"]["hint"]
    assert records[2]["error"]["code"] == "unsupported_format"  # its extension claims media, its bytes are HTML


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


def test_no_progress_but_the_summary_when_stderr_is_not_a_terminal() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nvmedia", "prepare", str(PLAIN_WEBP), "--dry-run"], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert done.stderr == "1 input: 1 ok, 0 skipped, 0 errors; 0 uploaded\n"


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
        if pool == "process":  # the summary and one line per error; not even libtiff's own complaint
            assert "TIFFFillStrip" not in done.stderr and "Read error" not in done.stderr
    assert manifests["process"] == manifests["thread"]
    assert manifests["process"].count("\n") == len([p for p in CORPUS.iterdir() if p.is_file()])


def _nvmedia_with(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with the worker test hooks of README's "Development" section in its environment."""
    return subprocess.run(
        [sys.executable, "-m", "nvmedia", *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=600
    )


def test_a_worker_killed_mid_run_loses_nothing(tmp_path: Path) -> None:
    # A worker process dies (as when the OOM killer takes it) while it holds a batch: the work
    # it held is redone, and the manifest is the one a quiet run writes.
    folder = tmp_path / "many"
    for copy in range(2):
        shutil.copytree(CORPUS, folder / f"copy{copy}")
    died = tmp_path / "died"
    hook = {
        "NVMEDIA_TEST_WORKER_EXIT": str(folder / "copy0" / "pillow__hopper.png"),
        "NVMEDIA_TEST_WORKER_EXIT_ONCE": str(died),
    }
    args = ["prepare", str(folder), "--dry-run", "-j", "2", "--pool", "process"]
    killed = _nvmedia_with(hook, *args, "-o", str(tmp_path / "killed.jsonl"))
    assert died.exists(), "no worker process met the file"
    assert killed.returncode == 1 and "Traceback" not in killed.stderr, killed.stderr  # 1: broken files on purpose
    quiet = _nvmedia_with({}, *args, "-o", str(tmp_path / "quiet.jsonl"))
    assert quiet.returncode == 1, quiet.stderr
    assert (tmp_path / "killed.jsonl").read_text() == (tmp_path / "quiet.jsonl").read_text()


def test_a_file_that_kills_its_worker_every_time_is_an_error_and_the_run_goes_on(tmp_path: Path) -> None:
    # A file whose reading kills the worker again when it is read alone (as a decoder that
    # crashes on it would) ends as an error record; every other file is processed.
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("pillow__hopper.webp", "pillow__flower.jpg", "pillow__hopper.png", "pillow__hopper.bmp"):
        shutil.copy(CORPUS / name, folder / name)
    out = tmp_path / "m.jsonl"
    hook = {"NVMEDIA_TEST_WORKER_EXIT": str(folder / "pillow__hopper.png")}
    done = _nvmedia_with(hook, "prepare", str(folder), "--dry-run", "-j", "2", "--pool", "process", "-o", str(out))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    records = {Path(r["source"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert records["pillow__hopper.png"]["status"] == "error"
    assert records["pillow__hopper.png"]["error"]["code"] == "corrupt_media"
    assert "died" in records["pillow__hopper.png"]["error"]["message"]
    assert [records[n]["status"] for n in sorted(records) if n != "pillow__hopper.png"] == ["ok", "ok", "ok"]


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


# -- what the command says on stderr ------------------------------------------------------------


def _folder_with_one_broken_file(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(HOPPER, folder / "a.png")
    shutil.copy(CORPUS / "pillow__truncated_image.png", folder / "b.png")
    return folder


def test_summary_and_one_line_per_error_go_to_stderr_when_it_is_not_a_terminal(tmp_path: Path) -> None:
    folder = _folder_with_one_broken_file(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "nvmedia", "prepare", str(folder), "--dry-run", "-o", str(tmp_path / "m.jsonl")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    error_line, summary = done.stderr.splitlines()
    assert error_line.startswith(f"{folder / 'b.png'}: corrupt_media: ")
    assert summary == f"2 inputs: 1 ok, 0 skipped, 1 error; 0 uploaded -> {tmp_path / 'm.jsonl'}"
    assert "\r" not in done.stderr and "\x1b" not in done.stderr  # no progress bar off a terminal


def test_quiet_silences_the_summary_and_the_error_lines(tmp_path: Path) -> None:
    folder = _folder_with_one_broken_file(tmp_path)
    for flag in ("-q", "--quiet"):
        done = subprocess.run(
            [sys.executable, "-m", "nvmedia", "prepare", str(folder), "--dry-run", flag], capture_output=True, text=True
        )
        assert done.returncode == 1 and done.stderr == ""
        assert len(done.stdout.splitlines()) == 2


def test_a_missing_key_is_found_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # In auto mode an upload may be needed (here the 2.6 MB WAV is): no normalizing, no kept file.
    monkeypatch.delenv("NVIDIA_API_KEY", raising=False)
    kept = tmp_path / "kept"
    args = ["prepare", str(PLAIN_WEBP), str(CORPUS / "pydub__test1-24bit.wav"), "--keep", str(kept), "--no-cache"]
    code, records, err = run_cli(args, capsys)
    assert code == 2 and records == []
    assert "NVIDIA_API_KEY" in err and err.count("\n") == 1
    assert not kept.exists() or not any(kept.iterdir())


def test_no_key_is_needed_when_nothing_can_be_uploaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NVIDIA_API_KEY", raising=False)
    for extra in (["--dry-run"], ["--mode", "inline"]):
        code, records, _ = run_cli(["prepare", str(PLAIN_WEBP), *extra], capsys)
        assert code == 0 and records[0]["status"] == "ok"


def test_an_unreachable_asset_api_is_found_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kept = tmp_path / "kept"
    url = "http://127.0.0.1:9/v2/nvcf/assets"
    args = ["prepare", str(PLAIN_WEBP), "--keep", str(kept), "--assets-url", url, "--api-key", "k", "--no-cache"]
    code, records, err = run_cli(args, capsys)
    assert code == 2 and records == []
    assert "unreachable" in err and err.count("\n") == 1
    assert not kept.exists() or not any(kept.iterdir())


def test_the_manifest_being_written_is_not_an_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(HOPPER, folder / "a.png")
    out = folder / "m.jsonl"
    for _ in range(2):  # the second run finds the first run's manifest in the folder
        code, _, _ = run_cli(["prepare", str(folder), "--dry-run", "-o", str(out)], capsys)
        assert code == 0
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert [Path(r["source"]).name for r in records] == ["a.png"]


def test_bytes_that_are_not_media_behind_a_media_extension_are_an_error_in_a_folder_walk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import random

    from nvmedia.sniff import sniff_bytes

    folder = tmp_path / "in"
    folder.mkdir()
    noise = bytes([0]) + random.Random(7).randbytes(8191)
    assert not sniff_bytes(noise).is_media
    (folder / "clip.mp4").write_bytes(noise)
    (folder / "notes.txt").write_text("shopping list")
    (folder / "blob").write_bytes(noise)
    code, records, _ = run_cli(["prepare", str(folder), "--dry-run"], capsys)
    assert code == 1
    by_name = {Path(r["source"]).name: r for r in records}
    assert by_name["clip.mp4"]["status"] == "error"
    assert by_name["clip.mp4"]["error"]["code"] == "unsupported_format"
    assert ".mp4" in by_name["clip.mp4"]["error"]["message"] and by_name["clip.mp4"]["error"]["hint"]
    assert by_name["notes.txt"]["status"] == "skipped" and by_name["blob"]["status"] == "skipped"


def test_messages_read_as_english(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    noise = tmp_path / "noise.bin"
    noise.write_bytes(bytes([0]) + bytes(range(1, 256)) * 8)
    code, records, _ = run_cli(["prepare", str(noise), "--dry-run"], capsys)
    assert code == 1
    message = records[0]["error"]["message"]
    assert "unrecognised data" in message and " a unrecognised" not in message
    done = subprocess.run(
        [sys.executable, "-m", "nvmedia", "prepare", str(noise), str(HOPPER), "--dry-run"],
        capture_output=True,
        text=True,
    )
    assert done.stderr.splitlines()[-1] == "2 inputs: 1 ok, 0 skipped, 1 error; 0 uploaded"


def _pty_run(args: list[str], columns: int, env: dict[str, str] | None = None) -> tuple[int, bytes]:
    """Run the CLI with stderr on a pseudo-terminal ``columns`` wide; returns the exit status and what it drew."""
    import fcntl
    import pty
    import struct
    import termios

    main_fd, tty_fd = pty.openpty()
    fcntl.ioctl(tty_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "nvmedia", *args],
        stdout=subprocess.DEVNULL,
        stderr=tty_fd,
        env={**os.environ, **(env or {})},
    )
    os.close(tty_fd)
    shown = b""
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # EIO once the child side is closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(main_fd)
    return proc.wait(timeout=300), shown


def _display_width(text: str) -> int:
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def test_the_progress_line_fits_the_terminal_and_names_the_file_in_progress(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    names = [f"{i:02d}-a-rather-long-file-name-from-a-phone-写真-{'x' * 30}.webp" for i in range(20)]
    for name in names:
        shutil.copy(PLAIN_WEBP, folder / name)
    # One worker thread: batches of files finish in input order, so the file in progress when
    # K files are done is the K-th (0-based); the last one finished is the (K-1)-th.
    code, shown = _pty_run(["prepare", str(folder), "--dry-run", "-j", "1", "--pool", "thread"], columns=60)
    assert code == 0
    frames = [f.replace("\x1b[K", "") for f in shown.decode("utf-8").replace("\r\n", "\n").split("\r")]
    bars = [f for f in frames if "/20" in f and "\n" not in f]
    assert bars, shown
    for bar in bars:
        assert _display_width(bar) < 60, bar
        head, label = bar.split("/20 ", 1)
        done = int(head.rsplit(" ", 1)[-1])
        if done < 20:
            assert label.startswith(names[done][:3]), bar


SECRET_KEY = "nvapi-SECRET-typed-after-a-misspelled-flag"


@pytest.mark.parametrize(
    "typo",
    [["--api-kye", SECRET_KEY], [f"--apikey={SECRET_KEY}"], ["--key", SECRET_KEY], ["--token", SECRET_KEY]],
    ids=["misspelled", "joined", "short", "token"],
)
def test_a_misspelled_key_option_never_echoes_the_key(typo: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", str(HOPPER), "--dry-run", *typo])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert SECRET_KEY not in err and "unrecognized arguments" in err and "REDACTED" in err
