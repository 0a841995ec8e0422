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
        [sys.executable, "-m", "nvmedia", "emulator", "--port", "0", "--latency-chat", "0.01"],
        stdout=subprocess.PIPE,
        text=True,
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


# -- delete reports each id and goes on past failures (issue 7 item 12, issue 8 item 4) --------------


def test_assets_delete_of_an_unknown_id_says_not_found_and_exits_1(
    emu: NVCFEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    (kept, _) = _upload_two(emu)
    ghost = "b5b841c3-11c2-4c34-b057-9475e82c5369"
    code = main(["assets", "--assets-url", emu.assets_url, "--api-key", KEY, "delete", ghost, kept])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out == [f"not found {ghost}", f"deleted {kept}"]


def test_assets_delete_all_goes_on_past_a_failure_and_exits_1(
    emu: NVCFEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = _upload_two(emu)
    # Every attempt to delete `first` is refused with 429 (Retry-After 0, so retries cost no time).
    emu.inject("429", times=50, method="DELETE", path_prefix=f"/v2/nvcf/assets/{first}", retry_after=0)
    code = main(["assets", "--assets-url", emu.assets_url, "--api-key", KEY, "delete", "--all"])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert f"deleted {second}" in out
    (failed,) = [line for line in out if line.startswith(f"failed {first}: ")]
    assert "429" in failed
    assert [a.asset_id for a in emu.assets(KEY)] == [first]


def test_assets_options_are_accepted_after_the_action(emu: NVCFEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    ids = _upload_two(emu)
    assert main(["assets", "list", "--assets-url", emu.assets_url, "--api-key", KEY]) == 0
    assert sorted(capsys.readouterr().out.split()) == sorted(ids)
    assert main(["assets", "delete", ids[0], "--api-key", KEY, "--assets-url", emu.assets_url]) == 0
    assert capsys.readouterr().out.split() == ["deleted", ids[0]]
