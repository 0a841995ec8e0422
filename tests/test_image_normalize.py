"""normalize_image: every behaviour of the image normalizer, on real files (corpus and generated)."""

from __future__ import annotations

import hashlib
import io
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageChops, ImageFile, ImageOps, ImageStat
from support import CORPUS, FIXTURES, corpus_expectations, sha256_file

from nvmedia.errors import MediaError
from nvmedia.normalize import NormalizedMedia, NormalizeOptions
from nvmedia.normalize.image import fit_size, normalize_image
from nvmedia.normalize.metadata import strip_metadata
from nvmedia.probe import probe
from nvmedia.profiles import GENERIC, NEMOTRON_3_NANO_OMNI, Profile
from nvmedia.sniff import sniff_path
from nvmedia.wire import b64_len

sys.path.insert(0, str(FIXTURES))
from make_images import CAMERA_MAKE, XMP_MARKER, make_images  # noqa: E402

PROFILE = NEMOTRON_3_NANO_OMNI
_CAP = PROFILE.max_image_pixels
assert _CAP is not None
CAP: int = _CAP
MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
PILLOW_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_images(tmp_path_factory.mktemp("images"))


def _normalize(path: Path, workdir: Path, profile: Profile = PROFILE, **options: Any) -> NormalizedMedia:
    sniffed = sniff_path(path)
    info = probe(path, sniffed, max_pixels=profile.safety_max_image_pixels)
    return normalize_image(path, sniffed, info, profile, NormalizeOptions(workdir=workdir, **options))


def _load(path: Path | bytes) -> Image.Image:
    im = Image.open(io.BytesIO(path) if isinstance(path, bytes) else path)
    im.load()
    return im


def _mean_diff(a: Image.Image, b: Image.Image) -> float:
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    return max(ImageStat.Stat(diff).mean)


def _error(path: Path, workdir: Path, **options: Any) -> MediaError:
    with pytest.raises(MediaError) as caught:
        _normalize(path, workdir, **options)
    return caught.value


# --------------------------------------------------------------------------- output invariants


def _check_output(result: NormalizedMedia, source: Path, workdir: Path, profile: Profile = PROFILE) -> Image.Image:
    """What holds for every successful result: a decodable, accepted, described and capped image."""
    data = result.path.read_bytes()
    if result.path != source:
        assert result.path.parent == workdir
    else:
        assert result.actions == []
    info = result.info
    assert info.kind == "image"
    assert info.container in profile.image_formats
    assert info.mime == MIME[info.container]
    assert info.bytes == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    out = _load(data)
    assert out.format == PILLOW_FORMAT[info.container]
    assert (info.width, info.height) == out.size
    assert getattr(out, "n_frames", 1) == 1
    if profile.max_image_pixels is not None:
        assert out.width * out.height <= profile.max_image_pixels
    return out


def _first_frame(source: Path) -> Image.Image:
    im = Image.open(source)
    im.load()
    return im


def _upright(source: Path) -> Image.Image:
    return ImageOps.exif_transpose(_first_frame(source))


def check_exif_transpose(source: Path, result: NormalizedMedia) -> None:
    out = _load(result.path)
    reference = _upright(source)
    assert (out.width > out.height) == (reference.width > reference.height) or out.width == out.height
    if out.size != reference.size:
        reference = reference.convert("RGB").resize(out.size, Image.Resampling.LANCZOS)
    assert _mean_diff(out, reference) < 6.0
    assert out.getexif().get(0x0112) in (None, 1)
    xmp = out.info.get("xmp") or b""
    assert b"tiff:Orientation" not in (xmp if isinstance(xmp, bytes) else xmp.encode())


def check_strip_location(source: Path, result: NormalizedMedia) -> None:
    out = _load(result.path)
    exif = out.getexif()
    assert 0x8825 not in exif
    assert exif.get_ifd(0x8825) == {}
    assert b"GPS" not in result.path.read_bytes()


def check_strip_metadata(source: Path, result: NormalizedMedia) -> None:
    data = result.path.read_bytes()
    out = _load(data)
    assert not out.getexif()
    for key in ("xmp", "XML:com.adobe.xmp", "comment", "photoshop"):
        assert key not in out.info
    assert not getattr(out, "text", None)
    # Nothing the lossless stripper would still remove (EXIF, XMP, IPTC, COM, text, eXIf, tIME...).
    assert strip_metadata(data, result.info.container) is data


