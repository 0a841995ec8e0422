"""Images: make any decodable image acceptable to a profile.

``normalize_image`` takes a sniffed and probed image and returns the bytes to
send. The steps, in the order they are tried:

1. **Decode, always.** The image is fully decoded before anything else is
   decided (a truncated JPEG or PNG only shows itself then), with the pixel
   cap checked on the header first (see ``nvmedia.image_open``). For a JPEG
   that may pass through, the decode runs at 1/8 scale: libjpeg still reads
   every coefficient, so truncation is caught at a fraction of the cost. A
   JPEG must also reach its EOI marker: libjpeg decodes a zero-filled tail
   (an interrupted, preallocated download) as grey blocks without an error,
   so such a file is ``corrupt_media`` too (what follows EOI is ignored).
2. **Passthrough.** A file whose container the profile accepts (PNG, JPEG,
   WEBP), single-frame, upright, not CMYK, within ``profile.max_image_pixels``, without a huge ICC profile, and
   (with a budget) whose base64 length is under ``options.fit_chars``, is sent
   as it is: ``NormalizedMedia(path=source, actions=[])``, byte for byte.
3. **Lossless metadata strip.** The same file carrying EXIF, XMP, IPTC,
   comments, PNG text/eXIf chunks or WEBP EXIF/XMP chunks has those removed
   by rewriting the container (``nvmedia.normalize.metadata``), without
   recompressing: ``actions == ["strip-metadata"]``. ICC profiles are kept.
   ``options.keep_metadata`` skips this step (the file passes through).
4. **Re-encode** everything else: first frame only (with a warning), any mode
   to L/LA/RGB/RGBA (CMYK through its ICC profile when it has one, 16-bit
   scaled rather than clamped), EXIF/XMP orientation applied, downscaled to
   ``profile.max_image_pixels`` (aspect kept, LANCZOS), then encoded with no
   EXIF/XMP at all (unless ``keep_metadata``). An ICC profile is kept when it
   matches the output colour space, except one larger than 64 KiB: the pixels
   are then converted to sRGB and the profile dropped (``icc-to-srgb``), since
   such profiles can outweigh the image and the endpoint assumes sRGB anyway.

**One rule for orientation**: the orientation applied is the one Pillow's
``getexif()`` reports once the image is loaded, whatever carries it (EXIF APP1,
PNG ``eXIf`` or a ``tEXt``/``zTXt``/``iTXt`` chunk holding raw EXIF, an
ImageMagick ``Raw profile type exif`` or XMP, WEBP EXIF/XMP chunks, XMP
``tiff:Orientation``, TIFF tags, AVIF ``irot``/``imir``); a file whose
orientation is not 1 is never passed through, with or without its metadata.
pillow-heif applies HEIF ``irot``/``imir`` itself and reports 1, and Pillow
turns a TIFF upright while decoding it. A PNG is judged before any decode only
when none of its chunks can carry an orientation (``png_may_be_turned``).

Output-format rule for re-encoding (first one the profile accepts):

- a PNG, JPEG or WEBP source keeps its own format (a CMYK JPEG becomes an RGB JPEG);
- a source with real transparency becomes PNG (WEBP, then JPEG flattened onto
  ``options.background``, if the profile has no PNG);
- a photograph becomes JPEG: JPEG-coded data (MPO, JPEG-compressed TIFF),
  HEIF/HEIC, AVIF, JPEG 2000, and CMYK images;
- everything else is treated as lossless graphics and becomes PNG: GIF, BMP,
  ICO, TGA, PSD, uncompressed/LZW/fax TIFF, palette images.

Fit to budget (``options.fit_chars``, base64 characters, strictly under): the
lossless encodings are tried first (PNG, then lossless WEBP; for transparent
images these keep the alpha), then a lossy format's quality ladder from
``profile.jpeg_quality`` down to 50, found by bisection, then a downscale at
quality 75, also by bisection. Transparent images use lossy WEBP with alpha
before ever being flattened into a JPEG. The result is guaranteed to fit, or
``MediaError("cannot_fit_inline")`` names the smallest size reached.

Large JPEGs are decoded with libjpeg's DCT scaling (``Image.draft``): when a
1/2, 1/4 or 1/8 scale lands between 85 % and 100 % of the pixel cap it is used
as is (no resampling pass at all), otherwise the largest scale still above the
target is decoded and resampled with ``reducing_gap``. The orientation is
applied after the downscale, on the smaller image. (Pillow already turns a
TIFF upright while decoding it and drops the tag, so the orientation applied
is the one read after decoding; the action is still recorded.) A JPEG 2000
over four times the cap is decoded at a lower resolution level (``reduce``),
and a single-frame WEBP over the cap by libavcodec straight to the capped size
(``nvmedia.image_av``): Pillow's WEBP decode holds about 16 bytes per pixel.

Memory: before each decode, its peak is estimated from the header
(``nvmedia.image_open.decode_estimate``) and reserved from the run's budget
(``options.budget``, ``nvmedia.memory``) until the output is written; an
estimate over the whole budget is ``too_large``.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MediaError
from ..formats import output_format
from ..image_av import decode_webp_reduced
from ..image_open import decode_estimate, image_orientation, open_image
from ..media_info import MediaInfo
from ..memory import Reservation
from ..option_table import ref
from ..profiles import Profile
from ..sniff import Sniffed
from ..wire import b64_len
from .base import NormalizedMedia, NormalizeOptions
from .metadata import (
    MalformedContainerError,
    jpeg_truncation,
    png_is_intact_and_plain,
    png_may_be_turned,
    strip_metadata,
    webp_is_lossless,
)

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["fit_size", "normalize_image"]

LOSSLESS_CONTAINERS = ("png", "jpeg", "webp")
"""Containers whose metadata can be stripped without recompression."""

PHOTO_CONTAINERS = frozenset({"jpeg", "heif", "avif", "jp2", "j2k"})
"""Sources treated as photographs (re-encoded as JPEG when they cannot pass through)."""

HUGE_ICC_BYTES = 64 * 1024
"""ICC profiles above this size are converted away (pixels to sRGB) unless metadata is kept."""

DRAFT_MIN_FILL = 0.85
"""A DCT-scaled JPEG decode is used without resampling when it keeps at least this share of the pixel cap."""

FIT_MIN_QUALITY = 50
"""The lowest quality the budget ladder goes to before downscaling."""

FIT_RESIZE_QUALITY = 75
"""The quality used while downscaling to fit a budget."""

FIT_MIN_LONG_SIDE = 64
"""Downscaling to fit a budget stops here: an image smaller than this is of no use to a model."""

_JPEG_FORMATS = ("JPEG", "MPO")
_PASS_MODES = {
    "png": {"1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I;16B", "I"},
    "jpeg": {"L", "RGB"},
    "webp": {"RGB", "RGBA"},
}
_METADATA_INFO_KEYS = ("exif", "xmp", "XML:com.adobe.xmp", "comment", "photoshop", "iptc", "Raw profile type exif")
_TIFF_METADATA_TAGS = {270, 271, 272, 305, 306, 315, 316, 700, 33432, 33723, 34377, 34665, 34853, 37724}
_ORIENTATION_TAG = 0x0112
_XMP_ORIENTATION = re.compile(rb'(tiff:Orientation(?:="|>))([0-9])')


def fit_size(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """The largest size with the same aspect ratio whose pixel count is at most ``max_pixels``.

    Both sides are floored, so the product never exceeds the cap; neither goes below 1.

    Example:
        >>> fit_size(4000, 3000, 3_407_872)
        (2131, 1598)
    """
    if max_pixels is None or width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    new_w = max(1, math.floor(width * scale))
    new_h = max(1, math.floor(height * scale))
    while new_w * new_h > max_pixels:  # float rounding at the edge
        if new_w >= new_h:
            new_w -= 1
        else:
            new_h -= 1
    return new_w, new_h


@dataclass
class _Facts:
    """What the header says about the source (read before decoding)."""

    fmt: str
    size: tuple[int, int]
    mode: str
    frames: int
    icc: bytes | None
    orientation: int
    tagged_orientation: int = 1
    has_alpha: bool = False
    has_metadata: bool = False
    tiff_jpeg: bool = False


@dataclass
class _Staged:
    """The decoded, corrected first frame, ready to encode."""

    image: Image.Image
    icc: bytes | None
    actions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    exif: bytes | None = None
    xmp: bytes | None = None

    @property
    def has_alpha(self) -> bool:
        return self.image.mode in ("RGBA", "LA")


@dataclass
class _Encoded:
    data: bytes
    fmt: str
    size: tuple[int, int]
    mode: str
    actions: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Step:
    """One encoding to try: a format, and a quality (None: lossless)."""

    fmt: str
    quality: int | None


def _has_metadata(im: Image.Image) -> bool:
    if any(im.info.get(key) for key in _METADATA_INFO_KEYS):
        return True
    if getattr(im, "text", None):
        return True
    tags = getattr(im, "tag_v2", None)
    return bool(tags is not None and _TIFF_METADATA_TAGS & set(tags.keys()))


def _facts(im: Image.Image) -> _Facts:
    fmt = im.format or ""
    icc = im.info.get("icc_profile") or None
    # PNG's getexif() decodes the image to look for a late eXIf chunk, so PNG waits until after load().
    # This is the orientation as tagged; the one to apply is read again after load(), because Pillow
    # already turns some formats (TIFF) upright while decoding them and then drops the tag.
    orientation = image_orientation(im) if fmt != "PNG" else 1
    compression = str(im.info.get("compression", ""))
    return _Facts(
        fmt=fmt,
        size=im.size,
        mode=im.mode,
        frames=int(getattr(im, "n_frames", 1) or 1),
        icc=icc if isinstance(icc, bytes) else None,
        orientation=orientation,
        tagged_orientation=orientation,
        has_alpha=im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info,
        tiff_jpeg=fmt == "TIFF" and "jpeg" in compression,
    )


def _may_pass(facts: _Facts, sniffed: Sniffed, profile: Profile, options: NormalizeOptions) -> bool:
    """Whether the file could be sent as it is (or with metadata stripped), judging from the header."""
    container = sniffed.container
    if container not in LOSSLESS_CONTAINERS or container not in profile.image_formats:
        return False
    if facts.fmt != output_format(container).pillow or facts.frames != 1 or facts.orientation != 1:
        return False
    if facts.mode not in _PASS_MODES[container]:
        return False
    cap = profile.max_image_pixels
    if cap is not None and facts.size[0] * facts.size[1] > cap:
        return False
    return not (facts.icc is not None and len(facts.icc) > HUGE_ICC_BYTES and not options.keep_metadata)


def _draft_request(size: tuple[int, int], cap: int | None) -> tuple[int, int] | None:
    """The size to pass to ``Image.draft`` for a JPEG that must come down to ``cap`` pixels."""
    width, height = size
    if cap is None or width * height <= cap:
        return None
    target_w, target_h = fit_size(width, height, cap)
    for scale in (8, 4, 2):
        scaled_w, scaled_h = -(-width // scale), -(-height // scale)
        if DRAFT_MIN_FILL * cap <= scaled_w * scaled_h <= cap:
            return width // scale, height // scale
    for scale in (8, 4, 2):
        if -(-width // scale) >= target_w and -(-height // scale) >= target_h:
            return width // scale, height // scale
    return None


@dataclass(frozen=True)
class _DecodePlan:
    """How an image is decoded: at what scale, by which decoder, and to what size it then comes down."""

    decoded_size: tuple[int, int]
    output_size: tuple[int, int]
    draft: tuple[int, int] | None = None
    j2k_reduce: int = 0
    by_libav: bool = False


def _plan_decode(im: Image.Image, facts: _Facts, profile: Profile, *, verify_only: bool) -> _DecodePlan:
    """The cheapest decode that still gives the pixels needed: JPEG DCT scaling, JPEG 2000 resolution
    levels, or (for a single-frame WEBP over the cap) libavcodec resampling as it decodes."""
    width, height = facts.size
    cap = profile.max_image_pixels
    if facts.fmt in _JPEG_FORMATS:
        request: tuple[int, int] | None = None
        if verify_only:
            if width >= 16 and height >= 16:
                request = (width // 8, height // 8)
        else:
            request = _draft_request(facts.size, cap)
        if request is not None:
            ratio = min(width // max(request[0], 1), height // max(request[1], 1))
            scale = next(s for s in (8, 4, 2, 1) if ratio >= s)  # as Image.draft picks it
            decoded = (-(-width // scale), -(-height // scale))
            return _DecodePlan(decoded, fit_size(*decoded, cap), draft=request)
    target = fit_size(width, height, cap)
    if target == facts.size or verify_only:
        return _DecodePlan(facts.size, target)
    if facts.fmt == "WEBP" and facts.frames == 1 and facts.mode in ("RGB", "RGBA"):
        return _DecodePlan(target, target, by_libav=True)
    if facts.fmt == "JPEG2000":
        levels = _j2k_levels(im)
        reduce = 0
        while reduce < levels and -(-width // (2 << reduce)) >= target[0] and -(-height // (2 << reduce)) >= target[1]:
            reduce += 1
        if reduce:
            decoded = (-(-width // (1 << reduce)), -(-height // (1 << reduce)))
            return _DecodePlan(decoded, fit_size(*decoded, cap), j2k_reduce=reduce)
    return _DecodePlan(facts.size, target)


def _j2k_levels(im: Image.Image) -> int:
    """The wavelet decomposition levels of a JPEG 2000 codestream's COD marker (0 when not found).

    Decoding at 1/2**r needs r of them; the main header is walked marker by marker.
    """
    fp = getattr(im, "fp", None)
    if fp is None:
        return 0
    position = fp.tell()
    try:
        fp.seek(0)
        head = bytes(fp.read(1 << 16))
    finally:
        fp.seek(position)
    start = head.find(b"\xff\x4f\xff\x51")  # SOC then SIZ
    if start < 0:
        return 0
    at = start + 2
    while at + 10 <= len(head) and head[at] == 0xFF:
        marker = head[at + 1]
        length = int.from_bytes(head[at + 2 : at + 4], "big")
        if marker == 0x52:  # COD: Lcod, Scod, SGcod (4 bytes), then the number of decomposition levels
            return min(int(head[at + 9]), 5)
        if length < 2:
            return 0
        at += 2 + length
    return 0


def _decode(source: Path, im: Image.Image, facts: _Facts, plan: _DecodePlan) -> tuple[Image.Image, bool]:
    """Decode by ``plan``: ``im`` in place, or (libav) a new, already reduced image carrying ``im``'s info.

    Returns the decoded image and whether it came out smaller than the header's size.
    """
    if plan.by_libav:
        reduced = decode_webp_reduced(source, facts.size, plan.decoded_size, facts.mode)
        reduced.info = dict(im.info)
        return reduced, True
    if plan.draft is not None:
        im.draft(im.mode, plan.draft)
    if plan.j2k_reduce:
        im.reduce = plan.j2k_reduce  # type: ignore[assignment,method-assign]
    im.load()
    return im, im.size != facts.size


def _write(workdir: Path, data: bytes, fmt: str) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=workdir, prefix="image-", suffix=output_format(fmt).suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def _info(
    data: bytes, fmt: str, size: tuple[int, int], mode: str, has_alpha: bool, digest: str | None = None
) -> MediaInfo:
    return MediaInfo(
        kind="image",
        container=fmt,
        mime=output_format(fmt).mime,
        bytes=len(data),
        sha256=digest or hashlib.sha256(data).hexdigest(),
        width=size[0],
        height=size[1],
        mode=mode,
        frames=1,
        orientation=1,
        has_alpha=has_alpha,
    )


# --------------------------------------------------------------------------- pixels


def _extrema(img: Image.Image) -> tuple[float, float]:
    """(min, max) of a single-band image."""
    low, high = img.getextrema()
    assert isinstance(low, (int, float)) and isinstance(high, (int, float))
    return float(low), float(high)


def _to_8bit(img: Image.Image) -> Image.Image:
    """Scale 16/32-bit integer or float grey to 8 bits (``convert("L")`` would clamp to white).

    Integer data is scaled by the smallest bit depth that holds its maximum (10-, 12- and 16-bit
    data in a 16-bit container all come out with their full range), never clamped.
    """
    if img.mode == "F":
        low, high = _extrema(img)
        factor = 255.0 if 0 <= low and high <= 1.0 else 255.0 / max(high, 1.0)
        return img.point(lambda v: v * factor).convert("L")
    wide = img if img.mode == "I" else img.convert("I")
    _, high = _extrema(wide)
    bits = max(8, int(high).bit_length())
    if bits > 8:
        factor = 255.0 / ((1 << bits) - 1)
        wide = wide.point(lambda v: v * factor)
    return wide.convert("L")


def _grey_key_alpha(img: Image.Image, key: int) -> Image.Image:
    """The alpha channel for a 16-bit grey image with a tRNS colour key (transparent where equal)."""
    from PIL import Image, ImageMath

    wide = img if img.mode == "I" else img.convert("I")
    equal = ImageMath.lambda_eval(lambda a: a["equal"](a["im"], key), im=wide)
    if not isinstance(equal, Image.Image):
        raise TypeError("ImageMath returned a number for an image expression")
    return equal.point(lambda v: 255 - v * 255).convert("L")


def _icc_to_srgb(img: Image.Image, icc: bytes, out_mode: str) -> Image.Image | None:
    """Convert ``img`` from its embedded ICC profile to sRGB; None when the profile is unusable."""
    from PIL import ImageCms

    try:
        source_profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(img, source_profile, ImageCms.createProfile("sRGB"), outputMode=out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None
    return converted


def _icc_space(icc: bytes | None) -> bytes | None:
    return icc[16:20] if icc is not None and len(icc) >= 20 else None


def _standard_mode(
    img: Image.Image, icc: bytes | None, keep_metadata: bool, actions: list[str]
) -> tuple[Image.Image, bytes | None]:
    """Bring any Pillow mode to L, LA, RGB or RGBA, dealing with the ICC profile on the way."""
    mode = img.mode
    transparency = img.info.get("transparency")
    if mode in ("RGB", "L") and transparency is not None:
        img = img.convert("RGBA" if mode == "RGB" else "LA")
    elif mode == "1":
        img = img.convert("L")
        actions.append("to-rgb")
    elif mode in ("P", "PA"):
        img = img.convert("RGBA" if mode == "PA" or img.has_transparency_data else "RGB")
    elif mode == "CMYK":
        converted = _icc_to_srgb(img, icc, "RGB") if _icc_space(icc) == b"CMYK" and icc is not None else None
        img = converted if converted is not None else img.convert("RGB")
        icc = None
        actions.append("to-rgb")
    elif mode.startswith("I") or mode == "F":
        alpha = _grey_key_alpha(img, transparency) if isinstance(transparency, int) and mode != "F" else None
        img = _to_8bit(img)
        if alpha is not None:
            img = img.convert("LA")
            img.putalpha(alpha)
        actions.append("to-rgb")
    elif mode in ("RGBa", "La"):
        img = img.convert("RGBA" if mode == "RGBa" else "LA")
    elif mode == "RGBX":
        img = img.convert("RGB")
    elif mode not in ("RGB", "L", "RGBA", "LA"):
        # YCbCr, LAB, HSV and any other mode Pillow can convert.
        img = img.convert("RGBA" if img.has_transparency_data else "RGB")
        actions.append("to-rgb")

    space = _icc_space(icc)
    if icc is not None and len(icc) > HUGE_ICC_BYTES and not keep_metadata and img.mode in ("RGB", "RGBA"):
        converted = _icc_to_srgb(img, icc, img.mode) if space == b"RGB " else None
        if converted is not None:
            img = converted
            actions.append("icc-to-srgb")
        icc = None
    wanted = b"RGB " if img.mode in ("RGB", "RGBA") else b"GRAY"
    if icc is not None and space != wanted:
        icc = None  # a profile for another colour space would now be wrong
    return img, icc


def _frame_warning(fmt: str, frames: int) -> str:
    if fmt == "TIFF":
        return f"multi-page: kept the first of {frames} pages"
    if fmt == "MPO":
        return f"multi-picture: kept the first of {frames} images"
    return f"animated: kept the first of {frames} frames"


def _stage(im: Image.Image, facts: _Facts, profile: Profile, options: NormalizeOptions, drafted: bool) -> _Staged:
    """First frame, standard mode, size cap and orientation, as a new image independent of the file."""
    from PIL import Image

    actions: list[str] = []
    warnings: list[str] = []
    if facts.frames > 1:
        actions.append("first-frame")
        warnings.append(_frame_warning(facts.fmt, facts.frames))
    orientation = facts.orientation
    if orientation != 1 or facts.tagged_orientation != 1:
        actions.append("exif-transpose")
    if facts.has_metadata and not options.keep_metadata:
        actions.append("strip-metadata")

    exif_bytes: bytes | None = None
    xmp_bytes: bytes | None = None
    if options.keep_metadata:
        exif_bytes, xmp_bytes = _kept_metadata(im, warnings)

    img, icc = _standard_mode(im, facts.icc, options.keep_metadata, actions)
    target = fit_size(img.width, img.height, profile.max_image_pixels)
    if target != img.size:
        img = img.resize(target, Image.Resampling.LANCZOS, reducing_gap=2.0)
    if drafted or img.size != im.size:
        actions.append("resize")
    if orientation != 1:
        # The same mapping as ImageOps.exif_transpose, which would also rewrite (and may choke on) the EXIF.
        method = {
            2: Image.Transpose.FLIP_LEFT_RIGHT,
            3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270,
            7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90,
        }[orientation]
        img = img.transpose(method)
    if img.mode in ("RGBA", "LA"):
        low, _ = img.getchannel("A").getextrema()
        if isinstance(low, (int, float)) and low >= 255:
            img = img.convert("RGB" if img.mode == "RGBA" else "L")  # an all-opaque alpha channel says nothing
    if img is im:
        img = im.copy()  # detach from the file before it closes
    img.info = {}
    return _Staged(img, icc, _order(actions), warnings, exif_bytes, xmp_bytes)


_ACTION_ORDER = ("first-frame", "exif-transpose", "strip-metadata", "to-rgb", "icc-to-srgb", "resize")


def _order(actions: list[str]) -> list[str]:
    return sorted(dict.fromkeys(actions), key=_ACTION_ORDER.index)


def _kept_metadata(im: Image.Image, warnings: list[str]) -> tuple[bytes | None, bytes | None]:
    """EXIF and XMP to carry into a re-encoded image under ``keep_metadata``, with orientation reset."""
    exif_bytes: bytes | None = None
    try:
        exif = im.getexif()
        if len(exif):
            exif.pop(_ORIENTATION_TAG, None)
            exif_bytes = exif.tobytes()
    except (SyntaxError, ValueError, TypeError, KeyError, IndexError, struct.error, OSError, EOFError) as exc:
        warnings.append(f"metadata: EXIF could not be carried over ({type(exc).__name__})")
    xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    xmp_bytes = _XMP_ORIENTATION.sub(rb"\g<1>1", xmp) if isinstance(xmp, bytes) else None
    return exif_bytes, xmp_bytes


# --------------------------------------------------------------------------- encoding


def _choose_step(facts: _Facts, sniffed: Sniffed, staged: _Staged, lossless_webp: bool, profile: Profile) -> _Step:
    """The output format (and whether it is lossless) by the module's rule, among those the profile accepts."""
    container = sniffed.container
    png, webp_lossless = _Step("png", None), _Step("webp", None)
    jpeg, webp_lossy = _Step("jpeg", profile.jpeg_quality), _Step("webp", profile.jpeg_quality)
    photo = container in PHOTO_CONTAINERS or facts.tiff_jpeg or facts.mode == "CMYK"
    if staged.has_alpha:
        lossy_source = container == "webp" and not lossless_webp
        preference = [png, webp_lossy if lossy_source else webp_lossless, jpeg]
    elif container == "webp":
        preference = [webp_lossless, png, jpeg] if lossless_webp else [webp_lossy, jpeg, png]
    elif container == "png" or not photo:
        preference = [png, webp_lossless, jpeg]
    else:
        preference = [jpeg, webp_lossy, png]
    for step in preference:
        if step.fmt in profile.image_formats:
            return step
    raise MediaError(
        f"profile {profile.name!r} accepts no image format nvmedia can write "
        f"(it lists {', '.join(profile.image_formats) or 'none'})",
        code="unsupported_format",
        hint="add png, jpeg or webp to the profile's image_formats",
    )


