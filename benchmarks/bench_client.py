"""Client and AsyncClient (issue 8): what reusing one client saves, concurrency on the event loop, block exit.

Three figures, each a ratio or bound measured in this one run:

1. ``sequential``: one ``Client`` doing 50 ``prepare`` calls of one small upload each (a
   different 64x64 PNG per call, ``mode="asset"``), against the emulator with 0.1 s latency
   per asset-API call, versus 50 module-level ``nvmedia.prepare`` calls of the code before
   the client (``--baseline REV``, default ``main``'s merge base: checked out into a
   temporary worktree and run in a subprocess with the same files and emulator). Target: >= 3x.
2. ``async``: an ``AsyncClient`` running 8 ``prepare`` calls of 5 uploads each concurrently,
   with 0.25 s per API call and 0.5 s per PUT, versus the same 8 calls awaited one after
   another; a heartbeat task sleeping 5 ms records the event loop's longest stall. Targets:
   >= 5x, stall < 50 ms.
3. ``block_exit``: leaving a ``with client.prepare(...)`` block holding 190 assets with 0.1 s
   per delete. Target: < 3 s.

The emulator runs in its own process (``nvmedia emulator``, as in ``bench_upload.py``), so its
threads never compete with the event loop being measured, and both sides pay the same HTTP costs.

    python benchmarks/bench_client.py [--calls 50] [--baseline REV]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from bench_upload import API_KEY as KEY
from bench_upload import emulator
from common import ROOT, report

import nvmedia

_BASELINE = """
import sys, time
sys.path.insert(0, sys.argv[1])
import nvmedia
url, key, files = sys.argv[2], sys.argv[3], sys.argv[4:]
nvmedia.prepare([files[0]], assets_url=url, api_key=key, mode="asset")  # warm up: imports
start = time.perf_counter()
for f in files[1:]:
    nvmedia.prepare([f], assets_url=url, api_key=key, mode="asset")
print(time.perf_counter() - start)
"""


def pngs(folder: Path, count: int) -> list[Path]:
    """``count`` different small PNGs (each its own upload)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"p{i:03d}.png"
        Image.new("RGB", (64, 64), (i % 256, (i * 7) % 256, (i * 13) % 256)).save(path)
        paths.append(path)
    return paths


def baseline_seconds(rev: str, url: str, files: list[Path], tmp: Path) -> float:
    """50 module-level prepare calls of the code at ``rev``, in a subprocess run from a temporary worktree."""
    tree = tmp / "baseline"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True, capture_output=True
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", _BASELINE, str(tree), url, KEY, *map(str, files)],
            check=True,
            capture_output=True,
            text=True,
            cwd=tmp,
        )
        return float(out.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True)


def sequential(calls: int, rev: str, tmp: Path) -> None:
    files = pngs(tmp / "seq", calls + 1)
    with emulator(latency_api=0.1) as emu:
        with nvmedia.Client(api_key=KEY, assets_url=emu.assets_url) as client:
            client.prepare([files[0]], mode="asset")  # warm up, as the baseline does
            start = time.perf_counter()
            for f in files[1:]:
                client.prepare([f], mode="asset")
            ours = time.perf_counter() - start
    with emulator(latency_api=0.1) as emu:
        base = baseline_seconds(rev, emu.assets_url, files, tmp)
    report(
        "client_sequential",
        calls=calls,
        latency_api_s=0.1,
        baseline=rev,
        baseline_s=round(base, 2),
        client_s=round(ours, 2),
        speedup=round(base / ours, 2),
        target=">= 3x",
    )


async def _concurrent_run(tmp: Path) -> None:
    files = pngs(tmp / "async", 40)
    calls = [files[i * 5 : i * 5 + 5] for i in range(8)]
    with emulator(latency_api=0.25, latency_upload=0.5) as emu:
        async with nvmedia.AsyncClient(api_key=KEY, assets_url=emu.assets_url, cache=False, jobs=4) as aclient:
            await aclient.prepare([files[0]], mode="inline")  # warm up: imports, threads
            stall = 0.0
            beating = True

            async def heartbeat() -> None:
                nonlocal stall
                last = time.perf_counter()
                while beating:
                    await anyio.sleep(0.005)
                    now = time.perf_counter()
                    stall = max(stall, now - last - 0.005)
                    last = now

            async with anyio.create_task_group() as beat:
                beat.start_soon(heartbeat)
                start = time.perf_counter()
                for chosen in calls:
                    async with aclient.prepare(chosen, mode="asset"):
                        pass
                one_by_one = time.perf_counter() - start

                async def one(chosen: list[Path]) -> None:
                    async with aclient.prepare(chosen, mode="asset"):
                        pass

                start = time.perf_counter()
                async with anyio.create_task_group() as tasks:
                    for chosen in calls:
                        tasks.start_soon(one, chosen)
                together = time.perf_counter() - start
                beating = False
    report(
        "client_async",
        calls=8,
        uploads_each=5,
        latency_api_s=0.25,
        latency_upload_s=0.5,
        sequential_s=round(one_by_one, 2),
        concurrent_s=round(together, 2),
        speedup=round(one_by_one / together, 2),
        longest_stall_ms=round(stall * 1000, 1),
        target=">= 5x, stall < 50 ms",
    )


def block_exit(tmp: Path) -> None:
    files = pngs(tmp / "exit", 190)
    with (
        emulator(latency_api=0.1) as emu,
        nvmedia.Client(api_key=KEY, assets_url=emu.assets_url, cache=False) as client,
    ):
        with client.prepare(files, mode="asset", group="file") as prep:
            assert len(prep.asset_ids) == 190
            start = time.perf_counter()
        took = time.perf_counter() - start
        left = emu.listed()
    report("client_block_exit", assets=190, latency_api_s=0.1, exit_s=round(took, 2), left=left, target="< 3 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--baseline", default=None, help="the revision to compare with (default: merge base of main)")
    args = parser.parse_args()
    rev = (
        args.baseline
        or subprocess.run(
            ["git", "-C", str(ROOT), "merge-base", "HEAD", "main"], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        sequential(args.calls, rev, Path(tmp))
        anyio.run(_concurrent_run, Path(tmp))
        block_exit(Path(tmp))


if __name__ == "__main__":
    main()
