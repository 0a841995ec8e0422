"""Lossless metadata stripping for JPEG, PNG and WEBP.

These functions rewrite a file's container structure without touching the
compressed pixels, so an otherwise compliant image loses its GPS position,
camera data, XMP, IPTC and comments but not a bit of quality.

What is kept, per format (everything else is dropped):

- JPEG: every non-APPn segment (tables, frame and scan headers, restart
  intervals), APP0 ``JFIF``, APP2 ``ICC_PROFILE`` and APP14 ``Adobe`` (the last
  says how to convert the colours, so decoding needs it). APP1 (EXIF, XMP),
  APP13 (IPTC/Photoshop), COM and the other APPn go. Stray bytes between
  segments (which decoders skip) and anything after the primary image's EOI
  (MPF secondary images, vendor trailers) go too.
- PNG: the critical chunks, ``tRNS``, the colour chunks (``cHRM``, ``gAMA``,
  ``iCCP``, ``sBIT``, ``sRGB``, ``cICP``, ``mDCV``, ``cLLI``), ``bKGD``,
  ``pHYs``, ``sPLT``, ``hIST`` and the APNG chunks. ``tEXt``, ``zTXt``,
  ``iTXt`` (comments, XMP, and the raw EXIF/IPTC/XMP profiles ImageMagick
  writes as ``Raw profile type exif``/``iptc``/``xmp`` text), ``eXIf``,
  ``tIME`` and any unknown ancillary chunk go (private chunks such as C2PA
  ``caBX`` can carry personal data).
- WEBP: ``VP8X``, ``ICCP``, ``ANIM``, ``ANMF``, ``ALPH``, ``VP8 ``, ``VP8L``;
  ``EXIF``, ``XMP `` and unknown chunks go, and the VP8X flags are cleared to match.

Each function returns the input object itself when there is nothing to drop,
so ``stripped is data`` means "already clean". A structure that cannot be
walked (truncated segment, missing end marker) raises ``MalformedContainerError``;
the caller then re-encodes instead.
"""

from __future__ import annotations

import struct

__all__ = [
    "MalformedContainerError",
    "PNG_ORIENTATION_KEYWORDS",
    "png_may_be_turned",
    "strip_jpeg",
    "strip_metadata",
    "strip_png",
    "strip_webp",
    "webp_is_lossless",
]


class MalformedContainerError(ValueError):
    """The container structure could not be walked; re-encode instead of rewriting it."""


# --------------------------------------------------------------------------- JPEG

_SOI = b"\xff\xd8"
_EOI = 0xD9
_SOS = 0xDA
_COM = 0xFE
_APP0, _APP2, _APP14 = 0xE0, 0xE2, 0xEE
_STANDALONE = {0x01} | set(range(0xD0, 0xD8))


def _scan_end(data: bytes, pos: int) -> int:
    """Where the entropy-coded data starting at ``pos`` ends: the 0xFF of the next real marker (-1: none).

    Inside scan data 0xFF is followed by 0x00 (byte stuffing), a restart marker RST0-7, or more 0xFF
    (fill); anything else is a marker. ``bytes.find`` keeps this at C speed: real data has about one
    0xFF per 256 bytes.
    """
    size = len(data)
    while True:
        start = data.find(b"\xff", pos)
        if start < 0:
            return -1
        after = start + 1
        while after < size and data[after] == 0xFF:
            after += 1
        if after >= size:
            return -1
        code = data[after]
        if code != 0x00 and not 0xD0 <= code <= 0xD7:
            return start
        pos = after + 1


def _keep_jpeg_segment(marker: int, payload: bytes, keep_icc: bool) -> bool:
    if marker == _COM:
        return False
    if 0xE0 <= marker <= 0xEF:
        if marker == _APP0:
            return payload.startswith(b"JFIF\x00")
        if marker == _APP2:
            return keep_icc and payload.startswith(b"ICC_PROFILE\x00")
        if marker == _APP14:
            return payload.startswith(b"Adobe")
        return False
    return True