def check_keep_alpha(source: Path, result: NormalizedMedia) -> None:
    alpha_in = _upright(source).convert("RGBA").getchannel("A")
    low, _ = alpha_in.getextrema()
    out = _load(result.path)
    if low == 255:
        return  # nothing transparent in the frame that is kept
    if result.info.container == "jpeg":
        assert "flatten-alpha" in result.actions
        return
    assert out.mode in ("RGBA", "LA") or "transparency" in out.info
    alpha_out = out.convert("RGBA").getchannel("A")
    if alpha_out.size != alpha_in.size:
        alpha_in = alpha_in.resize(alpha_out.size, Image.Resampling.LANCZOS)
    assert max(ImageStat.Stat(ImageChops.difference(alpha_in, alpha_out)).mean) < 3.0


def check_to_rgb(source: Path, result: NormalizedMedia) -> None:
    assert _load(result.path).mode in ("RGB", "RGBA", "L", "LA")


def check_to_png_or_jpeg(source: Path, result: NormalizedMedia) -> None:
    assert result.info.container in ("png", "jpeg", "webp")
    assert result.path != source


def check_downscale(source: Path, result: NormalizedMedia) -> None:
    reference = _upright(source)
    out = _load(result.path)
    assert out.width * out.height <= CAP
    assert "resize" in result.actions
    assert math.isclose(out.width / out.height, reference.width / reference.height, rel_tol=0.01)


def check_first_frame(source: Path, result: NormalizedMedia) -> None:
    assert "first-frame" in result.actions
    assert any("kept the first" in w for w in result.warnings)
    out = _load(result.path)
    assert _mean_diff(out, _first_frame(source)) < 3.0


def _same_pixels_as_source(source: Path, result: NormalizedMedia) -> None:
    first, out = _first_frame(source), _load(result.path)
    assert first.mode == out.mode and first.size == out.size and first.tobytes() == out.tobytes()


def check_passthrough_ok(source: Path, result: NormalizedMedia) -> None:
    # Byte-for-byte when there is no metadata; PNG text chunks (dates, "written by") go without recompression.
    if result.actions == []:
        assert result.path == source
    else:
        assert result.actions == ["strip-metadata"]
        _same_pixels_as_source(source, result)


def check_passthrough_ok_after_strip(source: Path, result: NormalizedMedia) -> None:
    assert result.actions in ([], ["strip-metadata"])
    _same_pixels_as_source(source, result)


def check_classify_by_content(source: Path, result: NormalizedMedia) -> None:
    assert sniff_path(source).container == "jpeg"


CHECKS: dict[str, Callable[[Path, NormalizedMedia], None]] = {
    "exif-transpose": check_exif_transpose,
    "strip-location": check_strip_location,
    "strip-metadata": check_strip_metadata,
    "keep-alpha": check_keep_alpha,
    "to-rgb": check_to_rgb,
    "to-png-or-jpeg": check_to_png_or_jpeg,
    "downscale": check_downscale,
    "first-frame": check_first_frame,
    "passthrough-ok": check_passthrough_ok,
    "passthrough-ok-after-strip": check_passthrough_ok_after_strip,
    "classify-by-content": check_classify_by_content,
}

IMAGE_ENTRIES = [e for e in corpus_expectations() if e.get("kind") == "image"]


@pytest.mark.parametrize("entry", IMAGE_ENTRIES, ids=lambda e: e["file"])
def test_corpus_image_meets_its_expectation(entry: dict[str, Any], tmp_path: Path) -> None:
    source = CORPUS / entry["file"]
    allowed = {entry.get("error_code"), *(entry.get("alt_error_codes") or [])} - {None}
    try:
        result = _normalize(source, tmp_path)
    except MediaError as err:
        assert entry["expect"] in ("error", "ok_or_error"), f"{err.code}: {err.message}"
        assert err.code in allowed
        assert err.message and err.hint
        return
    assert entry["expect"] in ("ok", "ok_or_error"), f"expected {entry['error_code']}, got {result.actions}"
    _check_output(result, source, tmp_path)
    for check in entry.get("checks") or []:
        CHECKS[check](source, result)


