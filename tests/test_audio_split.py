"""--split-long-audio: audio over the profile's limit goes out as pieces cut at its pauses."""

from __future__ import annotations

import json
import math
import struct
import wave
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from nvmedia.cli import main
from nvmedia.normalize.split import PIECE_MARGIN_S, cut_points
from nvmedia.probe_av import probe_av
from nvmedia.sniff import sniff_path

RATE = 16_000
SILENCES = ((3.0, 4.2), (7.2, 8.4))
"""The pauses in the 12 s test recording; a 5 s limit must cut inside them."""


def _talk(path: Path, seconds: float = 12.0) -> Path:
    """A 16 kHz mono WAV of a 300 Hz tone, silent during SILENCES."""
    frames = bytearray()
    for n in range(int(seconds * RATE)):
        t = n / RATE
        quiet = any(a <= t < b for a, b in SILENCES)
        frames += struct.pack("<h", 0 if quiet else int(12_000 * math.sin(2 * math.pi * 300 * t)))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(bytes(frames))
    return path


def _profile(tmp_path: Path, max_audio_s: float = 5) -> Path:
    path = tmp_path / "short-audio.json"
    path.write_text(json.dumps({"base": "nemotron-3-nano-omni", "name": "short-audio", "max_audio_s": max_audio_s}))
    return path


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_long_audio_is_cut_at_its_pauses_into_pieces_within_the_limit(tmp_path: Path) -> None:
    talk = _talk(tmp_path / "talk.wav")
    out, keep = tmp_path / "m.jsonl", tmp_path / "kept"
    args = ["prepare", str(talk), "--profile", str(_profile(tmp_path)), "--split-long-audio", "--dry-run"]
    assert main([*args, "--keep", str(keep), "-o", str(out)]) == 0
    records = _records(out)
    assert len(records) == 3
    pieces = [r["piece"] for r in records]
    assert [p["index"] for p in pieces] == [1, 2, 3] and {p["count"] for p in pieces} == {3}  # type: ignore[index]
    assert pieces[0]["start_s"] == 0 and pieces[-1]["end_s"] == 12.0  # type: ignore[index]
    for before, after in zip(pieces, pieces[1:], strict=False):
        assert before["end_s"] == after["start_s"]  # type: ignore[index]
    cuts = [p["end_s"] for p in pieces[:-1]]  # type: ignore[index]
    assert all(any(a <= cut <= b for a, b in SILENCES) for cut in cuts), cuts
    total = 0.0
    for number, record in enumerate(records, 1):
        assert record["status"] == "ok" and record["source"] == str(talk)
        assert record["actions"][0] == f"split:{number}/3"  # type: ignore[index]
        suffix = {"audio/wav": ".wav", "audio/mpeg": ".mp3"}[record["output"]["mime"]]  # type: ignore[index]
        kept = keep / f"talk.part{number}{suffix}"
        assert record["kept"] == str(kept)
        measured = probe_av(kept, sniff_path(kept)).duration_s
        assert measured is not None and measured <= 5
        assert abs(measured - (record["piece"]["end_s"] - record["piece"]["start_s"])) < 0.05  # type: ignore[index]
        total += measured
    assert abs(total - 12.0) < 0.1
    assert sorted(p.name for p in keep.iterdir()) == sorted(Path(str(r["kept"])).name for r in records)


def test_pieces_share_one_request_and_are_each_sent(tmp_path: Path) -> None:
    talk = _talk(tmp_path / "talk.wav")
    out = tmp_path / "m.jsonl"
    args = ["prepare", str(talk), "--profile", str(_profile(tmp_path)), "--split-long-audio", "--group", "all"]
    assert main([*args, "--emulate", "-o", str(out)]) == 0
    *items, request = _records(out)
    assert request["type"] == "request" and len(request["content"]) == 3  # type: ignore[arg-type]
    assert request["sources"] == [str(talk)] * 3


def test_without_the_flag_long_audio_is_too_long_and_the_hint_names_it(tmp_path: Path) -> None:
    talk = _talk(tmp_path / "talk.wav")
    out = tmp_path / "m.jsonl"
    assert main(["prepare", str(talk), "--profile", str(_profile(tmp_path)), "--dry-run", "-o", str(out)]) == 1
    (record,) = _records(out)
    assert record["error"]["code"] == "too_long"  # type: ignore[index]
    assert "--split-long-audio" in record["error"]["hint"]  # type: ignore[index]


def test_audio_within_the_limit_is_not_split(tmp_path: Path) -> None:
    talk = _talk(tmp_path / "talk.wav")
    out = tmp_path / "m.jsonl"
    args = ["prepare", str(talk), "--profile", str(_profile(tmp_path, 20)), "--split-long-audio", "--dry-run"]
    assert main([*args, "-o", str(out)]) == 0
    (record,) = _records(out)
    assert "piece" not in record and record["actions"] == []


@given(
    duration=st.floats(min_value=0.5, max_value=4000),
    max_s=st.floats(min_value=2, max_value=3600),
    seed=st.integers(0, 2**16),
)
def test_cuts_cover_the_audio_with_pieces_within_the_limit(duration: float, max_s: float, seed: int) -> None:
    import random

    rng = random.Random(seed)
    levels = [rng.choice([0.0, rng.uniform(0, 3000)]) for _ in range(math.ceil(duration / 0.25))]
    cuts = cut_points(duration, max_s, levels)
    bounds = [0.0, *cuts, duration]
    lengths = [b - a for a, b in zip(bounds, bounds[1:], strict=False)]
    longest = max(max_s - PIECE_MARGIN_S, max_s / 2)
    assert all(0 < length <= longest + 1e-6 for length in lengths)
    assert all(length >= longest / 2 - 1e-6 for length in lengths[:-1])  # no needless slivers


def test_pieces_in_inline_mode_are_each_fitted_to_their_share_of_the_request(tmp_path: Path) -> None:
    talk = _talk(tmp_path / "talk.wav")
    out = tmp_path / "m.jsonl"
    args = ["prepare", str(talk), "--profile", str(_profile(tmp_path)), "--split-long-audio", "--mode", "inline"]
    assert main([*args, "-o", str(out)]) == 0
    records = _records(out)
    assert [r["status"] for r in records] == ["ok", "ok", "ok"]
    assert {r["delivery"] for r in records} == {"inline"}
    chars = [len(r["part"]["audio_url"]["url"].split(",", 1)[1]) for r in records]  # type: ignore[index]
    assert sum(chars) < 180_000
