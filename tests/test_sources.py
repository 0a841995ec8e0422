from __future__ import annotations

import io
import os
from pathlib import Path

from nvmedia.sources import expand


def _tree(root: Path) -> None:
    (root / "b").mkdir(parents=True)
    (root / "a.jpg").write_bytes(b"x")
    (root / "b" / "c.png").write_bytes(b"x")
    (root / ".hidden.jpg").write_bytes(b"x")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_bytes(b"x")


def test_folders_are_walked_recursively_in_sorted_order(tmp_path: Path) -> None:
    _tree(tmp_path / "photos")
    names = [s.name for s in expand([str(tmp_path / "photos")]) if s.skip_reason is None]
    assert names == [str(tmp_path / "photos" / "a.jpg"), str(tmp_path / "photos" / "b" / "c.png")]


def test_hidden_entries_are_skipped_with_a_reason(tmp_path: Path) -> None:
    _tree(tmp_path)
    skipped = {Path(s.name).name: s.skip_reason for s in expand([str(tmp_path)]) if s.skip_reason}
    assert skipped == {".git": "hidden", ".hidden.jpg": "hidden"}


def test_symlink_loop_and_outside_link_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _tree(root)
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"x")
    os.symlink(root, root / "b" / "loop")
    os.symlink(outside, root / "escape.jpg")
    os.symlink(root / "a.jpg", root / "inside.jpg")
    os.symlink(tmp_path / "missing", root / "dangling.jpg")
    reasons = {Path(s.name).name: s.skip_reason for s in expand([str(root)])}
    assert reasons["loop"] == "link to a folder (not followed: it could loop)"
    assert reasons["escape.jpg"] == "link points outside the folder"
    assert reasons["inside.jpg"] is None
    assert reasons["dangling.jpg"] == "broken link"


def test_source_names_keep_the_folder_as_given(tmp_path: Path) -> None:
    _tree(tmp_path / "photos")
    os.chdir(tmp_path)
    names = [s.name for s in expand(["photos"]) if s.skip_reason is None]
    assert names == [os.path.join("photos", "a.jpg"), os.path.join("photos", "b", "c.png")]


def test_groups_follow_the_group_option(tmp_path: Path) -> None:
    _tree(tmp_path / "p")
    by_file = {s.group for s in expand([str(tmp_path / "p")], "file") if not s.skip_reason}
    by_dir = [s.group for s in expand([str(tmp_path / "p")], "dir") if not s.skip_reason]
    by_all = {s.group for s in expand([str(tmp_path / "p")], "all")}
    assert len(by_file) == 2
    assert by_dir[0] != by_dir[1]
    assert by_all == {"all"}


def test_bytes_and_file_objects_are_sources() -> None:
    sources = expand([b"\x89PNG", io.BytesIO(b"abc")])
    assert [s.data for s in sources] == [b"\x89PNG", b"abc"]
    assert sources[0].name == "<bytes #0>"


def test_missing_path_is_kept_for_the_pipeline_to_report(tmp_path: Path) -> None:
    sources = expand([str(tmp_path / "nope.jpg")])
    assert len(sources) == 1 and sources[0].explicit and sources[0].skip_reason is None
