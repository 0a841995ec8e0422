"""Lossless audio metadata stripping against reading the file.

An MP3 (tone over pink noise, 128 kbps stereo) given the tags a tagger writes (ID3v2 with
a 300 KB cover picture, APE, ID3v1), and a 16-bit stereo WAV of noise with the chunks a
recorder writes (bext, iXML, JUNK before the samples, LIST and id3 after), are stripped by
``audio_rewrite`` + ``write_rewrite`` into a new file in the same folder.

Baseline, same run, same file, measured alternately with the strip: reading the file once
in 1 MiB chunks (``f.read(1 << 20)`` until the end: how Python code reads a file, and how
nvmedia itself hashes and uploads one). Also printed, as a reference: ``shutil.copyfile`` of
the whole file into the same folder, the cost of writing any new file that size (the new
file's pages must be allocated and journaled; a read from the page cache allocates nothing).
Everything is warm (read once before timing); the outputs are removed between runs, outside
the timing. Medians of 9.
Target: stripping costs at most 1.5x reading.

``audio_strip_prepare`` puts the strip in context: ``nvmedia prepare --dry-run`` on the tagged
MP3 (validated, then stripped) against the same frames without tags (validated, then passed
through), medians of 3.

    python benchmarks/bench_audio_strip.py [--quick]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, nvmedia_cmd, report, run, timed
from media import noise_mp3, noise_wav

sys.path.insert(0, str(ROOT))
from nvmedia.normalize.audio_metadata import audio_rewrite, write_rewrite  # noqa: E402

REPEAT = 9


def _syncsafe(n: int) -> bytes:
    return bytes(((n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F))


def _frame(fid: bytes, payload: bytes) -> bytes:
    return fid + struct.pack(">I", len(payload)) + b"\x00\x00" + payload


def _chunk(cid: bytes, payload: bytes) -> bytes:
    return cid + struct.pack("<I", len(payload)) + payload + (b"\x00" if len(payload) & 1 else b"")


def tag_mp3(frames: Path, out: Path) -> Path:
    """``frames`` with an ID3v2.3 tag (text and a 300 KB picture) in front, APE and ID3v1 tags behind."""
    picture = b"\xff\xd8\xff\xe0" + random.Random(3).randbytes(300_000) + b"\xff\xd9"
    body = _frame(b"TIT2", b"\x03Interview") + _frame(b"TPE1", b"\x03A. Person") + _frame(b"APIC", picture)
    body += bytes(1024)
    ape_item = struct.pack("<II", 9, 0) + b"Artist\x00A. Person"
    size = len(ape_item) + 32
    ape = b"APETAGEX" + struct.pack("<IIII", 2000, size, 1, 0xA0000000) + bytes(8)  # header
    ape += ape_item + b"APETAGEX" + struct.pack("<IIII", 2000, size, 1, 0x80000000) + bytes(8)  # footer
    id3v1 = b"TAG" + b"Interview".ljust(30, b"\x00") + bytes(125 - 30)
    with out.open("wb") as fh:
        fh.write(b"ID3\x03\x00\x00" + _syncsafe(len(body)) + body)
        with frames.open("rb") as src:
            while chunk := src.read(1 << 22):
                fh.write(chunk)
        fh.write(ape + id3v1)
    return out


def tag_wav(plain: Path, out: Path) -> Path:
    """``plain`` (a 44-byte-header WAV) with bext, iXML and JUNK before its samples, LIST and id3 after."""
    with plain.open("rb") as src:
        header = src.read(44)
        data_size = struct.unpack_from("<I", header, 40)[0]
        before = _chunk(b"bext", bytes(602)) + _chunk(b"iXML", b"<BWFXML/>" * 50) + _chunk(b"JUNK", bytes(4096))
        after = _chunk(b"LIST", b"INFOIART" + struct.pack("<I", 9) + b"A. Person\x00") + _chunk(b"id3 ", bytes(2048))
        body = 4 + 24 + len(before) + 8 + data_size + (data_size & 1) + len(after)
        with out.open("wb") as fh:
            fh.write(b"RIFF" + struct.pack("<I", body) + b"WAVE" + header[12:36] + before + header[36:44])
            while chunk := src.read(1 << 22):
                fh.write(chunk)
            fh.write(after)
    return out


def read_chunks(path: Path) -> None:
    with path.open("rb") as fh:
        while fh.read(1 << 20):
            pass


def measure(name: str, source: Path, container: str, folder: Path) -> None:
    out = folder / f"stripped.{container}"
    read_chunks(source)  # warm the page cache for every side

    def strip() -> None:
        rewrite = audio_rewrite(source, container)
        assert rewrite is not None
        write_rewrite(source, rewrite, out)

    copy = folder / f"copy.{container}"
    steps = (("read", lambda: read_chunks(source)), ("copy", lambda: shutil.copyfile(source, copy)), ("strip", strip))
    times: dict[str, list[float]] = {key: [] for key, _ in steps}
    for turn in range(REPEAT):  # alternated, in turning order, so that a busier moment weighs on all alike
        out.unlink(missing_ok=True)
        copy.unlink(missing_ok=True)
        for key, fn in steps[turn % 3 :] + steps[: turn % 3]:
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    read, copied, stripping = (statistics.median(times[key]) for key, _ in steps)
    report(
        name,
        bytes=source.stat().st_size,
        stripped_bytes=out.stat().st_size,
        read_s=round(read, 4),
        copy_s=round(copied, 4),
        strip_s=round(stripping, 4),
        ratio=round(stripping / read, 2),
        ratio_to_copy=round(stripping / copied, 2),
        target="<= 1.5",
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="10 minutes of MP3 and 50 MB of WAV")
    args = parser.parse_args()
    seconds = 600 if args.quick else 3600
    wav_bytes = (50 if args.quick else 300) * 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        frames = noise_mp3(folder / "frames.mp3", seconds)
        mp3 = tag_mp3(frames, folder / "tagged.mp3")
        measure("audio_strip_mp3", mp3, "mp3", folder)
        plain = timed(lambda: run(nvmedia_cmd("prepare", str(frames), "--dry-run", "-o", str(folder / "a.jsonl"))))
        tagged = timed(lambda: run(nvmedia_cmd("prepare", str(mp3), "--dry-run", "-o", str(folder / "b.jsonl"))))
        assert '"actions": ["strip-metadata"]' in (folder / "b.jsonl").read_text()
        report(
            "audio_strip_prepare",
            seconds=seconds,
            passthrough_s=round(plain, 3),
            strip_s=round(tagged, 3),
            ratio=round(tagged / plain, 2),
        )
        wav = tag_wav(noise_wav(folder / "plain.wav", wav_bytes, seed=2), folder / "tagged.wav")
        measure("audio_strip_wav", wav, "wav", folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
