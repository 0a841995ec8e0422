"""What a file really is, from its first bytes.

The extension never decides; it only breaks a tie where the bytes cannot
(for example a TGA, which has no magic at its start). The kind given here is
provisional for ISO-BMFF, Matroska, Ogg and ASF containers, whose streams decide
between audio and video once probed.

When no signature matches (plain text or unrecognised bytes), ``sniff_path`` asks
Pillow before calling a file "not media": the formats registered for the file's
extension first, then every other registered opener (those that check a
signature before those that do not, each by name, whatever order Pillow's
plugins happened to be imported in). That
is how PNM (PBM/PGM/PPM/PAM/PFM), PCX, SGI, ICNS, XBM/XPM, FITS, Sun raster and
the rest of Pillow's formats are found, text-like ones (ASCII PNM, XBM) included.
Pillow's signature-less readers (Targa, Spider, IFUNC, IM Tools, IPTC, PhotoCD)
accept some unrelated binary files, so outside their own extension their claim
counts only when the picture also decodes. Recognised text (playlists, SVG,
HTML, XML, JSON) is never handed to Pillow.
"""

from __future__ import annotations

import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

Kind = Literal["image", "audio", "video"]

SNIFF_BYTES = 4096
"""How many leading bytes the sniffer reads."""


@dataclass(frozen=True)
class Sniffed:
    """The sniffer's verdict.

    Attributes:
        kind: ``image``, ``audio``, ``video``, or None when the bytes are not media.
        container: a short container name (``png``, ``jpeg``, ``mp4``, ``mov``, ``matroska``, ``pdf``...).
        mime: the MIME type of the input as it is.
        ffmpeg_format: the ffmpeg demuxer to force when reading it (None for images and non-media).
        description: a human name for messages ("HEIF image", "HLS playlist").
    """

    kind: Kind | None
    container: str
    mime: str
    ffmpeg_format: str | None = None
    description: str = ""

    @property
    def is_media(self) -> bool:
        return self.kind is not None


def _image(container: str, mime: str, description: str) -> Sniffed:
    return Sniffed("image", container, mime, None, description)


def _av(kind: Kind, container: str, mime: str, demuxer: str, description: str) -> Sniffed:
    return Sniffed(kind, container, mime, demuxer, description)


def _other(container: str, mime: str, description: str) -> Sniffed:
    return Sniffed(None, container, mime, None, description)


EMPTY = _other("empty", "application/x-empty", "empty file")
UNKNOWN = _other("unknown", "application/octet-stream", "unrecognised data")

_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"mif2"}
_AVIF_BRANDS = {b"avif", b"avis"}
_MOV_BRANDS = {b"qt  "}
_M4A_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "}
_BMFF_BOXES = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot", b"uuid"}
_MP3_BITRATE_LAYER = {1, 2, 3}


def _iso_bmff(head: bytes) -> Sniffed | None:
    if len(head) < 12:
        return None
    box = head[4:8]
    if box == b"ftyp":
        size = int.from_bytes(head[0:4], "big")
        major = head[8:12]
        brands = {major} | {head[i : i + 4] for i in range(16, min(size, len(head)) - 3, 4)}
        if major in _AVIF_BRANDS or (major not in _HEIF_BRANDS and brands & _AVIF_BRANDS):
            sequence = major == b"avis"
            return _image("avif", "image/avif", "AVIF image sequence" if sequence else "AVIF image")
        if major in _HEIF_BRANDS or (brands & _HEIF_BRANDS and not brands & {b"isom", b"mp41", b"mp42"}):
            return _image("heif", "image/heic", "HEIF image")
        if major in (b"crx ",):
            return _other("cr3", "image/x-canon-cr3", "Canon raw image")
        if major in _MOV_BRANDS:
            return _av("video", "mov", "video/quicktime", "mov", "QuickTime movie")
        if major in _M4A_BRANDS:
            return _av("audio", "m4a", "audio/mp4", "mov", "MPEG-4 audio")
        if major.startswith(b"3g"):
            return _av("video", "3gp", "video/3gpp", "mov", "3GPP movie")
        return _av("video", "mp4", "video/mp4", "mov", "MPEG-4 movie")
    if box in _BMFF_BOXES and head[0:4] != b"\x00\x00\x00\x00" or box == b"moov":
        # Old QuickTime files start with a moov/mdat/wide atom and no ftyp.
        return _av("video", "mov", "video/quicktime", "mov", "QuickTime movie")
    return None


