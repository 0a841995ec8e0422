"""Fuzzing (issue 7, item 9 and "Fuzzing in CI"): hostile inputs end as precise NVMediaErrors.

Two parts:

- every regression file in ``fixtures/fuzz/`` (inputs fuzz/run.py found reaching users as
  "unexpected ...; please report it") gets its own precise code and message;
- a short, derandomized Hypothesis run of ``fuzz/target.py`` over mutants of the small corpus
  files: nothing but an ``NVMediaError`` comes out of sniff, probe and normalize, and every
  ``ok`` output fully decodes. The long run is ``python fuzz/run.py`` (fuzz/README.md).
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import ROOT

import nvmedia

sys.path.insert(0, str(ROOT / "fuzz"))
from target import FUZZ_FIXTURES, check, mutate, seeds  # noqa: E402

# file -> (code, words the message must contain): each a failure mode of one decoder.
REGRESSIONS = {
    "tiff_missing_dimensions.tiff": ("corrupt_media", "lacks the image's width or height"),
    "tiff_missing_strip_tag.tiff": ("corrupt_media", "tag 320 (ColorMap) is missing"),
    "avifs_undecodable_planes.avifs": ("corrupt_media", "the codec cannot decode it"),
    "heif_extent_past_end.heif": ("corrupt_media", "the file ends before its data"),
    "bmp_rle_short_data.bmp": ("corrupt_media", "pixel data is shorter than declared"),
    "gif_tile_outside_image.gif": ("corrupt_media", "lies outside the image"),
    "gif_block_past_end.gif": ("corrupt_media", "a block ends before its declared size"),
    "wav_unknown_codec.wav": ("unsupported_format", "audio stream uses a codec libav has no decoder for"),
    "mp4_audio_without_decoder.mp4": ("unsupported_format", "audio stream uses a codec libav has no decoder for"),
    "mp4_video_without_decoder.mp4": ("unsupported_format", "video stream uses a codec libav has no decoder for"),
}


def test_every_fuzz_fixture_has_its_expectation() -> None:
    assert sorted(p.name for p in FUZZ_FIXTURES.iterdir()) == sorted(REGRESSIONS)


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_fuzzed_file_gets_a_precise_error_not_please_report_it(name: str) -> None:
    code, words = REGRESSIONS[name]
    item = nvmedia.inspect(FUZZ_FIXTURES / name)
    assert item.status == "error" and item.error is not None
    assert item.error.code == code, item.error.message
    assert words in item.error.message
    assert "unexpected" not in item.error.message and "please report" not in item.error.hint
    assert item.error.hint


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_fuzz_target_finds_nothing_in_the_regression_files(name: str, tmp_path: Path) -> None:
    assert check(FUZZ_FIXTURES / name, tmp_path) is None


SEEDS = seeds(max_bytes=128 * 1024)


@settings(max_examples=500, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(origin=st.sampled_from(SEEDS), mutation_seed=st.integers(0, 2**32 - 1))
def test_fuzzed_corpus_fails_only_with_nvmedia_errors_and_ok_outputs_decode(origin: Path, mutation_seed: int) -> None:
    data = mutate(origin.read_bytes(), random.Random(mutation_seed))
    with tempfile.TemporaryDirectory(prefix="nvmedia-fuzz-") as tmp:
        path = Path(tmp) / f"mutant{origin.suffix}"
        path.write_bytes(data)
        work = Path(tmp) / "work"
        work.mkdir()
        finding = check(path, work)
    assert finding is None, (
        f"{origin.name} mutated with seed {mutation_seed}: {finding.rule}: {finding.detail}\n{finding.trace}"
    )
