"""The cost of proving ffmpeg works (`ffmpeg -version`, once per process) against the smallest conversion it precedes.

Baseline, same run: `nvmedia prepare --dry-run` of a 1 s FLAC (one conversion to WAV), which pays the check once.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from common import nvmedia_cmd, report, run, timed
from media import ffmpeg, ffmpeg_exe


def main() -> int:
    exe = ffmpeg_exe()
    with tempfile.TemporaryDirectory() as tmp:
        flac = Path(tmp) / "tone.flac"
        ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "flac", str(flac))
        check = timed(lambda: subprocess.run([exe, "-hide_banner", "-version"], capture_output=True, check=True), 15)
        manifest = str(Path(tmp) / "m.jsonl")
        prepare = timed(
            lambda: run(nvmedia_cmd("prepare", str(flac), "--dry-run", "--no-output-cache", "-o", manifest)), 7
        )
    report(
        "ffmpeg_check",
        check_s=round(check, 4),
        prepare_one_flac_s=round(prepare, 3),
        ratio=round(check / prepare, 3),
        target="(informs: paid once per process that runs ffmpeg)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