def test_corpus_sources_are_never_modified(tmp_path: Path) -> None:
    images = [CORPUS / e["file"] for e in IMAGE_ENTRIES]
    before = {p: sha256_file(p) for p in images}
    listing = sorted(p.name for p in CORPUS.iterdir())
    for budget in (None, 20_000):
        for path in images:
            try:
                _normalize(path, tmp_path, fit_chars=budget)
            except MediaError:
                pass
    assert {p: sha256_file(p) for p in images} == before
    assert sorted(p.name for p in CORPUS.iterdir()) == listing


# --------------------------------------------------------------------------- passthrough and stripping


@pytest.mark.parametrize(
    "name", ["pillow__hopper.webp", "pillow__pil123rgba.png", "small__jpeg.jpg", "pillow__hopper_16bit_qtables.jpg"]
)
def test_compliant_file_without_metadata_passes_through_byte_identical(name: str, tmp_path: Path) -> None:
    source = CORPUS / name
    result = _normalize(source, tmp_path)
    assert result.path == source
    assert result.actions == [] and result.warnings == []
    assert result.info.sha256 == sha256_file(source)
    assert list(tmp_path.iterdir()) == []  # no copy made


@pytest.mark.parametrize(
    ("name", "container"),
    [("everything_jpeg", "jpeg"), ("everything_png", "png"), ("everything_webp", "webp")],
)
def test_metadata_is_stripped_without_recompression(
    generated: dict[str, Path], name: str, container: str, tmp_path: Path
) -> None:
    source = generated[name]
    result = _normalize(source, tmp_path)
    assert result.actions == ["strip-metadata"]
    assert result.info.container == container
    _same_pixels_as_source(source, result)
    check_strip_metadata(source, result)
    check_strip_location(source, result)
    data = result.path.read_bytes()
    assert CAMERA_MAKE.encode() not in data and XMP_MARKER not in data
    assert _load(data).info["icc_profile"] == _load(source).info["icc_profile"]


def test_keep_metadata_passes_a_compliant_file_through_untouched(generated: dict[str, Path], tmp_path: Path) -> None:
    source = generated["everything_jpeg"]
    result = _normalize(source, tmp_path, keep_metadata=True)
    assert result.path == source and result.actions == []


def test_png_without_iend_is_rewritten_as_a_well_formed_png(tmp_path: Path) -> None:
    source = CORPUS / "small__png-truncated.png"
    result = _normalize(source, tmp_path)
    assert result.actions == ["encode:png"]
    assert result.path.read_bytes().endswith(b"IEND\xaeB`\x82")


# --------------------------------------------------------------------------- orientation, size, speed path


def test_exif_rotated_12mp_jpeg_is_upright_downscaled_and_stripped(generated: dict[str, Path], tmp_path: Path) -> None:
    source = generated["photo_12mp_rot6"]  # 4000x3000 stored, Orientation 6: a 3000x4000 portrait
    result = _normalize(source, tmp_path)
    out = _check_output(result, source, tmp_path)
    assert result.actions == ["exif-transpose", "strip-metadata", "resize", "encode:jpeg"]
    assert out.height > out.width
    assert math.isclose(out.width / out.height, 3000 / 4000, rel_tol=0.01)
    # DCT-scaled decode: at least 85 % of the cap, never over it.
    assert 0.85 * CAP <= out.width * out.height <= CAP
    stored = Image.open(source)
    stored.draft("RGB", (500, 375))
    reference = ImageOps.exif_transpose(stored)
    small = (150, 200)
    assert _mean_diff(out.resize(small), reference.resize(small)) < 4.0
    check_strip_location(source, result)
    assert CAMERA_MAKE.encode() not in result.path.read_bytes()
    assert out.info["icc_profile"] == _load(source).info["icc_profile"]  # the sRGB profile stays


def test_jpeg_between_dct_scales_is_resampled_to_exactly_the_cap(tmp_path: Path) -> None:
    # 5000x4000: a 1/2-scale decode is 5 MP (over the cap), 1/4 is 1.25 MP (too small to use as is),
    # so the image is decoded at 1/2 and resampled down to the exact fitted size.
    source = tmp_path / "big.jpg"
    Image.radial_gradient("L").resize((5000, 4000)).convert("RGB").save(source, quality=80)
    workdir = tmp_path / "out"
    result = _normalize(source, workdir)
    out = _check_output(result, source, workdir)
    assert out.size == fit_size(5000, 4000, CAP)
    assert "resize" in result.actions


