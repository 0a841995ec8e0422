"""Deterministic benchmark inputs: camera photos, a MOV, long MP3s and PCM WAVs.

Everything is written into a folder the caller owns (a temporary directory).
Photos start from fixtures/make_images.py's 12-megapixel Orientation=6 camera
JPEG (GPS, camera tags, XMP, ICC); variants shift it and paint seeded shapes on
it so no two files share their pixels. Audio and video come from the same
ffmpeg executable nvmedia uses.
"""

from __future__ import annotations

import random
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from common import ROOT

WAV_RATE = 44_100
WAV_CHANNELS = 2
WAV_BYTES_PER_S = WAV_RATE * WAV_CHANNELS * 2


def ffmpeg_exe() -> str:
    """The ffmpeg executable nvmedia itself resolves (``NVMEDIA_FFMPEG``, imageio-ffmpeg's, or PATH)."""
    from nvmedia.ffmpeg import find_ffmpeg

    return find_ffmpeg()


def ffmpeg(*args: str) -> None:
    """Run the ffmpeg executable quietly; raise on failure."""
    subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-y", *args], check=True)


def camera_photo(folder: Path) -> Path:
    """The fixture generator's 4000x3000 Orientation=6 JPEG with camera, GPS and XMP metadata."""
    sys.path.insert(0, str(ROOT / "fixtures"))
    try:
        from make_images import make_images
    finally:
        sys.path.pop(0)
    path: Path = make_images(folder, only=["photo_12mp_rot6"])["photo_12mp_rot6"]
    return path


def photo_variants(base: Path, folder: Path, count: int, seed: int = 11) -> list[Path]:
    """``count`` distinct 12 MP camera JPEGs derived from ``base`` (same metadata, different pixels).

    Each is ``base`` rolled by a seeded offset with a few seeded shapes painted on, saved at
    quality 90 with the base's EXIF (Orientation 6, GPS), XMP and ICC profile.
    """
    from PIL import Image, ImageChops, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    with Image.open(base) as im:
        exif, icc, xmp = im.info.get("exif"), im.info.get("icc_profile"), im.info.get("xmp")
        pixels = im.convert("RGB")
    paths = []
    for i in range(count):
        img = ImageChops.offset(pixels, rng.randrange(pixels.width), rng.randrange(pixels.height))
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x, y = rng.randrange(img.width - 400), rng.randrange(img.height - 400)
            w, h = rng.randrange(50, 400), rng.randrange(50, 400)
            colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x, y, x + w, y + h), fill=colour)
        path = folder / f"IMG_{i:04}.jpg"
        params: dict[str, object] = {"quality": 90}
        params.update({k: v for k, v in (("exif", exif), ("icc_profile", icc), ("xmp", xmp)) if v})
        img.save(path, "JPEG", **params)
        paths.append(path)
    return paths


def h264_mov(path: Path, seconds: float, size: str = "1280x720", rate: int = 30) -> Path:
    """An H.264 (yuv420p) + AAC MOV from ffmpeg's testsrc2 and a sine tone."""
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", f"{seconds:g}",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", str(rate * 2),
        "-c:a", "aac", "-b:a", "128k", "-ac", "2",
        "-f", "mov", str(path),
    )  # fmt: skip
    return path


def noise_mp3(path: Path, seconds: float) -> Path:
    """A 44.1 kHz stereo 128 kbps MP3 of a tone over seeded pink noise (libmp3lame)."""
    ffmpeg(
        "-f", "lavfi", "-i", f"anoisesrc=color=pink:amplitude=0.2:seed=5:sample_rate={WAV_RATE}:duration={seconds:g}",
        "-f", "lavfi", "-i", f"sine=frequency=330:sample_rate={WAV_RATE}:duration={seconds:g}",
        "-filter_complex", "[0][1]amix=inputs=2,aformat=channel_layouts=stereo",
        "-c:a", "libmp3lame", "-b:a", "128k", "-f", "mp3", str(path),
    )  # fmt: skip
    return path


def wav_header(data_bytes: int, rate: int = WAV_RATE, channels: int = WAV_CHANNELS) -> bytes:
    """A canonical 44-byte PCM s16le WAV header for ``data_bytes`` of samples."""
    block = channels * 2
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def noise_wav(path: Path, data_bytes: int, seed: int) -> Path:
    """A valid 44.1 kHz stereo 16-bit WAV of seeded white noise (``data_bytes`` rounded to whole frames)."""
    data_bytes -= data_bytes % (WAV_CHANNELS * 2)
    rng = random.Random(seed)
    with path.open("wb") as fh:
        fh.write(wav_header(data_bytes))
        left = data_bytes
        while left:
            piece = min(left, 1 << 22)
            fh.write(rng.randbytes(piece))
            left -= piece
    return path


def silent_wav(path: Path, data_bytes: int) -> Path:
    """A valid 44.1 kHz stereo 16-bit WAV of digital silence, written sparsely (header + truncate)."""
    data_bytes -= data_bytes % (WAV_CHANNELS * 2)
    with path.open("wb") as fh:
        fh.write(wav_header(data_bytes))
        fh.truncate(44 + data_bytes)
    return path


def noise_wavs(folder: Path, count: int, data_bytes: int, seed: int = 1) -> list[Path]:
    """``count`` distinct noise WAVs named ``rec_NNN.wav`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return [noise_wav(folder / f"rec_{i:03}.wav", data_bytes, seed + i) for i in range(count)]


def sizes(paths: Sequence[Path]) -> int:
    return sum(p.stat().st_size for p in paths)
