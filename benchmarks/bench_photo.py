"""12-megapixel camera photos (issue 2): one photo, ``-j 2`` against ``-j 1``, threads against processes.

(a) ``photo``: a 4000x3000 JPEG stored sideways (EXIF Orientation 6, camera, GPS,
    XMP, ICC) normalized to the default profile by nvmedia (sniff_path -> probe ->
    normalize) against the straightforward Pillow pipeline on the same files in
    the same process: open, ImageOps.exif_transpose, resize to the 3,407,872-pixel
    cap with LANCZOS keeping the aspect ratio, save JPEG quality 90. Target: >= 2x.
    nvmedia decodes with libjpeg's DCT scaling: 4000x3000 at 1/2 is 2000x1500, 88 %
    of the cap, which it accepts as is (no resampling pass), so its output has
    fewer pixels than the baseline's 1598x2131; both sizes are reported.
(b) ``photo_jobs``: ``nvmedia prepare DIR --dry-run -j 2`` against ``-j 1`` over
    200 such photos, each with different pixels, with the default worker processes
    and with ``--pool thread``. Target: >= 1.7x on 2 cores.
(c) ``photo_pools``: ``nvmedia.pipeline.normalize_source`` over the same photos on a
    ThreadPoolExecutor(2) (what the library uses) against a ProcessPoolExecutor(2)
    (fork, what the CLI uses), pool start-up included, in one process.

    python benchmarks/bench_photo.py [--quick] [--count 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from common import nvmedia_cmd, report, run, timed
from media import camera_photo, photo_variants

CAP = 3_407_872
"""The default profile's pixel cap (13,312 patches of 16x16)."""


def pillow_pipeline(src: Path, out: Path) -> tuple[tuple[int, int], int]:
    """The straightforward pipeline: open, exif_transpose, LANCZOS resize to the cap, save JPEG q=90."""
    from PIL import Image, ImageOps

    with Image.open(src) as im:
        upright = ImageOps.exif_transpose(im)
        scale = math.sqrt(CAP / (upright.width * upright.height))
        size = (int(upright.width * scale), int(upright.height * scale))
        small = upright.resize(size, Image.Resampling.LANCZOS)
        small.save(out, "JPEG", quality=90)
    return size, out.stat().st_size


def nvmedia_pipeline(src: Path, workdir: Path) -> tuple[tuple[int, int], int]:
    """nvmedia's image path for one file, as the CLI runs it: sniff, probe, normalize (default profile)."""
    from nvmedia.normalize import NormalizeOptions, normalize
    from nvmedia.probe import probe
    from nvmedia.profiles import DEFAULT_PROFILE
    from nvmedia.sniff import sniff_path

    sniffed = sniff_path(src)
    info = probe(src, sniffed, max_pixels=DEFAULT_PROFILE.safety_max_image_pixels)
    result = normalize(src, sniffed, info, DEFAULT_PROFILE, NormalizeOptions(workdir=workdir))
    assert result.info.width is not None and result.info.height is not None
    return (result.info.width, result.info.height), result.info.bytes