def _flatten(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    from PIL import Image

    rgba = img.convert("RGBA")
    base = Image.new("RGBA", rgba.size, (*background, 255))
    return Image.alpha_composite(base, rgba).convert("RGB")


def _encode(
    img: Image.Image,
    fmt: str,
    staged: _Staged,
    *,
    quality: int | None,
    optimize: bool,
) -> bytes:
    """Encode with no metadata but the kept ICC profile (and EXIF/XMP under ``keep_metadata``)."""
    params: dict[str, Any] = {}
    if staged.icc is not None:
        params["icc_profile"] = staged.icc
    if staged.exif:
        params["exif"] = staged.exif
    if staged.xmp and fmt in ("jpeg", "webp"):
        params["xmp"] = staged.xmp
    if fmt == "jpeg":
        params.update(quality=quality or 90, optimize=optimize)
    elif fmt == "webp":
        if quality is None:
            params.update(lossless=True, quality=80, method=4)
        else:
            params.update(quality=quality, method=4)
        if img.mode not in ("RGB", "RGBA"):
            img = img.convert("RGBA" if img.mode == "LA" else "RGB")
    else:
        params.update(optimize=False)
    # Pillow holds the GIL while it encodes into a BytesIO, but releases it while it encodes
    # into a real file: going through an anonymous temp file lets the -j worker threads encode
    # in parallel (same bytes; see benchmarks/README.md, photo_jobs).
    with tempfile.TemporaryFile(prefix="nvmedia-encode-") as out:
        img.save(out, output_format(fmt).pillow, **params)
        out.seek(0)
        return out.read()


def _ladder(first: _Step, staged: _Staged, profile: Profile) -> tuple[list[_Step], str | None]:
    """Lossless encodings to try in order, and the lossy format for the quality ladder (None: none)."""
    allowed = profile.image_formats
    lossless: list[_Step] = []
    if first.quality is None:
        lossless = [first] + [_Step(f, None) for f in ("png", "webp") if f in allowed and f != first.fmt]
    lossy: str | None
    if staged.has_alpha:
        # Lossy WEBP keeps the alpha; only without it is the image flattened into a JPEG.
        lossy = "webp" if "webp" in allowed else ("jpeg" if "jpeg" in allowed else None)
    elif first.quality is not None:
        lossy = first.fmt
    else:
        lossy = "jpeg" if "jpeg" in allowed else ("webp" if "webp" in allowed else None)
    return lossless, lossy


def _encode_step(
    staged: _Staged, img: Image.Image, step: _Step, background: tuple[int, int, int], optimize: bool
) -> _Encoded:
    actions: list[str] = []
    if step.fmt == "jpeg" and img.mode in ("RGBA", "LA"):
        img = _flatten(img, background)
        actions.append("flatten-alpha")
    data = _encode(img, step.fmt, staged, quality=step.quality, optimize=optimize)
    mode = img.mode if step.fmt != "webp" or img.mode in ("RGB", "RGBA") else ("RGBA" if img.mode == "LA" else "RGB")
    return _Encoded(data, step.fmt, img.size, mode, actions)


def _bisect_quality(
    encode: Callable[[int], _Encoded], fits: Callable[[_Encoded], bool], low: int, high: int
) -> _Encoded | None:
    """The encoding at the highest quality in [low, high) that fits, given that ``high`` does not."""
    best: _Encoded | None = None
    first = encode(low)
    if not fits(first):
        return None
    best = first
    good, bad = low, high
    while bad - good > 1:
        mid = (good + bad) // 2
        attempt = encode(mid)
        if fits(attempt):
            best, good = attempt, mid
        else:
            bad = mid
    best.actions.append(f"fit:q={good}")
    return best


def _fit(source: Path, staged: _Staged, first: _Step, profile: Profile, options: NormalizeOptions) -> _Encoded:
    """Encode ``staged`` as ``first``; under a budget, walk the ladder until the base64 length fits."""
    from PIL import Image

    budget = options.fit_chars
    img = staged.image
    background = options.background
    if budget is None:
        return _encode_step(staged, img, first, background, optimize=False)
    lossless, lossy = _ladder(first, staged, profile)
    base_quality = profile.jpeg_quality

    smallest: _Encoded | None = None

    def fits(encoded: _Encoded) -> bool:
        nonlocal smallest
        if smallest is None or len(encoded.data) < len(smallest.data):
            smallest = encoded
        return b64_len(len(encoded.data)) < budget

    for index, step in enumerate(lossless):
        encoded = _encode_step(staged, img, step, background, optimize=True)
        if fits(encoded):
            if index > 0:
                encoded.actions.append("fit:webp-lossless" if step.fmt == "webp" else f"fit:{step.fmt}")
            return encoded

    if lossy is not None:

        def at_quality(quality: int, image: Image.Image = img, fmt: str = lossy) -> _Encoded:
            return _encode_step(staged, image, _Step(fmt, quality), background, optimize=True)

        top = at_quality(base_quality)
        if fits(top):
            return top
        found = _bisect_quality(at_quality, fits, min(FIT_MIN_QUALITY, base_quality - 1), base_quality)
        if found is not None:
            return found

    # Downscale, by bisection on the linear scale factor, at a fixed quality.
    quality = min(FIT_RESIZE_QUALITY, base_quality) if lossy is not None else None
    fmt = lossy if lossy is not None else (lossless[0].fmt if lossless else first.fmt)
    long_side = max(img.size)
    min_scale = min(1.0, FIT_MIN_LONG_SIDE / long_side)

    def at_scale(scale: float) -> _Encoded:
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        resized = img.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
        encoded = _encode_step(staged, resized, _Step(fmt, quality), background, optimize=True)
        return encoded

    assert smallest is not None
    reference = len(smallest.data)
    budget_bytes = (budget // 4) * 3
    guess = max(min_scale, min(0.99, math.sqrt(budget_bytes / max(reference, 1)) * 0.8))
    good: tuple[float, _Encoded] | None = None
    bad = 1.0
    scale = guess
    for _ in range(12):
        attempt = at_scale(scale)
        if fits(attempt):
            good = (scale, attempt)
        else:
            bad = scale
        if good is None:
            if scale <= min_scale:
                break
            scale = max(min_scale, scale / 2)
            continue
        if bad / good[0] < 1.04:
            break
        scale = math.sqrt(good[0] * bad)
    if good is not None:
        encoded = good[1]
        encoded.actions.append(f"fit:size={encoded.size[0]}x{encoded.size[1]}")
        if quality is not None:
            encoded.actions.append(f"fit:q={quality}")
        return encoded

    best = smallest
    raise MediaError(
        f"{source.name}: cannot fit inline: the smallest encoding reached was {b64_len(len(best.data)):,} base64 "
        f"characters ({best.size[0]}x{best.size[1]} {best.fmt}), over the inline budget of {budget:,}",
        code="cannot_fit_inline",
        hint=f"use {ref('mode', 'auto')} or {ref('mode', 'asset')} to upload it",
    )


# --------------------------------------------------------------------------- entry point


def normalize_image(
    source: Path, sniffed: Sniffed, info: MediaInfo, profile: Profile, options: NormalizeOptions
) -> NormalizedMedia:
    """Make an image acceptable to ``profile`` (see the module docstring for the rules).

    Args:
        source: the image file (read-only; never modified).
        sniffed: the sniffer's verdict for ``source``.
        info: the probe's ``MediaInfo`` for ``source``.
        profile: the target profile (formats, pixel cap, JPEG quality).
        options: workdir for outputs, inline budget, metadata and background choices.

    Returns:
        ``NormalizedMedia`` whose ``path`` is ``source`` on passthrough, else a new file in ``options.workdir``.

    Raises:
        MediaError: ``corrupt_media``, ``unsupported_format``, ``too_large`` or ``cannot_fit_inline``.

    Example:
        >>> result = normalize_image(path, sniff_path(path), probe(path, sniff_path(path)), NEMOTRON_3_NANO_OMNI,
        ...                          NormalizeOptions(workdir=tmp, fit_chars=180_000))
        >>> result.actions
        ['exif-transpose', 'strip-metadata', 'resize', 'encode:jpeg', 'fit:q=72']
    """
    with Reservation(options.budget, source.name) as held:
        return _normalize_reserved(source, sniffed, info, profile, options, held)


def _normalize_reserved(
    source: Path, sniffed: Sniffed, info: MediaInfo, profile: Profile, options: NormalizeOptions, held: Reservation
) -> NormalizedMedia:
    """``normalize_image`` with each decode's estimated memory held in the run's budget until the end."""
    safety = profile.safety_max_image_pixels
    staged: _Staged | None = None
    passthrough: tuple[bytes, bool] | None = None  # (bytes to send, whether they are the source's own)
    with open_image(source, sniffed, max_pixels=safety) as im:
        facts = _facts(im)
        candidate = _may_pass(facts, sniffed, profile, options)
        verify_only = candidate and not (
            options.fit_chars is not None and b64_len(info.bytes) >= options.fit_chars
        )  # a file over the budget will need its full pixels anyway
        if verify_only and sniffed.container == "png":
            plain = _verified_png_passthrough(source, facts, sniffed, options)
            if plain is not None:
                return plain
        plan = _plan_decode(im, facts, profile, verify_only=verify_only)
        held.hold(_estimate(im, info, plan, candidate), _what(facts))
        decoded, drafted = _decode(source, im, facts, plan)
        if sniffed.container == "jpeg":
            _check_jpeg_complete(source)  # after the decode: a tail libjpeg notices keeps the decoder's message
        facts.orientation = image_orientation(decoded)
        facts.has_metadata = _has_metadata(decoded)
        if candidate and facts.orientation == 1:
            passthrough = _lossless_bytes(source, sniffed, options)
        if passthrough is None and not (candidate and drafted):
            staged = _stage(decoded, facts, profile, options, drafted)
    if passthrough is not None:
        data, untouched = passthrough
        has_alpha = facts.has_alpha
        container = sniffed.container
        if untouched:
            return NormalizedMedia(source, _info(data, container, facts.size, facts.mode, has_alpha))
        path = _write(options.workdir, data, container)
        return NormalizedMedia(path, _info(data, container, facts.size, facts.mode, has_alpha), ["strip-metadata"])
    if staged is None:
        # The 1/8-scale decode only verified the file; decode again for real pixels.
        with open_image(source, sniffed, max_pixels=safety) as im:
            facts = _facts(im)
            plan = _plan_decode(im, facts, profile, verify_only=False)
            held.hold(_estimate(im, info, plan, False), _what(facts))
            decoded, drafted = _decode(source, im, facts, plan)
            facts.orientation = image_orientation(decoded)
            facts.has_metadata = _has_metadata(decoded)
            staged = _stage(decoded, facts, profile, options, drafted)

    lossless_webp = False
    if sniffed.container == "webp":
        try:
            lossless_webp = webp_is_lossless(source.read_bytes())
        except MalformedContainerError:
            lossless_webp = False
    first = _choose_step(facts, sniffed, staged, lossless_webp, profile)
    encoded = _fit(source, staged, first, profile, options)
    actions = [*staged.actions]
    for action in encoded.actions:
        if action == "flatten-alpha":
            actions.append(action)
    actions.append(f"encode:{encoded.fmt}")
    actions.extend(a for a in encoded.actions if a.startswith("fit:"))
    if any(a.startswith("fit:size=") for a in actions) and "resize" not in actions:
        actions.insert(actions.index(f"encode:{encoded.fmt}"), "resize")
    path = _write(options.workdir, encoded.data, encoded.fmt)
    out_info = _info(encoded.data, encoded.fmt, encoded.size, encoded.mode, encoded.mode in ("RGBA", "LA"))
    return NormalizedMedia(path, out_info, actions, staged.warnings)


def _check_jpeg_complete(source: Path) -> None:
    """Refuse a JPEG whose data runs out before its EOI marker, whatever fills its tail.

    Raises:
        MediaError: ``corrupt_media``: decoding it would turn the missing part into grey or smeared blocks.
    """
    why = jpeg_truncation(source.read_bytes())
    if why is not None:
        raise MediaError(
            f"{source.name}: the JPEG is truncated: {why} (its tail is missing or zero-filled, as after an "
            "interrupted download or copy)",
            code="corrupt_media",
            hint="re-download or re-copy the file",
        )


def _estimate(im: Image.Image, info: MediaInfo, plan: _DecodePlan, candidate: bool) -> int:
    return decode_estimate(
        im,
        info.bytes,
        decoded_size=plan.decoded_size,
        output_size=plan.output_size,
        by_libav=plan.by_libav,
        passthrough=candidate,
    )


def _what(facts: _Facts) -> str:
    return f"this {facts.size[0]}x{facts.size[1]} {facts.mode} {facts.fmt or 'image'}"


def _verified_png_passthrough(
    source: Path, facts: _Facts, sniffed: Sniffed, options: NormalizeOptions
) -> NormalizedMedia | None:
    """Passthrough (or lossless strip) of a PNG proven to decode without a full decode: chunk lengths and CRCs,
    and the IDAT stream inflated to exactly the scanlines the header implies (``png_is_intact_and_plain``).

    None when that is not proven or the bytes cannot be sent as they are: the full decode then decides.

    Raises:
        MediaError: ``corrupt_media`` when the chunks are intact but the pixel data does not decode (a
            decoder may still show such a file, with rows missing; the service may not).
    """
    from .metadata import CorruptPixelDataError

    data = source.read_bytes()
    try:
        if not png_is_intact_and_plain(data):
            return None
    except CorruptPixelDataError as exc:
        raise MediaError(
            f"{source.name}: the PNG's pixel data does not decode: {exc}",
            code="corrupt_media",
            hint="the image is damaged; re-export or re-download it",
        ) from None
    if png_may_be_turned(data):
        return None  # an orientation may ride in its chunks: the decode decides
    passthrough = _lossless_bytes(source, sniffed, options, data)
    if passthrough is None:
        return None
    out, untouched = passthrough
    info = _info(out, "png", facts.size, facts.mode, facts.has_alpha)
    if untouched:
        return NormalizedMedia(source, info)
    return NormalizedMedia(_write(options.workdir, out, "png"), info, ["strip-metadata"])


def _lossless_bytes(
    source: Path, sniffed: Sniffed, options: NormalizeOptions, data: bytes | None = None
) -> tuple[bytes, bool] | None:
    """The source's bytes, stripped of metadata unless kept; None when they cannot be used as they are."""
    if data is None:
        data = source.read_bytes()
    if options.keep_metadata:
        out = data
    else:
        try:
            out = strip_metadata(data, sniffed.container)
        except MalformedContainerError:
            return None  # a structure we cannot walk is re-encoded into a well-formed file
    if options.fit_chars is not None and b64_len(len(out)) >= options.fit_chars:
        return None
    return out, out is data
