"""nvmedia on Ray Data: the same records as the local engine, uploads, dedupe, job cleanup, a killed worker.

One Ray session serves the whole module (it takes seconds to start): a one-node
cluster on loopback with 2 CPUs and a small object store. The variables below are
set before Ray is imported: Ray reads them then.
"""

from __future__ import annotations

import json
import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback only: Ray reads it when imported
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
import ray
import ray.data
from support import CORPUS

import nvmedia.ray
from nvmedia.cli import main
from nvmedia.errors import ConfigError
from nvmedia.ray.records import RECORD_COLUMNS, records_table, row_to_record
from nvmedia.ray.stages import CRASH_MARKER_ENV, CRASH_ON_ENV
from nvmedia.testing import NVCFEmulator
from nvmedia.testing.emulator import ASSETS_PATH, UPLOAD_PATH

KEY = "nvapi-ray-test-key"
CRASH_NAME = "crash-me.png"
SMALL_SET = {
    "a.png": "pillow__hopper.png",
    "b.jpg": "pillow__hopper_orientation_6.jpg",
    "c.mp3": "pydub__party.mp3",
    "d.png": "pillow__truncated_image.png",
    "e.mp4": "small__mp4-with-audio.mp4",
    "f.txt": "SOURCES.md",
}
"""A small folder: images (one rotated), audio, video, a broken PNG and a non-media file."""


@pytest.fixture(scope="module")
def crash_marker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("crash") / "crashed-once"


@pytest.fixture(scope="module", autouse=True)
def ray_cluster(crash_marker: Path) -> Iterator[None]:
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=150 * 1024 * 1024,
        log_to_driver=False,
        runtime_env={"env_vars": {CRASH_ON_ENV: CRASH_NAME, CRASH_MARKER_ENV: str(crash_marker)}},
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("small") / "media"
    (folder / "sub").mkdir(parents=True)
    for name, original in SMALL_SET.items():
        shutil.copyfile(CORPUS / original, folder / ("sub" if name == "b.jpg" else "") / name)
    (folder / ".hidden.png").write_bytes((CORPUS / "pillow__hopper.png").read_bytes())
    return folder


def records_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run_prepare(args: list[str], out: Path) -> tuple[int, list[dict[str, Any]]]:
    code = main(["prepare", *args, "-o", str(out)])
    return code, records_of(out) if out.exists() else []


def without_kept(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "kept"} for r in records]


# -- the same records as the local engine --------------------------------------------------------------


@pytest.fixture(scope="module")
def local_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """The local engine's dry run over the corpus, with its kept files."""
    folder = tmp_path_factory.mktemp("local-corpus")
    code, records = run_prepare([str(CORPUS), "--dry-run", "--keep", str(folder / "kept")], folder / "m.jsonl")
    assert code == 1  # the corpus holds broken files on purpose
    return folder / "kept", records


