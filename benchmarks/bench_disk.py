"""Disk: the temporary space a run needs, against the space all its outputs take.

200 BMPs of 1024x768 are converted (to PNG) by ``nvmedia.pipeline.run`` with ``-j 2``; the
bytes in the run's temporary folder are summed each time a worker finishes a batch and each
time a request is yielded. Baseline (same run): the bytes of all the outputs together, which
is what a run that keeps every converted file until it ends needs. Target: the peak grows
with the work in flight (``LOOKAHEAD_PER_JOB * jobs`` sources ahead), not with the run.

    python benchmarks/bench_disk.py [--count 200]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import threading
from pathlib import Path

from common import report


def make_bmps(folder: Path, count: int) -> None:
    from PIL import Image

    rng = random.Random(11)
    folder.mkdir(parents=True, exist_ok=True)
    base = Image.linear_gradient("L").resize((1024, 768)).convert("RGB")
    for i in range(count):
        noise = Image.effect_noise((1024, 768), 8 + rng.random() * 8).convert("RGB")
        Image.blend(base, noise, 0.2).save(folder / f"scan{i:04}.bmp")


def bytes_under(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass  # released while we looked
    return total


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    from nvmedia.pipeline import LOOKAHEAD_PER_JOB, run
    from nvmedia.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        folder, temp_root = Path(tmp) / "scans", Path(tmp) / "tmp"
        make_bmps(folder, args.count)
        temp_root.mkdir()
        tempfile.tempdir = str(temp_root)  # where the run's temporary folder goes
        peak = 0
        lock = threading.Lock()

        def sample(*_: object) -> None:
            nonlocal peak
            with lock:
                peak = max(peak, bytes_under(temp_root))

        settings = Settings(dry_run=True, jobs=2, pool="thread", mode="asset")
        outputs = 0
        for items, _ in run([folder], settings, progress=sample):
            sample()
            outputs += sum(it.output.bytes for it in items if it.output is not None)
        report(
            "disk_temp_peak",
            files=args.count,
            outputs_mb=round(outputs / 1e6, 1),
            peak_temp_mb=round(peak / 1e6, 1),
            ratio=round(peak / outputs, 3),
            lookahead_sources=LOOKAHEAD_PER_JOB * settings.jobs,
            target="grows with the work in flight, not with the run",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
