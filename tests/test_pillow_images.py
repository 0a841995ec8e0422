"""Every still format Pillow reads, and Pillow's own test images as a real tree.

``fixtures/pillow/`` holds a selection of Pillow's test images (see fixtures/SOURCES.md); the
``pillow__`` files of the corpus are more of them. They all go through the real command line
once (``nvmedia prepare --dry-run --keep``), and for every file Pillow opens and loads the
output must be accepted, upright (as ``ImageOps.exif_transpose`` shows the source) and free
of GPS, camera and other metadata.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageOps
from support import CORPUS, FIXTURES

from nvmedia.cli import main
from nvmedia.sniff import sniff_path
from nvmedia.sources import claims_media

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow on broken EXIF, in the checks below

PILLOW = FIXTURES / "pillow"
TREE = sorted(p for p in PILLOW.rglob("*") if p.is_file() and p.name != "LICENSE") + sorted(CORPUS.glob("pillow__*"))
ACCEPTED_MIMES = {"image/png", "image/jpeg", "image/webp"}


def _values(im: Image.Image) -> list[Any]:
    """A single-band image's pixel values (``getdata`` is deprecated from Pillow 13, its successor is new there)."""
    flattened = getattr(im, "get_flattened_data", None)
    return list(flattened() if flattened is not None else im.getdata())


def _prepare(paths: list[Path], out: Path, *extra: str) -> tuple[int, list[dict[str, Any]]]:
    manifest = out / "manifest.jsonl"
    code = main(["prepare", *map(str, paths), "--dry-run", "--keep", str(out / "kept"), "-o", str(manifest), *extra])
    records = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    return code, [r for r in records if r["type"] == "item"]


# --------------------------------------------------------------------------- formats without a magic number


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("hopper_16bit.pgm", "L"),
        ("16_bit_binary.pgm", "L"),
        ("hopper_1bit.pbm", "L"),
        ("hopper_1bit_plain.pbm", "L"),
        ("hopper_8bit_plain.pgm", "L"),
        ("hopper_8bit.ppm", "RGB"),
        ("hopper.pnm", "RGB"),
        ("hopper_be.pfm", "L"),
        ("la.tga", "LA"),
        ("pil184.pcx", "L"),
        ("hopper.sgi", "RGB"),
        ("hopper.bw", "L"),
        ("hopper16.rgb", "RGB"),
        ("hopper.dds", "RGB"),
        ("pillow2.icns", "RGBA"),
        ("hopper.xbm", "L"),
        ("hopper.xpm", "RGB"),
        ("hopper.p7", "RGB"),
        ("hopper.im", "RGB"),
        ("bw_gradient.imt", "L"),
        ("hopper.msp", "L"),
        ("hopper.pxr", "RGB"),
        ("hopper.spider", "L"),
        ("hopper.ras", "RGB"),
        ("sunraster.im1", "L"),
        ("hopper.fits", "L"),
        ("hopper.fli", "RGB"),
        ("hopper.dcx", "RGB"),
        ("gbr.gbr", "RGBA"),
        ("ftex_dxt1.ftc", "RGB"),  # an alpha channel that is all opaque says nothing
        ("deerstalker.cur", "RGBA"),
        ("clipboard.dib", "RGB"),
        ("blp/blp1_jpeg2.blp", "RGB"),
    ],
)
def test_still_format_pillow_reads_is_converted(name: str, mode: str, tmp_path: Path) -> None:
    source = PILLOW / name
    code, [record] = _prepare([source], tmp_path)
    assert code == 0, record.get("error")
    assert record["status"] == "ok" and record["kind"] == "image"
    kept = Path(record["kept"])
    assert record["output"]["mime"] == "image/png" == sniff_path(kept).mime
    with Image.open(source) as im, Image.open(kept) as out:
        out.load()
        assert out.size == im.size
        assert out.mode == mode
        low, high = _grey(out).getextrema()
        assert isinstance(low, float) and isinstance(high, float) and high - low > 20, "a flat output lost the picture"


