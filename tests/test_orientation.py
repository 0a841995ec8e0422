"""One rule for orientation: the one Pillow reports for the loaded image, on every path.

Every carrier Pillow reads (EXIF APP1, PNG eXIf, PNG text chunks holding a raw EXIF profile or
XMP, WEBP EXIF/XMP, TIFF tags, AVIF irot/imir, HEIF transforms) turns the picture upright, and
a file whose orientation is not 1 is never sent as it is, not even with its metadata stripped.
Files go through the real command line (``nvmedia prepare --dry-run --keep``).
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageOps
from support import CORPUS, FIXTURES

from nvmedia.cli import main

PILLOW = FIXTURES / "pillow"
ORIENTATION = 0x0112


def _prepare(paths: list[Path], out: Path, *extra: str) -> list[dict[str, Any]]:
    manifest = out / "manifest.jsonl"
    code = main(["prepare", *map(str, paths), "--dry-run", "--keep", str(out / "kept"), "-o", str(manifest), *extra])
    records = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    assert code == 0, [r.get("error") for r in records]
    return [r for r in records if r["type"] == "item"]


def _upright(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return ImageOps.exif_transpose(im).convert("RGB")


def _pixels(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        assert im.getexif().get(ORIENTATION, 1) == 1, "the output must not ask for another turn"
        return im.convert("RGB")


def _asymmetric(size: tuple[int, int] = (48, 32)) -> Image.Image:
    """A picture whose eight orientations all differ (a coloured corner and a bar)."""
    im = Image.new("RGB", size, (255, 255, 255))
    im.paste((220, 30, 30), (0, 0, 12, 12))
    im.paste((30, 30, 220), (0, size[1] - 4, size[0], size[1]))
    return im


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return exif.tobytes()


def _xmp(orientation: int) -> bytes:
    return (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="'
        + str(orientation).encode()
        + b'"/></rdf:RDF></x:xmpmeta>'
    )


def _chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def _png_with(chunk: bytes, *, after_pixels: bool = False) -> bytes:
    """A plain PNG of ``_asymmetric()`` with ``chunk`` inserted before its IDAT (or before IEND)."""
    buffer = io.BytesIO()
    _asymmetric().save(buffer, "PNG")
    data = buffer.getvalue()
    at = data.rindex(b"IEND") - 4 if after_pixels else data.index(b"IDAT") - 4
    return data[:at] + chunk + data[at:]


def _raw_profile(orientation: int) -> bytes:
    """ImageMagick's ``Raw profile type exif`` text: a header line, the length, then hex lines."""
    payload = b"Exif\x00\x00" + _exif(orientation)
    hexed = payload.hex()
    lines = "\n".join(hexed[i : i + 72] for i in range(0, len(hexed), 72))
    return f"\nexif\n{len(payload):8d}\n{lines}\n".encode("latin-1")


PNG_CARRIERS = {
    "exif_chunk_before_pixels": lambda: _png_with(_chunk(b"eXIf", _exif(6))),
    "exif_chunk_after_pixels": lambda: _png_with(_chunk(b"eXIf", _exif(6)), after_pixels=True),
    "raw_profile_text": lambda: _png_with(_chunk(b"tEXt", b"Raw profile type exif\x00" + _raw_profile(6))),
    "raw_profile_ztxt": lambda: _png_with(
        _chunk(b"zTXt", b"Raw profile type exif\x00\x00" + zlib.compress(_raw_profile(6)))
    ),
    "raw_profile_itxt_after_pixels": lambda: _png_with(
        _chunk(b"iTXt", b"Raw profile type exif\x00\x00\x00\x00\x00" + _raw_profile(6)), after_pixels=True
    ),
    "exif_text_keyword": lambda: _png_with(_chunk(b"tEXt", b"exif\x00Exif\x00\x00" + _exif(6))),
    "xmp_itxt": lambda: _png_with(_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + _xmp(6))),
    "xmp_text": lambda: _png_with(_chunk(b"tEXt", b"XML:com.adobe.xmp\x00" + _xmp(6))),
}


def test_imagemagick_raw_profile_png_is_sent_upright(tmp_path: Path) -> None:
    # Pillow reads orientation 3 from this file's "Raw profile type exif" tEXt chunk.
    source = PILLOW / "exif_imagemagick_orientation.png"
    [record] = _prepare([source], tmp_path)
    assert record["status"] == "ok"
    assert "exif-transpose" in record["actions"]
    kept = Path(record["kept"])
    assert _pixels(kept).tobytes() == _upright(source).tobytes()
    assert _pixels(kept).tobytes() != _pixels(_strip_nothing(source, tmp_path)).tobytes()


def _strip_nothing(source: Path, tmp_path: Path) -> Path:
    """The source's pixels as they are stored (what a viewer ignoring the orientation shows)."""
    with Image.open(source) as im:
        im.load()
        plain = tmp_path / "stored.png"
        im.convert("RGB").save(plain)
    return plain


@pytest.mark.parametrize("carrier", sorted(PNG_CARRIERS))
def test_every_png_orientation_carrier_turns_the_picture_upright(carrier: str, tmp_path: Path) -> None:
    source = tmp_path / f"{carrier}.png"
    source.write_bytes(PNG_CARRIERS[carrier]())
    with Image.open(source) as im:
        im.load()
        assert im.getexif().get(ORIENTATION) == 6, "the fixture must carry orientation 6 the way Pillow reads it"
    [record] = _prepare([source], tmp_path)
    assert record["status"] == "ok"
    assert "exif-transpose" in record["actions"]
    assert (record["output"]["width"], record["output"]["height"]) == (32, 48)
    assert _pixels(Path(record["kept"])).tobytes() == _upright(source).tobytes()


