"""The fuzz target: one input through sniff, probe and normalize, judged by two rules.

1. Nothing but an ``NVMediaError`` may come out: any other exception reaches users
   as "unexpected ...; please report it", so it is a finding.
2. An ``ok`` output must fully decode: images with Pillow (``load()``), audio and
   video with PyAV (every frame, no decoder error logged), and hold pixels or samples.

Shared by ``tests/test_fuzz.py`` (a short, seeded run in the suite) and ``fuzz/run.py``
(the long run). Mutations are deterministic functions of a ``random.Random``.
"""

from __future__ import annotations

import random
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fixtures" / "corpus"
FUZZ_FIXTURES = ROOT / "fixtures" / "fuzz"
MEDIA_SUFFIXES = {
    ".png", ".jpg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".ico", ".psd", ".jp2", ".j2k", ".heif", ".avif",
    ".avifs", ".apng", ".mpo", ".tga", ".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".mp4", ".webm", ".flv",
    ".avi", ".wmv",
}  # fmt: skip


@dataclass
class Finding:
    """A rule broken by one input."""

    rule: str  # "exception" or "undecodable-ok"
    detail: str
    trace: str = ""

    def key(self) -> str:
        """What makes two findings the same bug: the rule and the exception's type and last frame."""
        last = self.trace.strip().splitlines()[-3:-1] if self.trace else []
        return f"{self.rule}|{self.detail.split(':')[0]}|{'|'.join(line.strip() for line in last)}"


def seeds(max_bytes: int = 1 << 20) -> list[Path]:
    """Corpus media files up to ``max_bytes``, in name order (the fuzzer's starting points)."""
    return sorted(p for p in CORPUS.iterdir() if p.suffix.lower() in MEDIA_SUFFIXES and p.stat().st_size <= max_bytes)


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four random edits: flipped bits, overwritten bytes (often with 0x00/0xFF/0x7F/0x80
    runs that upset lengths and counts), a truncation, an inserted or deleted run, a duplicated slice."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not out:
            out.extend(rng.randbytes(8))
        pos = rng.randrange(len(out))
        choice = rng.random()
        if choice < 0.3:
            out[pos] ^= 1 << rng.randrange(8)
        elif choice < 0.55:
            run = rng.choice([b"\x00", b"\xff", b"\x7f", b"\x80", bytes([rng.randrange(256)])]) * rng.randint(1, 4)
            out[pos : pos + len(run)] = run
        elif choice < 0.65:
            del out[max(1, pos) :]
        elif choice < 0.8:
            out[pos:pos] = rng.randbytes(rng.randint(1, 32))
        elif choice < 0.9:
            del out[pos : pos + rng.randint(1, 64)]
        else:
            end = min(len(out), pos + rng.randint(1, 256))
            out[pos:pos] = out[pos:end]
    return bytes(out)


def check(path: Path, workdir: Path) -> Finding | None:
    """Run ``path`` through sniff, probe and normalize (default profile); a finding, or None."""
    from nvmedia.errors import NVMediaError
    from nvmedia.memory import MemoryBudget
    from nvmedia.normalize import NormalizeOptions, normalize
    from nvmedia.probe import probe
    from nvmedia.profiles import DEFAULT_PROFILE
    from nvmedia.sniff import sniff_path

    try:
        sniffed = sniff_path(path)
        if not sniffed.is_media:
            return None
        info = probe(path, sniffed, max_pixels=DEFAULT_PROFILE.safety_max_image_pixels)
        options = NormalizeOptions(workdir=workdir, budget=MemoryBudget(1 << 30))
        result = normalize(path, sniffed, info, DEFAULT_PROFILE, options)
    except NVMediaError:
        return None
    except Exception as exc:  # noqa: BLE001 - this is what the fuzzer looks for
        return Finding("exception", f"{type(exc).__name__}: {exc}"[:300], traceback.format_exc())
    outputs = result.pieces or [result]
    for output in outputs:
        problem = undecodable(output.path, output.info.kind)
        if problem is not None:
            return Finding("undecodable-ok", f"{output.info.mime}: {problem}"[:300])
    return None


def undecodable(path: Path, kind: str) -> str | None:
    """Why the file at ``path`` does not fully decode (None when it does, with pixels or samples)."""
    if kind == "image":
        from PIL import Image

        try:
            with Image.open(path) as im:
                im.load()
                if im.width * im.height == 0:
                    return "no pixels"
        except Exception as exc:  # noqa: BLE001 - any failure to decode is the finding
            return f"{type(exc).__name__}: {exc}"
        return None
    import av

    frames = 0
    try:
        with av.logging.Capture() as logs, av.open(str(path), metadata_errors="ignore") as container:
            for frame in container.decode(*container.streams):
                frames += 1 if frame is not None else 0
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"
    errors = [message for level, _, message in logs if level <= av.logging.ERROR]
    if errors:
        return f"decoder error: {errors[0].strip()}"
    return None if frames else "no frames or samples"