def test_a_16bit_pgm_is_scaled_not_clamped(tmp_path: Path) -> None:
    # The example: "unrecognised data, not media" although Pillow opens it.
    code, [record] = _prepare([PILLOW / "hopper_16bit.pgm"], tmp_path)
    assert code == 0 and record["input"]["mime"] == "image/x-portable-anymap"
    with Image.open(PILLOW / "hopper_16bit.pgm") as src, Image.open(record["kept"]) as out:
        assert src.mode == "I" and src.getextrema() == (0, 65535)
        wide = [int(v) for v in _values(src)]
        narrow = [int(v) for v in _values(out)]
    assert out.mode == "L"
    assert max(abs(w / 257 - n) for w, n in zip(wide, narrow, strict=True)) <= 1, "65535 maps to 255, not to white"


def test_the_extension_only_orders_the_question(tmp_path: Path) -> None:
    # A TGA has no signature; named .bin it is still found by asking Pillow's other formats,
    # and a PPM named .tga is a PPM (the bytes decide, the name only says what to try first).
    tga = tmp_path / "picture.bin"
    tga.write_bytes((PILLOW / "200x32_p_bl_raw_origin.tga").read_bytes())
    ppm = tmp_path / "picture.tga"
    ppm.write_bytes((PILLOW / "hopper_8bit.ppm").read_bytes())
    assert (sniff_path(tga).kind, sniff_path(tga).container) == ("image", "tga")
    assert (sniff_path(ppm).kind, sniff_path(ppm).container) == ("image", "ppm")
    code, records = _prepare([tga, ppm], tmp_path)
    assert code == 0 and [r["status"] for r in records] == ["ok", "ok"]


def _without_ghostscript() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PATH"}
    env["PATH"] = str(Path(sys.executable).parent)  # the venv's scripts and nothing else: no `gs`
    return env


