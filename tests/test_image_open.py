"""open_image and probe_image: safe opening of untrusted images, errors mapped to stable codes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image, ImageFile
from support import CORPUS, FIXTURES

from nvmedia.errors import MediaError, NVMediaError
from nvmedia.image_open import image_orientation, open_image
from nvmedia.probe import probe_image
from nvmedia.profiles import NEMOTRON_3_NANO_OMNI
from nvmedia.sniff import sniff_path

sys.path.insert(0, str(FIXTURES))
from make_images import make_images  # noqa: E402

CAP = NEMOTRON_3_NANO_OMNI.safety_max_image_pixels


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_images(tmp_path_factory.mktemp("images"), only=["bomb_100mp", "photo_12mp_rot6"])


def _open_and_load(path: Path, max_pixels: int = CAP) -> tuple[str, tuple[int, int]]:
    with open_image(path, sniff_path(path), max_pixels=max_pixels) as im:
        im.load()
        return im.mode, im.size


def _code(path: Path, max_pixels: int = CAP) -> str:
    with pytest.raises(MediaError) as caught:
        _open_and_load(path, max_pixels)
    return caught.value.code


@pytest.mark.parametrize(
    "name",
    ["pillow__decompression_bomb.gif", "pillow__decompression_bomb.ico", "pillow__reallybig.bmp"],
)
def test_pillow_level_bombs_are_too_large(name: str) -> None:
    with pytest.raises(MediaError) as caught:
        _open_and_load(CORPUS / name)
    err = caught.value
    assert err.code == "too_large"
    assert "pixels" in err.message and f"{CAP:,}" in err.message
    assert "decompression bomb" in err.hint


def test_own_pixel_cap_fires_on_the_header_before_pillows_limit(generated: dict[str, Path]) -> None:
    # 100 MP is over nvmedia's 89.4 MP cap but under Pillow's own 179 MP error: only our check can stop it.
    with pytest.raises(MediaError) as caught:
        _open_and_load(generated["bomb_100mp"])
    err = caught.value
    assert err.code == "too_large"
    assert "10000x10000 = 100,000,000 pixels" in err.message
    assert f"{CAP:,}" in err.message
    assert "safety_max_image_pixels" in err.hint


def test_a_smaller_cap_refuses_an_ordinary_photo(generated: dict[str, Path]) -> None:
    assert _code(generated["photo_12mp_rot6"], max_pixels=1_000_000) == "too_large"


def test_a_larger_cap_than_pillows_is_honoured(generated: dict[str, Path]) -> None:
    before = Image.MAX_IMAGE_PIXELS
    try:
        with open_image(generated["bomb_100mp"], sniff_path(generated["bomb_100mp"]), max_pixels=200_000_000) as im:
            assert im.size == (10_000, 10_000)
    finally:
        Image.MAX_IMAGE_PIXELS = before


def test_png_text_chunk_bomb_is_too_large() -> None:
    with pytest.raises(MediaError) as caught:
        _open_and_load(CORPUS / "pillow__png_decompression_dos.png")
    assert caught.value.code == "too_large"
    assert "MAX_TEXT_CHUNK" in caught.value.message


@pytest.mark.parametrize(
    "name",
    [
        "pillow__truncated_jpeg.jpg",
        "pillow__truncated_image.png",
        "pillow__truncated_end_chunk.png",
        "pillow__broken_data_stream.png",
        "pillow__shortfile.bmp",
        "pillow__ultrahdr.jpg",
        "pillow__crash-0c7e0e8e11ce787078f00b5b0ca409a167f070e0.tif",
        "small__webp.webp",
    ],
)
def test_damage_found_on_decode_is_corrupt_media(name: str) -> None:
    # These open fine (header only); the error must come from load() inside the with block.
    with pytest.raises(MediaError) as caught:
        _open_and_load(CORPUS / name)
    assert caught.value.code == "corrupt_media"
    assert name in caught.value.message
    assert caught.value.hint


@pytest.mark.parametrize(
    "name", ["pillow__broken.png", "pillow__zero_width.gif", "pillow__not_enough_data.jp2", "small__gif.gif"]
)
def test_unidentifiable_files_are_corrupt_media(name: str) -> None:
    assert _code(CORPUS / name) == "corrupt_media"


def test_svg_is_unsupported_with_a_hint_to_rasterise_it() -> None:
    with pytest.raises(MediaError) as caught:
        _open_and_load(CORPUS / "small__svg.svg")
    err = caught.value
    assert err.code == "unsupported_format"
    assert "SVG" in err.message
    assert "PNG" in err.hint


@pytest.mark.parametrize("name", ["small__bpg.bpg", "small__jxl.jxl", "small__WindowsMetafile.wmf"])
def test_formats_without_a_decoder_are_unsupported(name: str) -> None:
    with pytest.raises(MediaError) as caught:
        _open_and_load(CORPUS / name)
    assert caught.value.code == "unsupported_format"
    assert "convert" in caught.value.hint or "export" in caught.value.hint


def test_an_unsupported_variant_of_a_known_format_is_unsupported() -> None:
    # BMP with an embedded PNG (BI_PNG): Pillow knows BMP but not this compression.
    assert _code(CORPUS / "pillow__rgb24png.bmp") == "unsupported_format"


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("pillow__hopper.heif", "HEIF"), ("small__heif.heif", "HEIF"), ("pillow__hopper.avif", "AVIF")],
)
def test_heif_and_avif_decode(name: str, fmt: str) -> None:
    with open_image(CORPUS / name, sniff_path(CORPUS / name), max_pixels=CAP) as im:
        im.load()
        assert im.format == fmt
        assert im.mode == "RGB"


def test_nvmedia_errors_raised_inside_the_block_pass_through_unchanged() -> None:
    path = CORPUS / "pillow__hopper.png"
    original = MediaError("mine", code="cannot_fit_inline", hint="h")
    with pytest.raises(MediaError) as caught, open_image(path, sniff_path(path), max_pixels=CAP):
        raise original
    assert caught.value is original


def test_a_bug_inside_the_block_is_not_disguised_as_a_broken_file() -> None:
    path = CORPUS / "pillow__hopper.png"
    with pytest.raises(KeyError), open_image(path, sniff_path(path), max_pixels=CAP):
        raise KeyError("a programming error")


def test_the_file_is_closed_after_the_block() -> None:
    path = CORPUS / "pillow__hopper.png"
    with open_image(path, sniff_path(path), max_pixels=CAP) as im:
        handle = getattr(im, "fp", None)
        assert handle is not None and not handle.closed
        im.load()
    assert handle.closed


def test_the_file_is_closed_when_decoding_fails() -> None:
    path = CORPUS / "pillow__truncated_image.png"
    with pytest.raises(MediaError), open_image(path, sniff_path(path), max_pixels=CAP) as im:
        handle = getattr(im, "fp", None)
        im.load()
    assert handle is not None and handle.closed


def test_truncated_images_are_never_loaded_leniently() -> None:
    with pytest.raises(MediaError):
        _open_and_load(CORPUS / "pillow__truncated_image.png")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize(
    ("name", "orientation"),
    [
        ("pillow__hopper_orientation_6.jpg", 6),
        ("pillow__hopper_orientation_3.jpg", 3),
        ("pillow__flower.jpg", 1),
        ("pillow__rot1mir0.avif", 5),
        ("pillow__g4_orientation_6.tif", 6),
    ],
)
def test_image_orientation_reads_exif(name: str, orientation: int) -> None:
    with open_image(CORPUS / name, sniff_path(CORPUS / name), max_pixels=CAP) as im:
        assert image_orientation(im) == orientation


def test_xmp_orientation_of_a_png_is_read_after_load() -> None:
    path = CORPUS / "pillow__xmp_tags_orientation_exiftool.png"
    with open_image(path, sniff_path(path), max_pixels=CAP) as im:
        im.load()
        assert image_orientation(im) == 3


def test_probe_reads_size_frames_mode_and_alpha_from_the_header() -> None:
    path = CORPUS / "pillow__chi.gif"
    info = probe_image(path, sniff_path(path), max_pixels=CAP)
    assert (info.kind, info.container, info.mime) == ("image", "gif", "image/gif")
    assert (info.width, info.height, info.frames) == (320, 240, 31)
    assert info.has_alpha is True
    assert info.bytes == path.stat().st_size


def test_probe_reports_orientation_and_bit_depth() -> None:
    rotated = CORPUS / "pillow__hopper_orientation_6.jpg"
    assert probe_image(rotated, sniff_path(rotated)).orientation == 6
    deep = CORPUS / "pillow__16bit.cropped.j2k"
    assert probe_image(deep, sniff_path(deep)).bit_depth == 16


def test_probe_does_not_trip_over_a_broken_png() -> None:
    # Header probing must not call getexif() on a PNG (which decodes it and hides the error):
    # the probe succeeds, and the damage is reported when the pixels are decoded.
    path = CORPUS / "pillow__truncated_end_chunk.png"
    info = probe_image(path, sniff_path(path))
    assert (info.width, info.height) == (128, 128)
    assert _code(path) == "corrupt_media"


def test_probe_refuses_bombs_before_decoding() -> None:
    path = CORPUS / "pillow__decompression_bomb.gif"
    with pytest.raises(NVMediaError) as caught:
        probe_image(path, sniff_path(path))
    assert caught.value.code == "too_large"
