"""Lossless metadata stripping for MP3 and WAV: tags and pictures out, the audio copied byte for byte.

What goes, per format (everything else stays exactly as it is):

- MP3: ID3v2 tags at the start, whatever their frames hold (names, dates, places,
  comments, private data, the cover picture that shows up as a video stream);
  no ID3 frame is needed to decode the audio. At the end: an appended ID3v2.4
  tag (with its ``3DI`` footer), APE tags (with or without their header),
  Lyrics3 v1/v2 and ID3v1 (with its ``TAG+`` extension). What stays is the run
  of MPEG audio frames between them, byte for byte, the first frame's
  Xing/Info/LAME header included (frame count and encoder delay: what decoders
  need for the length and for gapless playback). An ID3v2 tag holding only
  padding (what ffmpeg writes under ``-fflags +bitexact``) is nothing to strip.
- WAV (RIFF/WAVE): every chunk but ``fmt ``, ``fact`` and ``data``: ``LIST``
  (INFO names, dates, software; ``adtl`` labels), ``id3 ``/``ID3 ``, ``bext``
  (originator, dates, UMID), ``iXML``, ``cue ``, ``_PMX`` (XMP), ``smpl``,
  ``JUNK``/``PAD `` and the rest, and any bytes after the RIFF chunk. The kept
  chunks are copied as they are, in their order, and the RIFF size is rewritten.

Planning reads headers only (a few bytes at each end of an MP3, the chunk
headers of a WAV); ``write_rewrite`` then copies the kept byte ranges through
one reused buffer, so stripping costs what copying the file costs. ``audio_rewrite``
answers None when there is nothing to strip and raises ``MalformedContainerError``
when the structure cannot be walked: the caller then re-encodes, which drops
the metadata too.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .metadata import MalformedContainerError

__all__ = ["AudioRewrite", "audio_rewrite", "write_rewrite"]

Piece = bytes | tuple[int, int]
"""Literal bytes to write, or an ``(offset, length)`` range of the source to copy."""

_COPY_BUFFER = 1 << 20


@dataclass(frozen=True)
class AudioRewrite:
    """How to write the stripped file: pieces in order.

    Attributes:
        pieces: literal bytes, or ``(offset, length)`` ranges of the source copied as they are.
    """

    pieces: tuple[Piece, ...]

    @property
    def size(self) -> int:
        """The stripped file's size in bytes."""
        return sum(len(p) if isinstance(p, bytes) else p[1] for p in self.pieces)


