"""Small media for the examples to send when you give them none: a picture and a voice-memo-like recording.

python examples/demo_media.py FOLDER     # writes FOLDER/photo.png and FOLDER/memo.wav
"""

from __future__ import annotations

import math
import struct
import sys
import wave
from pathlib import Path

from PIL import Image, ImageDraw


def demo_files(folder: Path) -> tuple[Path, Path]:
    """``(photo, memo)``: a 640x480 PNG (small: sent inline) and a 10 s WAV (320 KB: uploaded as an asset)."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = folder / "photo.png"
    image = Image.linear_gradient("L").resize((640, 480)).convert("RGB")
    ImageDraw.Draw(image).ellipse((220, 140, 420, 340), fill=(230, 120, 30))
    image.save(photo)
    memo = folder / "memo.wav"
    rate = 16_000
    with wave.open(str(memo), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(
            b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 220 * n / rate))) for n in range(10 * rate))
        )
    return photo, memo


if __name__ == "__main__":
    for path in demo_files(Path(sys.argv[1] if len(sys.argv) > 1 else ".")):
        print(path)
