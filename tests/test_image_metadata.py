"""Lossless metadata stripping: metadata gone, pixels and colour profile untouched."""

from __future__ import annotations

import io
import struct
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from support import CORPUS, FIXTURES

from nvmedia.normalize.metadata import (
    MalformedContainerError,
    strip_jpeg,
    strip_metadata,
    strip_png,
    strip_webp,
    webp_is_lossless,
)

sys.path.insert(0, str(FIXTURES))
from make_images import COMMENT_MARKER, IPTC_MARKER, XMP_MARKER, make_images  # noqa: E402

EVERYTHING = ["everything_jpeg", "everything_png", "everything_webp"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_images(tmp_path_factory.mktemp("images"), only=EVERYTHING)


def _decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def _same_pixels(a: bytes, b: bytes) -> bool:
    first, second = _decode(a), _decode(b)
    return first.mode == second.mode and first.size == second.size and first.tobytes() == second.tobytes()


def _no_metadata(data: bytes) -> None:
    im = _decode(data)
    assert not im.getexif(), "EXIF survived"
    assert im.getexif().get_ifd(0x8825) == {}, "GPS survived"
    for key in ("xmp", "XML:com.adobe.xmp", "comment", "photoshop", "Comment", "Location"):
        assert key not in im.info, f"{key} survived"
    for marker in (XMP_MARKER, COMMENT_MARKER, IPTC_MARKER, b"nvmedia-test-camera", b"exif:GPS"):
        assert marker not in data


@pytest.mark.parametrize("name", EVERYTHING)
def test_metadata_is_stripped_and_pixels_are_untouched(generated: dict[str, Path], name: str) -> None:
    data = generated[name].read_bytes()
    container = {"everything_jpeg": "jpeg", "everything_png": "png", "everything_webp": "webp"}[name]
    stripped = strip_metadata(data, container)
    assert len(stripped) < len(data)
    _no_metadata(stripped)
    assert _same_pixels(data, stripped)


@pytest.mark.parametrize("name", EVERYTHING)
def test_icc_profile_is_kept_by_default_and_dropped_on_request(generated: dict[str, Path], name: str) -> None:
    data = generated[name].read_bytes()
    container = name.removeprefix("everything_")
    icc = _decode(data).info["icc_profile"]
    assert _decode(strip_metadata(data, container)).info.get("icc_profile") == icc
    assert not _decode(strip_metadata(data, container, keep_icc=False)).info.get("icc_profile")


@pytest.mark.parametrize(
    ("name", "container"),
    [
        ("pillow__hopper.webp", "webp"),
        ("pillow__transparent.webp", "webp"),
        ("pillow__pil123rgba.png", "png"),
        ("pillow__icc_profile.png", "png"),
        ("small__jpeg.jpg", "jpeg"),
        ("pillow__hopper_16bit_qtables.jpg", "jpeg"),
    ],
)
def test_a_clean_file_comes_back_as_the_same_object(name: str, container: str) -> None:
    data = (CORPUS / name).read_bytes()
    assert strip_metadata(data, container) is data


def test_stripping_is_idempotent_over_the_corpus() -> None:
    for path in sorted(CORPUS.iterdir()):
        container = {".jpg": "jpeg", ".png": "png", ".webp": "webp"}.get(path.suffix)
        if container is None:
            continue
        data = path.read_bytes()
        try:
            once = strip_metadata(data, container)
        except MalformedContainerError:
            continue
        assert strip_metadata(once, container) is once, path.name


def test_jpeg_keeps_jfif_icc_and_adobe_segments_and_drops_app1_app13_com() -> None:
    # pillow__rgb.jpg carries JFIF, EXIF, XMP, ICC and Adobe APP14.
    data = (CORPUS / "pillow__rgb.jpg").read_bytes()
    stripped = strip_jpeg(data)
    im = _decode(stripped)
    assert im.info.get("adobe") is not None
    assert len(im.info["icc_profile"]) == 3144
    assert "exif" not in im.info and "xmp" not in im.info
    assert _same_pixels(data, stripped)


def test_jpeg_cmyk_keeps_adobe_transform_so_colours_stay_right() -> None:
    data = (CORPUS / "pillow__pil_sample_cmyk.jpg").read_bytes()
    stripped = strip_jpeg(data)
    assert _decode(stripped).info["adobe_transform"] == _decode(data).info["adobe_transform"]
    assert _same_pixels(data, stripped)


def test_jpeg_stray_bytes_between_segments_are_tolerated() -> None:
    data = (CORPUS / "pillow__junk_jpeg_header.jpg").read_bytes()
    stripped = strip_jpeg(data)
    assert b"hello" not in stripped[:200]
    assert _same_pixels(data, stripped)


def test_jpeg_progressive_with_many_app13_segments() -> None:
    data = (CORPUS / "pillow__app13-multiple.jpg").read_bytes()
    stripped = strip_jpeg(data)
    assert b"Photoshop 3.0" not in stripped
    assert _same_pixels(data, stripped)


def test_jpeg_data_after_the_image_is_dropped() -> None:
    # MPO: a second picture follows the first one's EOI; vendor trailers sit in the same place.
    data = (CORPUS / "pillow__sugarshack.mpo").read_bytes()
    stripped = strip_jpeg(data)
    assert stripped.endswith(b"\xff\xd9")
    assert stripped.count(b"\xff\xd8") == 1
    assert getattr(_decode(stripped), "n_frames", 1) == 1


@pytest.mark.parametrize("name", ["pillow__truncated_jpeg.jpg", "pillow__ultrahdr.jpg"])
def test_jpeg_without_an_end_of_image_is_malformed(name: str) -> None:
    with pytest.raises(MalformedContainerError):
        strip_jpeg((CORPUS / name).read_bytes())


def test_png_drops_text_exif_time_and_private_chunks_but_keeps_colour_chunks() -> None:
    data = (CORPUS / "pillow__exif.png").read_bytes()
    stripped = strip_png(data)
    for chunk in (b"eXIf", b"tEXt", b"tIME", b"orNT"):
        assert chunk in data and chunk not in stripped
    for chunk in (b"gAMA", b"cHRM", b"pHYs", b"IDAT", b"IEND"):
        assert chunk in stripped
    assert _same_pixels(data, stripped)


def test_png_keeps_transparency_and_palette() -> None:
    data = (CORPUS / "pillow__pil123p.png").read_bytes()
    stripped = strip_png(data)
    assert _decode(stripped).info.get("transparency") == _decode(data).info.get("transparency")


def test_png_bytes_after_iend_are_dropped() -> None:
    data = (CORPUS / "pillow__hopper.png").read_bytes() + b"PK\x03\x04 appended archive"
    stripped = strip_png(data)
    assert stripped.endswith(b"IEND\xaeB`\x82")


@pytest.mark.parametrize("name", ["small__png-truncated.png", "pillow__truncated_image.png"])
def test_png_without_iend_is_malformed(name: str) -> None:
    with pytest.raises(MalformedContainerError):
        strip_png((CORPUS / name).read_bytes())


def test_webp_drops_exif_chunk_clears_flag_and_fixes_riff_size() -> None:
    data = (CORPUS / "pillow__flower.webp").read_bytes()
    stripped = strip_webp(data)
    assert b"EXIF" in data and b"EXIF" not in stripped
    assert struct.unpack_from("<I", stripped, 4)[0] == len(stripped) - 8
    flags = stripped[20]
    assert stripped[12:16] == b"VP8X" and not flags & 0x08 and not flags & 0x04
    assert _same_pixels(data, stripped)


def test_webp_lossless_detection() -> None:
    lossless = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(lossless, "WEBP", lossless=True)
    assert webp_is_lossless(lossless.getvalue()) is True
    assert webp_is_lossless((CORPUS / "pillow__hopper.webp").read_bytes()) is False
    # An animation: the answer comes from the first ANMF frame's own VP8L chunk.
    assert webp_is_lossless((CORPUS / "pillow__iss634.webp").read_bytes()) is True


def test_unknown_container_is_refused() -> None:
    with pytest.raises(MalformedContainerError):
        strip_metadata(b"GIF89a", "gif")


def _png_with_chunk(ctype: bytes, payload: bytes) -> bytes:
    base = (CORPUS / "small__png-transparent.png").read_bytes()
    chunk = struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))
    return base[:33] + chunk + base[33:]


