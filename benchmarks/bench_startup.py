"""`nvmedia --help` start-up time (target: under 0.3 s), against `python -c pass` in the same run."""

from __future__ import annotations

import sys

from common import nvmedia_cmd, report, run, timed


def main() -> int:
    bare = timed(lambda: run([sys.executable, "-c", "pass"]), repeat=7)
    helptime = timed(lambda: run(nvmedia_cmd("--help")), repeat=7)
    report(
        "startup",
        python_bare_s=round(bare, 3),
        nvmedia_help_s=round(helptime, 3),
        ratio=round(helptime / bare, 2),
        target="help < 0.3 s",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
