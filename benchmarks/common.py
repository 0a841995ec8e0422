"""Small helpers shared by the benchmark scripts: timing, peak memory, result lines."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The figures measure conversions, so no run may take its outputs from an earlier one's:
# the normalized-output cache is off here (bench_resume.py turns it on for its own runs).
os.environ["NVMEDIA_OUTPUT_CACHE_SIZE"] = "0"
OUT = ROOT / "benchmarks" / "out"

_RSS_WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)\n"
)


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    """Median wall time of ``fn`` over ``repeat`` runs, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(cmd: Sequence[str]) -> None:
    subprocess.run(list(cmd), check=True, stdout=subprocess.DEVNULL)


def peak_rss_mb(cmd: Sequence[str]) -> float:
    """Peak resident memory of ``cmd`` (and its children) in MB, measured by a fresh wrapper process."""
    out = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, *cmd], capture_output=True, text=True, check=True)
    kib, rc = out.stdout.split()
    if rc != "0":
        raise RuntimeError(f"{cmd[0]} exited {rc}")
    return int(kib) / 1024


def nvmedia_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "nvmedia", *args]


def report(name: str, **figures: object) -> None:
    """Print one result line and append it to benchmarks/out/results.jsonl."""
    OUT.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"benchmark": name, **figures})
    print(line, flush=True)
    with (OUT / "results.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(line + "\n")
