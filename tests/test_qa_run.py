"""Findings of the QA pass on chat, batch, the emulator, --keep, names and temporary folders.

Each test reproduces one finding as a user meets it (the command line, real files, the real
emulator over loopback) and pins the behaviour that replaced it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import CORPUS

from nvmedia.cli import main

HOPPER = CORPUS / "pillow__hopper.png"
BROKEN = CORPUS / "pillow__truncated_image.png"
KEY = "nvapi-test-key-qa"


@pytest.fixture(autouse=True)
def no_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NVIDIA_API_KEY", raising=False)
    monkeypatch.delenv("NVMEDIA_ASSETS_URL", raising=False)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def nvmedia(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nvmedia", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


# -- #2: control characters in names ------------------------------------------------------------------------


def _names_with_control_characters(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("bad\nname.png", "tab\there.png", "esc\x1b[31mred.png"):
        shutil.copy(BROKEN, folder / name)
    return folder


def test_control_characters_in_names_are_escaped_on_stderr_one_line_per_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _names_with_control_characters(tmp_path)
    code = main(["prepare", str(folder), "--dry-run", "-o", str(tmp_path / "m.jsonl")])
    lines = capsys.readouterr().err.splitlines()
    assert code == 1
    assert len(lines) == 4 and lines[-1].startswith("3 inputs: 0 ok, 0 skipped, 3 errors")
    assert lines[0].startswith(f"{folder}/bad\\nname.png: corrupt_media: bad\\nname.png: ")
    assert lines[1].startswith(f"{folder}/esc\\x1b[31mred.png: corrupt_media: ")
    assert lines[2].startswith(f"{folder}/tab\\there.png: corrupt_media: ")
    assert not any(c in "".join(lines) for c in "\t\x1b\r")


def test_control_characters_in_names_are_escaped_by_inspect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _names_with_control_characters(tmp_path)
    code = main(["inspect", str(folder / "bad\nname.png")])
    out = capsys.readouterr().out
    assert code == 1
    heading, given, error, hint = out.splitlines()
    assert heading == f"{folder}/bad\\nname.png" and given.startswith("  input:   image ")
    assert error.startswith("  error:   corrupt_media: bad\\nname.png: ") and hint.startswith("  hint:    ")


def test_control_characters_in_names_are_escaped_in_batch_error_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _names_with_control_characters(tmp_path)
    code = main(["batch", "Describe.", str(folder / "bad\nname.png"), "--emulate", "-o", str(tmp_path / "a.jsonl")])
    lines = capsys.readouterr().err.splitlines()
    assert code == 1 and len(lines) == 2
    assert lines[0].startswith(f"nvmedia: error: {folder}/bad\\nname.png: corrupt_media: bad\\nname.png: ")
