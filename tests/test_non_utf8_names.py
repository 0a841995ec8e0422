"""File names are bytes on Linux: a name that is not UTF-8 is recorded losslessly and never stops a run.

The manifest stays valid UTF-8: ``source`` (and ``kept``) hold the name with U+FFFD for each
byte that is not UTF-8, and ``source_bytes_b64`` (``kept_bytes_b64``) the name's exact bytes.
Lines on stderr show such a byte as ``\\xNN``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from support import CORPUS, sha256_file

HOPPER = CORPUS / "pillow__hopper.png"


def _folder_with_a_latin1_name(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(HOPPER, os.path.join(os.fsencode(folder), b"caf\xe9.png"))
    shutil.copy(CORPUS / "pillow__truncated_image.png", os.path.join(os.fsencode(folder), b"d\xe9j\xe0_broken.png"))
    shutil.copy(CORPUS / "pillow__hopper.bmp", folder / "plain.bmp")
    return folder


def _nvmedia(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "nvmedia", *args], capture_output=True, timeout=300)


def _records(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]  # strict: the manifest is UTF-8


def test_a_non_utf8_name_is_recorded_losslessly_and_the_run_goes_on(tmp_path: Path) -> None:
    folder = _folder_with_a_latin1_name(tmp_path)
    kept, out = tmp_path / "kept", tmp_path / "m.jsonl"
    done = _nvmedia("prepare", str(folder), "--dry-run", "--keep", str(kept), "-o", str(out))
    assert done.returncode == 1, done.stderr  # the broken PNG is an error; nothing else stops the run
    records = {r["source"].rsplit("/", 1)[-1]: r for r in _records(out.read_bytes())}
    assert sorted(records) == ["caf\ufffd.png", "d\ufffdj\ufffd_broken.png", "plain.bmp"]

    cafe = records["caf\ufffd.png"]
    assert cafe["status"] == "ok"
    assert base64.b64decode(cafe["source_bytes_b64"]) == os.path.join(os.fsencode(folder), b"caf\xe9.png")
    kept_bytes = base64.b64decode(cafe["kept_bytes_b64"])
    assert kept_bytes == os.path.join(os.fsencode(kept), b"caf\xe9.png")
    assert cafe["kept"] == os.fsdecode(kept_bytes).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    assert sha256_file(Path(os.fsdecode(kept_bytes))) == cafe["output"]["sha256"]

    broken = records["d\ufffdj\ufffd_broken.png"]
    assert broken["status"] == "error" and broken["error"]["code"] == "corrupt_media"
    assert base64.b64decode(broken["source_bytes_b64"]).endswith(b"d\xe9j\xe0_broken.png")
    assert "source_bytes_b64" not in records["plain.bmp"] and "kept_bytes_b64" not in records["plain.bmp"]

    # The error line on stderr names the file with its odd bytes spelled out.
    assert b"d\\xe9j\\xe0_broken.png: corrupt_media: " in done.stderr
    assert b"Traceback" not in done.stderr


def test_a_non_utf8_name_on_stdout_and_in_a_request_record(tmp_path: Path) -> None:
    folder = _folder_with_a_latin1_name(tmp_path)
    (folder / "plain.bmp").unlink()
    done = _nvmedia("prepare", str(folder), "--dry-run", "--group", "all")
    assert done.returncode == 1, done.stderr
    *items, request = _records(done.stdout)
    assert request["type"] == "request"
    assert [r["source"].rsplit("/", 1)[-1] for r in items] == ["caf\ufffd.png", "d\ufffdj\ufffd_broken.png"]
    assert request["sources"] == [items[0]["source"]]  # the broken file is not in the request
    assert [base64.b64decode(b) for b in request["sources_bytes_b64"]] == [
        base64.b64decode(items[0]["source_bytes_b64"])
    ]


def test_inspect_shows_a_non_utf8_name(tmp_path: Path) -> None:
    folder = _folder_with_a_latin1_name(tmp_path)
    name = os.fsdecode(os.path.join(os.fsencode(folder), b"caf\xe9.png"))
    shown = _nvmedia("inspect", name)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0].endswith(b"caf\\xe9.png")
    as_json = _nvmedia("inspect", name, "--json")
    assert as_json.returncode == 0, as_json.stderr
    (record,) = _records(as_json.stdout)
    assert base64.b64decode(record["source_bytes_b64"]) == os.fsencode(name)