def test_corpus_on_ray_dry_run_gives_the_local_engines_records(
    local_corpus: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    kept_local_dir, local = local_corpus
    code_ray, on_ray = run_prepare(
        [str(CORPUS), "--dry-run", "--engine", "ray", "--keep", str(tmp_path / "kr")], tmp_path / "r.jsonl"
    )
    assert code_ray == 1
    assert len(on_ray) == len(list(CORPUS.iterdir()))
    assert without_kept(on_ray) == without_kept(local)  # same order, same fields, same values
    shared = {path for path, n in Counter(r.get("kept") for r in local).items() if n > 1}
    for mine, theirs in zip(on_ray, local, strict=True):
        assert ("kept" in mine) == ("kept" in theirs)
        if "kept" in mine:
            kept, kept_local = Path(mine["kept"]), Path(theirs["kept"])
            assert kept.relative_to(tmp_path / "kr") == kept_local.relative_to(kept_local_dir)
            if theirs["kept"] not in shared:  # names --keep gives twice hold whichever file came last
                assert kept.read_bytes() == kept_local.read_bytes()


def test_records_survive_the_trip_through_arrow_and_parquet(
    local_corpus: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    _, local = local_corpus
    assert {r["status"] for r in local} == {"ok", "error", "skipped"}
    assert any("part" in r for r in local) and any("kept" in r for r in local)
    pq.write_table(records_table(local), tmp_path / "records.parquet")
    back = [row_to_record(row) for row in pq.read_table(tmp_path / "records.parquet").to_pylist()]
    assert back == local
    assert [list(r) for r in back] == [list(r) for r in local]  # the fields in the manifest's order too


def test_prepare_dataset_of_paths_and_of_bytes_gives_item_records(small_folder: Path, tmp_path: Path) -> None:
    files = sorted(p for p in small_folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    _, local = run_prepare([str(p) for p in files] + ["--dry-run"], tmp_path / "l.jsonl")
    by_source = {r["source"]: r for r in local}

    of_paths = nvmedia.ray.prepare_dataset(ray.data.from_items([{"path": str(p)} for p in files]), dry_run=True)
    rows = of_paths.take_all()
    assert set(rows[0]) == {"path", *RECORD_COLUMNS}
    assert sorted(row["path"] for row in rows) == sorted(by_source)
    for row in rows:
        assert row_to_record(row) == by_source[row["path"]]

    of_bytes = nvmedia.ray.prepare_dataset(
        ray.data.read_binary_files([str(p) for p in files], include_paths=True), column="bytes", dry_run=True
    )
    rows = of_bytes.take_all()
    assert set(rows[0]) == {"path", *RECORD_COLUMNS}  # the bytes are not repeated in the records
    assert len(rows) == len(files)
    by_name = {Path(source).name: record for source, record in by_source.items()}
    for row in rows:
        record, expected = row_to_record(row), by_name[Path(row["path"]).name]
        assert record["source"] == row["path"]
        assert (record["status"], record["kind"]) == (expected["status"], expected["kind"])
        if expected["status"] == "ok":
            assert record["output"] == expected["output"] and record["actions"] == expected["actions"]
            assert record["part"] == expected["part"]


def test_paths_as_uris_are_read_through_pyarrow_and_a_missing_one_is_not_found(tmp_path: Path) -> None:
    uri = (CORPUS / "pillow__hopper.png").as_uri()
    ghost = (tmp_path / "ghost.png").as_uri()
    ds = ray.data.from_items([{"path": uri}, {"path": ghost}])
    records = {r["source"]: r for r in map(row_to_record, nvmedia.ray.prepare_dataset(ds, dry_run=True).take_all())}
    assert records[uri]["status"] == "ok" and records[uri]["output"]["mime"] == "image/png"
    assert records[ghost]["status"] == "error" and records[ghost]["error"]["code"] == "not_found"


def test_parquet_output_is_a_folder_of_the_manifests_records(small_folder: Path, tmp_path: Path) -> None:
    _, local = run_prepare([str(small_folder), "--dry-run"], tmp_path / "l.jsonl")
    code = main(["prepare", str(small_folder), "--dry-run", "--engine", "ray", "--output-format", "parquet", "-o",
                 str(tmp_path / "prepared")])  # fmt: skip
    assert code == 1  # d.png is broken
    files = sorted((tmp_path / "prepared").iterdir())
    assert [f.name for f in files] == ["part-00000.parquet"]
    assert [row_to_record(row) for row in pq.read_table(files[0]).to_pylist()] == local
    assert not list(tmp_path.glob(".prepared*"))


# -- a worker killed mid-task -----------------------------------------------------------------------------


def test_worker_killed_mid_task_changes_nothing_in_the_output(
    small_folder: Path, tmp_path: Path, crash_marker: Path
) -> None:
    folder = tmp_path / "media"
    shutil.copytree(small_folder, folder)
    shutil.copyfile(CORPUS / "pillow__flower.jpg", folder / CRASH_NAME)
    _, local = run_prepare([str(folder), "--dry-run"], tmp_path / "l.jsonl")
    assert not crash_marker.exists()
    code, on_ray = run_prepare([str(folder), "--dry-run", "--engine", "ray"], tmp_path / "r.jsonl")
    assert crash_marker.exists(), "the worker holding crash-me.png must have died once"
    assert code == 1 and on_ray == local
    assert [r["status"] for r in on_ray if r["source"].endswith(CRASH_NAME)] == ["ok"]


# -- uploads to the emulator: faults, dedupe, job ownership, cleanup --------------------------------------


@pytest.fixture()
def emu() -> Iterator[NVCFEmulator]:
    with NVCFEmulator() as emulator:
        yield emulator


def test_emulator_round_trip_on_ray_with_faults_leaves_no_asset_after_cleanup(
    small_folder: Path, tmp_path: Path, emu: NVCFEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "media"
    shutil.copytree(small_folder, folder)
    shutil.copyfile(folder / "a.png", folder / "a-again.png")  # the same bytes twice: one upload
    emu.inject("503", times=2, path_prefix=ASSETS_PATH, method="POST")
    emu.inject("drop", path_prefix=UPLOAD_PATH)
    code, records = run_prepare(
        [str(folder), "--engine", "ray", "--mode", "asset", "--no-cache", "--assets-url", emu.assets_url,
         "--api-key", KEY],
        tmp_path / "m.jsonl",
    )  # fmt: skip
    err = capsys.readouterr().err
    job = re.search(r"Ray job (\S+):", err)
    assert job is not None, err
    assert code == 1  # d.png is broken
    sent = [r for r in records if r["status"] == "ok"]
    assert len(sent) == 5 and all(r["delivery"] == "asset" for r in sent)
    assert emu.counts["fault"] == 3 and emu.upload_count == 4  # a.png and a-again.png share one asset
    ids = {r["asset_id"] for r in sent}
    assert {a.asset_id for a in emu.assets(KEY)} == ids
    assert {a.description for a in emu.assets(KEY)} == {f"nvmedia job {job.group(1)}"}
    for r in sent:
        assert r["headers"] == {"NVCF-INPUT-ASSET-REFERENCES": r["asset_id"]}

    message = {"role": "user", "content": [r["part"] for r in sent]}
    body = {"model": "nvidia/nemotron-3-nano-omni", "messages": [message]}
    headers = {"Authorization": f"Bearer {KEY}", "NVCF-INPUT-ASSET-REFERENCES": ",".join(sorted(ids))}
    assert httpx.post(emu.chat_url, json=body, headers=headers, timeout=30).status_code == 200

    emu.inject("503", path_prefix=ASSETS_PATH + "/", method="DELETE")
    assert main(["assets", "--assets-url", emu.assets_url, "--api-key", KEY, "delete", "--job", job.group(1)]) == 0
    assert sorted(capsys.readouterr().out.split()[1::2]) == sorted(ids)
    assert emu.assets(KEY) == []


def test_uploads_are_bounded_per_node_and_the_same_content_is_uploaded_once_per_job(
    tmp_path: Path, emu: NVCFEmulator
) -> None:
    for name in ("one.png", "two.png", "three.png"):
        shutil.copyfile(CORPUS / "pillow__hopper.png", tmp_path / name)
    distinct = [CORPUS / f"pillow__{name}" for name in ("hopper.webp", "flower.jpg", "hopper_gray.jpg", "rgb.jpg")]
    emu.inject("slow", times=5, path_prefix=UPLOAD_PATH, delay_s=0.3)  # uploads that overlap, were they allowed to
    options: dict[str, Any] = {"mode": "asset", "cache": False, "assets_url": emu.assets_url, "api_key": KEY}
    first = ray.data.from_items([{"path": str(p)} for p in [tmp_path / "one.png", *distinct]])
    rows = nvmedia.ray.prepare_dataset(first, job="j1", uploads_per_node=2, **options).take_all()
    assert emu.upload_count == 5 and emu.peak_concurrent_uploads <= 2
    (one,) = [row["asset_id"] for row in rows if row["path"].endswith("one.png")]
    # A second pipeline of the same job runs its own upload actor; the job's registry still knows the bytes.
    again = ray.data.from_items([{"path": str(tmp_path / n)} for n in ("two.png", "three.png")])
    rows = nvmedia.ray.prepare_dataset(again, job="j1", **options).take_all()
    assert emu.upload_count == 5
    assert {row["asset_id"] for row in rows} == {one}


def test_emulate_on_ray_uploads_to_the_in_process_emulator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, (record,) = run_prepare(
        [str(CORPUS / "pillow__hopper.png"), "--engine", "ray", "--emulate", "--mode", "asset"], tmp_path / "m.jsonl"
    )
    assert code == 0 and record["status"] == "ok" and record["asset_id"]
    assert record["part"]["image_url"]["url"] == f"data:image/png;asset_id,{record['asset_id']}"
    assert "Ray job" not in capsys.readouterr().err  # the emulator's assets go when it stops: nothing to clean up


def test_missing_key_for_an_upload_is_exit_2_and_writes_no_manifest(
    tmp_path: Path, emu: NVCFEmulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NVIDIA_API_KEY", raising=False)
    out = tmp_path / "m.jsonl"
    args = [str(CORPUS / "pillow__hopper.png"), "--engine", "ray", "--mode", "asset", "--assets-url", emu.assets_url]
    assert main(["prepare", *args, "-o", str(out)]) == 2
    assert "NVIDIA_API_KEY" in capsys.readouterr().err
    assert not out.exists() and emu.create_count == 0


def test_delete_job_removes_only_that_jobs_assets(emu: NVCFEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    with nvmedia.AssetClient(api_key=KEY, base_url=emu.assets_url) as client:
        mine = [client.upload_file(CORPUS / "pillow__hopper.png", "image/png", "nvmedia job j-7") for _ in range(3)]
        others = [client.upload_file(CORPUS / "pillow__hopper.png", "image/png", d) for d in ("nvmedia job j-77", "x")]
    assert main(["assets", "--assets-url", emu.assets_url, "--api-key", KEY, "delete", "--job", "j-7"]) == 0
    assert sorted(capsys.readouterr().out.split()[1::2]) == sorted(mine)
    assert sorted(a.asset_id for a in emu.assets(KEY)) == sorted(others)
    assert main(["assets", "--assets-url", emu.assets_url, "--api-key", KEY, "delete", "--job", "j-7"]) == 0
    assert "no assets described 'nvmedia job j-7'" in capsys.readouterr().err


# -- usage errors, Ray missing, loopback only -------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["prepare", "x.png", "--engine", "ray", "--group", "dir"], "--group dir is not available with --engine ray"),
        (["prepare", "x.png", "--address", "auto"], "--address goes with --engine ray"),
        (["prepare", "x.png", "--engine", "ray", "--address", "example"], "does not name a Ray cluster"),
        (["prepare", "x.png", "--output-format", "parquet"], "writes a folder, not stdout"),
        (["assets", "--api-key", KEY, "delete", "--job", "j", "--all"], "one of them"),
        (["assets", "--api-key", KEY, "--assets-url", "http://127.0.0.1:9", "delete", "--job", "a b"], "not usable"),
    ],
)
def test_usage_errors_are_exit_2_with_a_reason(args: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    assert says in capsys.readouterr().err


def test_bad_options_of_prepare_dataset_raise_config_error() -> None:
    ds = ray.data.from_items([{"input": "x.png"}])
    with pytest.raises(ConfigError, match="name of a record field"):
        nvmedia.ray.prepare_dataset(ds, column="input")
    with pytest.raises(ConfigError, match="job id"):
        nvmedia.ray.prepare_dataset(ds, column="input", job="no spaces")
    with pytest.raises(ConfigError, match="batch_size"):
        nvmedia.ray.prepare_dataset(ray.data.from_items([{"path": "x"}]), batch_size=0)


def test_without_ray_the_error_names_the_extra(tmp_path: Path) -> None:
    hide_ray = "import sys; sys.modules['ray'] = None; sys.modules['pyarrow'] = None; "
    cli = subprocess.run(
        [sys.executable, "-c", hide_ray + "from nvmedia.cli import main; sys.exit(main(sys.argv[1:]))",
         "prepare", str(CORPUS / "pillow__hopper.png"), "--engine", "ray", "-o", str(tmp_path / "m.jsonl")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cli.returncode == 2
    assert 'Ray is not installed' in cli.stderr and 'pip install "nvmedia[ray]"' in cli.stderr
    assert not (tmp_path / "m.jsonl").exists()
    library = subprocess.run(
        [sys.executable, "-c", hide_ray + "import nvmedia.ray\n"
         "print(nvmedia.ray.job_description('j'))\n"
         "try:\n    nvmedia.ray.prepare_dataset\nexcept nvmedia.ConfigError as e:\n    print(e.code, e.hint)"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert library.returncode == 0, library.stderr
    hint = 'pip install "nvmedia[ray]", or run without --engine ray'
    assert library.stdout.splitlines() == ["nvmedia job j", f"config {hint}"]


def _descendants(root: int) -> set[int]:
    children: dict[int, set[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), set()).add(int(entry.name))
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _listening(pids: set[int]) -> list[str]:
    """The local addresses of TCP sockets in LISTEN state held by ``pids`` (from /proc, as ``ss -ltnp`` does)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:
                found.append(cols[1].split(":")[0])
    return found


def test_ray_listens_on_loopback_only() -> None:
    addresses = _listening(_descendants(os.getpid()))
    assert len(addresses) >= 3  # the driver, the GCS, the raylet at least
    # /proc/net/tcp{,6} spell addresses in hex, each 32-bit word little-endian: 127.x.x.x ends in 7F,
    # ::1 is 0...01000000, and ::ffff:127.x.x.x is 0000000000000000FFFF0000 then the IPv4 word.
    for address in addresses:
        v4 = address[-8:] if len(address) == 8 or address.startswith("0000000000000000FFFF0000") else None
        assert (v4 is not None and v4.endswith("7F")) or address == "00000000000000000000000001000000", address


def test_nvmedia_ray_names_resolve_and_importing_it_loads_no_ray() -> None:
    assert nvmedia.ray.__all__ == sorted(nvmedia.ray.__all__)
    for name in nvmedia.ray.__all__:
        assert getattr(nvmedia.ray, name) is not None
    code = "import sys, nvmedia.ray, nvmedia.ray.jobs; print(sorted(m for m in ('ray', 'pyarrow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout
    assert out.strip() == "[]"
