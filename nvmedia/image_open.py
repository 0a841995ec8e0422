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
        return MediaError(
            f"{path.name}: {what} declares more pixels than Pillow's safety limit ({exc}); "
            f"nvmedia's limit is {max_pixels:,} pixels",
            code="too_large",
            hint="this looks like a decompression bomb; if the image is genuine, downscale it first "
            "or raise safety_max_image_pixels in a custom profile",
        )
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
        malformed += (IndexError, KeyError, ZeroDivisionError, TypeError, ValueError)
    if isinstance(exc, malformed):
        # Pillow's plugins raise these on malformed headers and fuzzed input.
        return MediaError(
            f"{path.name}: {what} has a malformed structure ({type(exc).__name__}: {exc})",
            code="corrupt_media",
            hint="the file is damaged; re-export or re-download it",
        )
    return None


def _check_size(im: Image.Image, path: Path, sniffed: Sniffed, max_pixels: int) -> None:
    width, height = im.size
    if width <= 0 or height <= 0:
        raise MediaError(
            f"{path.name}: {_describe(sniffed)} declares a size of {width}x{height} pixels",
            code="corrupt_media",
            hint="the file is damaged; re-export or re-download it",
        )
    pixels = width * height
    if pixels > max_pixels:
        raise MediaError(
            f"{path.name}: {_describe(sniffed)} declares {width}x{height} = {pixels:,} pixels, "
            f"over the safety limit of {max_pixels:,} pixels",
            code="too_large",
            hint="if the image is genuine, downscale it first or raise safety_max_image_pixels in a custom "
            "profile; otherwise it is a decompression bomb",
        )


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