def strip_jpeg(data: bytes, *, keep_icc: bool = True) -> bytes:
    """Drop EXIF, XMP, IPTC, comments and trailers from a JPEG without recompressing it.

    Args:
        data: the whole JPEG file.
        keep_icc: keep APP2 ICC profile segments.

    Returns:
        The stripped file, or ``data`` itself when nothing had to go.

    Raises:
        MalformedContainerError: the segment structure is broken (truncated, no EOI...).
    """
    if not data.startswith(_SOI):
        raise MalformedContainerError("no JPEG SOI marker")
    out = [_SOI]
    changed = False
    pos = 2
    size = len(data)
    while True:
        if pos >= size:
            raise MalformedContainerError("JPEG ends before its EOI marker")
        if data[pos] != 0xFF:
            # Stray bytes before a marker: decoders skip them, so do we (and drop them).
            nxt = data.find(b"\xff", pos)
            if nxt < 0:
                raise MalformedContainerError("JPEG ends before its EOI marker")
            pos = nxt
            changed = True
        while pos < size and data[pos] == 0xFF:
            pos += 1
        if pos >= size:
            raise MalformedContainerError("JPEG ends inside a marker")
        marker = data[pos]
        pos += 1
        if marker == _EOI:
            out.append(b"\xff\xd9")
            if pos != size:
                changed = True  # trailer after the primary image
            break
        if marker in _STANDALONE:
            out.append(bytes((0xFF, marker)))
            continue
        if marker == 0xD8 or marker == 0x00:
            raise MalformedContainerError(f"unexpected JPEG marker 0x{marker:02X}")
        if pos + 2 > size:
            raise MalformedContainerError("JPEG segment length is truncated")
        (length,) = struct.unpack_from(">H", data, pos)
        end = pos + length
        if length < 2 or end > size:
            raise MalformedContainerError(f"JPEG segment 0x{marker:02X} runs past the end of the file")
        payload = data[pos + 2 : end]
        if _keep_jpeg_segment(marker, payload, keep_icc):
            out.append(bytes((0xFF, marker)))
            out.append(data[pos:end])
        else:
            changed = True
        pos = end
        if marker == _SOS:
            scan_end = _scan_end(data, pos)
            if scan_end < 0:
                raise MalformedContainerError("JPEG scan data has no end marker")
            out.append(data[pos:scan_end])
            pos = scan_end
    if not changed:
        return data
    return b"".join(out)


# --------------------------------------------------------------------------- PNG

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_KEEP = {
    b"IHDR",
    b"PLTE",
    b"IDAT",
    b"IEND",
    b"tRNS",
    b"cHRM",
    b"gAMA",
    b"iCCP",
    b"sBIT",
    b"sRGB",
    b"cICP",
    b"mDCV",
    b"cLLI",
    b"bKGD",
    b"pHYs",
    b"sPLT",
    b"hIST",
    b"acTL",
    b"fcTL",
    b"fdAT",
}


_PNG_ORIENTATION_CHUNKS = {b"eXIf", b"iTXt", b"zTXt"}  # EXIF or XMP may carry an orientation


def png_is_intact_and_plain(data: bytes) -> bool:
    """True when every PNG chunk is complete with a valid CRC, IEND ends the file, and no chunk can carry an
    orientation (eXIf, iTXt/zTXt that may hold XMP).

    This is how a passthrough candidate is verified without decoding the pixels: a file cut short
    or damaged anywhere fails a length or CRC check (a full decode costs 10-20x more). Anything
    this answers False for goes through the full decode, which decides.
    """
    import zlib

    if not data.startswith(_PNG_SIGNATURE):
        return False
    pos, size = len(_PNG_SIGNATURE), len(data)
    while pos + 12 <= size:
        length = int.from_bytes(data[pos : pos + 4], "big")
        end = pos + 12 + length
        if end > size:
            return False
        kind = data[pos + 4 : pos + 8]
        if kind in _PNG_ORIENTATION_CHUNKS:
            return False
        if zlib.crc32(data[pos + 4 : pos + 8 + length]) != int.from_bytes(data[end - 4 : end], "big"):
            return False
        if kind == b"IEND":
            return end == size
        pos = end
    return False


_PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
PNG_ORIENTATION_KEYWORDS = (b"exif", b"Raw profile type exif", b"XML:com.adobe.xmp")
"""Text keywords Pillow reads an orientation from: raw EXIF, ImageMagick's hex EXIF profile, and XMP."""


def png_may_be_turned(data: bytes) -> bool:
    """True when Pillow may report an orientation other than 1 for this PNG, judging from its chunks alone.

    Pillow's ``getexif()`` reads a PNG's orientation from an ``eXIf`` chunk (before or after the pixels)
    or from a ``tEXt``/``zTXt``/``iTXt`` chunk whose keyword is one of ``PNG_ORIENTATION_KEYWORDS``, and
    nowhere else. A PNG with none of these reports 1 once loaded, so it can be judged without a decode;
    anything else (or a chunk structure that cannot be walked) answers True and the decode decides.
    """
    if not data.startswith(_PNG_SIGNATURE):
        return True
    pos, size = len(_PNG_SIGNATURE), len(data)
    while pos + 8 <= size:
        length = int.from_bytes(data[pos : pos + 4], "big")
        ctype = data[pos + 4 : pos + 8]
        if ctype == b"eXIf":
            return True
        if ctype in _PNG_TEXT_CHUNKS:
            keyword = data[pos + 8 : pos + 8 + min(length, 80)].split(b"\0", 1)[0]
            if keyword in PNG_ORIENTATION_KEYWORDS:
                return True
        if ctype == b"IEND":
            return False
        pos += 12 + length
    return True


