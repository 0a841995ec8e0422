"""Audio and video (issue 3): remux against transcode, probe time, a one-hour MP3.

(a) ``av_remux``: a 60 s 720p30 H.264/AAC MOV (testsrc2 + sine, made with the
    bundled ffmpeg) through ``normalize_video`` under the default profile, which
    remuxes it to MP4 (``-c copy``, ``+faststart``), against the same call with the
    profile's ``video_codecs`` set to ``("hevc",)``: H.264 is then not acceptable,
    so the same code path transcodes the video (libx264 veryfast CRF 23, the AAC
    track is still copied). Each run sniffs and probes afresh (validation results
    are cached on the probe's ``MediaInfo``). Target: remux >= 20x faster.
(b) ``av_probe``: ``nvmedia.probe.probe`` on every audio/video file of
    fixtures/corpus (kind audio or video in expectations.json; files that probe
    to an error are timed too). Median of 11 calls per file, then the median over
    files. Target: < 5 ms.
(c) ``av_mp3_hour``: a one-hour 44.1 kHz stereo 128 kbps MP3 through
    ``nvmedia prepare FILE --dry-run``: wall time and peak RSS (the largest of
    nvmedia's process and its ffmpeg children), under the default profile (passes
    through after a full-decode validation) and under a profile file that forces
    a conversion (``max_sample_rate`` 32000: re-encoded to 16 kHz mono MP3).
    Memory must stay under 200 MB.
(d) ``av_split``: the same MP3 with ``--split-long-audio`` under a profile whose
    limit is 25/60 of its length (three pieces): time and peak RSS.

    python benchmarks/bench_av.py [--quick]     (--quick: 10 s video, 5-minute MP3)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, nvmedia_cmd, peak_rss_mb, report
from media import h264_mov, noise_mp3


def _normalize_video(src: Path, profile: Any, workdir: Path) -> Any:
    from nvmedia.normalize import NormalizeOptions
    from nvmedia.normalize.video import normalize_video
    from nvmedia.probe import probe
    from nvmedia.sniff import sniff_path

    sniffed = sniff_path(src)
    info = probe(src, sniffed)
    result = normalize_video(src, sniffed, info, profile, NormalizeOptions(workdir=workdir))
    result.path.unlink()
    return result


def _median_time(fn: Any, repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def bench_remux(tmp: Path, seconds: float, repeat: int) -> None:
    from nvmedia.probe import probe
    from nvmedia.profiles import NEMOTRON_3_NANO_OMNI
    from nvmedia.sniff import sniff_path
    from nvmedia.validate import validate_av

    src = h264_mov(tmp / "clip.mov", seconds)
    workdir = tmp / "work"
    workdir.mkdir()
    forced = NEMOTRON_3_NANO_OMNI.replace(video_codecs=("hevc",))
    _normalize_video(src, NEMOTRON_3_NANO_OMNI, workdir)  # warm-up: imports, page cache
    remux, remuxed = _median_time(lambda: _normalize_video(src, NEMOTRON_3_NANO_OMNI, workdir), repeat)
    transcode, transcoded = _median_time(lambda: _normalize_video(src, forced, workdir), max(1, repeat // 2))
    assert remuxed.actions == ["remux:mp4"], remuxed.actions
    assert transcoded.actions[0] == "transcode:h264", transcoded.actions

    def validate() -> None:
        sniffed = sniff_path(src)
        validate_av(src, sniffed, probe(src, sniffed))

    validation, _ = _median_time(validate, repeat)
    report(
        "av_remux",
        input=f"{seconds:g} s 1280x720 30 fps H.264/AAC MOV, {src.stat().st_size:,} bytes",
        remux_s=round(remux, 3),
        transcode_s=round(transcode, 2),
        ratio=round(transcode / remux, 1),
        of_which_validation_s=round(validation, 3),
        remux_actions=remuxed.actions,
        transcode_actions=transcoded.actions,
        target=">= 20",
    )


def bench_probe(repeat: int = 11) -> None:
    from nvmedia.errors import NVMediaError
    from nvmedia.probe import probe
    from nvmedia.sniff import sniff_path

    corpus = ROOT / "fixtures" / "corpus"
    expectations = json.loads((corpus / "expectations.json").read_text())
    files = [corpus / f["file"] for f in expectations["files"] if f["kind"] in ("audio", "video")]
    sniffed = {path: sniff_path(path) for path in files}

    def once(path: Path) -> bool:
        try:
            probe(path, sniffed[path])
        except NVMediaError:
            return False
        return True

    once(files[0])  # warm-up: PyAV import
    per_file: dict[Path, float] = {}
    ok: dict[Path, bool] = {}
    for path in files:
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            ok[path] = once(path)
            times.append(time.perf_counter() - start)
        per_file[path] = statistics.median(times)
    ok_times = [t for p, t in per_file.items() if ok[p]]
    slowest = max(per_file, key=lambda p: per_file[p])
    report(
        "av_probe",
        files=len(files),
        probed_ok=len(ok_times),
        median_ms=round(statistics.median(per_file.values()) * 1000, 2),
        median_ok_ms=round(statistics.median(ok_times) * 1000, 2),
        max_ms=round(per_file[slowest] * 1000, 2),
        slowest=slowest.name,
        target="median < 5 ms",
    )


def _prepare_dry_run(src: Path, out: Path, *profile: str) -> tuple[float, float, dict[str, Any]]:
    cmd = nvmedia_cmd("prepare", str(src), "--dry-run", "-o", str(out), *profile)
    start = time.perf_counter()
    mb = peak_rss_mb(cmd)
    elapsed = time.perf_counter() - start
    record: dict[str, Any] = json.loads(out.read_text().splitlines()[0])
    assert record["status"] == "ok", record
    return elapsed, mb, record


def bench_mp3(tmp: Path, seconds: float) -> None:
    started = time.perf_counter()
    src = noise_mp3(tmp / "hour.mp3", seconds)
    print(f"generated a {seconds:g} s MP3 in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    forcing = tmp / "convert.json"
    forcing.write_text(json.dumps({"base": "nemotron-3-nano-omni", "name": "bench-32k", "max_sample_rate": 32000}))
    out = tmp / "manifest.jsonl"
    pass_s, pass_mb, pass_rec = _prepare_dry_run(src, out)
    conv_s, conv_mb, conv_rec = _prepare_dry_run(src, out, "--profile", str(forcing))
    assert pass_rec["actions"] == [], pass_rec["actions"]
    assert conv_rec["actions"], conv_rec
    out_desc = conv_rec["output"]
    report(
        "av_mp3_hour",
        input=f"{seconds:g} s 44.1 kHz stereo 128 kbps MP3, {src.stat().st_size:,} bytes",
        passthrough_s=round(pass_s, 2),
        passthrough_peak_rss_mb=round(pass_mb, 1),
        convert_s=round(conv_s, 2),
        convert_peak_rss_mb=round(conv_mb, 1),
        convert_actions=conv_rec["actions"],
        convert_output=f"{out_desc['mime']} {out_desc.get('sample_rate')} Hz x{out_desc.get('channels')}, "
        f"{out_desc['bytes']:,} bytes",
        target="peak RSS < 200 MB",
    )
    # --split-long-audio on the same file, under a profile whose limit is 25/60 of its length.
    limit = round(seconds * 25 / 60)
    short = tmp / "short-audio.json"
    short.write_text(json.dumps({"base": "nemotron-3-nano-omni", "name": "short-audio", "max_audio_s": limit}))
    cmd = nvmedia_cmd("prepare", str(src), "--dry-run", "--split-long-audio", "--profile", str(short), "-o", str(out))
    start = time.perf_counter()
    split_mb = peak_rss_mb(cmd)
    split_s = time.perf_counter() - start
    pieces = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["status"] == "ok" for r in pieces), pieces
    report(
        "av_split",
        input=f"the same {seconds:g} s MP3, profile limit {limit} s",
        pieces=[f"{r['piece']['start_s']:g}-{r['piece']['end_s']:g} s" for r in pieces],
        split_s=round(split_s, 2),
        peak_rss_mb=round(split_mb, 1),
        target="peak RSS < 200 MB",
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a 10 s video and a 5-minute MP3, fewer runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nvmedia-bench-") as name:
        tmp = Path(name)
        bench_remux(tmp, 10 if args.quick else 60, repeat=2 if args.quick else 5)
        bench_probe()
        bench_mp3(tmp, 300 if args.quick else 3600)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