def bench_single(photos: list[Path], tmp: Path, repeat: int) -> None:
    outdir = tmp / "single"
    outdir.mkdir()

    def ours() -> tuple[tuple[int, int], int]:
        last = ((0, 0), 0)
        for src in photos:
            last = nvmedia_pipeline(src, outdir)
        return last

    def pillow() -> tuple[tuple[int, int], int]:
        last = ((0, 0), 0)
        for i, src in enumerate(photos):
            last = pillow_pipeline(src, outdir / f"pillow-{i}.jpg")
        return last

    ours_out, pillow_out = ours(), pillow()  # warm-up: imports, page cache
    ours_t, pillow_t = [], []
    for _ in range(repeat):
        for fn, times in ((ours, ours_t), (pillow, pillow_t)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
            for leftover in outdir.iterdir():
                leftover.unlink()
    per_ours = statistics.median(ours_t) / len(photos)
    per_pillow = statistics.median(pillow_t) / len(photos)
    report(
        "photo",
        files=len(photos),
        pillow_ms_per_photo=round(per_pillow * 1000, 1),
        nvmedia_ms_per_photo=round(per_ours * 1000, 1),
        ratio=round(per_pillow / per_ours, 2),
        pillow_output=f"{pillow_out[0][0]}x{pillow_out[0][1]}, {pillow_out[1]:,} bytes",
        nvmedia_output=f"{ours_out[0][0]}x{ours_out[0][1]}, {ours_out[1]:,} bytes "
        f"({ours_out[0][0] * ours_out[0][1] / CAP:.0%} of the cap: DCT-scaled decode)",
        target=">= 2.0",
    )


def bench_jobs(folder: Path, count: int, tmp: Path, repeat: int) -> None:
    out = tmp / "manifest.jsonl"

    def prepare(jobs: int, pool: str = "process") -> Callable[[], None]:
        cmd = nvmedia_cmd("prepare", str(folder), "--dry-run", "-j", str(jobs), "--pool", pool, "-o", str(out))
        return lambda: run(cmd)

    one = timed(prepare(1), repeat=repeat)
    two = timed(prepare(2), repeat=repeat)
    two_threads = timed(prepare(2, "thread"), repeat=repeat)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    ok = sum(r["status"] == "ok" for r in records)
    assert ok == count, f"expected {count} ok records, got {ok}"
    report(
        "photo_jobs",
        photos=count,
        j1_s=round(one, 2),
        j2_s=round(two, 2),
        ratio=round(one / two, 2),
        j2_threads_s=round(two_threads, 2),
        ratio_threads=round(one / two_threads, 2),
        actions=records[0]["actions"],
        target=">= 1.7",
    )


def _pool_run(make: Callable[[], Executor], folder: Path, tmp: Path) -> float:
    from nvmedia.normalize_stage import normalize_source
    from nvmedia.settings import Settings
    from nvmedia.sources import expand

    sources = expand([str(folder)], "file")
    settings = Settings()
    workdir = Path(tempfile.mkdtemp(dir=tmp))
    start = time.perf_counter()
    with make() as pool:
        items = list(
            pool.map(
                normalize_source, sources, [settings] * len(sources), [workdir] * len(sources), [None] * len(sources)
            )
        )
    elapsed = time.perf_counter() - start
    shutil.rmtree(workdir)
    bad = [it.source for it in items if it.status != "ok"]
    assert not bad, f"not ok: {bad[:3]}"
    return elapsed


def bench_pools(folder: Path, count: int, tmp: Path, repeat: int) -> None:
    import multiprocessing

    fork = multiprocessing.get_context("fork")
    threads = statistics.median(_pool_run(lambda: ThreadPoolExecutor(2), folder, tmp) for _ in range(repeat))
    procs = statistics.median(
        _pool_run(lambda: ProcessPoolExecutor(2, mp_context=fork), folder, tmp) for _ in range(repeat)
    )
    report(
        "photo_pools",
        photos=count,
        thread_pool_s=round(threads, 2),
        process_pool_s=round(procs, 2),
        process_over_thread=round(procs / threads, 2),
        note="normalize_source, Settings() defaults, pool start-up included",
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="40 photos, one run each")
    parser.add_argument("--count", type=int, help="photos for -j and pool runs (default 200)")
    parser.add_argument("--repeat", type=int, help="runs per figure; the median is reported (default 3)")
    args = parser.parse_args()
    count = args.count or (40 if args.quick else 200)
    repeat = args.repeat or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="nvmedia-bench-") as name:
        tmp = Path(name)
        started = time.perf_counter()
        base = camera_photo(tmp / "base")
        folder = tmp / "photos"
        photos = photo_variants(base, folder, count)
        print(f"generated {count} photos in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        bench_single([base, *photos[:4]], tmp, repeat=max(repeat, 3))
        bench_jobs(folder, count, tmp, repeat)
        bench_pools(folder, count, tmp, repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
