"""nvmedia on Ray Data (issue 10): scaling with CPUs, the engine's overhead, and per-item costs for an estimate.

(a) ``ray_scaling``: ``nvmedia prepare DIR --dry-run --engine ray`` over 400 12-megapixel
    camera photos on a local Ray cluster of 2 CPUs against one of 1 CPU. Target: >= 1.6x.
(b) ``ray_vs_local``: the same Ray run on 2 CPUs against the local engine, ``-j 2``
    (worker processes), on the same photos. Target: within 1.3x.
    Both time the prepare command on a running, warmed-up cluster (one subprocess per
    cluster size: ``ray.init``, one small warm-up run, then the timed runs in that
    process, the local engine's runs interleaved with the 2-CPU ones); starting the
    cluster is a fixed cost, reported apart (``ray_startup``).
(c) ``ray_item_costs``: seconds per item on 1 CPU for each kind of a mixed workload
    (camera photo, 3-minute voice memo in M4A, 30 s 720p H.264 screen recording that is
    remuxed, 30 s 720p VP8 WebM that is transcoded), and output bytes per item.
(d) ``ray_estimate``: from (c), throughput and cost of 10 million mixed files on a
    16-node cluster, under the assumptions in ``ASSUMPTIONS`` (also in benchmarks/README.md).

Ray runs on loopback only (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, no dashboard, no
usage statistics), as in the tests.

    python benchmarks/bench_ray.py [--quick] [--count 400] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import nvmedia_cmd, report, run, timed
from media import camera_photo, ffmpeg, h264_mov, photo_variants

ASSUMPTIONS: dict[str, Any] = {
    "files": 10_000_000,
    "mix": {"photo": 0.70, "voice_memo": 0.20, "screen_recording": 0.08, "video_transcode": 0.02},
    "nodes": 16,
    "vcpus_per_node": 16,
    "node_price_per_hour_usd": 0.68,
    "node_note": "16 vCPU / 32 GB general-purpose x86 (c6i.4xlarge-class) on-demand",
    "cpu_efficiency": 0.85,
    "upload_mb_per_s_per_node": 100.0,
    "inline_limit_chars": 180_000,
}
"""The cluster and the workload the estimate assumes: 1 vCPU is taken as one of this machine's cores
(hyper-threaded vCPUs are slower: cpu_efficiency also covers that, and Ray's scheduling gaps)."""


def _loopback_env() -> dict[str, str]:
    return {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


# -- the worker: one Ray cluster of N CPUs, in its own process -----------------------------------------


def worker(cpus: int, folder: Path, warmup: Path, repeat: int, mix: Path | None, compare_local: bool) -> None:
    """Runs inside the subprocess: start Ray, warm it up, time the runs; print one JSON line."""
    started = time.perf_counter()
    import ray

    from nvmedia.cli import main

    ray.init(num_cpus=cpus, include_dashboard=False, object_store_memory=200 * 1024 * 1024, log_to_driver=False)
    out = folder.parent / f"ray-{cpus}.jsonl"
    assert main(["prepare", str(warmup), "--dry-run", "--engine", "ray", "-o", str(out)]) == 0
    startup = time.perf_counter() - started
    args = ["prepare", str(folder), "--dry-run", "--engine", "ray", "-o", str(out)]
    local_out = folder.parent / "local.jsonl"
    local_cmd = nvmedia_cmd("prepare", str(folder), "--dry-run", "-j", "2", "-o", str(local_out))
    ray_times, local_times = [], []
    for _ in range(repeat):  # interleaved with the local engine's runs: a busy machine slows both alike
        ray_times.append(timed(lambda: main(args), repeat=1))
        if compare_local:
            local_times.append(timed(lambda: run(local_cmd), repeat=1))
    result: dict[str, Any] = {
        "cpus": cpus,
        "seconds": statistics.median(ray_times),
        "local_j2_s": statistics.median(local_times) if local_times else None,
        "startup_s": startup,
        "manifest": str(out),
    }
    if mix is not None:
        costs = {}
        for kind_dir in sorted(mix.iterdir()):
            kind_out = mix.parent / f"mix-{kind_dir.name}.jsonl"
            kind_args = ["prepare", str(kind_dir), "--dry-run", "--engine", "ray", "-o", str(kind_out)]
            elapsed = timed(lambda a=kind_args: main(a), repeat=1)
            records = [json.loads(line) for line in kind_out.read_text().splitlines()]
            assert all(r["status"] == "ok" for r in records), [r.get("error") for r in records]
            costs[kind_dir.name] = {
                "items": len(records),
                "s_per_item": elapsed / len(records),
                "out_bytes_per_item": statistics.mean(r["output"]["bytes"] for r in records),
                "actions": records[0]["actions"],
            }
        result["mix"] = costs
    ray.shutdown()
    print(json.dumps(result))


def run_worker(
    cpus: int, folder: Path, warmup: Path, repeat: int, mix: Path | None = None, compare_local: bool = False
) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", str(cpus), "--folder", str(folder), "--warmup", str(warmup)]
    cmd += ["--repeat", str(repeat)] + (["--mix", str(mix)] if mix is not None else [])
    cmd += ["--compare-local"] if compare_local else []
    done = subprocess.run(cmd, env=_loopback_env(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the Ray worker run failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- inputs for the mixed workload ---------------------------------------------------------------------


def voice_memo(path: Path, seconds: float) -> Path:
    """A phone voice memo: 44.1 kHz stereo AAC in M4A (speech-like: a wobbling tone over pink noise)."""
    ffmpeg(
        "-f", "lavfi", "-i", f"anoisesrc=color=pink:amplitude=0.1:seed=3:sample_rate=44100:duration={seconds:g}",
        "-f", "lavfi", "-i", f"sine=frequency=220:sample_rate=44100:duration={seconds:g}",
        "-filter_complex", "[1]vibrato=f=4:d=0.5[v];[0][v]amix=inputs=2,aformat=channel_layouts=stereo",
        "-c:a", "aac", "-b:a", "96k", "-f", "ipod", str(path),
    )  # fmt: skip
    return path


def vp8_webm(path: Path, seconds: float) -> Path:
    """A 720p VP8 + Vorbis WebM (a browser recording): nvmedia transcodes it to H.264 + AAC in MP4."""
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", f"{seconds:g}", "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "1M",
        "-c:a", "libvorbis", "-f", "webm", str(path),
    )  # fmt: skip
    return path


def make_mix(folder: Path, photos: list[Path], quick: bool) -> Path:
    n = 1 if quick else 2
    (folder / "photo").mkdir(parents=True)
    for src in photos[: 4 * n]:
        shutil.copyfile(src, folder / "photo" / src.name)
    (folder / "voice_memo").mkdir()
    for i in range(2 * n):
        voice_memo(folder / "voice_memo" / f"memo_{i}.m4a", 180 + i)
    (folder / "screen_recording").mkdir()
    for i in range(n):
        h264_mov(folder / "screen_recording" / f"screen_{i}.mov", 30 + i)
    (folder / "video_transcode").mkdir()
    for i in range(n):
        vp8_webm(folder / "video_transcode" / f"clip_{i}.webm", 30 + i)
    return folder


# -- the estimate ----------------------------------------------------------------------------------------


def estimate(costs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Throughput and cost of ``ASSUMPTIONS['files']`` mixed files on the assumed cluster."""
    a = ASSUMPTIONS
    cpu_s_per_file = sum(a["mix"][k] * costs[k]["s_per_item"] for k in a["mix"])
    upload_bytes_per_file = sum(
        a["mix"][k] * costs[k]["out_bytes_per_item"]
        for k in a["mix"]
        if costs[k]["out_bytes_per_item"] * 4 / 3 >= a["inline_limit_chars"]  # its base64 is past the inline limit
    )
    cores = a["nodes"] * a["vcpus_per_node"] * a["cpu_efficiency"]
    cpu_hours = a["files"] * cpu_s_per_file / cores / 3600
    upload_hours = a["files"] * upload_bytes_per_file / (a["nodes"] * a["upload_mb_per_s_per_node"] * 1e6) / 3600
    hours = max(cpu_hours, upload_hours)  # uploads overlap normalization (separate actors, network-bound)
    return {
        "cpu_s_per_file": round(cpu_s_per_file, 4),
        "uploaded_mb_per_file": round(upload_bytes_per_file / 1e6, 3),
        "cpu_bound_hours": round(cpu_hours, 2),
        "upload_bound_hours": round(upload_hours, 2),
        "hours": round(hours, 2),
        "files_per_second": round(a["files"] / (hours * 3600)),
        "cost_usd": round(hours * a["nodes"] * a["node_price_per_hour_usd"], 2),
        "cost_usd_per_million_files": round(hours * a["nodes"] * a["node_price_per_hour_usd"] / (a["files"] / 1e6), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="100 photos, one run each")
    parser.add_argument("--count", type=int, help="photos (default 400)")
    parser.add_argument("--repeat", type=int, help="runs per figure; the median is reported (default 3)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mix", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--compare-local", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeat = args.repeat or (1 if args.quick else 3)
    if args.worker is not None:
        worker(args.worker, args.folder, args.warmup, repeat, args.mix, args.compare_local)
        return 0
    count = args.count or (100 if args.quick else 400)
    with tempfile.TemporaryDirectory(prefix="nvmedia-bench-ray-") as name:
        tmp = Path(name)
        started = time.perf_counter()
        photos = photo_variants(camera_photo(tmp / "base"), tmp / "photos", count)
        warmup = tmp / "warmup"
        warmup.mkdir()
        for src in photos[:4]:
            shutil.copyfile(src, warmup / src.name)
        mix = make_mix(tmp / "mix", photos, args.quick)
        print(f"generated {count} photos and the mix in {time.perf_counter() - started:.1f} s", file=sys.stderr)

        one = run_worker(1, tmp / "photos", warmup, repeat, mix)
        two = run_worker(2, tmp / "photos", warmup, repeat, compare_local=True)
        local_j2 = two["local_j2_s"]
        local_records = (tmp / "local.jsonl").read_text()
        assert Path(two["manifest"]).read_text() == local_records, "Ray and the local engine disagree"
        assert Path(one["manifest"]).read_text() == local_records
        ok = sum(json.loads(line)["status"] == "ok" for line in local_records.splitlines())
        assert ok == count, f"expected {count} ok records, got {ok}"

        report(
            "ray_scaling",
            photos=count,
            ray_1cpu_s=round(one["seconds"], 2),
            ray_2cpu_s=round(two["seconds"], 2),
            ratio=round(one["seconds"] / two["seconds"], 2),
            target=">= 1.6",
        )
        report(
            "ray_vs_local",
            photos=count,
            ray_2cpu_s=round(two["seconds"], 2),
            local_j2_s=round(local_j2, 2),
            ratio=round(two["seconds"] / local_j2, 2),
            target="<= 1.3",
        )
        report(
            "ray_startup",
            cluster_start_and_warmup_1cpu_s=round(one["startup_s"], 1),
            cluster_start_and_warmup_2cpu_s=round(two["startup_s"], 1),
            note="ray.init plus a 4-photo run that starts and warms the workers; paid once per command",
        )
        costs = one["mix"]
        costs["photo"]["s_per_item"] = one["seconds"] / count  # the large sample beats the 4-photo one
        report(
            "ray_item_costs",
            **{
                kind: {
                    "s_per_item_1cpu": round(c["s_per_item"], 3),
                    "out_kb_per_item": round(c["out_bytes_per_item"] / 1000, 1),
                    "actions": c["actions"],
                }
                for kind, c in costs.items()
            },
        )
        report("ray_estimate", assumptions=ASSUMPTIONS, **estimate(costs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
