"""Every file of the real-world corpus through `nvmedia prepare --dry-run`, checked against expectations.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support import CORPUS, corpus_expectations

from nvmedia.cli import main
from nvmedia.sniff import sniff_path

ACCEPTED = {
    "image": {"image/png", "image/jpeg", "image/webp"},
    "audio": {"audio/wav", "audio/mpeg"},
    "video": {"video/mp4"},
}


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out_dir = tmp_path_factory.mktemp("corpus-run")
    manifest = out_dir / "manifest.jsonl"
    exit_code = main(["prepare", str(CORPUS), "--dry-run", "--keep", str(out_dir / "kept"), "-o", str(manifest)])
    assert exit_code == 1  # the corpus holds broken files on purpose
    records = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    return {Path(r["source"]).name: r for r in records}


def test_every_corpus_file_has_exactly_one_record(corpus_run: dict[str, dict[str, Any]]) -> None:
    assert sorted(corpus_run) == sorted(e["file"] for e in corpus_expectations())


@pytest.mark.parametrize("entry", corpus_expectations(), ids=lambda e: e["file"])
def test_corpus_outcome_matches_expectation(entry: dict[str, Any], corpus_run: dict[str, dict[str, Any]]) -> None:
    record = corpus_run[entry["file"]]
    expect = entry["expect"]
    codes = {entry.get("error_code"), *(entry.get("alt_error_codes") or [])} - {None}
    status = record["status"]
    if expect == "ok":
        assert status == "ok", record.get("error")
    elif expect == "error":
        assert status == "error", f"expected {entry['error_code']}, got {status}"
        assert record["error"]["code"] in codes
    elif expect == "ok_or_error":
        assert status in ("ok", "error")
        if status == "error":
            assert record["error"]["code"] in codes
    elif expect == "skipped_or_error":
        assert status in ("skipped", "error")
        if status == "error":
            assert record["error"]["code"] in codes
    if status == "error":
        assert record["error"]["message"] and record["error"]["hint"]
    if status != "ok":
        return
    kind = record["kind"]
    if entry.get("kind"):
        assert kind == entry["kind"]
    assert record["output"]["mime"] in ACCEPTED[kind]
    kept = Path(record["kept"])
    assert sniff_path(kept).mime == record["output"]["mime"], "the kept file must really be what the record says"
    if "passthrough-ok" in (entry.get("checks") or []) and record["actions"] == []:
        assert kept.read_bytes() == (CORPUS / entry["file"]).read_bytes()
    if "first-frame" in (entry.get("checks") or []):
        assert record["warnings"], "dropping frames or pages must be reported"
    if kind == "image":
        assert record["output"]["width"] * record["output"]["height"] <= 3_407_872
