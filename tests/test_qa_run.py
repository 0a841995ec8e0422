"""Findings of the QA pass on chat, batch, the emulator, --keep, names and temporary folders.

Each test reproduces one finding as a user meets it (the command line, real files, the real
emulator over loopback) and pins the behaviour that replaced it.
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from chat_server import Exchange, chat_server
from PIL import Image
from support import CORPUS

from nvmedia.chat import ChatParams
from nvmedia.cli import main
from nvmedia.errors import ConfigError
from nvmedia.ffmpeg import find_ffmpeg
from nvmedia.testing import NVCFEmulator
from nvmedia.workdirs import OWNER_FILE, Owner

HOPPER = CORPUS / "pillow__hopper.png"
BROKEN = CORPUS / "pillow__truncated_image.png"
KEY = "nvapi-test-key-qa"


@pytest.fixture(autouse=True)
def no_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NVIDIA_API_KEY", raising=False)
    monkeypatch.delenv("NVMEDIA_ASSETS_URL", raising=False)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def nvmedia(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nvmedia", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


# -- #2: control characters in names ------------------------------------------------------------------------


def _names_with_control_characters(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("bad\nname.png", "tab\there.png", "esc\x1b[31mred.png"):
        shutil.copy(BROKEN, folder / name)
    return folder


def test_control_characters_in_names_are_escaped_on_stderr_one_line_per_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _names_with_control_characters(tmp_path)
    code = main(["prepare", str(folder), "--dry-run", "-o", str(tmp_path / "m.jsonl")])
    lines = capsys.readouterr().err.splitlines()
    assert code == 1
    assert len(lines) == 4 and lines[-1].startswith("3 inputs: 0 ok, 0 skipped, 3 errors")
    assert lines[0].startswith(f"{folder}/bad\\nname.png: corrupt_media: bad\\nname.png: ")
    assert lines[1].startswith(f"{folder}/esc\\x1b[31mred.png: corrupt_media: ")
    assert lines[2].startswith(f"{folder}/tab\\there.png: corrupt_media: ")
    assert not any(c in "".join(lines) for c in "\t\x1b\r")


def test_control_characters_in_names_are_escaped_by_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _names_with_control_characters(tmp_path)
    code = main(["inspect", str(folder / "bad\nname.png")])
    out = capsys.readouterr().out
    assert code == 1
    heading, given, error, hint = out.splitlines()
    assert heading == f"{folder}/bad\\nname.png" and given.startswith("  input:   image ")
    assert error.startswith("  error:   corrupt_media: bad\\nname.png: ") and hint.startswith("  hint:    ")


def test_control_characters_in_names_are_escaped_in_batch_error_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _names_with_control_characters(tmp_path)
    code = main(["batch", "Describe.", str(folder / "bad\nname.png"), "--emulate", "-o", str(tmp_path / "a.jsonl")])
    lines = capsys.readouterr().err.splitlines()
    assert code == 1 and len(lines) == 2
    assert lines[0].startswith(f"nvmedia: error: {folder}/bad\\nname.png: corrupt_media: bad\\nname.png: ")


# -- #5: batch --resume and what shaped an answer ---------------------------------------------------------------


@pytest.fixture
def emu() -> Iterator[NVCFEmulator]:
    with NVCFEmulator() as emulator:
        yield emulator


def endpoint(emu: NVCFEmulator) -> list[str]:
    return ["--base-url", f"{emu.base_url}/v1", "--assets-url", emu.assets_url, "--api-key", KEY]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(HOPPER, folder / "portrait.png")
    shutil.copy(CORPUS / "pillow__flower.jpg", folder / "flower.jpg")
    return folder


def test_batch_resume_refuses_answers_asked_with_another_prompt_model_or_parameters(
    emu: NVCFEmulator, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "answers.jsonl"
    first = ["batch", "Describe this photo.", str(photos), "-o", str(out), *endpoint(emu)]
    assert main(first) == 0
    capsys.readouterr()
    answered = out.read_text(encoding="utf-8")
    asked = [r["asked"] for r in records(out)]
    assert all(a["model"] == "nvidia/nemotron-3-nano-omni-30b-a3b-reasoning" and a["max_tokens"] is None for a in asked)
    assert len({a["prompt_sha256"] for a in asked}) == 1 and "Describe" not in json.dumps(asked)

    other_prompt = ["batch", "How many people are in this photo?", str(photos), "-o", str(out), *endpoint(emu)]
    assert main([*other_prompt, "--resume"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("nvmedia: error: --resume: 2 answers in ") and "another prompt" in err[0]

    assert main([*first, "--resume", "-m", "some/other-model", "--max-tokens", "5", "--temperature", "0.2"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "--model (nvidia/nemotron-3-nano-omni-30b-a3b-reasoning, now some/other-model)" in line
    assert "--max-tokens (none, now 5)" in line and "--temperature (none, now 0.2)" in line
    assert "prompt" not in line.split("(")[0]
    assert out.read_text(encoding="utf-8") == answered  # nothing lost, nothing rewritten
    uploads = emu.upload_count

    assert main([*first, "--resume"]) == 0
    assert "0 requests: 0 answered, 0 skipped, 0 errors; 2 already answered (--resume)" in capsys.readouterr().err
    assert emu.upload_count == uploads


def test_batch_resume_with_per_input_prompts_refuses_only_when_a_prompt_changed(
    emu: NVCFEmulator, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, prompts = tmp_path / "answers.jsonl", tmp_path / "prompts.jsonl"

    def write_prompts(flower: str) -> None:
        lines = [
            {"source": "photos/portrait.png", "prompt": "Who is it?"},
            {"source": "photos/flower.jpg", "prompt": flower},
        ]
        prompts.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")

    write_prompts("Which flower?")
    args = ["batch", "--prompt-file", str(prompts), "-o", str(out), *endpoint(emu)]
    assert main(args) == 0
    assert main([*args, "--resume"]) == 0
    capsys.readouterr()
    write_prompts("What colour is it?")
    assert main([*args, "--resume"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "1 answer in " in line and "another prompt" in line


# -- #18: a failing input of a group --------------------------------------------------------------------------


def test_batch_group_reports_a_failing_input_counts_it_and_resume_asks_the_group_again(
    emu: NVCFEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "g"
    folder.mkdir()
    shutil.copy(HOPPER, folder / "hopper.png")
    shutil.copy(BROKEN, folder / "broken.png")
    (folder / "notes.txt").write_text("not media\n")
    out = tmp_path / "b.jsonl"
    args = ["batch", "Describe.", str(folder), "--group", "all", "-o", str(out), *endpoint(emu)]
    assert main(args) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].startswith(f"nvmedia: error: {folder}/broken.png: corrupt_media: broken.png: ")
    assert err[1].startswith("2 requests: 1 answered, 1 skipped, 0 errors; 1 input failed (left out of its request);")
    (group,) = [r for r in records(out) if r["status"] == "ok"]
    assert group["answer"].startswith("received 1 image") and len(group["failed"]) == 1

    shutil.copy(CORPUS / "pillow__flower.jpg", folder / "broken.png")  # mended (a JPEG under a .png name)
    assert main([*args, "--resume"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("1 request: 1 answered, 0 skipped, 0 errors; 1 already answered")
    (group,) = [r for r in records(out) if r["status"] == "ok"]
    assert group["answer"].startswith("received 2 images") and "failed" not in group


# -- #6: SIGTERM to chat and batch ------------------------------------------------------------------------------


def _without_key() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("NVIDIA_API_KEY", "NVMEDIA_ASSETS_URL")}


def test_sigterm_to_chat_deletes_the_uploaded_assets_and_exits_143(emu: NVCFEmulator) -> None:
    arrived, release = threading.Event(), threading.Event()

    def hold(ex: Exchange) -> None:
        arrived.set()
        release.wait(60)

    with chat_server(hold) as server:
        args = ["chat", "What is this?", str(HOPPER), "--mode", "asset", "--no-stream"]
        args += ["--base-url", server.base_url, "--assets-url", emu.assets_url, "--api-key", KEY]
        proc = subprocess.Popen(
            [sys.executable, "-m", "nvmedia", *args], stderr=subprocess.PIPE, text=True, env=_without_key()
        )
        try:
            assert arrived.wait(60)  # the request is out: the asset exists and is referenced
            assert len(emu.assets()) == 1
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        finally:
            release.set()
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 143 and "interrupted by SIGTERM" in err
    assert emu.assets() == [] and emu.delete_count == 1


def test_sigterm_to_batch_finishes_requests_in_flight_deletes_every_asset_and_exits_143(
    emu: NVCFEmulator, photos: Path, tmp_path: Path
) -> None:
    arrived, release = threading.Event(), threading.Event()

    def script(ex: Exchange) -> None:
        if "flower" in ex.prompt:
            arrived.set()
            release.wait(60)
        ex.answer(ex.prompt)

    shutil.copy(CORPUS / "pillow__hopper.webp", photos / "third.webp")
    prompts = tmp_path / "prompts.jsonl"
    sources = ["flower.jpg", "portrait.png", "third.webp"]
    prompts.write_text("".join(json.dumps({"source": f"photos/{s}", "prompt": f"About {s}"}) + "\n" for s in sources))
    out = tmp_path / "answers.jsonl"
    with chat_server(script) as server:
        args = ["batch", "--prompt-file", str(prompts), "-o", str(out), "-j", "1", "--mode", "asset"]
        args += ["--base-url", server.base_url, "--assets-url", emu.assets_url, "--api-key", KEY]
        proc = subprocess.Popen(
            [sys.executable, "-m", "nvmedia", *args], stderr=subprocess.PIPE, text=True, env=_without_key()
        )
        try:
            assert arrived.wait(60)  # flower.jpg's request is out; the next may already be uploaded
            proc.send_signal(signal.SIGTERM)
            assert proc.stderr is not None
            assert "waiting for 1 request in flight" in proc.stderr.readline()
            release.set()
            _, err = proc.communicate(timeout=60)
        finally:
            release.set()
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 143 and "(interrupted)" in err and "interrupted by SIGTERM" in err
    assert [r["answer"] for r in records(out)] == ["About flower.jpg"]
    assert emu.assets() == [] and emu.delete_count == emu.upload_count >= 1


# -- #17: non-finite sampling values ---------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--temperature", "--top-p"])
@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity"])
def test_non_finite_sampling_values_are_a_usage_error(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["chat", "hi", "--emulate", f"{option}={value}"])
    assert exited.value.code == 2
    assert f"argument {option}: expected a finite number, got {value!r}" in capsys.readouterr().err


def test_chat_params_refuse_non_finite_sampling_values() -> None:
    with pytest.raises(ConfigError, match="temperature must be a finite number, not nan"):
        ChatParams(temperature=float("nan"))
    with pytest.raises(ConfigError, match="top_p must be a finite number, not inf"):
        ChatParams(top_p=float("inf"))


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_emulator_chat_refuses_a_body_that_is_not_standard_json(emu: NVCFEmulator, constant: str) -> None:
    body = '{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": ' + constant + "}"
    resp = httpx.post(
        f"{emu.base_url}/v1/chat/completions",
        content=body.encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert resp.status_code == 400 and constant in resp.text
    assert emu.chat_count == 0


# -- #20: `--` after the options -------------------------------------------------------------------------------


def test_chat_and_batch_take_the_inputs_after_a_double_dash_following_their_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(HOPPER, tmp_path / "-weird.png")
    shutil.copy(HOPPER, tmp_path / "--odd.png")
    assert main(["chat", "What is it?", "--emulate", "--no-stream", "--", "-weird.png", "--odd.png"]) == 0
    assert capsys.readouterr().out.startswith("received 2 images")
    assert main(["batch", "What is it?", "--emulate", "-o", "b.jsonl", "--", "-weird.png", "--odd.png"]) == 0
    assert [r["sources"] for r in records(tmp_path / "b.jsonl")] == [["-weird.png"], ["--odd.png"]]
    assert main(["batch", "--emulate", "-o", "c.jsonl", "--", "-prompt starting with a dash", "-weird.png"]) == 0
    with pytest.raises(SystemExit) as exited:
        main(["chat", "What is it?", "--emulate", "--bogus", "--", "-weird.png"])
    assert exited.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err


# -- #9: the emulator on a port or host it cannot use -----------------------------------------------------------


@pytest.fixture
def own_temp_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp folder of the test's own, so folders left behind are this test's."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_emulator_on_a_busy_port_says_so_in_one_line_exits_2_and_leaves_no_folder(
    own_temp_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["emulator", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"nvmedia: error: cannot listen on 127.0.0.1:{port}: address already in use "
        "(pick another --port, or --port 0 for a free one)\n"
    )
    assert list(own_temp_folder.iterdir()) == []


def test_emulator_on_a_host_that_does_not_resolve_exits_2_in_one_line(
    own_temp_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["emulator", "--host", "256.1.1.1"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("nvmedia: error: cannot listen on 256.1.1.1:0: ") and line.endswith("(check --host)")
    assert list(own_temp_folder.iterdir()) == []


@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_emulator_port_outside_0_to_65535_is_refused_by_the_parser(
    port: str, own_temp_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["emulator", f"--port={port}"])
    assert exited.value.code == 2
    assert "argument --port: expected a TCP port 0..65535" in capsys.readouterr().err
    assert list(own_temp_folder.iterdir()) == []


# -- #8: chat's hints name only what chat has -------------------------------------------------------------------


def test_chat_with_too_many_assets_hints_at_what_chat_can_do_not_at_group(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for number in range(11):
        shutil.copy(HOPPER, folder / f"{number:02}.png")
    assert main(["chat", "What are these?", str(folder), "--mode", "asset", "--emulate", "--no-stream"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("nvmedia: error: ") and "the request needs 11 assets" in line
    assert "--group" not in line.replace("nvmedia batch --group", "")
    assert line.endswith(
        "(send fewer files, let small ones go inline (--mode auto), "
        "or ask about them in several requests: nvmedia batch --group file|dir)"
    )


def test_chat_with_a_video_too_long_hints_at_a_trimmed_copy_not_at_an_option_chat_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = tmp_path / "long.mp4"
    made = subprocess.run(
        [find_ffmpeg(), "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=1:duration=125"]
        + ["-c:v", "libx264", str(clip)],
        capture_output=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    assert main(["chat", "What happens?", str(clip), "--emulate", "--no-stream"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert "too long" in line or "long" in line
    hint = line.rsplit(" (", 1)[1]
    assert hint == (
        "chat sends whole files: make a copy of the first 120 s with "
        "nvmedia prepare FILE --trim 120 --keep DIR --dry-run, and send that)"
    )


# -- #23: a refused key, whichever endpoint refuses it ----------------------------------------------------------


@pytest.fixture
def strict_emu() -> Iterator[NVCFEmulator]:
    with NVCFEmulator(api_keys={"nvapi-good-KEY"}) as emulator:
        yield emulator


def test_batch_records_a_key_the_asset_api_refuses_as_auth_failed(
    strict_emu: NVCFEmulator, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uploaded, inline = tmp_path / "uploaded.jsonl", tmp_path / "inline.jsonl"
    wrong = ["--base-url", f"{strict_emu.base_url}/v1", "--assets-url", strict_emu.assets_url]
    wrong += ["--api-key", "nvapi-WRONG"]
    assert main(["batch", "Describe.", str(photos), "-o", str(uploaded), "--mode", "asset", *wrong]) == 1
    assert main(["batch", "Describe.", str(photos), "-o", str(inline), "--mode", "inline", *wrong]) == 1
    assert [r["error"]["code"] for r in records(uploaded) + records(inline)] == ["auth_failed"] * 4
    err = capsys.readouterr().err
    assert ": config:" not in err and err.count(": auth_failed: ") == 4


def test_batch_records_an_unreachable_asset_api_as_asset_api_error(
    emu: NVCFEmulator, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        unreachable = f"http://127.0.0.1:{closed.getsockname()[1]}/v2/nvcf/assets"
    out = tmp_path / "b.jsonl"
    args = ["batch", "Describe.", str(photos / "portrait.png"), "-o", str(out), "--mode", "asset"]
    args += ["--base-url", f"{emu.base_url}/v1", "--assets-url", unreachable, "--api-key", KEY, "--max-attempts", "1"]
    assert main(args) == 1
    assert [r["error"]["code"] for r in records(out)] == ["asset_api_error"]


@pytest.mark.parametrize("mode", ["asset", "inline"])
def test_chat_exits_1_for_a_refused_key_whichever_endpoint_refuses_it(
    strict_emu: NVCFEmulator, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = ["--base-url", f"{strict_emu.base_url}/v1", "--assets-url", strict_emu.assets_url]
    wrong += ["--api-key", "nvapi-WRONG"]
    assert main(["chat", "What is it?", str(HOPPER), "--mode", mode, "--no-stream", *wrong]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert "refused the key" in line and "401" in line


# -- #16: manifest write errors ---------------------------------------------------------------------------------


def _limit_file_size(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return apply


def test_manifest_over_the_file_size_limit_names_the_size_it_needs_and_no_code_tag(tmp_path: Path) -> None:
    noise = random.Random(16)
    for number in range(2):
        pixels = bytes(noise.getrandbits(8) for _ in range(150 * 150 * 3))
        Image.frombytes("RGB", (150, 150), pixels).save(tmp_path / f"r{number}.png")
    inputs = [str(tmp_path / "r0.png"), str(tmp_path / "r1.png")]
    whole = nvmedia("prepare", *inputs, "--dry-run", "-o", str(tmp_path / "whole.jsonl"))
    assert whole.returncode == 0, whole.stderr
    size = (tmp_path / "whole.jsonl").stat().st_size
    limit = 200 * 1024
    assert size > limit
    capped = subprocess.run(
        [sys.executable, "-m", "nvmedia", "prepare", *inputs, "--dry-run", "-o", str(tmp_path / "m.jsonl")],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limit_file_size(limit),
    )
    assert capped.returncode == 2
    shape = (
        f"nvmedia: error: cannot write the manifest to {re.escape(str(tmp_path))}/m\\.jsonl: the file size limit "
        "of this process "
        f"\\({limit} bytes\\) was reached \\(it needs (\\d+) bytes\\) "
        "\\(raise the limit \\(ulimit -f\\) or write to a file system that allows larger files\\)\n"
    )
    said = re.fullmatch(shape, capped.stderr)
    assert said is not None, capped.stderr
    # The whole manifest's size, over the limit (records hold inode numbers: a run's size varies by a few bytes).
    assert limit < int(said.group(1)) <= size + 256


def test_manifest_to_a_folder_says_so_without_a_code_tag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "d1").mkdir()
    assert main(["prepare", str(HOPPER), "--dry-run", "-o", str(tmp_path / "d1")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        f"nvmedia: error: cannot write the manifest to {tmp_path}/d1: Is a directory "
        "(check the destination can be written)"
    )


# -- #24: --keep and names near NAME_MAX ------------------------------------------------------------------------


def test_keep_with_names_near_name_max_keeps_every_file_under_a_short_unique_repeatable_name(tmp_path: Path) -> None:
    folder = tmp_path / "one"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / ("q" * 230 + ".png"))  # a 234-byte name, kept as it is
    stem = "x" * 250  # a.gif and a.bmp keep their whole name plus .png: 258 bytes, over NAME_MAX
    Image.new("RGB", (8, 8), "red").save(folder / f"{stem}.gif")
    Image.new("RGB", (8, 8), "blue").save(folder / f"{stem}.bmp")
    kept_names = []
    for run in ("k1", "k2"):
        manifest = tmp_path / f"{run}.jsonl"
        done = nvmedia("prepare", str(folder), "--dry-run", "--keep", str(tmp_path / run), "-o", str(manifest))
        assert done.returncode == 0, done.stderr
        items = [r for r in records(manifest) if r.get("type") == "item"]
        assert [r["status"] for r in items] == ["ok"] * 3
        names = sorted(Path(r["kept"]).name for r in items)
        assert all(len(os.fsencode(name)) <= 255 for name in names) and len(set(names)) == 3
        assert sorted(p.name for p in (tmp_path / run).iterdir()) == names  # no temporary file left
        kept_names.append(names)
    assert kept_names[0] == kept_names[1]
    short, bmp, gif = kept_names[0]
    assert short == "q" * 230 + ".png"
    assert bmp.startswith("x" * 200) and bmp.endswith(".bmp.png") and "~" in bmp
    assert gif.startswith("x" * 200) and gif.endswith(".gif.png") and "~" in gif


# -- #10: work folders of killed runs ---------------------------------------------------------------------------


def test_a_run_removes_the_work_folders_of_killed_runs_and_never_a_live_or_unmarked_one(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**_without_key(), "TMPDIR": str(temp)}
    # A killed emulator: its storage folder stays behind.
    emulator = subprocess.Popen(
        [sys.executable, "-m", "nvmedia", "emulator"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert emulator.stdout is not None and emulator.stdout.readline().startswith("http://127.0.0.1:")
    emulator.kill()
    emulator.wait(60)
    (killed,) = temp.glob("nvmedia-emulator-*")
    # A folder whose owner file names a pid now used by another process (this one, started at another time).
    reused = temp / "nvmedia-reused"
    reused.mkdir()
    me = Owner.current()
    Owner(me.pid, "1", me.boot_id).write(reused)
    (reused / "talk-1.mp3").write_bytes(b"private")
    # A live run's folder (this process's), and folders that name no owner: left alone.
    live = temp / "nvmedia-live"
    live.mkdir()
    me.write(live)
    unmarked = temp / "nvmedia-unmarked"
    unmarked.mkdir()
    foreign = temp / "not-nvmedia"
    foreign.mkdir()

    done = subprocess.run(
        [sys.executable, "-m", "nvmedia", "prepare", str(HOPPER), "--dry-run", "-o", str(tmp_path / "m.jsonl")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert not killed.exists() and not reused.exists()
    assert sorted(p.name for p in temp.iterdir()) == ["not-nvmedia", "nvmedia-live", "nvmedia-unmarked"]
    assert (live / OWNER_FILE).exists()
