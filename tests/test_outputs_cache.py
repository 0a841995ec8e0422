"""The normalized-output cache: a repeated run converts nothing again, and never gives a wrong output.

Hits are observed from outside: ffmpeg (behind a logging script) does not run, the summary
line counts the converted files reused, and the manifest (with the outputs' bytes inline)
is the first run's byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from rerun_support import age, cli, conversions, lines, logging_ffmpeg, mixed_folder, nvmedia, nvmedia_on_a_terminal
from support import CORPUS

import nvmedia as nvm
from nvmedia.config import parse_size
from nvmedia.normalize import NormalizedMedia
from nvmedia.outputs_cache import OutputCache
from nvmedia.probe import MediaInfo
from nvmedia.source_state import file_sha256


@pytest.fixture()
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The output cache on (64 MiB), in a folder of the test's own."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("NVMEDIA_CACHE_DIR", str(folder))
    monkeypatch.setenv("NVMEDIA_OUTPUT_CACHE_SIZE", "64M")
    return folder / "outputs"


@pytest.fixture()
def ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script, log = logging_ffmpeg(tmp_path / "bin")
    monkeypatch.setenv("NVMEDIA_FFMPEG", str(script))
    return log


def _entries(cache_dir: Path) -> dict[str, Path]:
    """Each entry file, by the SHA-256 of its (first) output."""
    found = {}
    for entry in (cache_dir / "entries").glob("*.entry"):
        with entry.open("rb") as fh:
            length = int(fh.readline().split()[2])
            header = json.loads(fh.read(length))
        found[header["outputs"][0]["info"]["sha256"]] = entry
    return found


def test_a_repeated_run_converts_nothing_again(tmp_path: Path, cache_dir: Path, ffmpeg: Path) -> None:
    folder = mixed_folder(tmp_path / "in")
    status, err = cli("prepare", folder, "--mode", "inline", "-o", tmp_path / "first.jsonl")
    assert status == 1, err  # 5_broken.png
    assert conversions(ffmpeg)
    ffmpeg.write_text("")
    status, shown = nvmedia_on_a_terminal("prepare", folder, "--mode", "inline", "-o", tmp_path / "second.jsonl")
    assert status == 1, shown
    assert lines(tmp_path / "second.jsonl") == lines(tmp_path / "first.jsonl")
    assert conversions(ffmpeg) == []
    assert "4 converted files reused" in shown  # FLAC, photo, BMP, GIF; the WEBP passes through


def test_a_damaged_or_truncated_entry_is_a_miss_and_the_output_is_right(
    tmp_path: Path, cache_dir: Path, ffmpeg: Path
) -> None:
    folder = mixed_folder(tmp_path / "in")
    cli("prepare", folder, "--mode", "inline", "-o", tmp_path / "first.jsonl")
    first = [json.loads(line) for line in lines(tmp_path / "first.jsonl")]
    by_name = {Path(r["source"]).name: r for r in first}
    entries = _entries(cache_dir)
    talk = entries[by_name["1_talk.flac"]["output"]["sha256"]]
    cat = entries[by_name["3_cat.bmp"]["output"]["sha256"]]
    photo = entries[by_name["2_photo.jpg"]["output"]["sha256"]]
    data = bytearray(cat.read_bytes())
    data[-10] ^= 0x01  # one bit of the PNG's bytes
    cat.write_bytes(bytes(data))
    talk.write_bytes(talk.read_bytes()[:-1000])  # cut short, as a full disk would leave it
    photo.write_bytes(b"nvmedia-output-cache 1 12 " + b"0" * 64 + b"\n{}")  # a header that lies
    ffmpeg.write_text("")
    status, err = cli("prepare", folder, "--mode", "inline", "-o", tmp_path / "second.jsonl")
    assert status == 1, err
    assert lines(tmp_path / "second.jsonl") == lines(tmp_path / "first.jsonl")
    assert len(conversions(ffmpeg)) >= 1, "the FLAC was converted again"
    again = _entries(cache_dir)
    for name in ("1_talk.flac", "2_photo.jpg", "3_cat.bmp"):  # stored again, whole
        sha = by_name[name]["output"]["sha256"]
        with again[sha].open("rb") as fh:
            length = int(fh.readline().split()[2])
            fh.seek(length, os.SEEK_CUR)
            assert hashlib.sha256(fh.read()).hexdigest() == sha


def test_a_cached_output_is_never_used_under_other_options(tmp_path: Path, cache_dir: Path, ffmpeg: Path) -> None:
    talk = tmp_path / "talk.flac"
    shutil.copyfile(CORPUS / "pydub__test-192khz-32bit.flac", talk)
    age(tmp_path)
    profile = tmp_path / "narrow.json"
    profile.write_text(json.dumps({"base": "nemotron-3-nano-omni", "name": "narrow", "audio_sample_rate": 8000}))
    assert cli("prepare", talk, "--dry-run", "-o", tmp_path / "a.jsonl")[0] == 0
    ffmpeg.write_text("")
    assert cli("prepare", talk, "--dry-run", "--profile", profile, "-o", tmp_path / "b.jsonl")[0] == 0
    assert conversions(ffmpeg), "another profile: converted again"
    assert json.loads(lines(tmp_path / "b.jsonl")[0])["output"]["sample_rate"] == 8000
    ffmpeg.write_text("")
    assert cli("prepare", talk, "--dry-run", "--trim", "3", "-o", tmp_path / "c.jsonl")[0] == 0
    assert cli("prepare", talk, "--mode", "inline", "--dry-run", "-o", tmp_path / "d.jsonl")[0] == 0
    assert len(conversions(ffmpeg)) >= 2, "--trim and an inline budget are other options too"


def test_the_pieces_of_a_split_recording_are_reused_together(tmp_path: Path, cache_dir: Path, ffmpeg: Path) -> None:
    from test_audio_split import _profile, _talk

    talk = _talk(tmp_path / "talk.wav")
    age(tmp_path)
    args = ["prepare", talk, "--profile", _profile(tmp_path), "--split-long-audio", "--dry-run"]
    assert cli(*args, "-o", tmp_path / "a.jsonl")[0] == 0
    assert len(lines(tmp_path / "a.jsonl")) == 3 and conversions(ffmpeg)
    ffmpeg.write_text("")
    assert cli(*args, "-o", tmp_path / "b.jsonl")[0] == 0
    assert lines(tmp_path / "b.jsonl") == lines(tmp_path / "a.jsonl") and conversions(ffmpeg) == []


def test_a_file_sent_as_it_is_costs_the_cache_nothing(tmp_path: Path, cache_dir: Path) -> None:
    plain = tmp_path / "plain.webp"
    shutil.copyfile(CORPUS / "pillow__hopper.webp", plain)
    age(tmp_path)
    for run in ("a", "b"):
        assert cli("prepare", plain, "--dry-run", "-o", tmp_path / f"{run}.jsonl")[0] == 0
    assert not cache_dir.exists(), "no entry and no mark: nothing for a passthrough file"


def test_a_source_modified_just_before_it_was_read_is_not_stored(tmp_path: Path, cache_dir: Path) -> None:
    cat = tmp_path / "cat.bmp"
    shutil.copyfile(CORPUS / "pillow__hopper.bmp", cat)
    future = time.time_ns() + 3600 * 1_000_000_000  # always "just modified"
    os.utime(cat, ns=(future, future))
    assert cli("prepare", cat, "--dry-run", "-o", tmp_path / "m.jsonl")[0] == 0
    assert not cache_dir.exists()
    age(tmp_path)
    assert cli("prepare", cat, "--dry-run", "-o", tmp_path / "m.jsonl")[0] == 0
    assert len(_entries(cache_dir)) == 1


def test_no_output_cache_and_a_zero_size_store_nothing(tmp_path: Path, cache_dir: Path) -> None:
    folder = mixed_folder(tmp_path / "in")
    cli("prepare", folder, "--dry-run", "--no-output-cache", "-o", tmp_path / "a.jsonl")
    cli("prepare", folder, "--dry-run", "--output-cache-size", "0", "-o", tmp_path / "b.jsonl")
    assert not cache_dir.exists()
    assert lines(tmp_path / "a.jsonl") == lines(tmp_path / "b.jsonl")


def test_a_bad_cache_size_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NVMEDIA_OUTPUT_CACHE_SIZE", "lots")
    status, err = cli("prepare", CORPUS / "pillow__hopper.webp", "--dry-run")
    assert status == 2 and "NVMEDIA_OUTPUT_CACHE_SIZE='lots' is not a size" in err
    done = nvmedia("prepare", CORPUS / "pillow__hopper.webp", "--output-cache-size", "big")
    assert done.returncode == 2 and "--output-cache-size: 'big' is not a size" in done.stderr


@pytest.mark.parametrize(
    ("text", "size"), [("0", 0), ("4096", 4096), ("64k", 65536), ("2G", 2 << 30), ("1_5MiB", 15 << 20)]
)
def test_sizes_read_with_binary_units(text: str, size: int) -> None:
    assert parse_size(text, what="--output-cache-size", allow_zero=True) == size


def test_two_runs_at_once_share_the_cache_safely(tmp_path: Path, cache_dir: Path, ffmpeg: Path) -> None:
    import subprocess
    import sys

    folder = mixed_folder(tmp_path / "in")
    outs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "nvmedia", "prepare", str(folder), "--mode", "inline", "-o", str(out)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for out in outs
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 1, err
    assert lines(outs[0]) == lines(outs[1])
    assert not list((cache_dir / "entries").glob(".tmp-*"))
    ffmpeg.write_text("")
    status, shown = nvmedia_on_a_terminal("prepare", folder, "--mode", "inline", "-o", tmp_path / "c.jsonl")
    assert status == 1 and "4 converted files reused" in shown, shown
    assert lines(tmp_path / "c.jsonl") == lines(outs[0]) and conversions(ffmpeg) == []


def _stored(cache: OutputCache, folder: Path, name: str, size: int) -> str:
    """Store ``size`` bytes as the output of a made-up source ``name``; returns the key."""
    out = folder / f"{name}.png"
    out.write_bytes(os.urandom(size))
    info = MediaInfo(kind="image", container="png", mime="image/png", bytes=size, sha256=file_sha256(out))
    key = name * 64
    cache.store(key[:64], NormalizedMedia(out, info, ["encode:png"], []), None, None)
    return key[:64]


def test_the_cache_keeps_under_its_cap_dropping_the_least_recently_used(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    cache = OutputCache(tmp_path / "outputs", max_bytes=100 * 4096)
    keys = {name: _stored(cache, work, name, 25 * 4096) for name in "abc"}  # 26 blocks each, header included
    hour = 3600 * 1_000_000_000
    for age_h, name in ((3, "a"), (2, "b"), (1, "c")):  # a is the oldest
        stamp = time.time_ns() - age_h * hour
        os.utime(cache.entry_path(keys[name]), ns=(stamp, stamp))
    old = cache.entry_path(keys["a"]).stat().st_mtime_ns
    assert cache.fetch(keys["a"], work) is not None  # used now: the newest
    assert cache.entry_path(keys["a"]).stat().st_mtime_ns > old
    keys["d"] = _stored(cache, work, "d", 25 * 4096)  # 104 blocks > 100: trimmed to 90
    present = {name for name, key in keys.items() if cache.entry_path(key).exists()}
    assert present == {"a", "c", "d"}, "b was the least recently used"


def test_an_output_over_a_quarter_of_the_cap_is_not_stored(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    cache = OutputCache(tmp_path / "outputs", max_bytes=100 * 4096)
    key = _stored(cache, work, "big", 26 * 4096)
    assert not cache.entry_path(key).exists()


def test_the_library_reuses_converted_files(tmp_path: Path) -> None:
    cat = tmp_path / "cat.bmp"
    shutil.copyfile(CORPUS / "pillow__hopper.bmp", cat)
    age(tmp_path)
    options = {"dry_run": True, "cache_dir": tmp_path / "cache", "output_cache": 16 << 20}
    with nvm.prepare(cat, **options) as first:  # type: ignore[arg-type]
        assert first.items[0].reused_from is None
    with nvm.prepare(cat, **options) as second:  # type: ignore[arg-type]
        assert second.items[0].reused_from == "output_cache"
        assert second.items[0].to_record() == first.items[0].to_record()


def test_each_run_stores_in_the_cache_folder_of_its_own_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One process, two runs (the library's threads; the CLI's too once any other thread runs):
    # the second run's outputs go to the folder $NVMEDIA_CACHE_DIR names now, not the first run's.
    cat = tmp_path / "cat.bmp"
    shutil.copyfile(CORPUS / "pillow__hopper.bmp", cat)
    age(tmp_path)
    monkeypatch.setenv("NVMEDIA_OUTPUT_CACHE_SIZE", "64M")
    for name in ("first", "second"):
        monkeypatch.setenv("NVMEDIA_CACHE_DIR", str(tmp_path / name))
        with nvm.prepare([cat], dry_run=True, output_cache=True):
            pass
        assert len(_entries(tmp_path / name / "outputs")) == 1, name
