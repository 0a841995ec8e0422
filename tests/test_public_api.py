from __future__ import annotations

import subprocess
import sys

import nvmedia


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert nvmedia.__all__ == sorted(nvmedia.__all__)
    for name in nvmedia.__all__:
        assert getattr(nvmedia, name) is not None


def test_importing_nvmedia_does_not_load_heavy_modules() -> None:
    heavy = "('PIL', 'av', 'httpx', 'ffmpeg', 'pydub')"
    code = f"import sys, nvmedia.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_error_codes_are_the_contract_strings() -> None:
    err = nvmedia.MediaError("x is 5, limit 4", code="too_large", hint="shrink it")
    assert err.to_dict() == {"code": "too_large", "message": "x is 5, limit 4", "hint": "shrink it"}
    assert isinstance(err, nvmedia.NVMediaError)
