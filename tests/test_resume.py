"""``nvmedia prepare --resume``: keep what an earlier run finished, redo only the rest, same manifest.

Runs are real ``python -m nvmedia`` processes over real files. "Only the rest" is observed
through ffmpeg itself: ``NVMEDIA_FFMPEG`` points at the real ffmpeg behind a script that logs
each run, and the output cache is off, so an input that is not redone runs no ffmpeg.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from rerun_support import DAY_NS, age, cli, conversions, lines, logging_ffmpeg, mixed_folder, nvmedia_on_a_terminal
from support import CORPUS

import nvmedia as nvm
from nvmedia.testing import NVCFEmulator

KEY = "nvapi-resume-test-key"


@pytest.fixture()
def ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every ffmpeg run of the test is logged; returns the log."""
    script, log = logging_ffmpeg(tmp_path / "bin")
    monkeypatch.setenv("NVMEDIA_FFMPEG", str(script))
    return log


def _full_run(folder: Path, out: Path, *options: str) -> list[str]:
    status, err = cli("prepare", folder, "--dry-run", "-o", out, *options)
    assert status in (0, 1), err
    return lines(out)


def test_resume_after_an_interrupted_run_gives_the_uninterrupted_runs_manifest(tmp_path: Path, ffmpeg: Path) -> None:
    folder = mixed_folder(tmp_path / "in")
    full = _full_run(folder, tmp_path / "full.jsonl")
    assert len(full) == 8 and conversions(ffmpeg), "the full run converts the FLAC with ffmpeg"
    out = tmp_path / "m.jsonl"
    out.write_text("".join(full[:3]))  # stopped after .hidden.png, 1_talk.flac and 2_photo.jpg
    ffmpeg.write_text("")
    status, err = cli("prepare", folder, "--dry-run", "-o", out, "--resume", "--no-output-cache")
    assert status == 1, err  # 5_broken.png is an error, as in the full run
    assert lines(out) == full
    assert conversions(ffmpeg) == [], "the FLAC's record was kept, not converted again"