def test_png_private_ancillary_chunk_is_dropped_but_unknown_critical_chunk_is_kept() -> None:
    private = _png_with_chunk(b"caBX", b"c2pa manifest with a location")
    assert b"caBX" not in strip_png(private)
    critical = _png_with_chunk(b"ABCD", b"x")
    assert strip_png(critical) is critical


SAMPLES = {
    "jpeg": (CORPUS / "pillow__iptc.jpg").read_bytes(),
    "png": (CORPUS / "pillow__exif.png").read_bytes()[:4000] + (CORPUS / "pillow__exif.png").read_bytes()[-400:],
    "webp": (CORPUS / "pillow__flower.webp").read_bytes(),
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    container=st.sampled_from(sorted(SAMPLES)),
    cut=st.floats(min_value=0.0, max_value=1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=6),
)
def test_damaged_input_never_raises_anything_but_malformed(
    container: str, cut: float, flips: list[tuple[float, int]]
) -> None:
    data = bytearray(SAMPLES[container])
    for where, value in flips:
        data[int(where * (len(data) - 1))] = value
    damaged = bytes(data[: max(1, int(cut * len(data)))])
    try:
        result = strip_metadata(damaged, container)
    except MalformedContainerError:
        return
    assert isinstance(result, bytes)
    assert len(result) <= len(damaged) + 1  # WEBP may add one pad byte to an odd-sized chunk
