"""Passthrough proves the pixels decode (issue 7, item 2).

A PNG whose chunks and CRCs are intact but whose IDAT is missing, cut or
garbage used to be sent as it was: ``ok``, ``actions == []``, and the service
refuses it. These PNGs are built here with zlib, chunk by chunk, with valid
CRCs, so that only the pixel data is wrong.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from support import sha256_file

import nvmedia
from nvmedia.normalize.metadata import CorruptPixelDataError, png_is_intact_and_plain

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def ihdr(width: int, height: int, depth: int = 8, colour: int = 2, interlace: int = 0) -> bytes:
    return chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace))


def scanlines(width: int, height: int, depth: int, colour: int, interlace: int, rng: random.Random) -> bytes:
    """Random pixel rows, each behind a random valid filter type: any such stream is a valid PNG image."""
    bits = depth * CHANNELS[colour]
    passes = [(width, height)] if not interlace else []
    if interlace:
        for x0, y0, dx, dy in ADAM7:
            pass_width, pass_height = -(-(width - x0) // dx), -(-(height - y0) // dy)
            if pass_width > 0 and pass_height > 0:
                passes.append((pass_width, pass_height))
    rows = []
    for pass_width, pass_height in passes:
        row_bytes = (pass_width * bits + 7) // 8
        rows += [bytes([rng.randrange(5)]) + rng.randbytes(row_bytes) for _ in range(pass_height)]
    return b"".join(rows)


def build_png(
    raw: bytes | None,
    *,
    width: int = 32,
    height: int = 24,
    depth: int = 8,
    colour: int = 2,
    interlace: int = 0,
    idat: bytes | None = None,
    extra: bytes = b"",
) -> bytes:
    """A PNG with valid chunk CRCs around ``raw`` scanlines (deflated), or around ``idat`` as given."""
    parts = [SIGNATURE, ihdr(width, height, depth, colour, interlace), extra]
    if colour == 3:
        parts.append(chunk(b"PLTE", bytes(range(48))))
    payload = idat if idat is not None else (zlib.compress(raw) if raw is not None else None)
    if payload is not None:
        parts.append(chunk(b"IDAT", payload))
    parts.append(chunk(b"IEND", b""))
    return b"".join(parts)


def good_raw(width: int = 32, height: int = 24) -> bytes:
    return scanlines(width, height, 8, 2, 0, random.Random(5))


def _prepare_one(path: Path) -> Any:
    prep = nvmedia.prepare([path], mode="inline", dry_run=True, on_error="keep", cache=False, jobs=1)
    (item,) = prep.items
    return item


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- the defect: intact chunks, bad pixels


def _broken_pngs() -> dict[str, tuple[bytes, str]]:
    raw = good_raw()
    deflated = zlib.compress(raw)
    bad_filter = bytearray(raw)
    bad_filter[97 * 3] = 9  # the filter byte of scanline 4 (each row is 1 + 32 * 3 bytes)
    rng = random.Random(11)
    return {
        "no_idat": (build_png(None), "there is no IDAT chunk"),
        "idat_cut": (build_png(None, idat=deflated[: len(deflated) // 2]), "inflates to"),
        "idat_garbage": (build_png(None, idat=rng.randbytes(len(deflated))), "not valid zlib data"),
        "rows_missing": (
            build_png(raw[: len(raw) // 2]),
            f"inflates to 1,164 bytes; a 32x24 8-bit RGB image needs {len(raw):,}",
        ),
        "bad_filter": (build_png(bytes(bad_filter)), "scanline 4 has filter type 9"),
        "no_checksum": (build_png(None, idat=deflated[:-4]), "the zlib stream does not end"),
    }


@pytest.mark.parametrize("name", sorted(_broken_pngs()))
def test_png_with_intact_chunks_but_broken_pixel_data_is_corrupt_not_ok(tmp_path: Path, name: str) -> None:
    data, reason = _broken_pngs()[name]
    path = _write(tmp_path, f"{name}.png", data)
    before = sha256_file(path)
    item = _prepare_one(path)
    assert item.status == "error", f"{name} was reported {item.status} with actions {item.actions}"
    assert item.error is not None and item.error.code == "corrupt_media"
    assert path.name in item.error.message and reason in item.error.message
    assert item.error.hint
    assert sha256_file(path) == before


@pytest.mark.filterwarnings("ignore:Invalid APNG")
def test_apng_with_zero_frames_and_no_pixel_data_is_corrupt_not_ok(tmp_path: Path) -> None:
    # The shape of Pillow's Tests/images/apng/syntax_num_frames_zero.png: IHDR, acTL (0 frames), IEND.
    data = SIGNATURE + ihdr(128, 64, 8, 6) + chunk(b"acTL", bytes(8)) + chunk(b"IEND", b"")
    item = _prepare_one(_write(tmp_path, "syntax_num_frames_zero.png", data))
    assert item.status == "error" and item.error is not None
    assert item.error.code == "corrupt_media"


def test_png_fast_path_reports_the_measured_and_the_needed_size() -> None:
    raw = good_raw()
    with pytest.raises(CorruptPixelDataError) as caught:
        png_is_intact_and_plain(build_png(raw[:100]))
    assert str(caught.value) == f"the IDAT stream inflates to 100 bytes; a 32x24 8-bit RGB image needs {len(raw):,}"


# --------------------------------------------------------------------------- what must still pass through


def test_png_with_more_pixel_data_than_needed_is_judged_by_the_full_decode(tmp_path: Path) -> None:
    # Decoders ignore surplus rows; the fast path does not prove it, so Pillow's full decode decides (it passes).
    path = _write(tmp_path, "long.png", build_png(good_raw() + bytes(500)))
    assert png_is_intact_and_plain(path.read_bytes()) is False
    item = _prepare_one(path)
    assert item.status == "ok" and item.actions == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    colour=st.sampled_from(sorted(CHANNELS)),
    width=st.integers(1, 40),
    height=st.integers(1, 30),
    interlace=st.sampled_from([0, 1]),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_every_valid_png_layout_is_proven_and_decodes(
    colour: int, width: int, height: int, interlace: int, seed: int, data: st.DataObject
) -> None:
    depth = data.draw(st.sampled_from(DEPTHS[colour]))
    raw = scanlines(width, height, depth, colour, interlace, random.Random(seed))
    png = build_png(raw, width=width, height=height, depth=depth, colour=colour, interlace=interlace)
    assert png_is_intact_and_plain(png) is True
    decoded = Image.open(io.BytesIO(png))
    decoded.load()
    assert decoded.size == (width, height)


@settings(max_examples=150, deadline=None)
@given(at=st.integers(0, 10_000), value=st.integers(0, 255), seed=st.integers(0, 2**16))
def test_a_proven_png_always_decodes_fully(at: int, value: int, seed: int) -> None:
    # Damage one byte of the deflated pixel data (CRC recomputed): whatever the fast path proves must decode.
    raw = scanlines(24, 16, 8, 6, seed % 2, random.Random(seed))
    deflated = bytearray(zlib.compress(raw))
    deflated[at % len(deflated)] = value
    png = build_png(None, width=24, height=16, depth=8, colour=6, interlace=seed % 2, idat=bytes(deflated))
    try:
        proven = png_is_intact_and_plain(png)
    except CorruptPixelDataError:
        return
    if proven:
        decoded = Image.open(io.BytesIO(png))
        decoded.load()
        assert decoded.tobytes()


def test_valid_png_still_passes_through_byte_identical(tmp_path: Path) -> None:
    path = _write(tmp_path, "fine.png", build_png(good_raw()))
    item = _prepare_one(path)
    assert item.status == "ok" and item.actions == []
    assert item.output is not None and item.output.sha256 == sha256_file(path)


# --------------------------------------------------------------------------- JPEG and WEBP: their decode is the proof


def _photo(fmt: str, **params: Any) -> bytes:
    rng = random.Random(3)
    img = Image.frombytes("RGB", (160, 120), rng.randbytes(160 * 120 * 3)).resize((320, 240))
    out = io.BytesIO()
    img.save(out, fmt, **params)
    return out.getvalue()


def _jpeg_scan_overwritten() -> bytes:
    data = bytearray(_photo("JPEG", quality=85))
    start = data.find(b"\xff\xda") + 200
    data[start : start + 3000] = random.Random(2).randbytes(3000)
    return bytes(data)


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("jpeg_cut.jpg", lambda: _photo("JPEG", quality=85)[:9000]),
        ("jpeg_scan_garbage.jpg", _jpeg_scan_overwritten),
        ("jpeg_no_scan.jpg", lambda: (d := _photo("JPEG"))[: d.find(b"\xff\xda")] + b"\xff\xd9"),
        ("webp_cut.webp", lambda: _photo("WEBP", quality=80)[:3000]),
        ("webp_lossless_cut.webp", lambda: _photo("WEBP", lossless=True)[:5000]),
    ],
)
def test_jpeg_and_webp_passthrough_candidates_are_decoded_before_ok(tmp_path: Path, name: str, make: Any) -> None:
    item = _prepare_one(_write(tmp_path, name, make()))
    assert item.status == "error" and item.error is not None
    assert item.error.code == "corrupt_media"
