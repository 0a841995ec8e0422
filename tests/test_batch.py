"""`nvmedia batch`: one request per input (or group), answers as JSON Lines, faults recorded, resume.

The emulator plays the service; the scripted server (tests/chat_server.py) echoes
prompts and holds answers back where a test needs to see what was sent or to
make answers arrive out of order.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from chat_server import Exchange, chat_server
from support import CORPUS

from nvmedia.cli import main
from nvmedia.testing import NVCFEmulator

IMAGES = ["pillow__hopper.png", "pillow__flower.jpg", "pillow__hopper.webp", "pillow__rgb.jpg"]
BROKEN = CORPUS / "pillow__truncated_image.png"
KEY = "nvapi-test-key"


@pytest.fixture
def emu() -> Iterator[NVCFEmulator]:
    with NVCFEmulator() as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def no_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NVIDIA_API_KEY", raising=False)
    monkeypatch.delenv("NVMEDIA_ASSETS_URL", raising=False)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """photos/1.png 2.jpg 3.webp 4.jpg (real images), plus a text file and a hidden file found by the walk."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for number, name in enumerate(IMAGES, 1):
        shutil.copy(CORPUS / name, folder / f"{number}{Path(name).suffix}")
    (folder / "notes.txt").write_text("not a photo\n")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return folder


def endpoint(emu: NVCFEmulator) -> list[str]:
    return ["--base-url", f"{emu.base_url}/v1", "--assets-url", emu.assets_url, "--api-key", KEY]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["batch", *args])
    return code, capsys.readouterr().err


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def names(recs: list[dict[str, Any]]) -> list[str]:
    return [Path(r["sources"][0]).name for r in recs]


# -- answers ----------------------------------------------------------------------------------------------


