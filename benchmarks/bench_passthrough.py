"""Passthrough: 1,000 compliant images (<= 100 KB) through `nvmedia prepare --mode inline`.

Baseline (the floor), measured in the same run: a plain Python script that reads each
file, base64-encodes it and writes the same JSON line. Both run as fresh processes,
alternately, ``--repeat`` times; the medians of their wall time and of their CPU time
(user + system, children included) are compared. Target: nvmedia at most 2x the floor.
The CPU ratio is the steadier one on a shared machine: other load stretches wall time
but not the work done. Every passthrough is proven to decode first: JPEGs by a 1/8-scale
decode, PNGs by inflating their pixel data (``png_is_intact_and_plain``).

    python benchmarks/bench_passthrough.py [--count 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import nvmedia_cmd, report, run

FLOOR = r"""
import base64, json, os, sys
root, out = sys.argv[1], sys.argv[2]
mimes = {".png": "image/png", ".jpg": "image/jpeg"}
with open(out, "w") as fh:
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        with open(path, "rb") as f:
            data = f.read()
        b64 = base64.b64encode(data).decode()
        url = f"data:{mimes[os.path.splitext(name)[1]]};base64,{b64}"
        part = {"type": "image_url", "image_url": {"url": url}}
        rec = {"type": "item", "source": path, "status": "ok", "kind": "image", "part": part,
               "tag": f'<img src="{url}" />', "headers": {}}
        fh.write(json.dumps(rec) + "\n")
"""


def make_images(folder: Path, count: int) -> None:
    from PIL import Image

    rng = random.Random(7)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        w, h = rng.choice([(320, 240), (400, 300), (256, 256)])
        base = Image.linear_gradient("L").resize((w, h)).convert("RGB")
        noise = Image.effect_noise((w, h), 24).convert("RGB")
        img = Image.blend(base, noise, 0.25)
        path = folder / f"img{i:04}.{'jpg' if i % 2 else 'png'}"
        if i % 2:
            img.save(path, quality=85)
        else:
            img.quantize(32).convert("RGB").save(path)
        assert path.stat().st_size <= 100_000, (path, path.stat().st_size)


def run_measured(cmd: list[str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system of the command and its children) of one run, in seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    run(cmd)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        make_images(folder, args.count)
        out_floor, out_ours = Path(tmp) / "floor.jsonl", Path(tmp) / "ours.jsonl"
        floor_cmd = [sys.executable, "-c", FLOOR, str(folder), str(out_floor)]
        ours_cmd = nvmedia_cmd("prepare", str(folder), "--mode", "inline", "-o", str(out_ours))
        floors, ours = [], []
        for _ in range(args.repeat):  # alternated, so that a burst of load hits both alike
            floors.append(run_measured(floor_cmd))
            ours.append(run_measured(ours_cmd))
        lines = out_ours.read_text().count("\n")
        assert lines == args.count, f"expected {args.count} records, got {lines}"
        floor_wall, ours_wall = (statistics.median(w for w, _ in runs) for runs in (floors, ours))
        floor_cpu, ours_cpu = (statistics.median(c for _, c in runs) for runs in (floors, ours))
        report(
            "passthrough",
            files=args.count,
            floor_s=round(floor_wall, 3),
            nvmedia_s=round(ours_wall, 3),
            ratio=round(ours_wall / floor_wall, 2),
            floor_cpu_s=round(floor_cpu, 3),
            nvmedia_cpu_s=round(ours_cpu, 3),
            cpu_ratio=round(ours_cpu / floor_cpu, 2),
            target="<= 2.0",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
