"""Opening untrusted images with Pillow, safely.

Every image nvmedia reads goes through ``open_image``. It:

- refuses containers Pillow cannot decode (SVG, BPG, JPEG XL, WMF/EMF) with
  ``unsupported_format`` before Pillow sees a byte, and formats whose decoder
  needs something missing here (EPS without Ghostscript, FlashPix and Image
  Composer without olefile, BUFR/GRIB/HDF5 without a registered handler) with
  ``unsupported_format`` and a hint naming what is missing;
- registers pillow-heif's HEIF opener once, lazily, only when a HEIF file shows up;
- restricts Pillow to the decoder(s) matching what the sniffer saw, so a file is
  never decoded by a plugin it does not belong to;
- checks the declared pixel count against ``max_pixels`` right after
  ``Image.open`` (which reads the header only) and before any decode, so a
  decompression bomb is ``too_large`` and never a ``MemoryError`` or a hang;
- maps Pillow's many failure modes (``UnidentifiedImageError``, ``OSError``,
  ``SyntaxError``, ``DecompressionBombError``, the PNG text-chunk ``ValueError``...)
  raised while opening *or inside the ``with`` block* to ``MediaError`` with the
  stable codes ``corrupt_media``, ``unsupported_format`` or ``too_large``.

Global Pillow state is left alone except for two things: the HEIF opener, and
``Image.MAX_IMAGE_PIXELS``, which is raised (never lowered) when a caller's own
cap is higher than Pillow's, so that a user-chosen larger limit is honoured.
``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False: a truncated file must fail.
"""

from __future__ import annotations

import errno
import re
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import MediaError, NVMediaError
from .sniff import Sniffed

if TYPE_CHECKING:
    from PIL import Image

# Containers the sniffer knows but Pillow (with pillow-heif) cannot decode here.
_NO_DECODER: dict[str, str] = {
    "svg": "SVG is a vector format and nvmedia does not rasterise it; convert it to PNG first "
    "(for example `rsvg-convert -o out.png in.svg` or `inkscape --export-type=png in.svg`)",
    "bpg": "no BPG decoder is available; convert it to PNG or JPEG first",
    "jxl": "no JPEG XL decoder is available; convert it to PNG or JPEG first (for example `djxl in.jxl out.png`)",
    "wmf": "Windows Metafiles are vector drawings with no decoder outside Windows; export the drawing to PNG first",
    "emf": "Enhanced Metafiles are vector drawings with no decoder outside Windows; export the drawing to PNG first",
}

# Which Pillow plugins may decode a sniffed container. A container missing here is one the sniffer
# took from Pillow's own answer (``ppm``, ``sgi``, ``icns``...): the Pillow format of that name decodes it.
_PILLOW_FORMATS: dict[str, tuple[str, ...]] = {
    "png": ("PNG",),
    "jpeg": ("JPEG", "MPO"),
    "gif": ("GIF",),
    "webp": ("WEBP",),
    "bmp": ("BMP", "DIB"),
    "tiff": ("TIFF",),
    "ico": ("ICO", "CUR"),
    "psd": ("PSD",),
    "jp2": ("JPEG2000",),
    "j2k": ("JPEG2000",),
    "heif": ("HEIF",),
    "avif": ("AVIF", "HEIF"),
    "qoi": ("QOI",),
    "dds": ("DDS",),
    "tga": ("TGA",),
}

_STUB_FORMATS = {
    "bufr": ("BufrStubImagePlugin", "BufrStubImageFile"),
    "grib": ("GribStubImagePlugin", "GribStubImageFile"),
    "hdf5": ("Hdf5StubImagePlugin", "HDF5StubImageFile"),
}
"""Formats Pillow only identifies: decoding them needs a handler the application registers."""

_ORIENTATION_TAG = 0x0112

_heif_lock = threading.Lock()
_heif_registered = False


_quiet_lock = threading.Lock()
_quiet_done = False


def _quiet_pillow() -> None:
    """Keep Pillow's own warnings (corrupt EXIF, malformed MPO headers, oversized images) off stderr.

    The first two are harmless and the last is our own pixel cap's business. A process-wide filter
    scoped to Pillow's modules is installed once instead of ``warnings.catch_warnings()``, which is
    not thread-safe: worker threads restoring each other's saved filters can leave every warning of
    the process silenced.
    """
    global _quiet_done
    with _quiet_lock:
        if not _quiet_done:
            warnings.filterwarnings("ignore", module=r"PIL(\..*)?$")
            _quiet_done = True