def test_batch_answers_each_image_with_one_line_in_input_order(
    emu: NVCFEmulator, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "answers.jsonl"
    code, err = run(["Describe.", str(photos), "-o", str(out), "-j", "3", *endpoint(emu)], capsys)
    recs = records(out)
    assert code == 0
    assert names(recs) == [".DS_Store", "1.png", "2.jpg", "3.webp", "4.jpg", "notes.txt"]
    assert [r["status"] for r in recs] == ["skipped", "ok", "ok", "ok", "ok", "skipped"]
    assert recs[0]["reason"] == "hidden" and recs[5]["reason"].startswith("not media")
    answered = recs[1]
    assert answered["type"] == "answer" and answered["answer"] == "received 1 image (1 inline, 0 assets)"
    assert answered["sources"] == [str(photos / "1.png")] and answered["error"] is None
    assert answered["usage"]["total_tokens"] > 0 and answered["latency_s"] >= 0
    assert answered["model"] == "nvidia/nemotron-3-nano-omni-30b-a3b-reasoning" and answered["reasoning"] is None
    assert emu.chat_count == 4
    assert err.splitlines()[-1].startswith("6 requests: 4 answered, 2 skipped, 0 errors;")


def test_batch_group_dir_sends_one_request_per_folder(
    emu: NVCFEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for folder, files in (("a", IMAGES[:2]), ("b", IMAGES[2:])):
        (tmp_path / "in" / folder).mkdir(parents=True)
        for name in files:
            shutil.copy(CORPUS / name, tmp_path / "in" / folder / name)
    out = tmp_path / "answers.jsonl"
    code, _ = run(["Compare.", str(tmp_path / "in"), "-o", str(out), "--group", "dir", *endpoint(emu)], capsys)
    recs = records(out)
    assert code == 0 and len(recs) == 2 and emu.chat_count == 2
    assert [[Path(s).name for s in r["sources"]] for r in recs] == [sorted(IMAGES[:2]), sorted(IMAGES[2:])]
    assert all(r["answer"].startswith("received 2 images") for r in recs)


def test_batch_to_stdout(emu: NVCFEmulator, photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["batch", "Describe.", str(photos / "1.png"), str(photos / "2.jpg"), *endpoint(emu)])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and [json.loads(line)["status"] for line in lines] == ["ok", "ok"]


def test_batch_deletes_each_requests_assets_after_its_answer(
    emu: NVCFEmulator, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "answers.jsonl"
    code, _ = run(["Describe.", str(photos), "-o", str(out), "--mode", "asset", "-j", "2", *endpoint(emu)], capsys)
    assert code == 0 and all(r["answer"].endswith("(0 inline, 1 asset)") for r in records(out) if r["status"] == "ok")
    assert emu.upload_count == 4 and emu.delete_count == 4 and emu.assets() == []


def test_batch_keep_assets_leaves_them_and_records_their_ids(
    emu: NVCFEmulator, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "answers.jsonl"
    args = ["Describe.", str(photos / "1.png"), "-o", str(out), "--mode", "asset", "--keep-assets"]
    code, _ = run([*args, *endpoint(emu)], capsys)
    (rec,) = records(out)
    assert code == 0 and [a.asset_id for a in emu.assets()] == rec["asset_ids"]


def test_batch_broken_file_is_an_error_record_and_the_rest_go_on(
    emu: NVCFEmulator, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(BROKEN, photos / "0-broken.png")
    out = tmp_path / "answers.jsonl"
    code, err = run(["Describe.", str(photos), "-o", str(out), *endpoint(emu)], capsys)
    recs = records(out)
    assert names(recs)[:2] == [".DS_Store", "0-broken.png"]
    assert code == 1 and recs[1]["status"] == "error" and recs[1]["error"]["code"] == "corrupt_media"
    assert recs[1]["answer"] is None and [r["status"] for r in recs[2:6]] == ["ok"] * 4
    assert "0-broken.png: corrupt_media" in err and emu.chat_count == 4


# -- faults of the chat endpoint -----------------------------------------------------------------------------


def test_batch_401_is_recorded_for_every_request(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "answers.jsonl"
    with NVCFEmulator(api_keys=["nvapi-the-right-key"]) as emu:
        code, err = run(
            ["Describe.", str(photos / "1.png"), str(photos / "2.jpg"), "-o", str(out), *endpoint(emu)], capsys
        )
    recs = records(out)
    assert code == 1 and [r["error"]["code"] for r in recs] == ["auth_failed", "auth_failed"]
    assert "401" in recs[0]["error"]["message"] and KEY not in out.read_text() + err
    assert "2 requests: 0 answered, 0 skipped, 2 errors" in err


def test_batch_429_is_retried_after_retry_after(
    emu: NVCFEmulator, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emu.inject("429", path_prefix="/v1/chat", retry_after=0, times=2)
    out = tmp_path / "answers.jsonl"
    code, _ = run(["Describe.", str(photos), "-o", str(out), "-j", "1", *endpoint(emu)], capsys)
    assert code == 0 and [r["status"] for r in records(out)].count("ok") == 4
    assert emu.counts["fault"] == 2 and emu.chat_count == 4


@pytest.mark.parametrize("fault", ["429", "500", "drop"])
def test_batch_records_a_failed_request_and_goes_on(
    emu: NVCFEmulator, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], fault: str
) -> None:
    emu.inject(fault, path_prefix="/v1/chat", times=2, retry_after=0)  # both attempts of the first request
    out = tmp_path / "answers.jsonl"
    args = ["Describe.", str(photos), "-o", str(out), "-j", "1", "--max-attempts", "2", "--mode", "asset"]
    code, err = run([*args, *endpoint(emu)], capsys)
    recs = [r for r in records(out) if r["status"] != "skipped"]
    assert code == 1 and [r["status"] for r in recs] == ["error", "ok", "ok", "ok"]
    assert recs[0]["error"]["code"] == "chat_failed" and recs[0]["answer"] is None
    said = {"429": "429 Too Many Requests", "500": "500 Internal Server Error", "drop": "RemoteProtocolError"}[fault]
    assert said in recs[0]["error"]["message"]
    assert "1.png: chat_failed" in err
    assert emu.assets() == [] and emu.delete_count == 4


def test_batch_lost_answer_is_asked_again(
    emu: NVCFEmulator, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emu.inject("drop", path_prefix="/v1/chat")
    out = tmp_path / "answers.jsonl"
    code, _ = run(["Describe.", str(photos / "1.png"), "-o", str(out), *endpoint(emu)], capsys)
    assert code == 0 and records(out)[0]["status"] == "ok" and emu.counts["fault"] == 1


# -- resume -------------------------------------------------------------------------------------------------


def test_resume_asks_only_for_what_is_not_answered_and_keeps_input_order(
    emu: NVCFEmulator, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "answers.jsonl"
    args = ["Describe.", str(photos), "-o", str(out), "-j", "1", "--max-attempts", "1", *endpoint(emu)]
    emu.inject("500", path_prefix="/v1/chat")  # the first image fails
    assert run(args, capsys)[0] == 1
    with out.open("a", encoding="utf-8") as fh:
        fh.write('{"type": "answer", "sources": ["torn')  # an interrupted write
    before = emu.chat_count
    code, err = run([*args, "--resume"], capsys)
    recs = records(out)
    assert code == 0 and emu.chat_count == before + 1
    assert names(recs) == [".DS_Store", "1.png", "2.jpg", "3.webp", "4.jpg", "notes.txt"]
    assert [r["status"] for r in recs] == ["skipped", "ok", "ok", "ok", "ok", "skipped"]
    assert "1 request: 1 answered, 0 skipped, 0 errors; 5 already answered (--resume)" in err
    assert run([*args, "--resume"], capsys)[0] == 0 and emu.chat_count == before + 1  # nothing left to ask


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[str]:
    """A loopback web server of one image, ``/q.png``, whatever the query string."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(CORPUS / "pillow__hopper.png", site / "q.png")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_resume_keeps_every_answer_of_urls_differing_only_in_their_query_string(
    emu: NVCFEmulator, origin: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    urls = [f"{origin}/q.png?sig=s3cr3t-{n}" for n in (1, 2, 3)] + [f"{origin}/gone.png?sig=s3cr3t-4"]
    out = tmp_path / "answers.jsonl"
    args = ["Describe.", *urls, "-o", str(out), "--fetch-urls", "--url-allow", "127.0.0.1", *endpoint(emu)]
    assert run(args, capsys)[0] == 1
    first = records(out)
    assert [r["status"] for r in first] == ["ok", "ok", "ok", "error"]
    assert [r["sources"] for r in first] == [[f"{origin}/q.png?REDACTED"]] * 3 + [[f"{origin}/gone.png?REDACTED"]]
    assert [r["sources_sha256"] for r in first] == [[_sha256(url)] for url in urls]  # which input, without its secret
    assert "s3cr3t" not in out.read_text(encoding="utf-8")
    code, err = run([*args, "--resume"], capsys)
    assert code == 1 and "1 request: 0 answered, 0 skipped, 1 error; 3 already answered (--resume)" in err
    again = records(out)
    assert again[:3] == first[:3] and again[3]["sources_sha256"] == [_sha256(urls[3])]
    assert len(again) == 4


def test_resume_keeps_every_answer_of_a_file_named_twice(
    emu: NVCFEmulator, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(BROKEN, photos / "broken.png")
    named = ["photos/1.png", "photos/1.png", "./photos/1.png"]
    out = tmp_path / "answers.jsonl"
    assert run(["Describe.", *named, "-o", str(out), *endpoint(emu)], capsys)[0] == 0
    first = records(out)
    assert [r["sources"] for r in first] == [[name] for name in named]
    code, err = run(["Describe.", *named, "photos/broken.png", "-o", str(out), *endpoint(emu), "--resume"], capsys)
    assert code == 1 and "1 request: 0 answered, 0 skipped, 1 error; 3 already answered (--resume)" in err
    again = records(out)
    assert again[:3] == first and [r["sources"] for r in again[3:]] == [["photos/broken.png"]]


def test_resume_with_other_inputs_is_refused_and_leaves_the_file_untouched(
    emu: NVCFEmulator, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "answers.jsonl"
    assert run(["Describe.", str(photos), "-o", str(out), *endpoint(emu)], capsys)[0] == 0
    before, chats = out.read_bytes(), emu.chat_count
    subset = [str(photos / "1.png"), str(photos / "2.jpg")]
    code, err = run(["Describe.", *subset, "-o", str(out), *endpoint(emu), "--resume"], capsys)
    assert code == 2 and out.read_bytes() == before and emu.chat_count == chats
    (line,) = err.splitlines()
    assert f"--resume: {out} holds 4 records of inputs not in this run ({photos}/.DS_Store, {photos}/3.webp, " in line
    assert "resume with the same inputs" in line


def test_resume_with_another_group_is_refused_and_leaves_the_file_untouched(
    emu: NVCFEmulator, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trip = photos / "trip"
    trip.mkdir()
    shutil.copy(CORPUS / "pillow__flower.jpg", trip / "flower.jpg")
    shutil.copy(CORPUS / "pillow__hopper.png", trip / "portrait.png")
    out = tmp_path / "answers.jsonl"
    assert run(["Describe.", str(photos), "-o", str(out), *endpoint(emu)], capsys)[0] == 0
    before, chats = out.read_bytes(), emu.chat_count
    code, err = run(["Describe.", str(photos), "-o", str(out), *endpoint(emu), "--group", "dir", "--resume"], capsys)
    assert code == 2 and out.read_bytes() == before and emu.chat_count == chats
    (line,) = err.splitlines()
    assert f"--resume: 6 answers in {out} were asked with another --group (file, now dir)" in line


def test_unreachable_chat_endpoint_is_exit_2_before_any_input_is_prepared_and_leaves_the_answers_untouched(
    emu: NVCFEmulator, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "answers.jsonl"
    assert run(["Describe.", str(photos), "-o", str(out), *endpoint(emu)], capsys)[0] == 0
    before, uploads = out.read_bytes(), emu.upload_count
    with socket.socket() as closed:  # bound but not listening: connecting is refused
        closed.bind(("127.0.0.1", 0))
        base_url = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
        args = ["Describe.", str(photos), "-o", str(out), "--mode", "asset", "--max-attempts", "1"]
        code, err = run([*args, "--base-url", base_url, "--assets-url", emu.assets_url, "--api-key", KEY], capsys)
    assert code == 2 and out.read_bytes() == before and emu.upload_count == uploads
    (line,) = err.splitlines()
    assert line.startswith(f"nvmedia: error: cannot reach the chat endpoint {base_url}: ") and "--base-url" in line


def test_a_run_killed_before_its_first_answer_leaves_the_earlier_answers_file_untouched(
    emu: NVCFEmulator, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "answers.jsonl"
    assert run(["Describe.", str(photos / "1.png"), "-o", str(out), *endpoint(emu)], capsys)[0] == 0
    before = out.read_bytes()
    arrived, release = threading.Event(), threading.Event()

    def hold(ex: Exchange) -> None:
        arrived.set()
        release.wait(60)

    with chat_server(hold) as server:
        args = ["batch", "Describe.", str(photos / "2.jpg"), "-o", str(out), "--base-url", server.base_url]
        env = {**os.environ, "NVIDIA_API_KEY": KEY}
        proc = subprocess.Popen([sys.executable, "-m", "nvmedia", *args], stderr=subprocess.DEVNULL, env=env)
        try:
            assert arrived.wait(60)  # its only request is out, no record yet
            proc.kill()
            proc.wait(60)
        finally:
            release.set()
            if proc.poll() is None:
                proc.kill()
    assert out.read_bytes() == before


def test_resume_needs_an_output_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["Describe.", "x.png", "--resume", "--emulate"], capsys)
    assert code == 2 and "-o FILE" in err


# -- prompts ------------------------------------------------------------------------------------------------


def _echo(ex: Exchange) -> None:
    ex.answer(ex.prompt)


def test_jsonl_prompt_file_given_by_a_relative_path(
    photos: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(photos)
    Path("prompts.jsonl").write_text('{"source": "./1.png", "prompt": "Count the faces."}\n', encoding="utf-8")
    with chat_server(_echo) as server:
        args = ["--prompt-file", "./prompts.jsonl", "-o", "out.jsonl", "--base-url", server.base_url, "--api-key", KEY]
        code, _ = run(args, capsys)
    assert code == 0 and records(Path("out.jsonl"))[0]["answer"] == "Count the faces."


def test_jsonl_prompt_file_naming_a_folder_is_a_usage_error(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"source": str(photos), "prompt": "P"}) + "\n", encoding="utf-8")
    code, err = run(["--prompt-file", str(prompts), "--emulate"], capsys)
    assert code == 2 and "was found in a folder" in err


def test_prompt_file_gives_the_prompt(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("List the colours.\nOne per line.\n", encoding="utf-8")
    out = tmp_path / "answers.jsonl"
    with chat_server(_echo) as server:
        args = ["--prompt-file", str(prompt), str(photos / "1.png"), "-o", str(out)]
        code, _ = run([*args, "--base-url", server.base_url, "--api-key", KEY], capsys)
    assert code == 0 and records(out)[0]["answer"] == "List the colours.\nOne per line."


def test_jsonl_prompt_file_gives_each_input_its_prompt_relative_to_the_file(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = photos / "prompts.jsonl"
    lines = [{"source": "1.png", "prompt": "Count the faces."}, {"source": "2.jpg", "prompt": "Name the flower."}]
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    out = tmp_path / "answers.jsonl"
    with chat_server(_echo) as server:
        args = ["--prompt-file", str(prompts), "-o", str(out), "--base-url", server.base_url, "--api-key", KEY]
        code, _ = run(args, capsys)
    recs = records(out)
    assert code == 0 and [r["answer"] for r in recs] == ["Count the faces.", "Name the flower."]
    assert recs[1]["sources"] == [str(photos / "2.jpg")]


@pytest.mark.parametrize(
    ("words", "extra", "message"),
    [
        (["Describe."], [], "a prompt and at least one path"),
        (["a.png"], ["--prompt-file", "PROMPTS"], "drop the PATH arguments"),
        ([], ["--prompt-file", "PROMPTS", "--group", "dir"], "one request per input"),
    ],
)
def test_batch_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], words: list[str], extra: list[str], message: str
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"source": "a.png", "prompt": "P"}\n', encoding="utf-8")
    code, err = run([*words, *[str(prompts) if e == "PROMPTS" else e for e in extra], "--emulate"], capsys)
    assert code == 2 and message in err


def test_answers_finished_out_of_order_are_written_in_input_order(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    others_answered = threading.Event()
    answered: list[str] = []
    lock = threading.Lock()

    def script(ex: Exchange) -> None:
        if ex.prompt == "first":
            others_answered.wait(60)  # held until the three after it are answered
        ex.answer(ex.prompt)
        with lock:
            answered.append(ex.prompt)
            if len(answered) == 3 and "first" not in answered:
                others_answered.set()

    prompts = photos / "prompts.jsonl"
    entries = zip(["1.png", "2.jpg", "3.webp", "4.jpg"], ["first", "second", "third", "fourth"], strict=True)
    prompts.write_text("".join(json.dumps({"source": s, "prompt": p}) + "\n" for s, p in entries), encoding="utf-8")
    out = tmp_path / "answers.jsonl"
    with chat_server(script) as server:
        args = ["--prompt-file", str(prompts), "-o", str(out), "-j", "4"]
        code, _ = run([*args, "--base-url", server.base_url, "--api-key", KEY], capsys)
    assert code == 0 and others_answered.is_set() and answered[-1] == "first"
    assert [r["answer"] for r in records(out)] == ["first", "second", "third", "fourth"]


def test_ctrl_c_keeps_answers_in_flight_deletes_every_asset_and_resume_finishes(
    emu: NVCFEmulator, photos: Path, tmp_path: Path
) -> None:
    arrived, release = threading.Event(), threading.Event()

    def script(ex: Exchange) -> None:
        if "2.jpg" in ex.prompt:
            arrived.set()
            release.wait(60)
        ex.answer(ex.prompt)

    prompts = photos / "prompts.jsonl"
    sources = ["1.png", "2.jpg", "3.webp", "4.jpg"]
    prompts.write_text("".join(json.dumps({"source": s, "prompt": f"About {s}"}) + "\n" for s in sources))
    out = tmp_path / "answers.jsonl"
    with chat_server(script) as server:
        args = ["batch", "--prompt-file", str(prompts), "-o", str(out), "-j", "1", "--mode", "asset"]
        args += ["--base-url", server.base_url, "--assets-url", emu.assets_url, "--api-key", KEY]
        env = {k: v for k, v in os.environ.items() if k != "NVIDIA_API_KEY"}
        proc = subprocess.Popen([sys.executable, "-m", "nvmedia", *args], stderr=subprocess.PIPE, text=True, env=env)
        try:
            assert arrived.wait(60)  # 2.jpg's request is out; 3.webp may already be prepared and uploaded
            proc.send_signal(signal.SIGINT)
            assert proc.stderr is not None
            assert "waiting for 1 request in flight" in proc.stderr.readline()
            release.set()
            _, err = proc.communicate(timeout=60)
        finally:
            release.set()
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 130 and "(interrupted)" in err
        assert [r["answer"] for r in records(out)] == ["About 1.png", "About 2.jpg"]
        assert emu.assets() == [] and emu.delete_count == emu.upload_count >= 2
        capture = subprocess.run(
            [sys.executable, "-m", "nvmedia", *args, "--resume"], capture_output=True, text=True, env=env, timeout=120
        )
    assert capture.returncode == 0, capture.stderr
    assert [r["answer"] for r in records(out)] == [f"About {s}" for s in sources]
    assert [ex.prompt for ex in server.received[2:]] == ["About 3.webp", "About 4.jpg"]
    assert emu.assets() == []
