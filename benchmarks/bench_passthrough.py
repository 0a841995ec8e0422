"""Passthrough: 1,000 compliant images (<= 100 KB) through `nvmedia prepare --mode inline`.

Baseline (the floor), measured in the same run: a plain Python script that reads each
file, base64-encodes it and writes the same JSON line. Both run as fresh processes.
Target: nvmedia at most 2x the floor.

    python benchmarks/bench_passthrough.py [--count 1000]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

from common import nvmedia_cmd, report, run, timed

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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        make_images(folder, args.count)
        out_floor, out_ours = Path(tmp) / "floor.jsonl", Path(tmp) / "ours.jsonl"
        floor = timed(lambda: run([sys.executable, "-c", FLOOR, str(folder), str(out_floor)]))
        ours = timed(lambda: run(nvmedia_cmd("prepare", str(folder), "--mode", "inline", "-o", str(out_ours))))
        lines = out_ours.read_text().count("\n")
        assert lines == args.count, f"expected {args.count} records, got {lines}"
        report(
            "passthrough",
            files=args.count,
            floor_s=round(floor, 3),
            nvmedia_s=round(ours, 3),
            ratio=round(ours / floor, 2),
            target="<= 2.0",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