def test_large_png_is_downscaled_keeping_aspect(tmp_path: Path) -> None:
    source = CORPUS / "pillow__itxt_chunks.png"
    result = _normalize(source, tmp_path)
    out = _check_output(result, source, tmp_path)
    assert out.size == fit_size(2400, 2000, CAP)
    assert result.actions == ["strip-metadata", "resize", "encode:png"]


def test_generic_profile_does_not_downscale(tmp_path: Path) -> None:
    source = CORPUS / "pillow__itxt_chunks.png"
    result = _normalize(source, tmp_path, profile=GENERIC)
    assert result.actions == ["strip-metadata"]
    assert (result.info.width, result.info.height) == (2400, 2000)


def test_rotated_webp_stays_webp_and_is_upright(tmp_path: Path) -> None:
    source = CORPUS / "pillow__hopper_orientation_6.webp"
    result = _normalize(source, tmp_path)
    assert result.info.container == "webp"
    assert result.actions == ["exif-transpose", "strip-metadata", "encode:webp"]
    check_exif_transpose(source, result)


def test_keep_metadata_on_a_rotated_photo_keeps_exif_but_resets_orientation(
    generated: dict[str, Path], tmp_path: Path
) -> None:
    source = generated["photo_12mp_rot6"]
    result = _normalize(source, tmp_path, keep_metadata=True)
    assert "strip-metadata" not in result.actions
    out = _load(result.path)
    exif = out.getexif()
    assert exif.get(0x010F) == CAMERA_MAKE
    assert exif.get_ifd(0x8825)
    assert exif.get(0x0112) in (None, 1)
    assert XMP_MARKER in result.path.read_bytes()
    assert out.height > out.width


# --------------------------------------------------------------------------- modes


def test_cmyk_jpeg_becomes_rgb_with_the_right_colours(tmp_path: Path) -> None:
    source = CORPUS / "pillow__pil_sample_cmyk.jpg"
    result = _normalize(source, tmp_path)
    out = _load(result.path)
    assert out.mode == "RGB" and result.info.container == "jpeg"
    assert "to-rgb" in result.actions
    # Same colours as Pillow's own CMYK->RGB (an inverted or raw-CMYK result would be far off);
    # per-pixel differences come from chroma subsampling of this very saturated image.
    reference = _first_frame(source).convert("RGB")
    for got, want in zip(ImageStat.Stat(out).mean, ImageStat.Stat(reference).mean, strict=True):
        assert abs(got - want) < 3.0
    assert _mean_diff(out, reference) < 15.0


def test_16bit_grey_is_scaled_not_clamped(generated: dict[str, Path], tmp_path: Path) -> None:
    result = _normalize(generated["gray16"], tmp_path)  # a 0..65535 ramp
    out = _load(result.path)
    assert out.mode == "L" and result.info.container == "png"
    assert out.getextrema() == (0, 255)
    assert abs(out.getpixel((128, 32)) - 128) <= 2  # type: ignore[operator]


def test_16bit_jpeg2000_is_not_white(tmp_path: Path) -> None:
    # Values 291..694: convert("L") would clamp every pixel to 255.
    result = _normalize(CORPUS / "pillow__16bit.cropped.j2k", tmp_path)
    low, high = _load(result.path).getextrema()
    assert isinstance(low, int) and isinstance(high, int)
    assert high < 255 and high - low > 50


def test_palette_transparency_becomes_alpha(tmp_path: Path) -> None:
    result = _normalize(CORPUS / "small__gif-transparent.gif", tmp_path)
    out = _load(result.path)
    assert result.info.container == "png" and out.mode == "RGBA"
    assert out.getpixel((0, 0))[3] == 0  # type: ignore[index]


def test_transparent_png_is_flattened_onto_the_background_when_only_jpeg_is_accepted(tmp_path: Path) -> None:
    source = CORPUS / "pillow__transparent.png"
    alpha = _first_frame(source).getchannel("A")
    clear = next((x, y) for y in range(alpha.height) for x in range(alpha.width) if alpha.getpixel((x, y)) == 0)
    jpeg_only = PROFILE.replace(image_formats=("jpeg",))
    result = _normalize(source, tmp_path, profile=jpeg_only, background=(255, 0, 0))
    assert result.info.container == "jpeg"
    assert "flatten-alpha" in result.actions
    red, green, blue = _load(result.path).getpixel(clear)  # type: ignore[misc]
    assert red > 230 and green < 30 and blue < 30