def strip_png(data: bytes, *, keep_icc: bool = True) -> bytes:
    """Drop text, eXIf, tIME and unknown ancillary chunks from a PNG without recompressing it.

    Args:
        data: the whole PNG file.
        keep_icc: keep the ``iCCP`` chunk.

    Returns:
        The stripped file, or ``data`` itself when nothing had to go.

    Raises:
        MalformedContainerError: a chunk runs past the end of the file or there is no IEND.
    """
    if not data.startswith(_PNG_SIGNATURE):
        raise MalformedContainerError("no PNG signature")
    out = [_PNG_SIGNATURE]
    changed = False
    pos = len(_PNG_SIGNATURE)
    size = len(data)
    while True:
        if pos + 8 > size:
            raise MalformedContainerError("PNG ends before its IEND chunk")
        (length,) = struct.unpack_from(">I", data, pos)
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > size:
            raise MalformedContainerError(f"PNG chunk {ctype!r} runs past the end of the file")
        critical = not (ctype[0] & 0x20)
        keep = critical or (ctype in _PNG_KEEP and (keep_icc or ctype != b"iCCP"))
        if keep:
            out.append(data[pos:end])
        else:
            changed = True
        pos = end
        if ctype == b"IEND":
            if pos != size:
                changed = True  # bytes appended after the image
            break
    if not changed:
        return data
    return b"".join(out)


# --------------------------------------------------------------------------- WEBP

_WEBP_KEEP = {b"VP8X", b"ICCP", b"ANIM", b"ANMF", b"ALPH", b"VP8 ", b"VP8L"}
_VP8X_ICC, _VP8X_EXIF, _VP8X_XMP = 0x20, 0x08, 0x04


def _webp_chunks(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(fourcc, payload start, payload end) of each chunk in ``data[start:end]``."""
    chunks = []
    pos = start
    while pos + 8 <= end:
        fourcc = data[pos : pos + 4]
        (length,) = struct.unpack_from("<I", data, pos + 4)
        payload_end = pos + 8 + length
        if payload_end > end:
            raise MalformedContainerError(f"WEBP chunk {fourcc!r} runs past the end of the file")
        chunks.append((fourcc, pos + 8, payload_end))
        pos = payload_end + (length & 1)
    return chunks


def _riff_end(data: bytes) -> int:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise MalformedContainerError("no RIFF/WEBP header")
    riff_size: int = struct.unpack_from("<I", data, 4)[0]
    end = 8 + riff_size
    if end > len(data):
        raise MalformedContainerError("WEBP is shorter than its RIFF header says")
    return end


def strip_webp(data: bytes, *, keep_icc: bool = True) -> bytes:
    """Drop EXIF, XMP and unknown chunks from a WEBP without recompressing it.

    Args:
        data: the whole WEBP file.
        keep_icc: keep the ``ICCP`` chunk.

    Returns:
        The stripped file, or ``data`` itself when nothing had to go.

    Raises:
        MalformedContainerError: the RIFF structure is broken.
    """
    end = _riff_end(data)
    chunks = _webp_chunks(data, 12, end)
    changed = end != len(data)
    parts: list[bytes] = []
    for fourcc, start, stop in chunks:
        if fourcc not in _WEBP_KEEP or (fourcc == b"ICCP" and not keep_icc):
            changed = True
            continue
        header = data[start - 8 : start]
        payload = data[start:stop]
        if fourcc == b"VP8X" and len(payload) >= 1:
            flags = payload[0]
            cleared = flags & ~(_VP8X_EXIF | _VP8X_XMP | (0 if keep_icc else _VP8X_ICC))
            if cleared != flags:
                payload = bytes((cleared,)) + payload[1:]
                changed = True
        parts.append(header + payload + (b"\x00" if (stop - start) & 1 else b""))
    if not changed:
        return data
    body = b"WEBP" + b"".join(parts)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_is_lossless(data: bytes) -> bool:
    """True when the (first frame of the) WEBP is VP8L-coded, i.e. lossless."""
    end = _riff_end(data)
    for fourcc, start, stop in _webp_chunks(data, 12, end):
        if fourcc == b"VP8L":
            return True
        if fourcc == b"VP8 ":
            return False
        if fourcc == b"ANMF":
            # An animation frame: a 16-byte header, then the frame's own ALPH/VP8/VP8L chunks.
            for sub, _, _ in _webp_chunks(data, start + 16, stop):
                if sub in (b"VP8L", b"VP8 "):
                    return sub == b"VP8L"
    return False


def strip_metadata(data: bytes, container: str, *, keep_icc: bool = True) -> bytes:
    """Strip metadata from a JPEG, PNG or WEBP file (by ``container`` name) without recompressing it.

    Returns:
        The stripped file, or ``data`` itself when nothing had to go.

    Raises:
        MalformedContainerError: the structure cannot be walked, or the container is not one of the three.
    """
    if container == "jpeg":
        return strip_jpeg(data, keep_icc=keep_icc)
    if container == "png":
        return strip_png(data, keep_icc=keep_icc)
    if container == "webp":
        return strip_webp(data, keep_icc=keep_icc)
    raise MalformedContainerError(f"no lossless metadata stripping for {container}")
