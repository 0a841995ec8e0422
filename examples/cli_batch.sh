#!/usr/bin/env bash
# Batch inference from the command line: one answer per file, as JSON lines, assets deleted after each.
#   bash examples/cli_batch.sh --emulate          # offline: the in-process emulator answers
#   bash examples/cli_batch.sh photos/            # the real service (NVIDIA_API_KEY must be set)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
emulate=()
if [[ "${1:-}" == "--emulate" ]]; then emulate=(--emulate); shift; fi
folder="${1:-}"
if [[ -z "$folder" ]]; then
    folder="$work/media"
    python "$here/demo.py" "$folder" >/dev/null
fi

nvmedia batch "Describe this in one sentence." "$folder" -o "$work/answers.jsonl" -j 4 "${emulate[@]}"
# Each line: sources, status, answer, usage, latency_s, error. Here the source and the answer:
python -c 'import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(r["sources"][0].rsplit("/", 1)[-1], "->", r["status"], r.get("answer") or r.get("error"))' "$work/answers.jsonl"
