#!/usr/bin/env bash
# Run every benchmark, one after another (never two at once: they share 2 cores).
# Results are printed and appended to benchmarks/out/results.jsonl.
#   bash benchmarks/run_all.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")"
quick=("$@")
python bench_startup.py
python bench_ffmpeg_check.py
python bench_passthrough.py
python bench_photo.py "${quick[@]}"
python bench_av.py "${quick[@]}"
python bench_audio_strip.py "${quick[@]}"
python bench_upload.py "${quick[@]}"
python bench_ray.py "${quick[@]}"
python bench_resume.py "${quick[@]}"
python bench_disk.py
python bench_batch.py
python bench_messages.py
python bench_client.py
