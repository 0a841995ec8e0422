"""What the examples share: media to send when you give none, and the service to send it to.

python examples/demo.py FOLDER     # writes FOLDER/photo.png and FOLDER/memo.wav
"""

from __future__ import annotations

import argparse
import math
import os
import struct
import sys
import tempfile
import wave
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

MODEL = "nvidia/nemotron-3-nano-omni-30b-a3b-reasoning"


@dataclass
class Service:
    """Where requests go.

    Attributes:
        base_url: the OpenAI-style base (ends with ``/v1``).
        key: the bearer key.
        media: nvmedia's options that name the asset API (empty for the real one: ``$NVIDIA_API_KEY``).
        emulator: the local emulator, with ``--emulate``.
    """

    base_url: str
    key: str
    media: dict[str, Any] = field(default_factory=dict)
    emulator: Any = None


def parser(doc: str) -> argparse.ArgumentParser:
    """The examples' command line: ``FILE...`` (a picture and a recording) and ``--emulate``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="a picture and a recording (default: generated ones)")
    parser.add_argument("--emulate", action="store_true", help="talk to a local emulator instead of the service")
    return parser


def inputs(stack: ExitStack, files: list[Path]) -> tuple[Path, Path]:
    """The files given, or generated ones in a temporary folder that ``stack`` removes."""
    if files:
        return files[0], files[1]
    return demo_files(Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nvmedia-demo-"))))


def service(stack: ExitStack, emulate: bool) -> Service:
    """NVIDIA's endpoints, or (``emulate``) a local emulator that ``stack`` stops."""
    if not emulate:
        return Service("https://integrate.api.nvidia.com/v1", os.environ["NVIDIA_API_KEY"])
    from nvmedia.testing import NVCFEmulator

    emu = stack.enter_context(NVCFEmulator())
    key = "nvapi-local"
    return Service(emu.base_url + "/v1", key, {"assets_url": emu.assets_url, "api_key": key}, emu)


def demo_files(folder: Path) -> tuple[Path, Path]:
    """``(photo, memo)``: a 640x480 PNG (small: sent inline) and a 10 s WAV (320 KB: uploaded as an asset)."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = folder / "photo.png"
    image = Image.linear_gradient("L").resize((640, 480)).convert("RGB")
    ImageDraw.Draw(image).ellipse((220, 140, 420, 340), fill=(230, 120, 30))
    image.save(photo)
    memo = folder / "memo.wav"
    rate = 16_000
    samples = (int(8000 * math.sin(2 * math.pi * 220 * n / rate)) for n in range(10 * rate))
    with wave.open(str(memo), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", s) for s in samples))
    return photo, memo


if __name__ == "__main__":
    for path in demo_files(Path(sys.argv[1] if len(sys.argv) > 1 else ".")):
        print(path)
