from __future__ import annotations

import json
from pathlib import Path

import pytest

from nvmedia.errors import ConfigError
from nvmedia.profiles import GENERIC, NEMOTRON_3_NANO_OMNI, get_profile


def test_default_profile_has_the_model_card_limits() -> None:
    p = get_profile(None)
    assert p is NEMOTRON_3_NANO_OMNI
    assert p.max_image_pixels == 13_312 * 16 * 16
    assert p.max_video_s == 120 and p.max_audio_s == 3600 and p.min_sample_rate == 8000
    assert p.video_formats == ("mp4",) and p.inline_limit == 180_000 and p.max_assets == 10


def test_generic_profile_has_no_duration_or_pixel_caps() -> None:
    assert GENERIC.max_image_pixels is None and GENERIC.max_video_s is None
    assert set(GENERIC.video_formats) == {"mp4", "mov", "webm"}


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(ConfigError) as err:
        get_profile("gpt-17")
    assert "generic" in err.value.message and "nemotron-3-nano-omni" in err.value.message


def test_profile_from_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "small.toml"
    path.write_text(
        'base = "nemotron-3-nano-omni"\nname = "small"\nmax_image_pixels = 1000000\nimage_formats = ["jpeg"]\n'
    )
    p = get_profile(str(path))
    assert p.name == "small" and p.max_image_pixels == 1_000_000 and p.image_formats == ("jpeg",)
    assert p.max_video_s == 120  # inherited from the base


def test_profile_from_json_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"inline_limit": 50000}))
    p = get_profile(str(path))
    assert p.name == "mine" and p.inline_limit == 50_000 and p.max_video_s is None


def test_profile_file_with_unknown_key_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"max_pixelz": 5}))
    with pytest.raises(ConfigError) as err:
        get_profile(str(path))
    assert "max_pixelz" in err.value.message