def test_16bit_grey_with_a_colour_key_keeps_its_transparency_when_reencoded(tmp_path: Path) -> None:
    source = CORPUS / "pillow__i_trns.png"  # I;16 with tRNS; over a tiny cap it must be re-encoded
    tiny = PROFILE.replace(max_image_pixels=32 * 32)
    result = _normalize(source, tmp_path, profile=tiny)
    out = _load(result.path)
    assert out.mode == "LA"
    low, high = out.getchannel("A").getextrema()
    assert isinstance(low, int) and isinstance(high, int)
    assert low < 128 < high


# --------------------------------------------------------------------------- multi-frame


@pytest.mark.parametrize(
    ("name", "warning"),
    [
        ("pillow__chi.gif", "animated: kept the first of 31 frames"),
        ("pillow__iss634.apng", "animated: kept the first of 41 frames"),
        ("pillow__iss634.webp", "animated: kept the first of 42 frames"),
        ("pillow__star.avifs", "animated: kept the first of 5 frames"),
        ("pillow__multipage.tiff", "multi-page: kept the first of 3 pages"),
        ("pillow__sugarshack.mpo", "multi-picture: kept the first of 2 images"),
    ],
)
def test_multi_frame_input_keeps_the_first_frame_with_a_warning(name: str, warning: str, tmp_path: Path) -> None:
    source = CORPUS / name
    result = _normalize(source, tmp_path)
    assert result.warnings == [warning]
    assert result.actions[0] == "first-frame"
    _check_output(result, source, tmp_path)
    check_first_frame(source, result)


# --------------------------------------------------------------------------- fit to budget


def test_budget_is_met_by_the_quality_ladder_before_any_downscale(generated: dict[str, Path], tmp_path: Path) -> None:
    source = generated["jpeg_q100"]
    at_70 = io.BytesIO()
    _load(source).save(at_70, "JPEG", quality=70, optimize=True)
    budget = b64_len(len(at_70.getvalue())) + 1  # quality 70 fits, 90 does not
    result = _normalize(source, tmp_path, fit_chars=budget)
    assert b64_len(result.info.bytes) < budget
    assert (result.info.width, result.info.height) == (1024, 768)
    fits = [a for a in result.actions if a.startswith("fit:")]
    assert len(fits) == 1 and fits[0].startswith("fit:q=")
    assert 70 <= int(fits[0].removeprefix("fit:q=")) < 90
    assert "resize" not in result.actions


def test_budget_downscales_when_quality_alone_is_not_enough(generated: dict[str, Path], tmp_path: Path) -> None:
    source = generated["noisy_photo"]  # 1800x1350 of grain
    result = _normalize(source, tmp_path, fit_chars=180_000)
    _check_output(result, source, tmp_path)
    assert b64_len(result.info.bytes) < 180_000
    assert any(a.startswith("fit:size=") for a in result.actions)
    assert "resize" in result.actions
    assert result.info.width is not None and result.info.height is not None
    assert result.info.width < 1800
    assert math.isclose(result.info.width / result.info.height, 1800 / 1350, rel_tol=0.02)


def test_transparent_image_over_budget_stays_transparent(generated: dict[str, Path], tmp_path: Path) -> None:
    source = generated["rgba_noisy"]  # 2 MB RGBA PNG
    result = _normalize(source, tmp_path, fit_chars=180_000)
    assert b64_len(result.info.bytes) < 180_000
    assert result.info.container == "webp"
    assert "flatten-alpha" not in result.actions
    check_keep_alpha(source, result)


def test_compliant_file_over_budget_is_not_passed_through(tmp_path: Path) -> None:
    source = CORPUS / "pillow__hopper.webp"  # 3282 bytes, 4376 base64 characters
    result = _normalize(source, tmp_path, fit_chars=4_000)
    assert result.path != source
    assert b64_len(result.info.bytes) < 4_000