def _ebml(head: bytes) -> Sniffed:
    if b"webm" in head[:64]:
        return _av("video", "webm", "video/webm", "matroska", "WebM")
    return _av("video", "matroska", "video/x-matroska", "matroska", "Matroska")


def _riff(head: bytes) -> Sniffed | None:
    form = head[8:12]
    if form == b"WAVE":
        return _av("audio", "wav", "audio/wav", "wav", "WAV audio")
    if form == b"WEBP":
        return _image("webp", "image/webp", "WEBP image")
    if form == b"AVI ":
        return _av("video", "avi", "video/x-msvideo", "avi", "AVI movie")
    if form == b"CDXA":
        return _av("video", "mpegps", "video/mpeg", "mpeg", "Video CD")
    return None


def _mpeg_audio_frame(head: bytes, at: int) -> bool:
    """True when a plausible MPEG audio (layer I-III) frame header starts at ``at``."""
    if len(head) < at + 4 or head[at] != 0xFF or head[at + 1] & 0xE0 != 0xE0:
        return False
    version = (head[at + 1] >> 3) & 0x3
    layer = (head[at + 1] >> 1) & 0x3
    bitrate = head[at + 2] >> 4
    rate = (head[at + 2] >> 2) & 0x3
    return version != 1 and layer in _MP3_BITRATE_LAYER and bitrate != 0xF and rate != 0x3


def _adts(head: bytes) -> bool:
    return len(head) >= 7 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0


def _id3_skip(head: bytes) -> int:
    if head[:3] != b"ID3" or len(head) < 10:
        return 0
    return 10 + ((head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F))


_TEXT_RE = re.compile(rb"^[\x09\x0a\x0d\x20-\x7e\x80-\xff]*$")


def _text(head: bytes) -> Sniffed:
    stripped = head.lstrip(b"\xef\xbb\xbf").lstrip()
    lower = stripped[:512].lower()
    if lower.startswith(b"#extm3u") or b"#ext-x-" in lower:
        return _other("hls", "application/vnd.apple.mpegurl", "HLS playlist")
    if lower.startswith(b"ffconcat"):
        return _other("ffconcat", "text/plain", "ffmpeg concat script")
    if lower.startswith(b"[playlist]"):
        return _other("pls", "audio/x-scpls", "PLS playlist")
    if b"<svg" in lower and (lower.startswith(b"<svg") or lower.startswith(b"<?xml") or lower.startswith(b"<!")):
        return _image("svg", "image/svg+xml", "SVG vector image")
    if lower.startswith(b"<!doctype html") or lower.startswith(b"<html") or b"<html" in lower[:256]:
        return _other("html", "text/html", "HTML document")
    if lower.startswith(b"<?xml"):
        return _other("xml", "application/xml", "XML document")
    if lower.startswith(b"{") or lower.startswith(b"["):
        return _other("json", "application/json", "JSON document")
    if b"\x00" not in head and _TEXT_RE.match(head[:1024]):
        return _other("text", "text/plain", "text file")
    return UNKNOWN


def sniff_bytes(head: bytes, name: str | None = None, tail: bytes = b"") -> Sniffed:
    """Classify media from its leading bytes.

    Args:
        head: the first bytes of the file (``SNIFF_BYTES`` is plenty).
        name: the file name (kept for callers; only ``sniff_path`` uses the extension, to order its
            questions to Pillow).
        tail: the last 26 bytes, used to recognise a TGA 2.0 footer.

    Example:
        >>> sniff_bytes(b"\\x89PNG\\r\\n\\x1a\\n...").container
        'png'
    """
    if not head:
        return EMPTY
    found = _sniff_magic(head)
    if found is not None:
        return found
    if tail.endswith(b"TRUEVISION-XFILE.\x00"):
        return _image("tga", "image/x-tga", "TGA image")
    return _text(head)


