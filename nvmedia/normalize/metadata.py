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

``png_is_intact_and_plain`` proves a PNG that could pass through decodes without
a full decode: the chunks and CRCs are intact and the IDAT stream inflates to
exactly the scanlines the header implies, each with a valid filter type.

Each function returns the input object itself when there is nothing to drop,
so ``stripped is data`` means "already clean". A structure that cannot be
walked (truncated segment, missing end marker) raises ``MalformedContainerError``;
the caller then re-encodes instead.
"""

from __future__ import annotations

import struct
from typing import cast

__all__ = [
    "CorruptPixelDataError",
    "MalformedContainerError",
    "PNG_ORIENTATION_KEYWORDS",
    "TruncatedJpegError",
    "jpeg_truncation",
    "png_may_be_turned",
    "strip_jpeg",
    "strip_metadata",
    "strip_png",
    "strip_webp",
    "webp_is_lossless",
]


class MalformedContainerError(ValueError):
    """The container structure could not be walked; re-encode instead of rewriting it."""


class TruncatedJpegError(MalformedContainerError):
    """The JPEG's data runs out before its EOI marker: the file is cut short (or its tail zero-filled)."""


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
        TruncatedJpegError: the data runs out before the EOI marker.
        MalformedContainerError: the segment structure is otherwise broken.
    """
    if not data.startswith(_SOI):
        raise MalformedContainerError("no JPEG SOI marker")
    out = [_SOI]
    changed = False
    pos = 2
    size = len(data)
    while True:
        if pos >= size:
            raise TruncatedJpegError("JPEG ends before its EOI marker")
        if data[pos] != 0xFF:
            # Stray bytes before a marker: decoders skip them, so do we (and drop them).
            nxt = data.find(b"\xff", pos)
            if nxt < 0:
                raise TruncatedJpegError("JPEG ends before its EOI marker")
            pos = nxt
            changed = True
        while pos < size and data[pos] == 0xFF:
            pos += 1
        if pos >= size:
            raise TruncatedJpegError("JPEG ends inside a marker")
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
            raise TruncatedJpegError("JPEG segment length is truncated")
        (length,) = struct.unpack_from(">H", data, pos)
        end = pos + length
        if length < 2 or end > size:
            raise TruncatedJpegError(f"JPEG segment 0x{marker:02X} runs past the end of the file")
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
                raise TruncatedJpegError("JPEG scan data has no end marker")
            out.append(data[pos:scan_end])
            pos = scan_end
    if not changed:
        return data
    return b"".join(out)


def jpeg_truncation(data: bytes) -> str | None:
    """Why the JPEG ``data`` is cut short (its data runs out before the EOI marker), or None.

    libjpeg decodes a zero-filled tail (a preallocated file whose download stopped) as valid entropy
    data and Pillow does not expose the "no EOI" warning, so the structure is walked instead. Whatever
    follows EOI (an MPO's second image, a phone maker's trailer) is not looked at.
    """
    try:
        strip_jpeg(data)
    except TruncatedJpegError as exc:
        return str(exc)
    except MalformedContainerError:
        return None  # other oddities are the decoder's to judge
    return None


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
_PNG_ANIMATION_CHUNKS = {b"acTL", b"fcTL", b"fdAT"}
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_PNG_BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_PNG_COLOUR_NAMES = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
"""Adam7 passes: (x start, y start, x step, y step)."""
_PNG_FILTER_TYPES = 5  # None, Sub, Up, Average, Paeth
_INFLATE_STEP = 1 << 20
"""Inflated bytes checked at a time: memory stays near a megabyte whatever the image size."""


class CorruptPixelDataError(ValueError):
    """The image's pixel data provably does not decode; the message says how."""


def png_is_intact_and_plain(data: bytes) -> bool:
    """True when the PNG is proven to decode, without a full decode, and can be sent as it is.

    Proven means: every chunk is complete with a valid CRC, IEND ends the file, IHDR is valid, a
    palette image has its PLTE, and the IDAT stream inflates (zlib's Adler-32 checked) to exactly
    the bytes IHDR implies for the size, bit depth, colour type and interlacing, each scanline
    starting with a valid filter type. That is everything a PNG decoder can reject; what is left
    (unfiltering, packing) cannot fail. Plain means no chunk can carry an orientation (eXIf,
    iTXt/zTXt that may hold XMP) and it is not an APNG (whose first frame may not be the IDAT).

    It skips unfiltering and image memory, so it costs less than a full decode (see
    benchmarks/README.md, passthrough). False means "not proven": the full decode then decides.

    Raises:
        CorruptPixelDataError: the chunks are intact but the pixel data provably does not decode
            (no IDAT, not zlib data, fewer bytes than the header needs, an invalid filter type).
    """
    import zlib

    if not data.startswith(_PNG_SIGNATURE):
        return False
    pos, size = len(_PNG_SIGNATURE), len(data)
    header: bytes | None = None
    has_palette = False
    idat: list[memoryview] = []
    idat_done = False
    view = memoryview(data)
    while pos + 12 <= size:
        length = int.from_bytes(data[pos : pos + 4], "big")
        end = pos + 12 + length
        if end > size:
            return False
        kind = data[pos + 4 : pos + 8]
        if kind in _PNG_ORIENTATION_CHUNKS or kind in _PNG_ANIMATION_CHUNKS:
            return False
        if zlib.crc32(view[pos + 4 : pos + 8 + length]) != int.from_bytes(data[end - 4 : end], "big"):
            return False
        if header is None:
            if kind != b"IHDR" or length != 13:
                return False
            header = data[pos + 8 : pos + 21]
        elif kind == b"PLTE":
            has_palette = True
        elif kind == b"IDAT":
            if idat_done:
                return False  # IDAT chunks split by another chunk: the decoder judges
            idat.append(view[pos + 8 : pos + 8 + length])
        elif idat:
            idat_done = True
        if kind == b"IEND":
            return end == size and _png_pixels_decode(header, has_palette, idat)
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


