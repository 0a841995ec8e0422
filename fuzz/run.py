"""The long fuzz run: N mutants of the corpus through sniff, probe and normalize.

    python fuzz/run.py --mutants 3000 --seed 1 --jobs 2 --save /tmp/findings

Mutant ``i`` is a pure function of ``(seed, i)``, so a finding is reproduced by its index.
Each mutant runs in a forked worker (a crashing decoder is recorded, not fatal); findings are
grouped by rule, exception type and place, and one input per group is saved with ``--save``.
See fuzz/README.md for the figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import BrokenExecutor, Future, ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from target import check, mutate, seeds  # noqa: E402


def mutant(seed: int, index: int, files: list[Path]) -> tuple[str, bytes]:
    rng = random.Random(f"{seed}:{index}")
    origin = rng.choice(files)
    return origin.name, mutate(origin.read_bytes(), rng)


def run_one(seed: int, index: int, files: list[Path]) -> tuple[int, str, dict[str, str] | None]:
    name, data = mutant(seed, index, files)
    with tempfile.TemporaryDirectory(prefix="nvmedia-fuzz-") as tmp:
        path = Path(tmp) / f"m{index}{Path(name).suffix}"
        path.write_bytes(data)
        work = Path(tmp) / "work"
        work.mkdir()
        finding = check(path, work)
    if finding is None:
        return index, name, None
    return index, name, {"rule": finding.rule, "detail": finding.detail, "key": finding.key(), "trace": finding.trace}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--max-seed-bytes", type=int, default=1 << 20, help="corpus files up to this size are seeds")
    parser.add_argument("--save", type=Path, help="write one input per distinct finding here")
    args = parser.parse_args(argv)

    files = seeds(args.max_seed_bytes)
    context = multiprocessing.get_context("fork")
    started = time.monotonic()
    results: dict[int, tuple[str, dict[str, str] | None]] = {}
    todo = list(range(args.mutants))
    alone = False
    while todo:
        jobs = 1 if alone else args.jobs
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures: dict[int, Future[tuple[int, str, dict[str, str] | None]]] = {
                i: pool.submit(run_one, args.seed, i, files) for i in (todo[:1] if alone else todo)
            }
            broken: list[int] = []
            for i, future in futures.items():
                try:
                    _, name, finding = future.result()
                    results[i] = (name, finding)
                except BrokenExecutor:
                    broken.append(i)
        if alone and broken:  # it crashed its worker while running alone: it is the culprit
            (i,) = broken
            name, _ = mutant(args.seed, i, files)
            results[i] = (name, {"rule": "crash", "detail": "the worker process died", "key": "crash", "trace": ""})
            broken = []
        done = set(results)
        todo = [i for i in todo if i not in done]
        alone = bool(broken) and not alone
    elapsed = time.monotonic() - started

    findings = {i: r for i, r in results.items() if r[1] is not None}
    groups: Counter[str] = Counter(f["key"] for _, f in findings.values() if f is not None)
    print(
        json.dumps(
            {
                "mutants": len(results),
                "seed": args.seed,
                "findings": len(findings),
                "distinct": len(groups),
                "s": round(elapsed, 1),
            }
        )
    )
    first: dict[str, int] = {}
    for i, (_, finding) in sorted(findings.items()):
        assert finding is not None
        first.setdefault(finding["key"], i)
    for key, i in sorted(first.items(), key=lambda kv: -groups[kv[0]]):
        name, finding = findings[i]
        assert finding is not None
        print(f"{groups[key]:4}x  #{i} from {name}: {finding['rule']}: {finding['detail']}")
        if finding["trace"]:
            print("      " + " | ".join(finding["trace"].strip().splitlines()[-4:-1]))
        if args.save is not None:
            args.save.mkdir(parents=True, exist_ok=True)
            _, data = mutant(args.seed, i, files)
            (args.save / f"{i}-{name}").write_bytes(data)
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