def test_resume_reads_the_partial_manifest_a_killed_run_left_and_ignores_its_torn_line(
    tmp_path: Path, ffmpeg: Path
) -> None:
    folder = mixed_folder(tmp_path / "in")
    full = _full_run(folder, tmp_path / "full.jsonl")
    out = tmp_path / "m.jsonl"
    leftover = tmp_path / ".m.jsonl.part"  # what SIGKILL leaves: finished records, then half a line
    leftover.write_text("".join(full[:2]) + full[2][: len(full[2]) // 2])
    ffmpeg.write_text("")
    status, err = cli("prepare", folder, "--dry-run", "-o", out, "--resume", "--no-output-cache")
    assert status == 1, err
    assert lines(out) == full
    assert conversions(ffmpeg) == []
    assert not leftover.exists()


def test_a_partial_manifest_holding_only_a_torn_line_is_no_obstacle(tmp_path: Path) -> None:
    # Killed while writing its first record: nothing to keep, and nothing to refuse either.
    webp = CORPUS / "pillow__hopper.webp"
    (tmp_path / ".m.jsonl.part").write_text('{"type": "item", "source": "' + str(webp)[:5])
    status, err = cli("prepare", webp, "--dry-run", "-o", tmp_path / "m.jsonl", "--resume")
    assert status == 0, err
    assert json.loads((tmp_path / "m.jsonl").read_text())["status"] == "ok"


def test_resume_redoes_a_changed_source(tmp_path: Path, ffmpeg: Path) -> None:
    folder = mixed_folder(tmp_path / "in")
    full = _full_run(folder, tmp_path / "m.jsonl")
    cat = folder / "3_cat.bmp"
    shutil.copyfile(CORPUS / "pillow__rgba32.bmp", cat)
    os.utime(cat, ns=(cat.stat().st_mtime_ns - DAY_NS, cat.stat().st_mtime_ns - DAY_NS))
    fresh = _full_run(folder, tmp_path / "fresh.jsonl", "--no-output-cache")
    ffmpeg.write_text("")
    status, shown = nvmedia_on_a_terminal(
        "prepare", folder, "--dry-run", "-o", tmp_path / "m.jsonl", "--resume", "--no-output-cache"
    )
    assert status == 1, shown
    resumed = lines(tmp_path / "m.jsonl")
    assert resumed == fresh and resumed[3] != full[3]
    assert "6 kept from" in shown, "all but the changed cat and the broken file (errors are tried again)"
    assert conversions(ffmpeg) == []


def test_resume_redoes_a_source_whose_mtime_changed_even_if_its_bytes_did_not(tmp_path: Path, ffmpeg: Path) -> None:
    folder = mixed_folder(tmp_path / "in")
    full = _full_run(folder, tmp_path / "m.jsonl")
    stamp = (folder / "1_talk.flac").stat().st_mtime_ns - 1_000_000_000
    os.utime(folder / "1_talk.flac", ns=(stamp, stamp))
    ffmpeg.write_text("")
    status, err = cli("prepare", folder, "--dry-run", "-o", tmp_path / "m.jsonl", "--resume", "--no-output-cache")
    assert status == 1, err
    assert len(conversions(ffmpeg)) >= 1, "a touched file is redone"
    resumed = lines(tmp_path / "m.jsonl")
    assert json.loads(resumed[1])["resume"]["mtime_ns"] == stamp
    assert [json.loads(r)["output"] for r in resumed[1:2]] == [json.loads(r)["output"] for r in full[1:2]]


def _flip_a_pixel(bmp: Path) -> bytes:
    data = bytearray(bmp.read_bytes())
    data[-7] ^= 0xFF  # a pixel byte: same size, still a valid BMP
    return bytes(data)


def test_a_source_replaced_by_another_file_of_the_same_size_and_mtime_is_compared_by_its_bytes(
    tmp_path: Path, ffmpeg: Path
) -> None:
    folder = mixed_folder(tmp_path / "in")
    _full_run(folder, tmp_path / "m.jsonl")
    cat = folder / "3_cat.bmp"
    before = cat.stat()
    replacement = folder / "new.tmp"
    replacement.write_bytes(_flip_a_pixel(cat))
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(replacement, cat)  # another inode, same size, same mtime: in doubt
    assert cat.stat().st_ino != before.st_ino and cat.stat().st_mtime_ns == before.st_mtime_ns
    fresh = _full_run(folder, tmp_path / "fresh.jsonl", "--no-output-cache")
    status, err = cli("prepare", folder, "--dry-run", "-o", tmp_path / "m.jsonl", "--resume", "--no-output-cache")
    assert status == 1, err
    assert lines(tmp_path / "m.jsonl") == fresh


def test_a_source_modified_just_before_it_was_read_is_compared_by_its_bytes(tmp_path: Path, ffmpeg: Path) -> None:
    # An mtime in the future is always "just modified" when read: the record says so (recent),
    # and a later edit that keeps size, mtime and inode is still caught, by the source's SHA-256.
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.wav", "b.wav"):
        shutil.copyfile(CORPUS / "pydub__test4.wav", folder / name)  # passes through: its hash is recorded
    future = (folder / "a.wav").stat().st_mtime_ns + 3600 * 1_000_000_000
    for name in ("a.wav", "b.wav"):
        os.utime(folder / name, ns=(future, future))
    full = _full_run(folder, tmp_path / "m.jsonl")
    assert all(json.loads(line)["resume"]["recent"] is True for line in full)
    with (folder / "b.wav").open("r+b") as fh:  # in place: same inode, same size
        fh.seek(-100, os.SEEK_END)
        fh.write(b"\x7f" * 50)
    os.utime(folder / "b.wav", ns=(future, future))
    fresh = _full_run(folder, tmp_path / "fresh.jsonl")
    status, shown = nvmedia_on_a_terminal("prepare", folder, "--dry-run", "-o", tmp_path / "m.jsonl", "--resume")
    assert status == 0, shown
    resumed = lines(tmp_path / "m.jsonl")
    assert resumed == fresh
    assert resumed[0] == full[0] and resumed[1] != full[1]
    assert "1 kept from" in shown, "a.wav's bytes still match its recorded SHA-256: kept"


def test_resume_drops_the_record_of_a_deleted_source(tmp_path: Path, ffmpeg: Path) -> None:
    folder = mixed_folder(tmp_path / "in")
    _full_run(folder, tmp_path / "m.jsonl")
    (folder / "3_cat.bmp").unlink()
    fresh = _full_run(folder, tmp_path / "fresh.jsonl", "--no-output-cache")
    status, err = cli("prepare", folder, "--dry-run", "-o", tmp_path / "m.jsonl", "--resume", "--no-output-cache")
    assert status == 1, err
    assert lines(tmp_path / "m.jsonl") == fresh
    assert not any("3_cat.bmp" in line for line in fresh)


def test_resume_reports_a_deleted_source_named_on_the_command_line_as_not_found(tmp_path: Path) -> None:
    folder = mixed_folder(tmp_path / "in")
    named = [folder / "3_cat.bmp", folder / "4_plain.webp"]
    out = tmp_path / "m.jsonl"
    assert cli("prepare", *named, "--dry-run", "-o", out)[0] == 0
    named[0].unlink()
    status, err = cli("prepare", *named, "--dry-run", "-o", out, "--resume")
    assert status == 1, err
    first, second = (json.loads(line) for line in lines(out))
    assert first["status"] == "error" and first["error"]["code"] == "not_found"
    assert second["status"] == "ok"


def test_resume_with_other_options_is_refused_and_names_the_difference(tmp_path: Path) -> None:
    folder = mixed_folder(tmp_path / "in")
    out = tmp_path / "m.jsonl"
    earlier = _full_run(folder, out, "--mode", "inline")
    status, err = cli("prepare", folder, "--dry-run", "-o", out, "--resume")
    assert status == 2
    assert err.count("\n") == 1 and "--mode inline (now auto)" in err
    assert "drop --resume" in err
    assert lines(out) == earlier, "the earlier manifest is left as it was"


def test_resume_with_options_that_do_not_shape_records_is_accepted(tmp_path: Path, ffmpeg: Path) -> None:
    folder = mixed_folder(tmp_path / "in")
    full = _full_run(folder, tmp_path / "m.jsonl", "-j", "2")
    ffmpeg.write_text("")
    status, err = cli(
        "prepare", folder, "--dry-run", "-o", tmp_path / "m.jsonl", "--resume", "-j", "1", "--pool", "thread"
    )
    assert status == 1, err
    assert lines(tmp_path / "m.jsonl") == full and conversions(ffmpeg) == []


def test_resume_rebuilds_request_records_with_group_dir(tmp_path: Path, ffmpeg: Path) -> None:
    folder = tmp_path / "in"
    layout = {
        "a/1.bmp": "pillow__hopper.bmp",
        "a/2.webp": "pillow__hopper.webp",
        "b/3.flac": "pydub__test-192khz-32bit.flac",
        "b/4.gif": "pillow__hopper.gif",
        "c/5.bmp": "pillow__rgba32.bmp",
    }
    for name, source in layout.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CORPUS / source, folder / name)
    age(folder)
    full = _full_run(folder, tmp_path / "full.jsonl", "--group", "dir")
    kinds = [json.loads(line)["type"] for line in full]
    assert kinds == ["item", "item", "request", "item", "item", "request", "item", "request"]
    out = tmp_path / "m.jsonl"
    out.write_text("".join(full[:6]) + full[6][:40])  # folders a and b done, c torn
    (folder / "a" / "2.webp").touch()  # folder a is redone as a whole: its request changes with any item
    ffmpeg.write_text("")
    status, err = cli("prepare", folder, "--dry-run", "-o", out, "--resume", "--group", "dir", "--no-output-cache")
    assert status == 0, err
    resumed = lines(out)
    assert conversions(ffmpeg) == [], "folder b (with the FLAC) was kept"
    assert [json.loads(line)["type"] for line in resumed] == kinds
    assert resumed[3:] == full[3:]
    assert [json.loads(line).get("sources") for line in resumed[:3]] == [
        json.loads(line).get("sources") for line in full[:3]
    ]


def test_resume_keeps_every_piece_of_a_split_source_or_none(tmp_path: Path, ffmpeg: Path) -> None:
    from test_audio_split import _profile, _talk

    folder = tmp_path / "in"
    folder.mkdir()
    _talk(folder / "a_talk.wav")
    _talk(folder / "b_talk.wav", seconds=11.0)
    age(folder)
    args = ["--profile", str(_profile(tmp_path)), "--split-long-audio"]
    full = _full_run(folder, tmp_path / "full.jsonl", *args)
    assert len(full) == 6  # three pieces each
    out = tmp_path / "m.jsonl"
    out.write_text("".join(full[:5]))  # a's pieces, and two of b's three
    ffmpeg.write_text("")
    status, err = cli("prepare", folder, "--dry-run", "-o", out, "--resume", "--no-output-cache", *args)
    assert status == 0, err
    assert lines(out) == full
    ran = conversions(ffmpeg)
    assert ran and all("b_talk.wav" in line for line in ran), "only b was cut again"


def test_resume_rewrites_a_kept_copy_that_is_gone(tmp_path: Path, ffmpeg: Path) -> None:
    folder = mixed_folder(tmp_path / "in")
    keep = tmp_path / "kept"
    full = _full_run(folder, tmp_path / "m.jsonl", "--keep", str(keep))
    kept = Path(json.loads(full[1])["kept"])
    assert kept.name == "1_talk.mp3"
    kept.unlink()
    ffmpeg.write_text("")
    status, err = cli("prepare", folder, "--dry-run", "-o", tmp_path / "m.jsonl", "--resume", "--keep", str(keep))
    assert status == 1, err
    assert lines(tmp_path / "m.jsonl") == full
    assert len(conversions(ffmpeg)) >= 1 and kept.is_file()


def test_resume_checks_asset_ids_once_and_uploads_again_what_the_service_lost(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copyfile(CORPUS / "pillow__hopper.bmp", folder / "a.bmp")
    (folder / "b.bmp").write_bytes(_flip_a_pixel(CORPUS / "pillow__hopper.bmp"))
    shutil.copyfile(CORPUS / "pillow__rgba32.bmp", folder / "c.bmp")
    age(folder)
    out = tmp_path / "m.jsonl"
    with NVCFEmulator() as emu:
        connect = ("--assets-url", emu.assets_url, "--api-key", KEY, "--mode", "asset", "--no-cache")
        status, err = cli("prepare", folder, "-o", out, *connect)
        assert status == 0, err
        full = [json.loads(line) for line in lines(out)]
        ids = [r["asset_id"] for r in full]
        assert len(set(ids)) == 3 and all(emu.asset(i) is not None for i in ids)
        with nvm.AssetClient(api_key=KEY, base_url=emu.assets_url) as client:
            client.delete(ids[1])
        emu.clear_requests()
        status, err = cli("prepare", folder, "-o", out, "--resume", *connect)
        assert status == 0, err
        assert emu.counts.get("list") == 1 and emu.upload_count == 1
        resumed = [json.loads(line) for line in lines(out)]
        assert [r["asset_id"] for r in resumed][0::2] == ids[0::2]
        assert resumed[1]["asset_id"] not in ids and emu.asset(resumed[1]["asset_id"]) is not None
        assert resumed[1]["output"] == full[1]["output"]


def test_resume_needs_an_output_file(tmp_path: Path) -> None:
    status, err = cli("prepare", CORPUS / "pillow__hopper.webp", "--dry-run", "--resume")
    assert status == 2 and "--resume needs -o FILE" in err


def test_resume_refuses_a_file_that_is_not_a_manifest_and_leaves_it_alone(tmp_path: Path) -> None:
    out = tmp_path / "notes.txt"
    out.write_text("my notes\nsecond line\n")
    status, err = cli("prepare", CORPUS / "pillow__hopper.webp", "--dry-run", "-o", out, "--resume")
    assert status == 2 and "not an nvmedia manifest" in err
    assert out.read_text() == "my notes\nsecond line\n"


def test_resume_without_an_earlier_manifest_is_a_full_run(tmp_path: Path) -> None:
    out = tmp_path / "m.jsonl"
    status, err = cli("prepare", CORPUS / "pillow__hopper.webp", "--dry-run", "-o", out, "--resume")
    assert status == 0, err
    assert json.loads(out.read_text())["status"] == "ok"


def test_resume_from_the_library_gives_the_same_items(tmp_path: Path) -> None:
    folder = mixed_folder(tmp_path / "in")
    full = _full_run(folder, tmp_path / "m.jsonl")
    prep = nvm.prepare(
        folder, group="file", dry_run=True, on_error="keep", output_cache=False, resume=tmp_path / "m.jsonl"
    )
    prep.close()
    assert [json.loads(line) for line in full] == [item.to_record() for item in prep.items]
    assert {item.reused_from for item in prep.items if item.status == "ok"} == {"manifest"}
    with pytest.raises(nvm.ConfigError, match="group file"):
        nvm.prepare(folder, dry_run=True, on_error="keep", resume=tmp_path / "m.jsonl")
