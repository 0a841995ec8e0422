"""Delivery (issue 4): parallel uploads, memory on a 2 GB upload, a warm asset-id cache.

The emulator runs in its own process (``nvmedia emulator``), storing uploads on
tmpfs (/dev/shm when it exists); a fresh one is started for every timed run so
each starts from an empty service.

(a) ``upload_many``: 20 distinct 20 MB WAVs (44.1 kHz stereo 16-bit noise,
    accepted as they are) through ``nvmedia prepare DIR --mode asset --no-cache``
    against a sequential loop in the style of NVIDIA's published sample (for
    each file: POST create, then PUT the bytes, one file after another; here with
    httpx, 1 MB chunks and an explicit Content-Length, as ``requests`` would send
    a file), both fresh processes, with the emulator adding internet-like latency
    (0.1 s per asset-API call, 0.3 s per upload) and with none. Target: >= 3x.
(b) ``upload_2gb``: peak RSS (nvmedia and its children) and time of ``nvmedia
    prepare`` uploading one 2 GB WAV (digital silence, written sparsely; a
    profile file lifts the 1-hour audio cap since 2 GB is 3.4 h), with the
    time of the same command under ``--dry-run`` (sniff, probe, full-decode
    validation, no upload) beside it. Target: < 120 MB.
(d) ``delete_many``: 190 assets deleted with the emulator adding 0.1 s to each
    asset-API call: ``AssetClient.delete_many`` (16 at a time) and
    ``AsyncAssetClient.delete_many`` against ``AssetClient.delete`` called for one id
    after another, each on freshly created assets in the same emulator process.
    Target: under 3 s.
(c) ``upload_warm_cache``: 200 distinct ~300 KB WAVs (over the inline limit),
    emulator latency 0.1 s / 0.3 s, ``nvmedia prepare DIR --mode asset`` with
    ``NVMEDIA_CACHE_DIR`` set to a fresh folder: a cold run, then warm runs.
    Uploads in the warm run are counted on the emulator (its stored files and
    its asset list, before and after). Target: 0 uploads, >= 10x faster.

    python benchmarks/bench_upload.py [--quick] [--only many|big|warm|delete]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common import nvmedia_cmd, peak_rss_mb, report
from media import WAV_BYTES_PER_S, noise_wavs, silent_wav

API_KEY = "nvapi-bench-local-key"
INTERNET = (0.1, 0.3)
"""Emulator latency: seconds added to each asset-API call, and to each upload."""

SAMPLE = r"""
import os, sys, httpx
root, assets_url, key = sys.argv[1:4]

def chunks(fh):
    while chunk := fh.read(1 << 20):
        yield chunk

for name in sorted(os.listdir(root)):
    path = os.path.join(root, name)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "accept": "application/json"}
    payload = {"contentType": "audio/wav", "description": name}
    resp = httpx.post(assets_url, headers=headers, json=payload, timeout=30)
    resp.raise_for_status()
    upload_url, asset_id = resp.json()["uploadUrl"], resp.json()["assetId"]
    s3_headers = {"x-amz-meta-nvcf-asset-description": name, "content-type": "audio/wav",
                  "content-length": str(os.path.getsize(path))}
    with open(path, "rb") as fh:
        resp = httpx.put(upload_url, content=chunks(fh), headers=s3_headers, timeout=300)
    resp.raise_for_status()
    print(asset_id)
