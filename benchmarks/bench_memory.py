"""Memory: tiny files that decode to gigapixels, under the run-wide decode budget (issue 7, item 7).

``tree``: four 9400x9400 lossless WEBPs (3.4 KB each) among eight 1 MB JPEG fillers,
``nvmedia prepare --dry-run -j 4`` (forked workers). The whole process tree is sampled
every 10 ms from /proc: the sum of every process's RSS (shared pages counted in each
process, so an upper bound) and of its PSS (shared pages split between processes), and
``RUSAGE_CHILDREN`` gives the largest single process. Runs, in one go on the same files:

- ``main``: the code before the budget (a temporary ``git worktree`` of ``main``);
- ``default``: this code, default budget (a quarter of RAM);
- ``max-memory 1G``: this code, two big decodes at a time;
- ``max-memory 600M``: this code, one big decode at a time.

``estimates``: for one image of each format and mode (4000x4000), the reserved estimate
against the measured peak of ``normalize_source`` in a fresh process (estimate / peak >= 1).

    python benchmarks/bench_memory.py                 # both
    python benchmarks/bench_memory.py --only tree
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, nvmedia_cmd, report

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _tree(root: int) -> list[int]:
    """``root`` and all its descendants (from /proc/PID/task/*/children)."""
    found, queue = [], [root]
    while queue:
        pid = queue.pop()
        found.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as fh:
                    queue.extend(int(child) for child in fh.read().split())
        except OSError:
            continue
    return found


def _memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in bytes; (0, 0) once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
        return int(fields["Rss"].split()[0]) * 1024, int(fields["Pss"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 0, 0


def sample_tree(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> dict[str, float]:
    """Run ``cmd``; peak summed RSS and PSS of its process tree, largest single process, wall time."""
    wrapper = (
        "import resource, subprocess, sys\n"
        "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)\n"
    )
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", wrapper, *cmd], stdout=subprocess.PIPE, text=True, env=env, cwd=cwd)
    peak_rss = peak_pss = 0
    while proc.poll() is None:
        rss = pss = 0
        for pid in _tree(proc.pid)[1:]:  # the wrapper itself is not nvmedia
            r, p = _memory(pid)
            rss, pss = rss + r, pss + p
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.01)
    out, _ = proc.communicate()
    wall = time.perf_counter() - start
    kib, rc = out.split()
    return {
        "tree_rss_mb": round(peak_rss / 2**20),
        "tree_pss_mb": round(peak_pss / 2**20),
        "largest_process_mb": round(int(kib) / 1024),
        "exit": int(rc),
        "s": round(wall, 1),
    }


def make_inputs(folder: Path) -> Path:
    """Fillers and giants in turn (``00.jpg``, ``01.webp``, ...): each filler is over 1 MB, so every
    WEBP is a worker task of its own and the four can decode at the same time."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    colours = [(200, 40, 90), (10, 120, 30), (30, 30, 220), (240, 200, 10)]
    rng = random.Random(7)
    index = 0
    for i in range(8):
        noise = Image.frombytes("RGB", (800, 600), rng.randbytes(800 * 600 * 3)).resize((1600, 1200))
        noise.save(folder / f"{index:02}.jpg", "JPEG", quality=95)
        index += 1
        if i % 2 == 1:
            image = Image.new("RGB", (9400, 9400), colours[i // 2])
            image.save(folder / f"{index:02}.webp", "WEBP", lossless=True)  # 3.4 KB
            index += 1
    return folder


def bench_tree(quick: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="nvmedia-bench-mem-") as tmp:
        inputs = make_inputs(Path(tmp) / "in")
        sizes = sorted(p.stat().st_size for p in inputs.glob("*.webp"))
        fillers = sorted(p.stat().st_size for p in inputs.glob("*.jpg"))
        base = [str(inputs), "--dry-run", "-j", "4", "--pool", "process", "-o", os.devnull]
        main_tree = Path(tmp) / "main"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(main_tree), "main"], check=True,
                       capture_output=True)  # fmt: skip
        try:
            env = {**os.environ, "PYTHONPATH": str(main_tree)}
            runs = {
                "main": sample_tree([sys.executable, "-m", "nvmedia", "prepare", *base], env=env, cwd=main_tree),
                "default": sample_tree(nvmedia_cmd("prepare", *base)),
                "max-memory 1G": sample_tree(nvmedia_cmd("prepare", *base, "--max-memory", "1G")),
                "max-memory 600M": sample_tree(nvmedia_cmd("prepare", *base, "--max-memory", "600M")),
            }
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(main_tree)], check=False)
        baseline = runs["main"]["tree_rss_mb"]
        for name, figures in runs.items():
            report(
                "memory_tree",
                run=name,
                **figures,
                vs_main=round(figures["tree_rss_mb"] / baseline, 2),
                inputs=f"4 x 9400x9400 lossless WEBP ({sizes[0]}..{sizes[3]} B), 8 JPEG ({fillers[0]}..{fillers[-1]})",
            )


_MEASURE = """
import json, sys, tempfile
from pathlib import Path
from nvmedia.memory import MemoryBudget
from nvmedia.normalize_stage import normalize_source
from nvmedia.settings import Settings
from nvmedia.sources import expand

def status(field):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(field + ":"))

held = []
budget = MemoryBudget(1 << 40, observer=lambda event, label, nbytes: held.append(nbytes))
settings = Settings(dry_run=True, jobs=1)
with tempfile.TemporaryDirectory() as tmp:
    for source in expand([sys.argv[2]], "file"):  # warm up: imports, plugins, libav
        normalize_source(source, settings, Path(tmp), None, MemoryBudget(1 << 40))
    # The peak since now: ru_maxrss would start from the parent's size (kept across fork and exec).
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    before = status("VmRSS")
    (source,) = expand([sys.argv[1]], "file")
    item = normalize_source(source, settings, Path(tmp), None, budget)
    peak = status("VmHWM") - before
print(json.dumps({"status": item.status, "peak": peak, "estimate": max(held) if held else 0}))
"""


def bench_estimates(quick: bool) -> None:
    from PIL import Image

    side = 2000 if quick else 4000
    with tempfile.TemporaryDirectory(prefix="nvmedia-bench-est-") as tmp:
        folder = Path(tmp)
        rng = random.Random(3)
        small = Image.frombytes("RGB", (side // 4, side // 4), rng.randbytes((side // 4) ** 2 * 3))
        rgb = small.resize((side, side))
        rgba = rgb.copy()
        rgba.putalpha(rgb.getchannel(1))
        grey = rgb.getchannel(0)
        cases = {
            "png_rgb.png": (rgb, "PNG", {"compress_level": 1}),
            "png_rgba.png": (rgba, "PNG", {"compress_level": 1}),
            "png_palette.png": (rgb.quantize(64), "PNG", {"compress_level": 1}),
            "png_16bit.png": (Image.frombytes("I;16", rgb.size, grey.tobytes() * 2), "PNG", {"compress_level": 1}),
            "jpeg.jpg": (rgb, "JPEG", {"quality": 90}),
            "jpeg_progressive.jpg": (rgb, "JPEG", {"quality": 90, "progressive": True}),
            "jpeg_cmyk.jpg": (rgb.convert("CMYK"), "JPEG", {}),
            "webp_lossless.webp": (rgb, "WEBP", {"lossless": True, "method": 0}),
            "webp_lossy_alpha.webp": (rgba, "WEBP", {"quality": 80}),
            "gif.gif": (rgb.quantize(64), "GIF", {}),
            "tiff_lzw.tif": (rgb, "TIFF", {"compression": "tiff_lzw"}),
            "jp2.jp2": (rgb, "JPEG2000", {"irreversible": True}),
            "avif.avif": (rgb, "AVIF", {"quality": 50, "speed": 10}),
        }
        warm = folder / "warm.webp"
        Image.new("RGB", (64, 64)).save(warm, "WEBP")
        for name, (image, fmt, params) in cases.items():
            path = folder / name
            image.save(path, fmt, **params)
            for profile_note in ("nemotron-3-nano-omni",):
                out = subprocess.run([sys.executable, "-c", _MEASURE, str(path), str(warm)], capture_output=True,
                                     text=True, check=True)  # fmt: skip
                result = json.loads(out.stdout)
                report(
                    "memory_estimate",
                    file=name,
                    size=f"{side}x{side}",
                    profile=profile_note,
                    status=result["status"],
                    peak_mb=round(result["peak"] / 2**20, 1),
                    estimate_mb=round(result["estimate"] / 2**20, 1),
                    ratio=round(result["estimate"] / max(result["peak"], 1), 2),
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("tree", "estimates"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.only in (None, "estimates"):
        bench_estimates(args.quick)
    if args.only in (None, "tree"):
        bench_tree(args.quick)


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
