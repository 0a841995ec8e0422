"""`--keep DIR` never overwrites: one kept path per item, each kept file holds its record's bytes, no source is written.

The kept-name rule (README, "Kept files"): an input keeps its relative path with the output's
extension; inputs whose names differ only in extension keep their whole name and add the
output's extension when it differs (`a.gif.png`, `a.bmp.png`); inputs with the very same
relative path are told apart by `~2`, `~3`... in input order; a name that is an input's own
path is never used.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from support import CORPUS, sha256_file

from nvmedia.cli import main


def _prepare(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, Any]], str]:
    code = main(["prepare", *args])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines() if line.strip()], captured.err


def _kept_files(kept: Path) -> set[str]:
    return {str(p.relative_to(kept)) for p in kept.rglob("*") if p.is_file()}


def _assert_one_file_per_item(records: list[dict[str, Any]], kept: Path) -> dict[str, str]:
    """Every ok item names its own kept file, and that file holds exactly the record's output."""
    ok = [r for r in records if r["status"] == "ok"]
    paths = [r["kept"] for r in ok]
    assert len(set(paths)) == len(paths), paths
    for record in ok:
        assert sha256_file(Path(record["kept"])) == record["output"]["sha256"], record["source"]
    assert _kept_files(kept) == {str(Path(p).relative_to(kept)) for p in paths}  # no stray or .part files
    return {Path(r["source"]).name: str(Path(r["kept"]).relative_to(kept)) for r in ok}


def test_gif_and_bmp_of_one_name_keep_two_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, kept = tmp_path / "in", tmp_path / "kept"
    folder.mkdir()
    shutil.copy(CORPUS / "pillow__hopper.gif", folder / "a.gif")
    shutil.copy(CORPUS / "pillow__hopper.bmp", folder / "a.bmp")
    code, records, _ = _prepare([str(folder), "--dry-run", "--keep", str(kept)], capsys)
    assert code == 0
    assert _assert_one_file_per_item(records, kept) == {"a.bmp": "a.bmp.png", "a.gif": "a.gif.png"}


def test_a_users_png_keeps_its_name_beside_a_gif_of_the_same_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, kept = tmp_path / "in", tmp_path / "kept"
    folder.mkdir()
    shutil.copy(CORPUS / "pillow__hopper.gif", folder / "a.gif")
    shutil.copy(CORPUS / "pillow__hopper.png", folder / "a.png")
    code, records, _ = _prepare([str(folder), "--dry-run", "--keep", str(kept)], capsys)
    assert code == 0
    assert _assert_one_file_per_item(records, kept) == {"a.gif": "a.gif.png", "a.png": "a.png"}


def test_mov_and_mp4_of_one_name_keep_two_files(
    tmp_path: Path, av_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, kept = tmp_path / "in", tmp_path / "kept"
    folder.mkdir()
    shutil.copy(av_files["mov_h264_aac_720p"], folder / "photo.mov")
    shutil.copy(av_files["mp4_h264_noaudio"], folder / "photo.mp4")
    code, records, _ = _prepare([str(folder), "--dry-run", "--keep", str(kept)], capsys)
    assert code == 0
    assert _assert_one_file_per_item(records, kept) == {"photo.mov": "photo.mov.mp4", "photo.mp4": "photo.mp4"}


def test_flac_and_opus_of_one_name_keep_two_files(
    tmp_path: Path, av_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, kept = tmp_path / "in", tmp_path / "kept"
    folder.mkdir()
    shutil.copy(av_files["flac"], folder / "speech.flac")
    shutil.copy(av_files["opus"], folder / "speech.opus")
    code, records, _ = _prepare([str(folder), "--dry-run", "--keep", str(kept)], capsys)
    assert code == 0
    names = _assert_one_file_per_item(records, kept)
    assert sorted(names) == ["speech.flac", "speech.opus"]
    assert names["speech.flac"].startswith("speech.flac.") and names["speech.opus"].startswith("speech.opus.")


def test_one_name_from_two_folders_given_as_arguments_keeps_two_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = tmp_path / "kept"
    for folder, source in (("d1", "pillow__hopper.png"), ("d2", "pillow__rgb_trns.png")):
        (tmp_path / folder).mkdir()
        shutil.copy(CORPUS / source, tmp_path / folder / "x.png")
    first, second = str(tmp_path / "d1" / "x.png"), str(tmp_path / "d2" / "x.png")
    code, records, _ = _prepare([first, second, "--dry-run", "--keep", str(kept)], capsys)
    assert code == 0
    assert [r["source"] for r in records] == [first, second]
    assert [Path(r["kept"]).name for r in records] == ["x.png", "x~2.png"]
    _assert_one_file_per_item(records, kept)


def test_keep_equal_to_the_input_folder_is_refused_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(CORPUS / "pillow__hopper.gif", folder / "a.gif")
    shutil.copy(CORPUS / "pillow__hopper.png", folder / "a.png")
    before = {p.name: sha256_file(p) for p in folder.iterdir()}
    code, records, err = _prepare([str(folder), "--dry-run", "--keep", str(folder)], capsys)
    assert code == 2 and records == []
    assert "--keep" in err and err.count("\n") == 1
    assert {p.name: sha256_file(p) for p in folder.iterdir()} == before


def test_keep_inside_the_input_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(CORPUS / "pillow__hopper.bmp", folder / "a.bmp")
    code, records, err = _prepare([str(folder), "--dry-run", "--keep", str(folder / "kept")], capsys)
    assert code == 2 and records == [] and "--keep" in err
    assert not (folder / "kept").exists()


def test_a_kept_name_that_is_an_input_file_is_never_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The user's own a.png sits in the keep folder and is an input; a GIF named a.gif is another.
    kept, other = tmp_path / "kept", tmp_path / "other"
    kept.mkdir()
    other.mkdir()
    shutil.copy(CORPUS / "pillow__hopper.png", kept / "a.png")
    shutil.copy(CORPUS / "pillow__chi.gif", other / "a.gif")
    original = sha256_file(kept / "a.png")
    code, records, _ = _prepare([str(kept / "a.png"), str(other / "a.gif"), "--dry-run", "--keep", str(kept)], capsys)
    assert code == 0
    assert sha256_file(kept / "a.png") == original
    assert [Path(r["kept"]).name for r in records] == ["a~2.png", "a.gif.png"]
    for record in records:
        assert sha256_file(Path(record["kept"])) == record["output"]["sha256"]


def test_kept_names_do_not_depend_on_the_number_of_workers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    for sub in ("", "s"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for name, source in (
            ("a.gif", "pillow__hopper.gif"),
            ("a.png", "pillow__hopper.png"),
            ("b.bmp", "pillow__hopper.bmp"),
        ):
            shutil.copy(CORPUS / source, folder / sub / name)
    runs = []
    for jobs in ("1", "3"):
        kept = tmp_path / f"kept{jobs}"
        args = [str(folder), "--dry-run", "-j", jobs, "--pool", "thread", "--keep", str(kept)]
        code, records, _ = _prepare(args, capsys)
        assert code == 0
        _assert_one_file_per_item(records, kept)
        runs.append([str(Path(r["kept"]).relative_to(kept)) for r in records])
    assert runs[0] == runs[1] == ["a.gif.png", "a.png", "b.png", "s/a.gif.png", "s/a.png", "s/b.png"]
