"""rewrite_messages (issue 9): a 20-turn conversation with 6 media references, against prepare on the same 6 files.

The six files are a mix of what a chat carries: two 12 MP camera photos (rotated, tagged:
converted and uploaded), a small PNG (inline as it is), a 30 s MP3 (uploaded), a 10 s
44.1 kHz stereo WAV (converted to 16 kHz mono) and a 5 s 640x360 H.264 MOV (remuxed). The
conversation is 20 turns (a system message, then user and assistant in turn) whose user
turns name the files once each, as ``image_url``/``audio_url``/``video_url`` parts, tags in
string content and tags in a text part, some by relative path and some by ``file://`` URL.

Both sides run in this process against the emulator over loopback (no latency), with the
asset-id cache and the output cache off, inside a ``with`` block that deletes what was
uploaded; they alternate, ``--repeat`` times each, and the medians are compared. Target:
``rewrite_messages`` under 2x ``prepare``. Also reported: rewriting the conversation it
returned (history that is already ready to send), which should cost next to nothing.

    python benchmarks/bench_messages.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import report
from media import camera_photo, h264_mov, noise_mp3, noise_wav, photo_variants

import nvmedia
from nvmedia.testing import NVCFEmulator

KEY = "nvapi-bench-local-key"


def make_files(folder: Path) -> list[Path]:
    from PIL import Image, ImageDraw

    photos = photo_variants(camera_photo(folder / "base"), folder / "photos", 2)
    png = folder / "diagram.png"
    image = Image.new("RGB", (400, 300), "white")
    ImageDraw.Draw(image).rectangle((50, 50, 350, 250), outline="black", width=4)
    image.save(png)
    mp3 = noise_mp3(folder / "talk.mp3", 30)
    wav = noise_wav(folder / "memo.wav", 10 * 44_100 * 4, seed=3)
    mov = h264_mov(folder / "clip.mov", 5, size="640x360")
    return [*photos, png, mp3, wav, mov]


def conversation(files: list[Path], folder: Path) -> list[dict[str, Any]]:
    """20 turns; the user turns name the 6 files once each, in different forms."""
    photo1, photo2, png, mp3, wav, mov = (p.relative_to(folder) for p in files)
    media_turns: list[Any] = [
        [{"type": "text", "text": "What is in this photo?"}, {"type": "image_url", "image_url": {"url": str(photo1)}}],
        f"And this one? <img src='{photo2}' alt='second photo'>",
        [{"type": "text", "text": f'Explain the diagram <IMG SRC="{png}"/> briefly.'}],
        [{"type": "text", "text": "Summarize the talk."}, {"type": "audio_url", "audio_url": {"url": str(mp3)}}],
        f'Transcribe <audio src="file://{folder / wav}" />',
        [{"type": "text", "text": "What happens here?"}, {"type": "video_url", "video_url": {"url": str(mov)}}],
    ]
    messages: list[dict[str, Any]] = [{"role": "system", "content": "/no_think"}]
    for turn in range(19):
        if turn % 2:
            messages.append({"role": "assistant", "content": f"Answer number {turn // 2}, several sentences long."})
        elif turn // 2 < len(media_turns):
            messages.append({"role": "user", "content": media_turns[turn // 2]})
        else:
            messages.append({"role": "user", "content": f"A follow-up question, number {turn // 2}."})
    return messages


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each side, alternating; medians compared")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-messages-") as tmp, NVCFEmulator() as emu:
        folder = Path(tmp)
        files = make_files(folder)
        messages = conversation(files, folder)
        where: dict[str, Any] = {"assets_url": emu.assets_url, "api_key": KEY, "cache": False}
        os.chdir(folder)  # the conversation names files relative to their folder

        def prepare() -> None:
            with nvmedia.prepare(files, **where):
                pass

        def rewrite() -> None:
            with nvmedia.rewrite_messages(messages, **where) as rw:
                assert len(rw.items) == 6 and len(rw.messages) == 20

        rewrite()  # warm up: imports, first emulator connections
        base, ours = [], []
        for _ in range(args.repeat):
            base.append(seconds(prepare))
            ours.append(seconds(rewrite))
        with nvmedia.rewrite_messages(messages, **where) as rw:
            again = statistics.median(seconds(lambda: nvmedia.rewrite_messages(rw.messages, **where)) for _ in range(5))
            assets = len(rw.asset_ids)
        if emu.assets(KEY):
            raise RuntimeError(f"{len(emu.assets(KEY))} assets left behind")
    p, r = statistics.median(base), statistics.median(ours)
    report(
        "messages_rewrite",
        turns=20,
        references=6,
        assets=assets,
        prepare_s=round(p, 3),
        rewrite_s=round(r, 3),
        ratio=round(r / p, 2),
        rewrite_ready_conversation_ms=round(again * 1000, 1),
        repeat=args.repeat,
        target="< 2x",
    )


if __name__ == "__main__":
    main()
