"""nvmedia on Ray Data: the same records as the local engine, uploads, dedupe, job cleanup, a killed worker.

One Ray session serves the whole module (it takes seconds to start): a one-node
cluster on loopback with 2 CPUs and a small object store. The variables below are
set before Ray is imported: Ray reads them then.
"""

from __future__ import annotations

import base64
import json
import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback only: Ray reads it when imported
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import re
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
import ray
import ray.data
from chat_server import Exchange, chat_server
from rerun_support import age
from support import CORPUS, read_until, sha256_file

import nvmedia.ray
from nvmedia.cli import main
from nvmedia.errors import ConfigError
from nvmedia.ray.records import RECORD_COLUMNS, records_table, row_to_record
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
def crash_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the worker-killing test puts its files: the worker reaching ``crash-me.png`` there dies, once."""
    return tmp_path_factory.mktemp("crash") / "media"


@pytest.fixture(scope="module", autouse=True)
def ray_cluster(crash_folder: Path) -> Iterator[None]:
    # The test hooks every worker process reads (README, "Development"): Ray's workers too.
    hooks = {
        "NVMEDIA_TEST_WORKER_EXIT": str(crash_folder / CRASH_NAME),
        "NVMEDIA_TEST_WORKER_EXIT_ONCE": str(crash_folder.parent / "crashed-once"),
    }
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=150 * 1024 * 1024,
        log_to_driver=False,
        runtime_env={"env_vars": hooks},
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
    age(folder)  # files modified just now are hashed (resume records): two runs must see the same state
    return folder


def records_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run_prepare(args: list[str], out: Path) -> tuple[int, list[dict[str, Any]]]:
    code = main(["prepare", *args, "-o", str(out)])
    return code, records_of(out) if out.exists() else []


def without_kept(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records without the fields naming the --keep folder (two runs keep into two folders)."""
    plain = []
    for record in records:
        record = {k: v for k, v in record.items() if k not in ("kept", "kept_bytes_b64")}
        if "resume" in record:
            options = {k: v for k, v in record["resume"]["options"].items() if k != "keep"}
            record["resume"] = {**record["resume"], "options": options}
        plain.append(record)
    return plain


# -- the same records as the local engine --------------------------------------------------------------


@pytest.fixture(scope="module")
def local_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """The local engine's dry run over the corpus, with its kept files.

    Run as a user runs it, in a process of its own: Pillow's pixel limit, which a few records
    quote, is process-wide state that earlier tests in this process may have raised.
    """
    folder = tmp_path_factory.mktemp("local-corpus")
    args = ["prepare", str(CORPUS), "--dry-run", "--keep", str(folder / "kept"), "-o", str(folder / "m.jsonl")]
    env = {**os.environ, "NVMEDIA_CACHE_DIR": str(folder / "cache"), "NVMEDIA_OUTPUT_CACHE_SIZE": "0"}
    done = subprocess.run([sys.executable, "-m", "nvmedia", *args], capture_output=True, env=env, timeout=600)
    assert done.returncode == 1, done.stderr  # the corpus holds broken files on purpose
    return folder / "kept", records_of(folder / "m.jsonl")


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


