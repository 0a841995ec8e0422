"""`nvmedia assets` and `nvmedia emulator` against the real emulator."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from support import CORPUS

import nvmedia
from nvmedia.cli import main
from nvmedia.testing import NVCFEmulator

KEY = "nvapi-cli-assets-key"


@pytest.fixture()
def emu() -> Iterator[NVCFEmulator]:
    with NVCFEmulator() as emulator:
        yield emulator


def _upload_two(emu: NVCFEmulator) -> list[str]:
    with nvmedia.AssetClient(api_key=KEY, base_url=emu.assets_url) as client:
        return [client.upload_file(CORPUS / "pillow__hopper.png", "image/png") for _ in range(2)]


def test_assets_list_prints_one_id_per_line(emu: NVCFEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    ids = _upload_two(emu)
    assert main(["assets", "--assets-url", emu.assets_url, "--api-key", KEY, "list"]) == 0
    assert sorted(capsys.readouterr().out.split()) == sorted(ids)


def test_assets_delete_by_id_and_all(emu: NVCFEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = _upload_two(emu)
    assert main(["assets", "--assets-url", emu.assets_url, "--api-key", KEY, "delete", first]) == 0
    assert [a.asset_id for a in emu.assets(KEY)] == [second]
    assert main(["assets", "--assets-url", emu.assets_url, "--api-key", KEY, "delete", "--all"]) == 0
    assert emu.assets(KEY) == []
    assert f"deleted {first}" in capsys.readouterr().out


def test_assets_without_a_key_is_exit_2(
    emu: NVCFEmulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NVIDIA_API_KEY", raising=False)
    assert main(["assets", "--assets-url", emu.assets_url, "list"]) == 2
    assert "NVIDIA_API_KEY" in capsys.readouterr().err


def test_emulator_command_prints_its_url_first_and_serves() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nvmedia", "emulator", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        response = httpx.get(base_url + "/v2/nvcf/assets", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
        assert response.status_code == 200 and response.json() == {"assets": []}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
