"""Batch inference (issue 9): `nvmedia batch` over 40 small images, the chat endpoint answering after 0.5 s.

The emulator runs in this process (a thread that mostly sleeps), its chat
endpoint answering after 0.5 s (``latency_chat_s``);
``nvmedia batch "Describe." DIR -o answers.jsonl`` runs as a fresh process
against it, with ``-j 1`` (the baseline) and with ``-j 8``, on the same 40
seeded 320x240 JPEGs (inline, no uploads), in the same run. Every answer
file is checked: 40 ``ok`` records in input order, and 40 chat requests seen by
the emulator. Target: ``-j 8`` at least 6x faster than ``-j 1`` (8x is the
ceiling: 5 waves of 8 against 40 requests one after another).

Both runs pay the same fixed cost (starting Python, importing, preparing the
first image, exiting), which a busy machine inflates and which caps the ratio
below 8x; ``fixed_s``, the same command on one image with no latency, shows it.

    python benchmarks/bench_batch.py [--count 40] [--latency 0.5] [--jobs 8] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import nvmedia_cmd, report

from nvmedia.testing import NVCFEmulator

KEY = "nvapi-bench-local-key"


def make_images(folder: Path, count: int, seed: int = 9) -> list[Path]:
    """``count`` distinct small photos-like JPEGs (a gradient with seeded noise), about 20 KB each."""
    from PIL import Image

    rng = random.Random(seed)
    paths = []
    for number in range(count):
        image = Image.linear_gradient("L").resize((320, 240)).convert("RGB")
        noise = Image.frombytes("RGB", (320, 240), rng.randbytes(320 * 240 * 3))
        path = folder / f"img_{number:03d}.jpg"
        Image.blend(image, noise, 0.3).save(path, quality=85)
        paths.append(path)
    return paths


def batch_seconds(emu: NVCFEmulator, folder: Path, out: Path, jobs: int, count: int, latency: float) -> float:
    """Wall time of one ``nvmedia batch`` run, after checking what it wrote and what the emulator saw."""
    emu.clear_requests()
    emu.latency_chat_s = latency
    cmd = nvmedia_cmd("batch", "Describe.", str(folder), "-o", str(out), "-j", str(jobs))
    cmd += ["--base-url", f"{emu.base_url}/v1", "--api-key", KEY, "--mode", "inline"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    records = [json.loads(line) for line in out.read_text().splitlines()]
    names = [Path(r["sources"][0]).name for r in records]
    if [r["status"] for r in records] != ["ok"] * count or names != sorted(names) or emu.chat_count != count:
        raise RuntimeError(f"-j {jobs}: unexpected answers or chat count ({emu.chat_count})")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--latency", type=float, default=0.5, help="seconds the chat endpoint takes per answer")
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each, the median is reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp, NVCFEmulator() as emu:
        folder = Path(tmp) / "images"
        folder.mkdir()
        make_images(folder, args.count)
        single = Path(tmp) / "single"
        single.mkdir()
        make_images(single, 1)
        out = Path(tmp) / "answers.jsonl"
        serial, parallel, fixed = [], [], []
        for _ in range(args.repeat):
            fixed.append(batch_seconds(emu, single, out, 1, 1, 0.0))
            serial.append(batch_seconds(emu, folder, out, 1, args.count, args.latency))
            parallel.append(batch_seconds(emu, folder, out, args.jobs, args.count, args.latency))
    j1, jn, f = statistics.median(serial), statistics.median(parallel), statistics.median(fixed)
    report(
        "batch_jobs",
        images=args.count,
        chat_latency_s=args.latency,
        j1_s=round(j1, 2),
        **{f"j{args.jobs}_s": round(jn, 2)},
        speedup=round(j1 / jn, 2),
        fixed_s=round(f, 2),
        ceiling=args.jobs,
        target=">= 6x",
    )


if __name__ == "__main__":
    main()