def _register_heif() -> None:
    """Register pillow-heif's opener once per process (importing it costs ~50 ms, so only on demand)."""
    global _heif_registered
    if _heif_registered:
        return
    with _heif_lock:
        if not _heif_registered:
            import pillow_heif

            pillow_heif.register_heif_opener()
            _heif_registered = True


def _pillow_formats(container: str) -> tuple[str, ...] | None:
    """The Pillow plugins allowed to decode ``container`` (None: any of them)."""
    formats = _PILLOW_FORMATS.get(container)
    if formats is not None:
        return formats
    from PIL import Image

    Image.init()
    named = tuple(fmt for fmt in Image.ID if fmt.lower() == container)
    return named or None


def _missing_delegate(container: str) -> tuple[str, str] | None:
    """``(what is missing, what to do)`` when decoding ``container`` needs something this machine lacks."""
    if container == "eps":
        from PIL import EpsImagePlugin

        if not EpsImagePlugin.has_ghostscript():
            return (
                "Pillow rasterises PostScript with Ghostscript, and no Ghostscript (`gs`) is on PATH",
                "install Ghostscript (for example `apt install ghostscript` or `brew install ghostscript`), "
                "or convert the file to PNG first",
            )
    elif container in ("fpx", "mic"):
        import importlib.util

        if importlib.util.find_spec("olefile") is None:
            return (
                "Pillow reads FlashPix and Image Composer files through the olefile package, which is not installed",
                "`pip install olefile`, or convert the file to PNG first",
            )
    elif container in _STUB_FORMATS:
        import importlib

        module, name = _STUB_FORMATS[container]
        stub = getattr(importlib.import_module(f"PIL.{module}"), name)
        if getattr(stub, "_handler", None) is None:
            return (
                f"Pillow only identifies {container.upper()} data; decoding it needs a handler registered with "
                f"PIL.{module}.register_handler(), and none is",
                f"{container.upper()} holds scientific data rather than a picture: render it to PNG first with a "
                "tool that reads it",
            )
    return None


def _describe(sniffed: Sniffed) -> str:
    return sniffed.description or f"{sniffed.container} image"


def _is_unsupported(message: str) -> bool:
    """True when an ``OSError`` from Pillow means "no decoder for this variant" rather than "broken file"."""
    lower = message.lower()
    if "decoder error" in lower:
        return False
    return (
        "unsupported" in lower
        or "not supported" in lower
        or "cannot find loader" in lower
        or ("decoder" in lower and "not available" in lower)
    )


def _map_error(
    exc: BaseException, path: Path, sniffed: Sniffed, max_pixels: int, *, opening: bool
) -> MediaError | None:
    """Translate a Pillow failure into a ``MediaError`` (None when ``exc`` is not a media failure).

    ``opening`` is True for failures inside ``Image.open``, where Pillow's plugins also raise
    ``IndexError``/``KeyError``/``ZeroDivisionError`` on fuzzed headers; inside the caller's block
    those are left alone so that a bug is not disguised as a broken file.
    """
    from PIL import Image, UnidentifiedImageError

    what = _describe(sniffed)
    if isinstance(exc, Image.DecompressionBombError):
        # Pillow refuses past twice its own cap before our check sees the size: same message either way.
        return _too_large(path, sniffed, _bomb_size(exc), max_pixels)
    if isinstance(exc, MemoryError):
        return MediaError(
            f"{path.name}: decoding {what} ran out of memory (limit {max_pixels:,} pixels)",
            code="too_large",
            hint="downscale the image first or lower its resolution",
        )
    if isinstance(exc, ValueError) and ("too large" in str(exc).lower() or "too much memory" in str(exc).lower()):
        # PngImagePlugin refuses text chunks inflating past MAX_TEXT_CHUNK (a zlib bomb in metadata).
        return MediaError(
            f"{path.name}: {what} has a compressed metadata chunk that inflates past Pillow's safety limit ({exc})",
            code="too_large",
            hint="this looks like a decompression bomb; re-save the image without its text chunks",
        )
    if isinstance(exc, UnidentifiedImageError):
        return MediaError(
            f"{path.name}: looks like a {what} from its first bytes, but no decoder can read it",
            code="corrupt_media",
            hint="the file is damaged or truncated; re-export or re-download it",
        )
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return None  # a write refused for want of room: the pipeline reports no_space, not a damaged file
    if isinstance(exc, OSError):
        message = str(exc) or type(exc).__name__
        if _is_unsupported(message):
            return MediaError(
                f"{path.name}: this {what} uses a variant nvmedia cannot decode ({message})",
                code="unsupported_format",
                hint="convert it to PNG or JPEG first",
            )
        return MediaError(
            f"{path.name}: {what} is damaged and cannot be decoded ({message})",
            code="corrupt_media",
            hint="the file is damaged or truncated; re-export or re-download it",
        )
    malformed: tuple[type[BaseException], ...] = (SyntaxError, EOFError, struct.error, zlib.error)
    if opening:
        malformed += _DECODER_FAULTS
    if isinstance(exc, malformed):
        # Pillow's plugins raise these on malformed headers and fuzzed input.
        return MediaError(
            f"{path.name}: {what} has a malformed structure ({_known_fault(exc)})",
            code="corrupt_media",
            hint="the file is damaged; re-export or re-download it",
        )
    if isinstance(exc, _DECODER_FAULTS) and _raised_by_decoder(exc):
        if isinstance(exc, NotImplementedError) or _UNSUPPORTED_FAULT.search(str(exc)):
            return MediaError(
                f"{path.name}: this {what} uses a feature its decoder does not implement ({_known_fault(exc)})",
                code="unsupported_format",
                hint="convert it to PNG or JPEG first",
            )
        return MediaError(
            f"{path.name}: {what} is damaged and cannot be decoded ({_known_fault(exc)})",
            code="corrupt_media",
            hint="the file is damaged or truncated; re-export or re-download it",
        )
    return None