def test_cannot_fit_inline_names_the_smallest_size_and_the_budget(generated: dict[str, Path], tmp_path: Path) -> None:
    err = _error(generated["jpeg_q100"], tmp_path, fit_chars=300)
    assert err.code == "cannot_fit_inline"
    assert "300" in err.message and "base64" in err.message
    assert 'mode="auto"' in err.hint and 'mode="asset"' in err.hint


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(["pillow__transparent.png", "pillow__flower.jpg", "pillow__hopper.gif"]),
    budget=st.integers(min_value=1_000, max_value=60_000),
)
def test_fitted_output_is_always_under_the_budget(
    name: str, budget: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    workdir = tmp_path_factory.mktemp("fit")
    try:
        result = _normalize(CORPUS / name, workdir, fit_chars=budget)
    except MediaError as err:
        assert err.code == "cannot_fit_inline"
        return
    assert b64_len(result.path.stat().st_size) < budget
    _check_output(result, CORPUS / name, workdir)


@settings(max_examples=300, deadline=None)
@given(
    width=st.integers(1, 40_000),
    height=st.integers(1, 40_000),
    cap=st.integers(1, 50_000_000),
)
def test_fit_size_never_exceeds_the_cap_and_keeps_the_aspect(width: int, height: int, cap: int) -> None:
    new_w, new_h = fit_size(width, height, cap)
    if width * height <= cap:
        assert (new_w, new_h) == (width, height)
        return
    assert new_w >= 1 and new_h >= 1
    assert new_w * new_h <= cap or (new_w == 1 or new_h == 1) and new_w * new_h <= max(cap, new_w, new_h)
    if min(new_w, new_h) >= 50:
        assert math.isclose(new_w / new_h, width / height, rel_tol=0.05)
        assert (new_w + 2) * (new_h + 2) > cap  # not needlessly small


# --------------------------------------------------------------------------- colour profiles


def test_huge_icc_profile_is_converted_to_srgb_and_dropped(tmp_path: Path) -> None:
    source = CORPUS / "pillow__icc_profile_big.jpg"  # 512 KB, of which ~400 KB is ICC
    result = _normalize(source, tmp_path)
    assert "icc-to-srgb" in result.actions
    assert not _load(result.path).info.get("icc_profile")
    assert result.info.bytes < 100_000


def test_keep_metadata_keeps_even_a_huge_icc_profile(tmp_path: Path) -> None:
    source = CORPUS / "pillow__icc_profile_big.jpg"
    result = _normalize(source, tmp_path, keep_metadata=True)
    assert result.path == source


# --------------------------------------------------------------------------- files and errors


def test_outputs_are_unique_files_in_the_workdir(tmp_path: Path) -> None:
    source = CORPUS / "pillow__hopper_orientation_6.jpg"
    first = _normalize(source, tmp_path)
    second = _normalize(source, tmp_path)
    assert first.path != second.path
    assert first.path.parent == second.path.parent == tmp_path
    assert first.path.read_bytes() == second.path.read_bytes()


def _cut(source: Path, dest: Path, keep: float) -> Path:
    data = source.read_bytes()
    dest.write_bytes(data[: int(len(data) * keep)])
    return dest


@pytest.mark.parametrize(
    ("name", "suffix"),
    [("jpeg_q100", ".jpg"), ("everything_webp", ".webp"), ("everything_png", ".png")],
)
def test_truncated_files_are_corrupt_media(generated: dict[str, Path], name: str, suffix: str, tmp_path: Path) -> None:
    # A compliant JPEG is verified with a 1/8-scale decode: truncation must still be caught there.
    source = _cut(generated[name], tmp_path / f"cut{suffix}", 0.6)
    err = _error(source, tmp_path / "out")
    assert err.code == "corrupt_media"
    assert source.name in err.message
    assert err.hint
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_pixel_bomb_is_too_large_before_any_decode(generated: dict[str, Path], tmp_path: Path) -> None:
    err = _error(generated["bomb_100mp"], tmp_path)
    assert err.code == "too_large"
    assert "100,000,000" in err.message


def test_svg_is_unsupported_with_a_hint(tmp_path: Path) -> None:
    err = _error(CORPUS / "small__svg.svg", tmp_path)
    assert err.code == "unsupported_format"
    assert "PNG" in err.hint


def test_profile_without_any_writable_format_is_reported(tmp_path: Path) -> None:
    odd = PROFILE.replace(image_formats=("gif",))
    err = _error(CORPUS / "pillow__hopper.bmp", tmp_path, profile=odd)
    assert err.code == "unsupported_format"
    assert "image_formats" in err.hint


def test_pillow_global_state_is_left_alone(tmp_path: Path) -> None:
    before = Image.MAX_IMAGE_PIXELS
    _error(CORPUS / "pillow__truncated_jpeg.jpg", tmp_path)
    _normalize(CORPUS / "pillow__hopper.heif", tmp_path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert Image.MAX_IMAGE_PIXELS == before