def test_eps_without_ghostscript_is_unsupported_and_names_it(tmp_path: Path) -> None:
    source = PILLOW / "eps" / "reqd_showpage.eps"
    done = subprocess.run(
        [sys.executable, "-m", "nvmedia", "prepare", str(source), "--dry-run"],
        capture_output=True,
        env=_without_ghostscript(),
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    record = json.loads(done.stdout)
    assert record["kind"] == "image"
    assert record["error"]["code"] == "unsupported_format"
    assert "Ghostscript" in record["error"]["message"]
    assert "Ghostscript" in record["error"]["hint"] and "PNG" in record["error"]["hint"]


def test_image_composer_file_names_olefile_when_it_is_missing(tmp_path: Path) -> None:
    import importlib.util

    code, [record] = _prepare([PILLOW / "hopper.mic"], tmp_path)
    assert record["kind"] == "image"
    if importlib.util.find_spec("olefile") is not None:
        assert record["status"] == "ok"  # Pillow reads it once olefile is there
        return
    assert code == 1 and record["error"]["code"] == "unsupported_format"
    assert "olefile" in record["error"]["message"] and "pip install olefile" in record["error"]["hint"]


@pytest.mark.parametrize("name", ["WAlaska.wind.7days.grb", "hdf5.h5"])
def test_formats_pillow_only_identifies_are_unsupported_with_a_hint(name: str, tmp_path: Path) -> None:
    code, [record] = _prepare([PILLOW / name], tmp_path)
    assert code == 1 and record["kind"] == "image"
    error = record["error"]
    assert error["code"] == "unsupported_format"
    assert "register_handler" in error["message"] and "PNG" in error["hint"]


def test_text_and_other_files_stay_non_media_in_a_folder_walk(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("test.gpl", "dilation4.lut"):
        (folder / name).write_bytes((PILLOW / name).read_bytes())
    for name in ("small__svg.svg", "small__pdf.pdf"):
        (folder / name).write_bytes((CORPUS / name).read_bytes())
    (folder / "notes.txt").write_text("P1 is the first priority\nthen #define the rest\n")
    (folder / "config.yml").write_text("SIMPLE: true\nwidth: 3\n")
    (folder / "header.h").write_text("#define LIMIT 10\n#define OTHER 20\n")
    (folder / "zeros.bin").write_bytes(bytes(4096))
    code, records = _prepare([folder], tmp_path)
    by_name = {Path(r["source"]).name: r for r in records}
    assert by_name["small__svg.svg"]["status"] == "error"  # an SVG is an image nvmedia cannot rasterise
    del by_name["small__svg.svg"]
    assert {n: r["status"] for n, r in by_name.items()} == dict.fromkeys(by_name, "skipped")
    assert all(r["reason"].startswith("not media") for r in by_name.values())
    assert code == 1


# --------------------------------------------------------------------------- the tree


def _loaded_format(path: Path) -> str | None:
    """The format Pillow (with pillow-heif) opens and fully decodes ``path`` as (None: it does not).

    The readers registered for the file's extension are tried first, then any: Pillow's own
    ``open`` tries readers in the order their plugins happened to be imported, and its Targa
    reader, which checks no signature, takes ``pillow.ico`` whenever it was imported first.
    """
    import pillow_heif

    pillow_heif.register_heif_opener()
    Image.init()
    named = [f for ext, f in Image.registered_extensions().items() if ext == path.suffix.lower()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for reader in named + [f for f in Image.ID if f not in named]:
            try:
                with Image.open(path, formats=[reader]) as im:
                    im.load()
            except Exception:  # any failure: not this reader
                continue
            return reader
    return None


@cache
def _loadable() -> dict[Path, str]:
    """The files of the tree Pillow loads, with the format it loads them as."""
    found = {p: _loaded_format(p) for p in TREE}
    return {p: f for p, f in found.items() if f is not None}


@pytest.fixture(scope="module")
def tree_run(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, dict[str, Any]]:
    """One `prepare` over the whole tree, as one folder; the records by source file.

    The files are copied under flat names that keep their extension and also hold it in the
    stem (``pillow/hopper.im`` -> ``pillow__hopper_im.im``), because ``--keep`` names a copy
    after its source's stem and ``hopper.im``, ``hopper.xbm``... would all be kept as ``hopper.png``.
    """
    out = tmp_path_factory.mktemp("pillow-tree")
    folder = out / "tree"
    folder.mkdir()
    staged: dict[str, Path] = {}
    for path in TREE:
        flat = "__".join(path.relative_to(FIXTURES).parts)
        name = f"{flat[: -len(path.suffix)] if path.suffix else flat}_{path.suffix[1:]}{path.suffix}"
        (folder / name).write_bytes(path.read_bytes())
        staged[name] = path
    _, records = _prepare([folder], out)
    return {staged[Path(r["source"]).name]: r for r in records}


_T = Image.Transpose
_ORIENTATIONS = (None, _T.FLIP_LEFT_RIGHT, _T.ROTATE_180, _T.FLIP_TOP_BOTTOM, _T.TRANSPOSE, _T.ROTATE_270)
_ORIENTATIONS += (_T.TRANSVERSE, _T.ROTATE_90)
_SIDE = 16


def _grey(im: Image.Image) -> Image.Image:
    """The picture as normalised grey, alpha composited onto white (what nvmedia flattens onto)."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        grey = im.convert("F")
        low, high = grey.getextrema()
        assert isinstance(low, float) and isinstance(high, float)
        scale = 255.0 / (high - low) if high > low else 0.0
        return grey.point(lambda v: (v - low) * scale)
    try:
        rgba = im.convert("RGBA")
    except ValueError:
        rgba = im.convert("RGB").convert("RGBA")
    base = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(base, rgba).convert("L").convert("F")


def _normalised(values: list[float]) -> list[float]:
    mean = sum(values) / len(values)
    centred = [v - mean for v in values]
    spread = (sum(v * v for v in centred) / len(centred)) ** 0.5
    return [v / spread for v in centred] if spread > 1e-6 else centred


def _thumbnail(im: Image.Image) -> Image.Image:
    return _grey(im).resize((_SIDE, _SIDE), Image.Resampling.BOX)


def _same_shape(a: tuple[int, int], b: tuple[int, int]) -> bool:
    if min(*a, *b) <= 2:
        return True
    return abs(a[0] / a[1] - b[0] / b[1]) <= 0.05 * max(a[0] / a[1], b[0] / b[1])


def _is_upright(source: Path, output: Path) -> bool:
    """True when the output matches the source as ``exif_transpose`` shows it at least as well as any other turn.

    Each of the eight orientations of the upright source is compared with the output on a 16x16
    normalised grey thumbnail (so conversions, downscaling and lossy coding do not matter); a turn
    of a symmetric picture ties, which is fine: nobody can see it. Turning the thumbnail is the
    same as thumbnailing the turned picture, and much cheaper on a 15-megapixel fax.
    """
    with Image.open(source, formats=[_loadable()[source]]) as im:
        im.load()
        upright = ImageOps.exif_transpose(im)
    width, height = upright.size
    small = _thumbnail(upright)
    with Image.open(output) as out:
        out.load()
        seen, size = _normalised([float(v) for v in _values(_thumbnail(out))]), out.size
    distances = []
    for number, turn in enumerate(_ORIENTATIONS):
        candidate = small if turn is None else small.transpose(turn)
        shape = (height, width) if number >= 4 else (width, height)  # the last four swap the sides
        mine = _normalised([float(v) for v in _values(candidate)])
        distance = sum((x - y) ** 2 for x, y in zip(mine, seen, strict=True)) / len(seen)
        distances.append(distance + (0.0 if _same_shape(shape, size) else 100.0))
    best = min(distances)
    return distances[0] <= best + max(0.002, 0.2 * best)


_CAMERA_TAGS = {0x010F: "Make", 0x0110: "Model", 0x0131: "Software", 0x0132: "DateTime", 0x013B: "Artist"}
_METADATA_KEYS = ("exif", "xmp", "XML:com.adobe.xmp", "photoshop", "iptc", "comment", "Raw profile type exif")


def _metadata_left(output: Path) -> list[str]:
    """What the output still carries that could say where, when or with what a picture was taken."""
    with Image.open(output) as out:
        out.load()
        exif = out.getexif()
        left = [f"EXIF {_CAMERA_TAGS.get(tag, hex(tag))}" for tag in exif]
        if exif.get_ifd(0x8825):
            left.append("GPS")
        left += [key for key in _METADATA_KEYS if key in out.info]
        left += [f"text {key}" for key in getattr(out, "text", {})]
    return left


def test_the_tree_holds_every_format_pillow_reads() -> None:
    formats = set(_loadable().values())
    # McIdas and PhotoCD are left out for their size (fixtures/SOURCES.md).
    missing = {f for f in Image.ID if f.upper() not in formats} - {"MCIDAS", "PCD"}
    assert missing <= {"BUFR", "EPS", "GRIB", "HDF5", "IPTC", "MPEG", "WMF"}, "formats with no sample that loads"


@pytest.mark.parametrize("source", TREE, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_every_image_pillow_loads_is_accepted_upright_and_stripped(
    source: Path, tree_run: dict[Path, dict[str, Any]]
) -> None:
    # Which files Pillow loads is found out here, not at collection: opening files imports Pillow's
    # plugins, and the order they are imported in changes what Pillow's own open picks in other tests.
    record = tree_run[source]
    if source in _loadable():
        assert record["status"] == "ok", record.get("error") or record.get("reason")
        assert record["kind"] == "image" and record["output"]["mime"] in ACCEPTED_MIMES
        output = Path(record["kept"])
        assert _is_upright(source, output), f"not upright: actions {record['actions']}"
        assert _metadata_left(output) == []
    elif record["kind"] is None:
        # Nothing Pillow's readers decode: not media (Pillow's Targa reader, which checks no signature,
        # "opens" some unrelated binary files, but none of them decodes).
        # Behind an extension that claims media, bytes that are not media are an error (README).
        if claims_media(source.name):
            assert record["status"] == "error" and record["error"]["code"] == "unsupported_format"
        else:
            assert record["status"] == "skipped" and record["reason"].startswith("not media")
    elif record["status"] == "error":
        error = record["error"]
        assert error["code"] in ("corrupt_media", "unsupported_format", "too_large")
        assert "unrecognised" not in error["message"] and error["hint"]