def audio_rewrite(path: Path, container: str) -> AudioRewrite | None:
    """Plan the lossless strip of an MP3 or WAV file (``container`` as the sniffer names it).

    Returns:
        The pieces of the stripped file, or None when the file carries no metadata.

    Raises:
        MalformedContainerError: the structure cannot be walked (truncated tag or chunk, no MPEG
            frame where one must start, RF64...), or the container is neither ``mp3`` nor ``wav``.
        OSError: the file cannot be read.
    """
    with path.open("rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        if container == "mp3":
            return _mp3_rewrite(fh, size)
        if container == "wav":
            return _wav_rewrite(fh, size)
    raise MalformedContainerError(f"no lossless metadata stripping for {container}")


def write_rewrite(source: Path, rewrite: AudioRewrite, output: Path) -> None:
    """Write the stripped file planned by ``audio_rewrite`` to ``output`` (created or truncated).

    The ranges go through one reused 1 MiB buffer: as fast as a plain file copy, and twice as fast
    as ``os.copy_file_range``/``sendfile``, which slow down on offsets that are not page-aligned
    (every range here starts after a tag or a chunk header).

    Raises:
        MalformedContainerError: the source is shorter than planned (it changed meanwhile).
        OSError: reading or writing failed.
    """
    buffer = bytearray(_COPY_BUFFER)
    view = memoryview(buffer)
    with source.open("rb", buffering=0) as src, output.open("wb", buffering=0) as dst:
        for piece in rewrite.pieces:
            if isinstance(piece, bytes):
                dst.write(piece)
                continue
            offset, length = piece
            src.seek(offset)
            while length > 0:
                got = src.readinto(view[: min(length, _COPY_BUFFER)])
                if not got:
                    raise MalformedContainerError(f"{source.name} is shorter than it was when it was read")
                _write_all(dst, view[:got])
                length -= got


def _write_all(dst: BinaryIO, data: memoryview) -> None:
    while data:
        written = dst.write(data)
        data = data[written or 0 :]


def _read(fh: BinaryIO, at: int, count: int) -> bytes:
    fh.seek(at)
    return fh.read(count)


# --------------------------------------------------------------------------- MP3

_ID3_HEADER = 10
_MP3_SYNC_WINDOW = 64 * 1024
"""How far past the leading tags the first audio frame is looked for (encoders pad, rippers leave junk)."""
_MP3_CHAIN = 3
"""Frames that must follow each other at the lengths their headers state for a frame start to count."""

_BITRATES_KBPS = {
    (1, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (1, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (1, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (2, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (2, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (2, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_SAMPLE_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _syncsafe(raw: bytes) -> int:
    if any(b & 0x80 for b in raw):
        raise MalformedContainerError("an ID3v2 size is not a syncsafe integer")
    return raw[0] << 21 | raw[1] << 14 | raw[2] << 7 | raw[3]


def mpeg_frame_length(header: bytes) -> int | None:
    """The length of the MPEG audio frame whose 4-byte header is ``header`` (None: not a frame header).

    Free-format frames (bitrate index 0) have no stated length and are not accepted.
    """
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version = (header[1] >> 3) & 0x3  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
    layer = 4 - ((header[1] >> 1) & 0x3)  # 1, 2 or 3 (4 is reserved)
    bitrate_index, rate_index = header[2] >> 4, (header[2] >> 2) & 0x3
    if version == 1 or layer == 4 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    kbps = _BITRATES_KBPS[(1 if version == 3 else 2, layer)][bitrate_index]
    rate = _SAMPLE_RATES[version][rate_index]
    padding = (header[2] >> 1) & 0x1
    if layer == 1:
        return (12 * kbps * 1000 // rate + padding) * 4
    per_frame = 144 if layer == 2 or version == 3 else 72
    return per_frame * kbps * 1000 // rate + padding


def _chain_starts_at(fh: BinaryIO, at: int, end: int) -> bool:
    """True when ``_MP3_CHAIN`` frames follow each other from ``at`` (or the chain reaches ``end`` exactly)."""
    for _ in range(_MP3_CHAIN):
        length = mpeg_frame_length(_read(fh, at, 4))
        if length is None or at + length > end:
            return False
        at += length
        if at == end:
            return True
    return True


def _leading_id3(fh: BinaryIO, size: int) -> tuple[int, bool]:
    """Where the leading ID3v2 tags end, and whether any of them holds a frame (not only padding)."""
    pos, content = 0, False
    while pos + _ID3_HEADER <= size:
        header = _read(fh, pos, _ID3_HEADER)
        if header[:3] != b"ID3":
            break
        major, flags = header[3], header[5]
        if major == 0xFF or header[4] == 0xFF:
            raise MalformedContainerError("an ID3v2 tag has an impossible version")
        body = _syncsafe(header[6:10])
        total = _ID3_HEADER + body + (_ID3_HEADER if major >= 4 and flags & 0x10 else 0)
        if pos + total > size:
            raise MalformedContainerError("an ID3v2 tag runs past the end of the file")
        # A tag whose first byte is padding holds no frame; an extended header means there is something.
        content = content or bool(flags & 0x40) or (body > 0 and _read(fh, pos + _ID3_HEADER, 1) != b"\x00")
        pos += total
    return pos, content


def _trailing_tags(fh: BinaryIO, start: int, size: int) -> int:
    """Where the tags at the end of an MP3 (ID3v1, APE, Lyrics3, appended ID3v2) begin."""
    end = size
    while end > start:
        if end - 128 >= start and _read(fh, end - 128, 3) == b"TAG":
            end -= 128
            if end - 227 >= start and _read(fh, end - 227, 4) == b"TAG+":
                end -= 227
            continue
        if end - 32 >= start and _read(fh, end - 32, 8) == b"APETAGEX":
            _, tag_size, _, flags = struct.unpack("<IIII", _read(fh, end - 24, 16))
            total = tag_size + (32 if flags & 0x80000000 else 0)
            if tag_size < 32 or total > end - start:
                raise MalformedContainerError("an APE tag is larger than the file")
            end -= total
            continue
        tail = _read(fh, end - 9, 9) if end - 9 >= start else b""
        if tail == b"LYRICS200":
            digits = _read(fh, end - 15, 6)
            if not digits.isdigit() or int(digits) + 15 > end - start:
                raise MalformedContainerError("a Lyrics3 tag states an impossible size")
            total = int(digits) + 15
            if _read(fh, end - total, 11) != b"LYRICSBEGIN":
                raise MalformedContainerError("a Lyrics3 tag has no beginning")
            end -= total
            continue
        if tail == b"LYRICSEND":
            low = max(start, end - 5100 - 9)
            begin = _read(fh, low, end - low).rfind(b"LYRICSBEGIN")
            if begin < 0:
                raise MalformedContainerError("a Lyrics3 tag has no beginning")
            end = low + begin
            continue
        if end - _ID3_HEADER >= start and _read(fh, end - _ID3_HEADER, 3) == b"3DI":
            total = _syncsafe(_read(fh, end - 4, 4)) + 2 * _ID3_HEADER
            if total > end - start or _read(fh, end - total, 3) != b"ID3":
                raise MalformedContainerError("an appended ID3v2 tag has no header")
            end -= total
            continue
        break
    return end


def _mp3_rewrite(fh: BinaryIO, size: int) -> AudioRewrite | None:
    tags_end, content = _leading_id3(fh, size)
    end = _trailing_tags(fh, tags_end, size)
    content = content or end != size
    window = _read(fh, tags_end, min(_MP3_SYNC_WINDOW, end - tags_end))
    start = -1
    at = window.find(b"\xff")
    while at >= 0:
        if _chain_starts_at(fh, tags_end + at, end):
            start = tags_end + at
            break
        at = window.find(b"\xff", at + 1)
    if start < 0:
        raise MalformedContainerError("no run of MPEG audio frames follows the tags")
    if not content:
        return None  # at most a tag of padding: nothing anyone could read
    return AudioRewrite(((start, end - start),))


# --------------------------------------------------------------------------- WAV

_WAV_KEEP = frozenset({b"fmt ", b"fact", b"data"})
"""Chunks a decoder needs: the format, the sample count of compressed formats, the samples."""


def _wav_rewrite(fh: BinaryIO, size: int) -> AudioRewrite | None:
    header = _read(fh, 0, 12)
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        raise MalformedContainerError("not a RIFF/WAVE file (RF64 and BW64 are re-encoded instead)")
    declared_end = 8 + struct.unpack_from("<I", header, 4)[0]
    limit = min(declared_end, size)
    kept: list[tuple[bytes, int, int]] = []  # (id, offset, length with the 8-byte chunk header)
    dropped = declared_end != size
    pos = 12
    while pos + 8 <= limit:
        cid, length = _read(fh, pos, 4), struct.unpack("<I", _read(fh, pos + 4, 4))[0]
        end = pos + 8 + length
        if end > size:
            raise MalformedContainerError(f"the WAV chunk {cid!r} runs past the end of the file")
        if cid in _WAV_KEEP:
            kept.append((cid, pos, 8 + length))
        else:
            dropped = True
        pos = end + (length & 1)
    if pos < size:
        dropped = True  # bytes after the last chunk (an ID3v1 tag, a tagger's leftovers)
    if not {b"fmt ", b"data"} <= {cid for cid, _, _ in kept}:
        raise MalformedContainerError("the WAV has no fmt or no data chunk")
    if not dropped:
        return None
    pieces: list[Piece] = []
    body = 4
    for _, at, length in kept:
        pieces.append((at, length))
        body += length
        if length & 1:
            pieces.append(b"\x00")  # chunks are word-aligned
            body += 1
    return AudioRewrite((b"RIFF" + struct.pack("<I", body) + b"WAVE", *pieces))