def test_prepare_dataset_of_bytes_uploads_as_the_readme_shows(small_folder: Path, emu: NVCFEmulator) -> None:
    # README's own example: read_binary_files(..., include_paths=True), column="bytes", uploads on.
    files = [small_folder / "a.png", small_folder / "c.mp3"]
    ds = ray.data.read_binary_files([str(p) for p in files], include_paths=True)
    rows = nvmedia.ray.prepare_dataset(
        ds, column="bytes", mode="asset", job="bytes-job", assets_url=emu.assets_url, api_key=KEY, cache=False
    ).take_all()
    assert set(rows[0]) == {"path", *RECORD_COLUMNS}
    records = [row_to_record(row) for row in rows]
    assert sorted(Path(r["source"]).name for r in records) == ["a.png", "c.mp3"]
    assert all(r["status"] == "ok" and r["delivery"] == "asset" for r in records), records
    assert sorted(a.asset_id for a in emu.assets(KEY)) == sorted(r["asset_id"] for r in records)


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


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Names that test --keep and the manifest: equal names in two folders, names differing only in
    their extension, a name that is not UTF-8, a broken file and a text file."""
    folder = tmp_path_factory.mktemp("mixed") / "in"
    for rel, original in {
        "sub1/x.png": "pillow__hopper.png",
        "sub2/x.png": "pillow__hopper_gray.jpg",  # not a PNG inside: converted, still kept as x.png's sibling
        "a.gif": "pillow__hopper.gif",
        "a.bmp": "pillow__hopper.bmp",
        "broken.png": "pillow__truncated_image.png",
        "notes.txt": "SOURCES.md",
    }.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CORPUS / original, folder / rel)
    shutil.copyfile(CORPUS / "pillow__hopper.webp", os.path.join(os.fsencode(folder), b"caf\xe9.webp"))
    age(folder)
    return folder


def mixed_inputs(folder: Path) -> list[str]:
    """The folder, then files given alone: two named x.png, and one file twice."""
    return [str(folder), str(folder / "sub1" / "x.png"), str(folder / "sub2" / "x.png"), *[str(folder / "a.bmp")] * 2]


@pytest.mark.parametrize(
    "options",
    [["--keep", "{keep}"], ["--max-memory", "16K"], ["-q", "--keep", "{keep}"]],
    ids=["keep", "max-memory", "quiet"],
)
def test_ray_gives_the_local_engines_records_kept_names_and_stderr(
    mixed_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str]
) -> None:
    runs = {}
    for engine in ("local", "ray"):
        keep = tmp_path / f"kept-{engine}"
        args = [*mixed_inputs(mixed_folder), "--dry-run", "--engine", engine]
        args += [option.format(keep=keep) for option in options]
        capsys.readouterr()
        code, records = run_prepare(args, tmp_path / f"{engine}.jsonl")
        err = capsys.readouterr().err
        runs[engine] = (code, records, keep, [line.split(" -> ")[0] for line in err.splitlines()])
    (code, local, kept_local, err_local), (code_ray, on_ray, kept_ray, err_ray) = runs["local"], runs["ray"]
    assert code == code_ray == 1
    assert without_kept(on_ray) == without_kept(local)
    assert err_ray == err_local
    if "-q" in options:
        assert err_ray == []
    else:
        assert err_ray[-1].startswith("11 inputs: ")
    if "--max-memory" in options:
        assert {r["error"]["code"] for r in on_ray if r["status"] == "error"} == {"too_large"}
    if "--keep" in options:
        kept = [kept_path(r) for r in on_ray if r["status"] == "ok"]
        assert len(kept) == len(set(kept)) == 9  # no two items share a kept path
        for mine, theirs in zip(on_ray, local, strict=True):
            if mine["status"] == "ok":
                assert kept_path(mine).relative_to(kept_ray) == kept_path(theirs).relative_to(kept_local)
                assert sha256_file(kept_path(mine)) == mine["output"]["sha256"]


def test_a_relative_keep_folder_is_recorded_as_given_on_both_engines(
    small_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runs = {}
    for engine in ("local", "ray"):
        code, records = run_prepare(
            [str(small_folder), "--dry-run", "--keep", "kept", "--engine", engine], Path(f"{engine}.jsonl")
        )
        runs[engine] = records
    assert runs["ray"] == runs["local"]
    assert {r["kept"] for r in runs["ray"] if r["status"] == "ok"} >= {"kept/a.png"}


def kept_path(record: dict[str, Any]) -> Path:
    """The exact kept path of a record (its bytes, when the name is not UTF-8)."""
    if "kept_bytes_b64" in record:
        return Path(os.fsdecode(base64.b64decode(record["kept_bytes_b64"])))
    return Path(record["kept"])


def test_prepare_dataset_keeps_each_source_under_its_own_name(tmp_path: Path) -> None:
    for folder, original in (("d1", "pillow__hopper.png"), ("d2", "pillow__hopper_gray.jpg")):
        (tmp_path / folder).mkdir()
        shutil.copyfile(CORPUS / original, tmp_path / folder / "x.png")
    ds = ray.data.from_items([{"path": str(tmp_path / d / "x.png")} for d in ("d1", "d2")])
    rows = nvmedia.ray.prepare_dataset(ds, dry_run=True, keep=tmp_path / "kept").take_all()
    kept = {Path(row["path"]).parent.name: Path(row["kept"]) for row in rows}
    # The CLI's names for files given alone, in the Dataset's order (d2/x.png holds a JPEG: kept whole + .jpg)
    assert kept == {"d1": tmp_path / "kept" / "x.png", "d2": tmp_path / "kept" / "x~2.png.jpg"}
    for row in rows:
        assert sha256_file(Path(row["kept"])) == json.loads(row["output"])["sha256"]
    twice = ray.data.from_items([{"path": str(tmp_path / "d1" / "x.png")}] * 2)
    with pytest.raises(ConfigError, match="appears more than once"):
        nvmedia.ray.prepare_dataset(twice, dry_run=True, keep=tmp_path / "kept2")


def test_max_memory_on_ray_is_each_workers_budget_and_a_hint_past_the_node_still_runs() -> None:
    ds = ray.data.from_items([{"path": str(CORPUS / "pillow__hopper.bmp")}])  # decoded to be converted
    (tight,) = nvmedia.ray.prepare_dataset(ds, dry_run=True, max_memory="16K").take_all()
    assert tight["status"] == "error" and json.loads(tight["error"])["code"] == "too_large"
    (roomy,) = nvmedia.ray.prepare_dataset(ds, dry_run=True, max_memory="1T").take_all()  # more than the node has
    assert roomy["status"] == "ok"


def test_resume_on_ray_keeps_the_unchanged_records_and_redoes_the_rest(
    small_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.jsonl"
    code, full = run_prepare([str(small_folder), "--dry-run"], out)
    assert code == 1 and len(full) == 7
    out.write_text("".join(line + "\n" for i, line in enumerate(out.read_text().splitlines()) if i not in (2, 3)))
    capsys.readouterr()
    code, resumed = run_prepare([str(small_folder), "--dry-run", "--engine", "ray", "--resume"], out)
    assert code == 1 and resumed == full
    assert "; 5 kept from " in capsys.readouterr().err.splitlines()[-1]


# -- a worker killed mid-task -----------------------------------------------------------------------------


def test_worker_killed_mid_task_changes_nothing_in_the_output(small_folder: Path, crash_folder: Path) -> None:
    shutil.copytree(small_folder, crash_folder)
    shutil.copyfile(CORPUS / "pillow__flower.jpg", crash_folder / CRASH_NAME)
    age(crash_folder)
    marker = crash_folder.parent / "crashed-once"
    _, local = run_prepare([str(crash_folder), "--dry-run"], crash_folder.parent / "l.jsonl")
    assert not marker.exists()
    code, on_ray = run_prepare([str(crash_folder), "--dry-run", "--engine", "ray"], crash_folder.parent / "r.jsonl")
    assert marker.exists(), "the worker holding crash-me.png must have died once"
    assert code == 1 and on_ray == local
    assert [r["status"] for r in on_ray if r["source"].endswith(CRASH_NAME)] == ["ok"]


# -- stopped by a signal ------------------------------------------------------------------------------------


HANG_GUARD_S = 300
"""Only a guard against a hang (a local Ray cluster takes seconds to start on a loaded machine), never the verdict."""


def _read_until(fd: int, needle: bytes) -> bytes:
    return read_until(fd, needle, HANG_GUARD_S)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_sigterm_on_ray_writes_every_finished_record_stops_ray_and_exits_143(tmp_path: Path) -> None:
    # 16 files make two tasks of 8: the first finishes (its broken file is reported), the second
    # is held at its 5th file (the test hook) until the run is stopped.
    folder = tmp_path / "in"
    folder.mkdir()
    names = [f"{i:02d}.bmp" for i in range(16)]
    names[5] = "05-broken.png"
    for name in names:
        shutil.copyfile(CORPUS / ("pillow__truncated_image.png" if "broken" in name else "pillow__hopper.bmp"),
                        folder / name)  # fmt: skip
    out = tmp_path / "m.jsonl"
    env = {**os.environ, "NVMEDIA_TEST_WORKER_HOLD": str(folder / names[12])}
    args = ["prepare", str(folder), "--engine", "ray", "-j", "2", "--dry-run", "--mode", "asset", "-o", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "nvmedia", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)  # fmt: skip
    assert proc.stderr is not None
    try:
        _read_until(proc.stderr.fileno(), b"05-broken.png: corrupt_media: ")  # the first task's records are in
        ray_pids = _descendants(proc.pid) - {proc.pid}
        assert ray_pids, "the local Ray cluster should be running"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=HANG_GUARD_S)
    finally:
        if proc.poll() is None:  # a failed check: leave no cluster behind
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=HANG_GUARD_S)

    assert proc.returncode == 143, stderr.decode()
    records = [json.loads(line) for line in out.read_text().splitlines()]  # every line whole
    assert [Path(r["source"]).name for r in records] == names[:8]
    assert not [pid for pid in ray_pids if _alive(pid)]
    last = stderr.decode().splitlines()[-1]
    assert last.startswith("interrupted by SIGTERM after 8 inputs: 7 ok, 0 skipped, 1 error"), last
    assert not list(tmp_path.glob(".m.jsonl*"))


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


def test_a_job_references_only_its_own_assets_so_deleting_another_job_breaks_nothing(
    small_folder: Path, tmp_path: Path, emu: NVCFEmulator, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("NVMEDIA_CACHE_DIR", str(tmp_path / "cache"))  # the asset-id cache on, as users have it
    args = [str(small_folder / "a.png"), "--engine", "ray", "--mode", "asset", "--assets-url", emu.assets_url,
            "--api-key", KEY]  # fmt: skip
    jobs, ids = [], []
    for run in ("a", "b"):
        capsys.readouterr()
        code, records = run_prepare(args, tmp_path / f"{run}.jsonl")
        found = re.search(r"Ray job (\S+):", capsys.readouterr().err)
        assert code == 0 and found is not None
        jobs.append(found.group(1))
        ids.append(records[0]["asset_id"])
    assert ids[0] != ids[1]  # job b uploaded its own copy instead of reusing job a's
    assert main(["assets", "--assets-url", emu.assets_url, "--api-key", KEY, "delete", "--job", jobs[0]]) == 0
    assert [a.asset_id for a in emu.assets(KEY)] == [ids[1]]  # job b's manifest still holds
    assert main(["assets", "--assets-url", emu.assets_url, "--api-key", KEY, "delete", "--job", jobs[1]]) == 0
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


def test_a_later_dataset_of_a_job_never_hands_out_an_asset_deleted_since(tmp_path: Path, emu: NVCFEmulator) -> None:
    options: dict[str, Any] = {"mode": "asset", "cache": False, "assets_url": emu.assets_url, "api_key": KEY}
    ds = ray.data.from_items([{"path": str(CORPUS / "pillow__hopper.png")}])
    (first,) = nvmedia.ray.prepare_dataset(ds, job="j-gone", **options).take_all()
    assert main(["assets", "--assets-url", emu.assets_url, "--api-key", KEY, "delete", "--job", "j-gone"]) == 0
    (second,) = nvmedia.ray.prepare_dataset(ds, job="j-gone", **options).take_all()
    assert second["status"] == "ok" and second["asset_id"] != first["asset_id"]
    assert [a.asset_id for a in emu.assets(KEY)] == [second["asset_id"]]  # uploaded again, and live
    (third,) = nvmedia.ray.prepare_dataset(ds, job="j-gone", **options).take_all()
    assert third["asset_id"] == second["asset_id"] and emu.upload_count == 2  # a live one is still reused


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


def test_delete_job_goes_on_past_an_asset_whose_description_cannot_be_read(
    emu: NVCFEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    with nvmedia.AssetClient(api_key=KEY, base_url=emu.assets_url) as client:
        mine = [client.upload_file(CORPUS / "pillow__hopper.png", "image/png", "nvmedia job j-8") for _ in range(3)]
    emu.inject("500", times=50, path_prefix=f"{ASSETS_PATH}/{mine[0]}", method="GET")
    capsys.readouterr()
    assert main(["assets", "--assets-url", emu.assets_url, "--api-key", KEY, "delete", "--job", "j-8"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert sorted(lines[:2]) == sorted(f"deleted {i}" for i in mine[1:])
    assert lines[2].startswith(f"failed {mine[0]}: its description could not be read")
    assert [a.asset_id for a in emu.assets(KEY)] == [mine[0]]  # not deleted: it may be another job's


# -- nvmedia batch on Ray ------------------------------------------------------------------------------------


def test_batch_on_ray_gives_the_local_engines_answers_and_leaves_no_asset(
    small_folder: Path, tmp_path: Path, emu: NVCFEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = ["--base-url", f"{emu.base_url}/v1", "--assets-url", emu.assets_url, "--api-key", KEY]
    runs = {}
    for engine in ("local", "ray"):
        out = tmp_path / f"{engine}.jsonl"
        args = ["batch", "What is this?", str(small_folder), *endpoint, "--mode", "asset", "-j", "2"]
        code = main([*args, "--engine", engine, "-o", str(out)])
        records = [{k: v for k, v in r.items() if k != "latency_s"} for r in records_of(out)]
        runs[engine] = (code, records, capsys.readouterr().err.splitlines()[-1])
    (code, local, summary), (code_ray, on_ray, summary_ray) = runs["local"], runs["ray"]
    assert code == code_ray == 1  # the broken PNG is an error in both
    assert on_ray == local
    assert [r["status"] for r in on_ray].count("ok") == 4
    assert summary_ray.split(";")[0] == summary.split(";")[0]
    assert emu.chat_count == 8 and emu.assets(KEY) == []  # each request deleted what it uploaded


def test_sigterm_to_batch_on_ray_prints_the_summary_stops_ray_and_exits_143(
    small_folder: Path, tmp_path: Path, emu: NVCFEmulator
) -> None:
    arrived, release = threading.Event(), threading.Event()

    def hold(ex: Exchange) -> None:
        arrived.set()
        release.wait(HANG_GUARD_S)
        ex.answer("late")

    out = tmp_path / "answers.jsonl"
    with chat_server(hold) as server:
        args = ["batch", "What is this?", str(small_folder), "--engine", "ray", "-j", "1", "--mode", "asset",
                "--base-url", server.base_url, "--assets-url", emu.assets_url, "-o", str(out)]  # fmt: skip
        env = {**os.environ, "NVIDIA_API_KEY": KEY}
        proc = subprocess.Popen([sys.executable, "-m", "nvmedia", *args], stderr=subprocess.PIPE, text=True, env=env)
        try:
            assert arrived.wait(HANG_GUARD_S), "a Ray task should have sent its first request"
            ray_pids = _descendants(proc.pid) - {proc.pid}
            assert ray_pids, "the local Ray cluster should be running"
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=HANG_GUARD_S)
        finally:
            release.set()
            if proc.poll() is None:  # a failed check: leave no cluster behind
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == 143, err
    lines = err.splitlines()
    assert lines[-1] == "nvmedia: interrupted by SIGTERM", err
    assert lines[-2].startswith("0 requests: 0 answered, 0 skipped, 0 errors; ") and lines[-2].endswith(
        f"-> {out} (interrupted)"
    ), err
    assert not [pid for pid in ray_pids if _alive(pid)]  # its tasks stopped with it: no upload goes on


def test_batch_address_without_the_ray_engine_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["batch", "Hi", "x.png", "--address", "auto", "--api-key", KEY]) == 2
    assert "--address goes with --engine ray" in capsys.readouterr().err


# -- usage errors, Ray missing, loopback only -------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["prepare", "x.png", "--engine", "ray", "--group", "dir"], "--group dir is not available with --engine ray"),
        (["prepare", "x.png", "--address", "auto"], "--address goes with --engine ray"),
        (["prepare", "x.png", "--engine", "ray", "--address", "example"], "does not name a Ray cluster"),
        (["prepare", "x.png", "--output-format", "parquet"], "writes a folder, not stdout"),
        (["prepare", "x.png", "--output-format", "parquet", "-o", "out", "--resume"], "do not go together"),
        (["assets", "--api-key", KEY, "delete", "--job", "j", "--all"], "one of them"),
        (["assets", "--api-key", KEY, "--assets-url", "http://127.0.0.1:9", "delete", "--job", "a b"], "not usable"),
    ],
)
def test_usage_errors_are_exit_2_with_a_reason(args: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    assert says in capsys.readouterr().err


@pytest.mark.parametrize("command", ["prepare", "batch"])
def test_an_address_where_no_cluster_listens_is_exit_2_not_a_hang(tmp_path: Path, command: str) -> None:
    # A fresh process: this module's own Ray session would otherwise be joined whatever the address.
    words = ["Hi"] if command == "batch" else []
    args = [command, *words, str(CORPUS / "pillow__hopper.png"), "--engine", "ray", "--address", "127.0.0.1:1",
            "--emulate", "-o", str(tmp_path / "out.jsonl")]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "nvmedia", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "cannot reach a Ray cluster at --address ray://127.0.0.1:1: connection refused" in done.stderr
    if command == "prepare":
        assert not (tmp_path / "out.jsonl").exists()


def test_bad_options_of_prepare_dataset_raise_config_error() -> None:
    ds = ray.data.from_items([{"input": "x.png"}])
    with pytest.raises(ConfigError, match=r"has no column 'nope' \(its columns: input\)"):
        nvmedia.ray.prepare_dataset(ds, column="nope")  # refused on the driver, not inside a Ray task
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
    assert "Ray is not installed" in cli.stderr and 'pip install "nvmedia[ray]"' in cli.stderr
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