@pytest.mark.parametrize("carrier", ["raw_profile_text", "xmp_itxt", "exif_chunk_after_pixels"])
def test_keep_metadata_never_passes_a_turned_png_through(carrier: str, tmp_path: Path) -> None:
    source = tmp_path / f"{carrier}.png"
    source.write_bytes(PNG_CARRIERS[carrier]())
    [record] = _prepare([source], tmp_path, "--keep-metadata")
    assert record["actions"] and "exif-transpose" in record["actions"]
    kept = Path(record["kept"])
    assert kept.read_bytes() != source.read_bytes()
    assert _pixels(kept).tobytes() == _upright(source).tobytes()


def test_png_text_without_orientation_still_passes_through_losslessly(tmp_path: Path) -> None:
    source = tmp_path / "described.png"
    source.write_bytes(_png_with(_chunk(b"tEXt", b"Comment\x00taken at home")))
    [record] = _prepare([source], tmp_path)
    assert record["actions"] == ["strip-metadata"]
    assert b"taken at home" not in Path(record["kept"]).read_bytes()
    assert _pixels(Path(record["kept"])).tobytes() == _pixels(source).tobytes()


def test_xmp_only_orientation_in_a_jpeg_is_applied(tmp_path: Path) -> None:
    source = tmp_path / "xmp_only.jpg"
    _asymmetric((96, 64)).save(source, "JPEG", quality=95, xmp=_xmp(8))
    [record] = _prepare([source], tmp_path)
    assert "exif-transpose" in record["actions"]
    assert (record["output"]["width"], record["output"]["height"]) == (64, 96)
    assert _close(_pixels(Path(record["kept"])), _upright(source))


def _close(a: Image.Image, b: Image.Image) -> bool:
    from PIL import ImageChops, ImageStat

    assert a.size == b.size
    return max(ImageStat.Stat(ImageChops.difference(a, b)).mean) < 6


UPRIGHT_CASES = [
    *(PILLOW / f"hopper_orientation_{n}.webp" for n in (2, 3, 4, 5, 7, 8)),
    *(CORPUS / f"pillow__hopper_orientation_{n}.jpg" for n in range(2, 9)),
    *(PILLOW / f"g4_orientation_{n}.tif" for n in (1, 2, 3, 4, 5, 7, 8)),
    PILLOW / "avif" / "rot0mir1.avif",
    PILLOW / "avif" / "rot2mir0.avif",
    PILLOW / "avif" / "rot3mir1.avif",
    PILLOW / "avif" / "xmp_tags_orientation.avif",
    PILLOW / "xmp_tags_orientation.png",
    CORPUS / "pillow__xmp_tags_orientation_exiftool.png",
    CORPUS / "pillow__orientation_rectangle.jpg",
]


@pytest.mark.parametrize("source", UPRIGHT_CASES, ids=lambda p: p.name)
def test_pillows_orientation_files_come_out_as_exif_transpose_shows_them(source: Path, tmp_path: Path) -> None:
    [record] = _prepare([source], tmp_path)
    assert record["status"] == "ok"
    out = _pixels(Path(record["kept"]))
    expected = _upright(source)
    assert out.size == expected.size
    assert _close(out, expected)


def test_heif_transforms_are_applied_once(tmp_path: Path) -> None:
    # pillow-heif applies irot/imir while decoding and resets the EXIF orientation to 1.
    import pillow_heif

    pillow_heif.register_heif_opener()
    source = tmp_path / "turned.heic"
    _asymmetric((96, 64)).save(source, "HEIF", exif=_exif(6), quality=95)
    [record] = _prepare([source], tmp_path)
    assert (record["output"]["width"], record["output"]["height"]) == (64, 96)
    assert _close(_pixels(Path(record["kept"])), _upright(source))


def test_rotated_video_is_still_turned_upright(av_files: dict[str, Path], tmp_path: Path) -> None:
    source = av_files["mp4_rotated_90"]
    [record] = _prepare([source], tmp_path)
    assert "rotate" in record["actions"]
    assert (record["output"]["width"], record["output"]["height"]) == (240, 320)


def test_raw_profiles_leave_with_the_other_text_chunks(tmp_path: Path) -> None:
    source = PILLOW / "exif_imagemagick_orientation.png"
    assert b"Raw profile type exif" in source.read_bytes()
    [record] = _prepare([source], tmp_path)
    out = Path(record["kept"]).read_bytes()
    for marker in (b"Raw profile", b"tEXt", b"zTXt", b"iTXt", b"eXIf"):
        assert marker not in out


@pytest.mark.parametrize(
    ("data", "turned"),
    [
        (PNG_CARRIERS["raw_profile_itxt_after_pixels"](), True),
        (PNG_CARRIERS["exif_text_keyword"](), True),
        (_png_with(_chunk(b"tEXt", b"Software\x00exif")), False),
        (_png_with(_chunk(b"tEXt", b"Raw profile type iptc\x00x")), False),
        (_png_with(_chunk(b"eXIf", _exif(6)))[:60], True),  # cut short: only a decode can tell
        (b"GIF89a", True),
    ],
)
def test_png_may_be_turned_answers_from_the_chunks_pillow_reads(data: bytes, turned: bool) -> None:
    from nvmedia.normalize.metadata import png_may_be_turned

    assert png_may_be_turned(data) is turned