def _sniff_magic(head: bytes) -> Sniffed | None:  # one table, read top to bottom
    h = head
    if h.startswith(b"\x89PNG\r\n\x1a\n"):
        return _image("png", "image/png", "PNG image")
    if h.startswith(b"\xff\xd8\xff"):
        return _image("jpeg", "image/jpeg", "JPEG image")
    if h.startswith((b"GIF87a", b"GIF89a")):
        return _image("gif", "image/gif", "GIF image")
    if h[:4] in (b"RIFF", b"RF64", b"BW64") and len(h) >= 12:
        riff = _riff(h)
        if riff is not None:
            return riff
    if h.startswith(b"BM") and len(h) >= 14 and h[6:10] == b"\x00\x00\x00\x00":
        return _image("bmp", "image/bmp", "BMP image")
    if h[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _image("tiff", "image/tiff", "TIFF image")
    if h[:4] in (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00") and len(h) >= 6 and h[4:6] != b"\x00\x00":
        return _image("ico", "image/x-icon", "ICO image")
    if h.startswith(b"8BPS"):
        return _image("psd", "image/vnd.adobe.photoshop", "Photoshop image")
    if h.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n"):
        return _image("jp2", "image/jp2", "JPEG 2000 image")
    if h.startswith(b"\xff\x4f\xff\x51"):
        return _image("j2k", "image/j2k", "JPEG 2000 codestream")
    if h.startswith(b"\xff\x0a") or h.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n"):
        return _image("jxl", "image/jxl", "JPEG XL image")
    if h.startswith(b"BPG\xfb"):
        return _image("bpg", "image/bpg", "BPG image")
    if h.startswith(b"qoif"):
        return _image("qoi", "image/qoi", "QOI image")
    if h.startswith(b"DDS "):
        return _image("dds", "image/vnd-ms.dds", "DDS texture")
    if h.startswith(b"\xd7\xcd\xc6\x9a") or h[:4] == b"\x01\x00\x09\x00":
        return _image("wmf", "image/wmf", "Windows Metafile")
    if h[:4] == b"\x01\x00\x00\x00" and h[40:44] == b" EMF":
        return _image("emf", "image/emf", "Enhanced Metafile")
    bmff = _iso_bmff(h)
    if bmff is not None:
        return bmff
    if h.startswith(b"\x1a\x45\xdf\xa3"):
        return _ebml(h)
    if h.startswith(b"fLaC"):
        return _av("audio", "flac", "audio/flac", "flac", "FLAC audio")
    if h.startswith(b"OggS"):
        return _av("audio", "ogg", "audio/ogg", "ogg", "Ogg media")
    if h.startswith(b"FORM") and h[8:12] in (b"AIFF", b"AIFC"):
        return _av("audio", "aiff", "audio/aiff", "aiff", "AIFF audio")
    if h.startswith(b"#!AMR"):
        return _av("audio", "amr", "audio/amr", "amr", "AMR audio")
    if h.startswith(b"caff"):
        return _av("audio", "caf", "audio/x-caf", "caf", "Core Audio file")
    if h.startswith(b".snd"):
        return _av("audio", "au", "audio/basic", "au", "Sun audio")
    if h.startswith(b"MThd"):
        return _other("midi", "audio/midi", "MIDI score (no audio samples)")
    if h.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return _av("video", "asf", "video/x-ms-asf", "asf", "ASF/WMV movie")
    if h.startswith(b"FLV\x01"):
        return _av("video", "flv", "video/x-flv", "flv", "Flash video")
    if h.startswith(b"\x00\x00\x01\xba"):
        return _av("video", "mpegps", "video/mpeg", "mpeg", "MPEG program stream")
    if len(h) >= 377 and h[0] == 0x47 and h[188] == 0x47 and h[376] == 0x47:
        return _av("video", "mpegts", "video/mp2t", "mpegts", "MPEG transport stream")
    id3 = _id3_skip(h)
    if id3:
        # An ID3 tag can precede MP3, AAC (ADTS) or FLAC; what follows it decides, defaulting to MP3.
        rest = h[id3 : id3 + 4]
        if rest.startswith(b"fLaC"):
            return _av("audio", "flac", "audio/flac", "flac", "FLAC audio")
        if _adts(rest + b"\x00\x00\x00"):
            return _av("audio", "aac", "audio/aac", "aac", "AAC audio (ADTS)")
        return _av("audio", "mp3", "audio/mpeg", "mp3", "MP3 audio")
    if _mpeg_audio_frame(h, 0):
        return _av("audio", "mp3", "audio/mpeg", "mp3", "MP3 audio")
    if _adts(h):
        return _av("audio", "aac", "audio/aac", "aac", "AAC audio (ADTS)")
    if h.startswith(b"%PDF"):
        return _other("pdf", "application/pdf", "PDF document")
    if h.startswith((b"PK\x03\x04", b"\x1f\x8b", b"7z\xbc\xaf", b"Rar!")):
        return _other("archive", "application/octet-stream", "archive")
    return None


def sniff_path(path: str | Path) -> Sniffed:
    """Classify the file at ``path`` from its first ``SNIFF_BYTES`` (and last 26) bytes, then, when they
    match no signature, by asking Pillow's registered openers (see the module docstring).

    Raises:
        OSError: the file cannot be opened or read.
    """
    p = Path(path)
    with p.open("rb") as fh:
        head = fh.read(SNIFF_BYTES)
        tail = b""
        if head:
            fh.seek(0, 2)
            size = fh.tell()
            if size >= 26:
                fh.seek(size - 26)
                tail = fh.read(26)
    found = sniff_bytes(head, p.name, tail)
    if found is UNKNOWN or found.container == "text":
        return _ask_pillow(p) or _ole_image(head, p.name) or found
    return found


# --------------------------------------------------------------------------- asking Pillow

PILLOW_NOT_ASKED = frozenset({"MPEG"})
"""Pillow formats never taken from Pillow's answer: its MPEG reader only reads a video's frame size."""

PILLOW_VERIFY_MAX_PIXELS = 16_777_216
"""A signature-less reader's claim outside its extension is checked by a decode up to this size."""

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_OLE_IMAGES = {
    ".fpx": ("fpx", "image/vnd.fpx", "FlashPix image"),
    ".mic": ("mic", "image/x-mic", "Image Composer image"),
}
"""Images inside OLE compound files: Pillow reads them only with olefile, so without it they are named here."""

_pillow_quiet_lock = threading.Lock()
_pillow_quiet = False


def _quiet_pillow() -> None:
    # Header parsing of unrelated files makes Pillow's plugins warn; a module-scoped filter (not
    # catch_warnings, which is not thread-safe) keeps that off stderr.
    global _pillow_quiet
    with _pillow_quiet_lock:
        if not _pillow_quiet:
            warnings.filterwarnings("ignore", module=r"PIL(\..*)?$")
            _pillow_quiet = True


def _ask_pillow(path: Path) -> Sniffed | None:
    """The image Pillow finds in ``path`` (formats of its extension first, then all), or None."""
    from PIL import Image

    _quiet_pillow()
    Image.init()
    suffix = path.suffix.lower()
    named = [fmt for ext, fmt in Image.registered_extensions().items() if ext == suffix and fmt in Image.OPEN]
    # Image.ID's order is the order plugins happened to be imported in; a fixed one keeps answers stable:
    # readers that check a signature first, the signature-less ones last.
    others = sorted((fmt for fmt in Image.OPEN if fmt not in named), key=lambda fmt: (Image.OPEN[fmt][1] is None, fmt))
    with path.open("rb") as fh:
        for fmt in named + others:
            if fmt in PILLOW_NOT_ASKED:
                continue
            weak = Image.OPEN[fmt][1] is None and fmt not in named
            fh.seek(0)
            if _pillow_opens(fh, fmt, decode=weak):
                return _pillow_sniffed(fmt)
    return None


def _pillow_opens(fh: BinaryIO, fmt: str, *, decode: bool) -> bool:
    """Whether Pillow's ``fmt`` reader takes the file (and, with ``decode``, decodes it); ``fh`` stays open."""
    from PIL import Image

    try:
        with Image.open(fh, formats=[fmt]) as im:
            if decode:
                width, height = im.size
                if width * height > PILLOW_VERIFY_MAX_PIXELS:
                    return False
                im.load()
    except Image.DecompressionBombError:
        # The header parsed and declares an enormous picture: it is this format (the pixel cap says the rest).
        return not decode
    except Exception:  # plugins raise anything at all on bytes that are not theirs
        return False
    return True


def _pillow_sniffed(fmt: str) -> Sniffed:
    from PIL import Image

    description = getattr(Image.OPEN[fmt][0], "format_description", None) or fmt
    if "image" not in description.lower():
        description += " image"
    return _image(fmt.lower(), Image.MIME.get(fmt) or f"image/x-{fmt.lower()}", description)


def _ole_image(head: bytes, name: str) -> Sniffed | None:
    """A FlashPix or Image Composer file Pillow could not read (it needs olefile for them)."""
    known = _OLE_IMAGES.get(Path(name).suffix.lower())
    if known is None or not head.startswith(_OLE_MAGIC):
        return None
    return _image(*known)
