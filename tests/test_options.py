"""The one option table: flags and parameters from the same rows, hints named for the front door in use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_audio_split import _profile, _talk

import nvmedia
from nvmedia.cli import main


def test_a_hint_names_the_parameter_in_the_library_and_the_flag_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    talk, profile = _talk(tmp_path / "talk.wav"), _profile(tmp_path)
    prep = nvmedia.prepare([talk], profile=profile, dry_run=True, on_error="keep")
    (item,) = prep.items
    assert item.error is not None and item.error.code == "too_long"
    assert "trim_s=5" in item.error.hint and "split_long_audio=True" in item.error.hint
    assert "--" not in item.error.hint

    assert main(["prepare", str(talk), "--profile", str(profile), "--dry-run"]) == 1
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert record["error"]["code"] == "too_long"
    assert "--trim 5" in record["error"]["hint"] and "--split-long-audio" in record["error"]["hint"]
    assert "trim_s" not in record["error"]["hint"]