# What Pillow's plugins and pillow-heif raise, besides OSError, on damaged files (found by fuzz/run.py;
# each has a regression file in fixtures/fuzz/). Raised from nvmedia's own code they stay bugs.
_DECODER_FAULTS: tuple[type[BaseException], ...] = (
    ValueError,
    RuntimeError,
    KeyError,
    TypeError,
    IndexError,
    ZeroDivisionError,
    NotImplementedError,
    AttributeError,
)
_UNSUPPORTED_FAULT = re.compile(r"unsupported|not supported|not implemented", re.IGNORECASE)
# Known failure modes, as a reader would say them (matched on the exception's text).
_KNOWN_FAULTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"missing dimensions", re.I), "the header lacks the image's width or height"),
    (re.compile(r"not enough image data|buffer is not large enough", re.I), "the pixel data is shorter than declared"),
    (re.compile(r"tile cannot extend outside image", re.I), "a frame or tile lies outside the image"),
    (re.compile(r"failed to decode frame|decoding of color planes failed", re.I), "the codec cannot decode it"),
    (re.compile(r"iloc box references data outside|unexpected end of file", re.I), "the file ends before its data"),
    (re.compile(r"index out of range", re.I), "a block ends before its declared size"),
)
_PLUGIN_DIRS: tuple[str, ...] | None = None


def _known_fault(exc: BaseException) -> str:
    text = str(exc)
    for pattern, meaning in _KNOWN_FAULTS:
        if pattern.search(text):
            return f"{meaning}: {type(exc).__name__}: {text}"
    if isinstance(exc, KeyError):
        key = exc.args[0] if exc.args else None
        if isinstance(key, int):
            from PIL import TiffTags

            return f"its tag {key} ({TiffTags.lookup(key).name}) is missing: KeyError: {text}"
        return f"a required field is missing: KeyError: {text}"
    return f"{type(exc).__name__}: {text}"


def _raised_by_decoder(exc: BaseException) -> bool:
    """True when ``exc`` comes from decoding: raised in a Pillow plugin, ``ImageFile`` (tiles) or
    pillow-heif, or under ``load``/``seek``. An error in Pillow's pixel operations (``convert``,
    ``resize``) called by nvmedia stays a bug."""
    global _PLUGIN_DIRS
    if _PLUGIN_DIRS is None:
        import PIL

        dirs = [str(Path(PIL.__file__).parent)]
        try:
            import pillow_heif

            dirs.append(str(Path(pillow_heif.__file__).parent))
        except ImportError:
            pass
        _PLUGIN_DIRS = tuple(dirs)
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename.startswith(_PLUGIN_DIRS):
            name = Path(code.co_filename).name
            if (
                name.endswith("ImagePlugin.py")
                or name in ("ImageFile.py", "TiffTags.py")
                or "pillow_heif" in code.co_filename
                or code.co_name in ("load", "seek", "_seek", "getexif", "n_frames")
            ):
                return True
        tb = tb.tb_next
    return False