"""


@dataclass
class Emulator:
    assets_url: str
    storage: Path

    def stored(self) -> int:
        """Uploads the emulator holds (one file per uploaded asset)."""
        return sum(1 for p in self.storage.iterdir() if p.is_file() and not p.name.startswith("."))

    def listed(self) -> int:
        """Assets the emulator lists for the benchmark's key."""
        import httpx

        resp = httpx.get(self.assets_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
        resp.raise_for_status()
        return len(resp.json()["assets"])


@contextmanager
def emulator(latency_api: float = 0.0, latency_upload: float = 0.0) -> Iterator[Emulator]:
    """A fresh ``nvmedia emulator`` process with tmpfs storage, stopped (SIGTERM) and cleaned up on exit."""
    shm = Path("/dev/shm")
    storage = Path(tempfile.mkdtemp(prefix="nvmedia-bench-emu-", dir=shm if shm.is_dir() else None))
    cmd = nvmedia_cmd(
        "emulator", "--port", "0", "--latency-api", str(latency_api), "--latency-upload", str(latency_upload),
        "--storage-dir", str(storage),
    )  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        if not base_url.startswith("http"):
            raise RuntimeError(f"the emulator did not start (first line: {base_url!r})")
        yield Emulator(base_url + "/v2/nvcf/assets", storage)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(storage, ignore_errors=True)


def prepare_cmd(target: Path, emu: Emulator, out: Path, *extra: str) -> list[str]:
    return nvmedia_cmd(
        "prepare", str(target), "--mode", "asset", "--assets-url", emu.assets_url, "--api-key", API_KEY,
        "-o", str(out), *extra,
    )  # fmt: skip


def timed_run(cmd: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def asset_ids(manifest: Path) -> list[str]:
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    items = [r for r in records if r.get("type") == "item"]
    bad = [r for r in items if r["status"] != "ok" or not r.get("asset_id")]
    assert not bad, f"{len(bad)} items not uploaded; first: {bad[0]}"
    return [r["asset_id"] for r in items]


def bench_many(tmp: Path, count: int, size: int, repeat: int, env: dict[str, str]) -> None:
    folder = tmp / "many"
    started = time.perf_counter()
    noise_wavs(folder, count, size)
    print(f"generated {count} WAVs of {size:,} bytes in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    # The same files as two folders of 10 (hard links): with --group dir each folder is one request
    # whose uploads run in parallel; a diagnostic for the default (--group file) figure.
    halves = tmp / "many-halves"
    for i, path in enumerate(sorted(folder.iterdir())):
        (halves / f"part{i * 2 // count}").mkdir(parents=True, exist_ok=True)
        os.link(path, halves / f"part{i * 2 // count}" / path.name)
    out = tmp / "many.jsonl"
    for latency in (INTERNET, (0.0, 0.0)):
        sample_t, ours_t, dirs_t = [], [], []
        for _ in range(repeat):
            with emulator(*latency) as emu:
                sample_t.append(timed_run([sys.executable, "-c", SAMPLE, str(folder), emu.assets_url, API_KEY]))
                assert emu.listed() == count
            with emulator(*latency) as emu:
                ours_t.append(timed_run(prepare_cmd(folder, emu, out, "--no-cache"), env))
                assert len(set(asset_ids(out))) == count and emu.listed() == count
            with emulator(*latency) as emu:
                dirs_t.append(timed_run(prepare_cmd(halves, emu, out, "--no-cache", "--group", "dir"), env))
                assert len(set(asset_ids(out))) == count and emu.listed() == count
        sample, ours, dirs = statistics.median(sample_t), statistics.median(ours_t), statistics.median(dirs_t)
        report(
            "upload_many",
            files=count,
            mb_each=round(size / 1e6, 1),
            latency_api_s=latency[0],
            latency_upload_s=latency[1],
            sequential_sample_s=round(sample, 2),
            nvmedia_s=round(ours, 2),
            ratio=round(sample / ours, 2),
            nvmedia_group_dir_2x10_s=round(dirs, 2),
            ratio_group_dir=round(sample / dirs, 2),
            target=">= 3.0",
        )


def bench_big(tmp: Path, size: int, env: dict[str, str]) -> None:
    src = silent_wav(tmp / "big.wav", size)
    profile = tmp / "no-audio-cap.json"
    profile.write_text(json.dumps({"base": "nemotron-3-nano-omni", "name": "no-audio-cap", "max_audio_s": None}))
    out = tmp / "big.jsonl"
    local_cmd = nvmedia_cmd(
        "prepare", str(src), "--mode", "asset", "--dry-run", "--profile", str(profile), "-o", str(out)
    )
    start = time.perf_counter()
    local_mb = peak_rss_mb(local_cmd)
    local_s = time.perf_counter() - start
    with emulator() as emu:
        start = time.perf_counter()
        full_mb = peak_rss_mb(prepare_cmd(src, emu, out, "--no-cache", "--profile", str(profile)))
        full_s = time.perf_counter() - start
        assert len(asset_ids(out)) == 1 and emu.stored() == 1
        stored = next(p for p in emu.storage.iterdir() if p.is_file()).stat().st_size
        assert stored == src.stat().st_size, (stored, src.stat().st_size)
    report(
        "upload_2gb",
        input=f"{size / 1e9:.2f} GB WAV ({size / WAV_BYTES_PER_S / 3600:.2f} h, 44.1 kHz stereo s16, silent)",
        total_s=round(full_s, 1),
        dry_run_s=round(local_s, 1),
        peak_rss_mb=round(full_mb, 1),
        dry_run_peak_rss_mb=round(local_mb, 1),
        target="peak RSS < 120 MB",
    )


def bench_warm(tmp: Path, count: int, size: int, env: dict[str, str], repeat: int) -> None:
    folder = tmp / "warm"
    noise_wavs(folder, count, size, seed=1000)
    cache_env = dict(env, NVMEDIA_CACHE_DIR=str(tmp / "warm-cache"))
    cold_out, warm_out = tmp / "cold.jsonl", tmp / "warm.jsonl"
    with emulator(*INTERNET) as emu:
        cold = timed_run(prepare_cmd(folder, emu, cold_out), cache_env)
        stored_before, listed_before = emu.stored(), emu.listed()
        warm_t = [timed_run(prepare_cmd(folder, emu, warm_out), cache_env) for _ in range(repeat)]
        uploads = emu.stored() - stored_before
        created = emu.listed() - listed_before
        same_ids = asset_ids(warm_out) == asset_ids(cold_out)
    warm = statistics.median(warm_t)
    report(
        "upload_warm_cache",
        files=count,
        kb_each=round(size / 1e3),
        latency_api_s=INTERNET[0],
        latency_upload_s=INTERNET[1],
        cold_s=round(cold, 2),
        warm_s=round(warm, 2),
        ratio=round(cold / warm, 1),
        warm_uploads=uploads,
        warm_new_assets=created,
        warm_ids_equal_cold=same_ids,
        target="0 uploads, ratio >= 10",
    )


def bench_delete(count: int, repeat: int) -> None:
    import anyio

    from nvmedia.assets import AssetClient, AsyncAssetClient, DeleteReport

    def fresh(client: AssetClient) -> list[str]:
        with ThreadPoolExecutor(16) as pool:  # creating them is set-up, not what is measured
            return [c.asset_id for c in pool.map(lambda _: client.create("image/png"), range(count))]

    def timed_delete(delete: Callable[[], DeleteReport | None]) -> float:
        start = time.perf_counter()
        outcome = delete()
        elapsed = time.perf_counter() - start
        assert outcome is None or not outcome.failed, outcome
        return elapsed

    def one_by_one(client: AssetClient, ids: list[str]) -> None:
        for asset_id in ids:
            client.delete(asset_id)

    async def on_the_loop(assets_url: str, ids: list[str]) -> DeleteReport:
        async with AsyncAssetClient(api_key=API_KEY, base_url=assets_url) as aclient:
            return await aclient.delete_many(ids)

    sequential_t, threads_t, async_t = [], [], []
    with emulator(latency_api=0.1) as emu, AssetClient(api_key=API_KEY, base_url=emu.assets_url) as client:
        for _ in range(repeat):
            sequential_t.append(timed_delete(functools.partial(one_by_one, client, fresh(client))))
            threads_t.append(timed_delete(functools.partial(client.delete_many, fresh(client))))
            async_t.append(timed_delete(functools.partial(anyio.run, on_the_loop, emu.assets_url, fresh(client))))
        assert emu.listed() == 0
    sequential, threads, on_loop = (statistics.median(t) for t in (sequential_t, threads_t, async_t))
    report(
        "delete_many",
        assets=count,
        latency_api_s=0.1,
        sequential_s=round(sequential, 2),
        delete_many_s=round(threads, 2),
        async_delete_many_s=round(on_loop, 2),
        ratio=round(sequential / threads, 1),
        ratio_async=round(sequential / on_loop, 1),
        target="delete_many < 3 s",
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller files, fewer of them, one run each")
    parser.add_argument("--only", choices=("many", "big", "warm", "delete"), help="run one part")
    args = parser.parse_args()
    quick = args.quick
    wanted = {args.only} if args.only else {"many", "big", "warm", "delete"}
    with tempfile.TemporaryDirectory(prefix="nvmedia-bench-") as name:
        tmp = Path(name)
        # The cache must never be the user's own: every run points it at the temp folder.
        env = dict(os.environ, NVMEDIA_CACHE_DIR=str(tmp / "cache"))
        if "many" in wanted:
            bench_many(tmp, count=20, size=(2 if quick else 20) * 1_000_000, repeat=1 if quick else 3, env=env)
        if "big" in wanted:
            bench_big(tmp, size=(200 if quick else 2_000) * 1_000_000, env=env)
        if "warm" in wanted:
            bench_warm(tmp, count=40 if quick else 200, size=300_000, env=env, repeat=1 if quick else 3)
        if "delete" in wanted:
            bench_delete(count=190, repeat=1 if quick else 3)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
