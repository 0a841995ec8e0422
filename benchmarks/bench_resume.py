"""--resume and the normalized-output cache (issue 7): how much of a full run a resumed or repeated run costs.

Inputs where conversion dominates: 12-megapixel camera JPEGs stored sideways (rotated,
stripped, resized, re-encoded) and 30-second 44.1 kHz stereo FLAC recordings (decoded,
resampled to 16 kHz mono, encoded), interleaved (a recording, then photos), all last
modified a day ago; the pieces of work are small enough that the run's last one does
not leave a core idle for long. Every run is
``nvmedia prepare DIR --dry-run -j 2 -o FILE`` in a fresh process; in each repetition:

- ``full``: a cold run with an empty cache folder (the output cache stores what it converts);
- ``no_cache``: the same with ``--no-output-cache`` (what storing costs a cold run);
- ``repeat``: ``full`` again over the same files with the cache ``full`` filled (no ``--resume``);
- ``resume_half``: ``--resume`` from ``full``'s manifest cut after half of its records, with an
  empty cache folder, so only the manifest saves work (the target's figure);
- ``resume_killed``: a run killed with SIGKILL (its whole process group) once half of the
  records are in its partial manifest, then ``--resume``: the manifest and whatever the
  killed run stored in the cache save work, as after a real crash.

Every manifest is checked equal, byte for byte, to ``full``'s. Targets: ``resume_half`` <= 60 % and
``repeat`` <= 20 % of ``full``.

    python benchmarks/bench_resume.py [--quick] [--photos 32] [--recordings 16] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import nvmedia_cmd, report
from media import camera_photo, ffmpeg, photo_variants

DAY_NS = 86_400 * 1_000_000_000
RECORDING_S = 30


def make_inputs(folder: Path, photos: int, recordings: int, tmp: Path) -> None:
    """``photos`` camera JPEGs and ``recordings`` FLACs, named so that they interleave, a day old."""
    base = camera_photo(tmp / "base")
    for index, path in enumerate(photo_variants(base, tmp / "photos", photos)):
        path.rename(folder / f"{index * recordings // max(photos, 1):03}_photo_{index:03}.jpg")
    for index in range(recordings):
        noise = f"anoisesrc=color=pink:amplitude=0.2:seed={index}:sample_rate=44100:duration={RECORDING_S}"
        ffmpeg("-f", "lavfi", "-i", noise, "-ac", "2", "-c:a", "flac", str(folder / f"{index:03}_a_talk.flac"))
    stamp = time.time_ns() - DAY_NS
    for path in folder.iterdir():
        os.utime(path, ns=(stamp, stamp))


def prepare(folder: Path, out: Path, cache: Path, *extra: str) -> float:
    """Seconds for one ``nvmedia prepare`` run with ``cache`` as its cache folder."""
    env = {**os.environ, "NVMEDIA_CACHE_DIR": str(cache), "NVMEDIA_OUTPUT_CACHE_SIZE": "2G"}
    cmd = nvmedia_cmd("prepare", str(folder), "--dry-run", "-j", "2", "-o", str(out), *extra)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def killed_at_half(folder: Path, out: Path, cache: Path, half: int) -> None:
    """Start a run and SIGKILL its process group once ``half`` records are in its partial manifest."""
    env = {**os.environ, "NVMEDIA_CACHE_DIR": str(cache), "NVMEDIA_OUTPUT_CACHE_SIZE": "2G"}
    cmd = nvmedia_cmd("prepare", str(folder), "--dry-run", "-j", "2", "-o", str(out))
    partial = out.with_name(f".{out.name}.part")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=env, start_new_session=True)
    while proc.poll() is None:
        if partial.exists() and partial.read_bytes().count(b"\n") >= half:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    if not partial.exists():
        raise RuntimeError("the run ended before it could be killed at half way")


def one_round(folder: Path, tmp: Path, n: int) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(dir=tmp, prefix="round-"))
    times: dict[str, float] = {}
    times["no_cache"] = prepare(folder, work / "nocache.jsonl", work / "cache-nocache", "--no-output-cache")
    full = work / "full.jsonl"
    times["full"] = prepare(folder, full, work / "cache-full")
    expected = full.read_bytes()
    times["repeat"] = prepare(folder, work / "repeat.jsonl", work / "cache-full")
    records = expected.splitlines(keepends=True)
    half = len(records) // 2
    resumed = work / "resumed.jsonl"
    resumed.write_bytes(b"".join(records[:half]))
    times["resume_half"] = prepare(folder, resumed, work / "cache-resume", "--resume")
    killed = work / "killed.jsonl"
    killed_at_half(folder, killed, work / "cache-killed", half)
    times["resume_killed"] = prepare(folder, killed, work / "cache-killed", "--resume")
    for name in ("nocache", "repeat", "resumed", "killed"):
        if (work / f"{name}.jsonl").read_bytes() != expected:
            raise AssertionError(f"the {name} manifest differs from the full run's")
    if len(records) != n:
        raise AssertionError(f"expected {n} records, got {len(records)}")
    shutil.rmtree(work)
    return times


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="16 photos and 8 recordings, one round")
    parser.add_argument("--photos", type=int, help="camera photos (default 32)")
    parser.add_argument("--recordings", type=int, help="30 s FLAC recordings (default 16)")
    parser.add_argument("--repeat", type=int, help="rounds; medians are reported (default 3)")
    args = parser.parse_args()
    photos = args.photos or (16 if args.quick else 32)
    recordings = args.recordings or (8 if args.quick else 16)
    rounds = args.repeat or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="nvmedia-bench-") as name:
        tmp = Path(name)
        folder = tmp / "in"
        folder.mkdir()
        started = time.perf_counter()
        make_inputs(folder, photos, recordings, tmp)
        made = time.perf_counter() - started
        print(f"made {photos} photos and {recordings} recordings in {made:.1f} s", file=sys.stderr)
        results = [one_round(folder, tmp, photos + recordings) for _ in range(rounds)]
    median = {key: statistics.median(r[key] for r in results) for key in results[0]}
    report(
        "resume",
        photos=photos,
        recordings=recordings,
        rounds=rounds,
        full_s=round(median["full"], 2),
        no_output_cache_s=round(median["no_cache"], 2),
        resume_half_s=round(median["resume_half"], 2),
        resume_half_ratio=round(median["resume_half"] / median["full"], 3),
        resume_killed_s=round(median["resume_killed"], 2),
        resume_killed_ratio=round(median["resume_killed"] / median["full"], 3),
        target_resume="<= 0.6",
    )
    report(
        "output_cache",
        photos=photos,
        recordings=recordings,
        rounds=rounds,
        full_s=round(median["full"], 2),
        repeat_s=round(median["repeat"], 2),
        repeat_ratio=round(median["repeat"] / median["full"], 3),
        storing_cost_ratio=round(median["full"] / median["no_cache"], 3),
        target_repeat="<= 0.2",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