def _png_describe(header: bytes) -> str:
    width, height = int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big")
    kind = _PNG_COLOUR_NAMES.get(header[9], f"colour type {header[9]}")
    interlaced = " interlaced" if header[12] else ""
    return f"a {width}x{height} {header[8]}-bit {kind}{interlaced} image"


def _png_scanlines(header: bytes) -> list[tuple[int, int]]:
    """``(bytes per scanline including its filter byte, scanline count)`` per pass of ``header``'s image.

    Raises:
        CorruptPixelDataError: IHDR declares something no decoder accepts.
    """
    width, height = int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big")
    depth, colour, compression, filtering, interlace = header[8], header[9], header[10], header[11], header[12]
    if not width or not height:
        raise CorruptPixelDataError(f"its header declares {width}x{height} pixels")
    if depth not in _PNG_BIT_DEPTHS.get(colour, ()):
        raise CorruptPixelDataError(f"its header declares bit depth {depth} for colour type {colour}")
    if compression or filtering or interlace > 1:
        raise CorruptPixelDataError(
            f"its header declares compression {compression}, filter {filtering} and interlace {interlace} "
            "(PNG defines 0, 0 and 0-1)"
        )
    bits = depth * _PNG_CHANNELS[colour]
    if not interlace:
        return [(1 + (width * bits + 7) // 8, height)]
    passes = []
    for x0, y0, dx, dy in _ADAM7:
        pass_width, pass_height = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if pass_width > 0 and pass_height > 0:
            passes.append((1 + (pass_width * bits + 7) // 8, pass_height))
    return passes


def _png_pixels_decode(header: bytes, has_palette: bool, idat: list[memoryview]) -> bool:
    """Whether the IDAT stream inflates to exactly the scanlines ``header`` implies, each with a valid filter.

    False (not proven: the decoder judges) only for more data than the image needs, which decoders ignore.

    Raises:
        CorruptPixelDataError: what a decoder fails on.
    """
    from zlib_ng import zlib_ng

    inflate_error = cast("type[Exception]", zlib_ng.error)  # its stub declares an instance, not the class
    passes = _png_scanlines(header)
    if header[9] == 3 and not has_palette:
        raise CorruptPixelDataError("it is a palette image without a palette (no PLTE chunk)")
    if not idat:
        raise CorruptPixelDataError("there is no IDAT chunk")
    # Where the scanlines' filter bytes sit in the inflated stream: (first offset, stride, end) per pass.
    layout: list[tuple[int, int, int]] = []
    expected = 0
    for stride, rows in passes:
        layout.append((expected, stride, expected + stride * rows))
        expected += stride * rows
    inflater = zlib_ng.decompressobj()  # zlib-ng inflates 2-3x faster than the zlib Python links
    produced = 0

    def take(out: bytes) -> bool:
        nonlocal produced
        if produced + len(out) > expected:
            return False
        bad = _first_bad_filter(out, produced, layout)
        if bad is not None:
            row, value = bad
            raise CorruptPixelDataError(f"scanline {row:,} has filter type {value} (PNG defines 0-4)")
        produced += len(out)
        return True

    def room() -> int:  # one byte past the image: enough to see that there is more
        return min(_INFLATE_STEP, expected + 1 - produced)

    try:
        for piece in idat:
            pending: bytes | memoryview = piece
            while pending and not inflater.eof:
                if not take(inflater.decompress(pending, room())):
                    return False
                pending = inflater.unconsumed_tail
        while not inflater.eof:  # all input fed: drain what the inflater still holds
            out = inflater.decompress(b"", room())
            if not out:
                break
            if not take(out):
                return False
    except inflate_error as exc:
        raise CorruptPixelDataError(f"the IDAT stream is not valid zlib data ({exc})") from None
    if produced < expected:
        raise CorruptPixelDataError(
            f"the IDAT stream inflates to {produced:,} bytes; {_png_describe(header)} needs {expected:,}"
        )
    if not inflater.eof:
        raise CorruptPixelDataError(
            f"the IDAT stream is cut short: its {expected:,} bytes inflate but the zlib stream does not end"
        )
    return True


def _first_bad_filter(out: bytes, at: int, layout: list[tuple[int, int, int]]) -> tuple[int, int] | None:
    """``(scanline number from 1, filter byte)`` of the first invalid filter byte in ``out``, which starts at
    offset ``at`` of the inflated stream; None when all are valid."""
    stop = at + len(out)
    rows_before = 0
    for first, stride, end in layout:
        if end > at and first < stop:
            start = max(first, at)
            start += (first - start) % stride  # the first filter byte at or after ``start``
            picked = out[start - at : min(end, stop) - at : stride]
            if picked and max(picked) >= _PNG_FILTER_TYPES:
                index = next(i for i, value in enumerate(picked) if value >= _PNG_FILTER_TYPES)
                return rows_before + (start - first) // stride + index + 1, picked[index]
        rows_before += (end - first) // stride
    return None


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