def _check_size(im: Image.Image, path: Path, sniffed: Sniffed, max_pixels: int) -> None:
    width, height = im.size
    if width <= 0 or height <= 0:
        raise MediaError(
            f"{path.name}: {_describe(sniffed)} declares a size of {width}x{height} pixels",
            code="corrupt_media",
            hint="the file is damaged; re-export or re-download it",
        )
    if width * height > max_pixels:
        raise _too_large(path, sniffed, (width, height), max_pixels)


def _too_large(path: Path, sniffed: Sniffed, size: tuple[int, int] | int | None, max_pixels: int) -> MediaError:
    """``too_large`` for an image declaring ``size`` (width and height, else the pixel count, else unknown)."""
    if isinstance(size, tuple):
        declared = f"declares {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels"
    elif size is not None:
        declared = f"declares {size:,} pixels"
    else:
        declared = "declares too many pixels"
    return MediaError(
        f"{path.name}: {_describe(sniffed)} {declared}, over the safety limit of {max_pixels:,} pixels",
        code="too_large",
        hint="if the image is genuine, downscale it first or raise safety_max_image_pixels in a custom "
        "profile; otherwise it is a decompression bomb",
    )


def _bomb_size(exc: BaseException) -> tuple[int, int] | int | None:
    """The size Pillow's decompression-bomb check refused: its ``size`` argument, else the count in its text."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "_decompression_bomb_check":
            size = tb.tb_frame.f_locals.get("size")
            if isinstance(size, tuple) and len(size) == 2 and all(isinstance(n, int) for n in size):
                return (size[0], size[1])
        tb = tb.tb_next
    found = re.search(r"\((\d+) pixels\)", str(exc))
    return int(found.group(1)) if found else None


def image_orientation(im: Image.Image) -> int:
    """The EXIF orientation (or XMP ``tiff:Orientation``, as Pillow reports it), 1 when absent or unreadable.

    Call it after ``load()`` for a PNG: Pillow's ``getexif()`` decodes a PNG to look for a late
    eXIf chunk and swallows decode errors while doing so.
    """
    try:
        value = im.getexif().get(_ORIENTATION_TAG)
    except (SyntaxError, ValueError, TypeError, KeyError, IndexError, struct.error, OSError, EOFError):
        return 1  # unreadable EXIF: nothing trustworthy to apply
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


@contextmanager
def open_image(path: Path, sniffed: Sniffed, *, max_pixels: int) -> Iterator[Image.Image]:
    """Open an untrusted image read-only, with the pixel cap enforced before any decode.

    The yielded image is only opened (header parsed); call ``load()`` to decode. Pillow
    errors raised inside the ``with`` block (on ``load()``, ``seek()``, ``n_frames``...)
    are translated too; ``NVMediaError`` and unrelated exceptions pass through unchanged.

    Args:
        path: the image file (opened read-only; never modified).
        sniffed: the sniffer's verdict for ``path``; it picks the decoder.
        max_pixels: the largest width x height accepted (checked on the header).

    Yields:
        The opened ``PIL.Image.Image``.

    Raises:
        MediaError: ``unsupported_format`` (no decoder: SVG, BPG, JXL, WMF...),
            ``too_large`` (pixel cap, decompression bombs) or ``corrupt_media``.

    Example:
        >>> with open_image(Path("cat.jpg"), sniff_path("cat.jpg"), max_pixels=89_478_485) as im:
        ...     im.load()
    """
    from PIL import Image

    hint = _NO_DECODER.get(sniffed.container)
    if hint is not None:
        raise MediaError(
            f"{path.name}: {_describe(sniffed)} ({sniffed.mime}) cannot be decoded by nvmedia",
            code="unsupported_format",
            hint=hint,
        )
    missing = _missing_delegate(sniffed.container)
    if missing is not None:
        raise MediaError(
            f"{path.name}: {_describe(sniffed)} ({sniffed.mime}) cannot be decoded here: {missing[0]}",
            code="unsupported_format",
            hint=missing[1],
        )
    if sniffed.container in ("heif", "avif"):
        _register_heif()
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        # A caller asked for a higher cap than Pillow's default: honour it (our own check still runs).
        Image.MAX_IMAGE_PIXELS = max_pixels
    formats = _pillow_formats(sniffed.container)

    _quiet_pillow()
    with path.open("rb") as fh:
        try:
            im = Image.open(fh, formats=list(formats) if formats else None)
        except NVMediaError:
            raise
        except Exception as exc:
            mapped = _map_error(exc, path, sniffed, max_pixels, opening=True)
            if mapped is None:
                raise
            raise mapped from None
        try:
            _check_size(im, path, sniffed, max_pixels)
            yield im
        except NVMediaError:
            raise
        except Exception as exc:
            mapped = _map_error(exc, path, sniffed, max_pixels, opening=False)
            if mapped is None:
                raise
            raise mapped from None
        finally:
            im.close()


# Bytes per pixel of Pillow's image storage, by mode (everything else is 4: RGB is stored as RGBX).
_STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_STANDARD_MODES = frozenset({"RGB", "L", "RGBA", "LA"})


def decode_estimate(
    im: Image.Image,
    file_bytes: int,
    *,
    decoded_size: tuple[int, int] | None = None,
    output_size: tuple[int, int] | None = None,
    by_libav: bool = False,
    passthrough: bool = False,
) -> int:
    """Bytes that decoding ``im`` (only opened) and bringing it to ``output_size`` will hold at its peak.

    Read from the header alone, per format and mode; checked against measured peaks by
    ``benchmarks/bench_memory.py --only estimates`` (every estimate at or above the measured
    peak, at most about twice it). The parts, added up because each is alive at the peak:

    - the decoder's own buffers besides Pillow's image: libwebp's canvas, frame copy and lossless
      buffer (12 bytes per source pixel) or libavcodec's frame (4, ``by_libav``); OpenJPEG's 32-bit
      planes (4 per band); libheif's planes and interleaved copy (6); a progressive JPEG's
      coefficients (2 per sample, whatever the DCT scale); the file itself where it is read whole
      (twice more when it may pass through);
    - Pillow's image at ``decoded_size`` (1, 2 or 4 bytes per pixel by mode);
    - the conversion to L/RGB/RGBA (16-bit grey goes through two 32-bit images), the premultiplied
      copy and the reduced intermediate of a downscale (or the copy detached from the file), and
      the encoded output.

    Args:
        im: the opened image (header parsed, nothing decoded).
        file_bytes: the file's size.
        decoded_size: the size the decoder produces (smaller than ``im.size`` with JPEG draft,
            JPEG 2000 reduce, or libav's resampling); default ``im.size``.
        output_size: the size after the profile's cap; default ``decoded_size``.
        by_libav: the image is decoded by libavcodec straight to ``decoded_size`` (WEBP).
        passthrough: the file may be sent as it is, so it is also read whole (and rewritten
            without its metadata).

    Example:
        >>> decode_estimate(im, 3438)  # doctest: +SKIP
        1413741982
    """
    width, height = im.size
    source_px = width * height
    decoded_w, decoded_h = decoded_size or im.size
    decoded_px = decoded_w * decoded_h
    out_w, out_h = output_size or (decoded_w, decoded_h)
    out_px = out_w * out_h
    fmt = im.format or ""
    mode = im.mode
    bands = len(im.getbands())

    decoder = 0
    # Formats read whole into memory by their decoder (libtiff maps the file it reads).
    whole_file = fmt in ("WEBP", "JPEG2000", "HEIF", "AVIF", "PSD", "ICO", "TIFF")
    if by_libav:
        decoder = source_px * 4 + file_bytes * 3  # the frame; the file again in libav's packet and parser
    elif fmt == "WEBP":
        decoder = source_px * 12
    elif fmt == "JPEG2000":
        decoder = decoded_px * 4 * bands
    elif fmt in ("HEIF", "AVIF"):
        decoder = decoded_px * 6
    elif fmt in ("JPEG", "MPO") and ("progressive" in im.info or "progression" in im.info):
        decoder = source_px * 2 * bands
    decoder += file_bytes if whole_file else 0
    decoder += file_bytes * 2 if passthrough else 0  # read whole, and rewritten without its metadata

    stored = 4 if by_libav else _STORED_BYTES.get(mode, 4)
    image = decoded_px * stored
    if mode in _STANDARD_MODES or by_libav:
        conversion = 0
    elif mode.startswith("I") or mode == "F":
        conversion = decoded_px * 9  # through 32-bit integers, scaled, then to 8 bits
    else:
        conversion = decoded_px * 4
    resize = 0
    if out_px < decoded_px:
        premultiplied = decoded_px * 4 if mode in _ALPHA_MODES or "transparency" in im.info else 0
        resize = premultiplied + decoded_px + out_px * 4  # premultiplied copy, reduced step, result
    copy = image if conversion == resize == 0 else 0  # the staged image detached from the file
    grey = mode in ("1", "L", "F") or mode.startswith("I")
    encoded = out_px * (1 if grey else 4)  # the encoder's output read back, at most the raw size
    total = decoder + image + conversion + resize + copy + encoded
    return total + total // 16 + (4 << 20)  # allocator slack and the small buffers left out above
