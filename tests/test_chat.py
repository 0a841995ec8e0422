"""`nvmedia chat` and the chat client, end to end over loopback.

The emulator plays the service (its chat endpoint checks every media reference);
a scripted server (tests/chat_server.py) plays what the emulator does not do:
reasoning, a stream cut after some events, a request held open.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest
from chat_server import Exchange, chat_server
from support import CORPUS

from nvmedia.chat import ChatClient, ChatParams, build_body, check_key_transport
from nvmedia.cli import main
from nvmedia.cli_chat import DEFAULT_BASE_URL_SHOWN, DEFAULT_MODEL_SHOWN
from nvmedia.errors import ChatError, ConfigError
from nvmedia.testing import NVCFEmulator

HOPPER = CORPUS / "pillow__hopper.png"
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


def tone_wav(path: Path, seconds: float = 1.0, rate: int = 16000) -> Path:
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(int(seconds * rate))
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return path


def against(emu: NVCFEmulator, *args: str) -> list[str]:
    """``nvmedia chat`` arguments that talk to ``emu`` for both chat and assets."""
    return [
        "chat",
        *args,
        "--base-url",
        f"{emu.base_url}/v1",
        "--assets-url",
        emu.assets_url,
        "--api-key",
        KEY,
        "--max-attempts",
        "2",
    ]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- answers ----------------------------------------------------------------------------------------------


def test_chat_prints_the_answer_for_an_inline_image(emu: NVCFEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(against(emu, "What is this?", str(HOPPER)), capsys)
    assert (code, out, err) == (0, "received 1 image (1 inline, 0 assets)\n", "")
    assert emu.chat_count == 1


def test_chat_deletes_the_assets_it_uploaded_after_the_answer(
    emu: NVCFEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(against(emu, "What is this?", str(HOPPER), "--mode", "asset"), capsys)
    assert code == 0 and out == "received 1 image (0 inline, 1 asset)\n"
    assert emu.upload_count == 1 and emu.delete_count == 1 and emu.assets() == []


def test_chat_streams_the_answer_over_server_sent_events(emu: NVCFEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(against(emu, "What is this?", str(HOPPER), "--stream"), capsys)
    assert code == 0 and out == "received 1 image (1 inline, 0 assets)\n"
    (chat,) = [r for r in emu.requests if r.path == "/v1/chat/completions"]
    assert chat.headers["accept"] == "text/event-stream" and chat.status == 200


def test_chat_json_prints_the_whole_response(emu: NVCFEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(against(emu, "What is this?", str(HOPPER), "--json"), capsys)
    response = json.loads(out)
    assert code == 0 and response["object"] == "chat.completion"
    assert response["choices"][0]["message"]["content"] == "received 1 image (1 inline, 0 assets)"
    assert response["usage"]["total_tokens"] > 0


def test_chat_with_audio_sends_no_think_and_the_emulator_accepts_it(
    emu: NVCFEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(against(emu, "Transcribe.", str(tone_wav(tmp_path / "tone.wav"))), capsys)
    assert code == 0 and out.startswith("received 1 audio")


def test_chat_emulate_runs_offline_without_a_key(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["chat", "What is this?", str(HOPPER), "--emulate", "--mode", "asset"], capsys)
    assert code == 0 and out == "received 1 image (0 inline, 1 asset)\n"


def test_chat_sends_the_parameters_it_was_given(capsys: pytest.CaptureFixture[str]) -> None:
    with chat_server(lambda ex: ex.answer("ok")) as server:
        args = ["chat", "Describe.", str(HOPPER), "--base-url", server.base_url, "--api-key", KEY]
        args += ["-m", "acme/model", "--max-tokens", "64", "--reasoning-budget", "32", "--seed", "7"]
        args += ["--temperature", "0.2", "--top-p", "0.9", "--think"]
        code, out, _ = run(args, capsys)
    assert code == 0 and out == "ok\n"
    (exchange,) = server.received
    body = exchange.body
    assert body["model"] == "acme/model" and body["max_tokens"] == 64 and body["reasoning_budget"] == 32
    assert body["seed"] == 7 and body["temperature"] == 0.2 and body["top_p"] == 0.9 and "stream" not in body
    assert body["messages"][0] == {"role": "system", "content": "/think"}
    assert body["messages"][1]["content"][0] == {"type": "text", "text": "Describe."}
    assert body["messages"][1]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert exchange.headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    ("kinds", "think", "system"),
    [
        ({"image"}, None, None),
        ({"audio"}, None, "/no_think"),
        ({"image", "video"}, None, "/no_think"),
        ({"audio"}, True, "/think"),
        ({"image"}, False, "/no_think"),
        (set(), None, None),
    ],
)
def test_reasoning_switch_is_no_think_by_default_for_audio_and_video(
    kinds: set[str], think: bool | None, system: str | None
) -> None:
    messages = build_body("Q", [], kinds, ChatParams(think=think), stream=False)["messages"]
    assert (messages[0]["content"] if messages[0]["role"] == "system" else None) == system
    assert messages[-1] == {"role": "user", "content": [{"type": "text", "text": "Q"}]}


def test_cli_defaults_shown_in_help_are_the_library_defaults() -> None:
    from nvmedia.chat import DEFAULT_BASE_URL, DEFAULT_MODEL

    assert (DEFAULT_MODEL_SHOWN, DEFAULT_BASE_URL_SHOWN) == (DEFAULT_MODEL, DEFAULT_BASE_URL)


# -- reasoning --------------------------------------------------------------------------------------------


def _reasoning_stream(ex: Exchange) -> None:
    ex.events([{"role": "assistant", "reasoning_content": "Looking at "}, {"reasoning_content": "the pixels."}])


def _reasoning_then_answer(ex: Exchange) -> None:
    ex.events(
        [
            {"role": "assistant", "reasoning_content": "Looking at the pixels."},
            {"content": "A woman"},
            {"content": " in a hat."},
        ]
    )


def test_streamed_reasoning_goes_to_stderr_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    with chat_server(_reasoning_then_answer) as server:
        base = ["chat", "Who?", "--base-url", server.base_url, "--api-key", KEY, "--stream"]
        code, out, err = run([*base, "--show-reasoning"], capsys)
        assert code == 0 and out == "A woman in a hat.\n"
        assert "Looking at the pixels." in err and "\x1b[" not in err  # not a terminal: not dimmed
        code, out, err = run(base, capsys)
        assert code == 0 and out == "A woman in a hat.\n" and err == ""


def test_whole_answer_reasoning_is_kept_apart_too(capsys: pytest.CaptureFixture[str]) -> None:
    with chat_server(lambda ex: ex.answer("A hat.", reasoning="Hmm, a hat.")) as server:
        args = ["chat", "Who?", "--base-url", server.base_url, "--api-key", KEY, "--no-stream", "--show-reasoning"]
        code, out, err = run(args, capsys)
    assert code == 0 and out == "A hat.\n" and "Hmm, a hat." in err


def test_stream_pieces_reach_the_caller_as_they_arrive() -> None:
    first_seen = threading.Event()
    server_saw_it = threading.Event()

    def script(ex: Exchange) -> None:
        ex.start_events()
        ex.event({"role": "assistant", "content": "first"})
        if first_seen.wait(30):  # the client got the first piece while the stream is still open
            server_saw_it.set()
        ex.event({"content": " second"})
        ex.event({}, "stop")
        ex.done()

    pieces: list[str] = []

    def on_delta(channel: str, text: str) -> None:
        pieces.append(text)
        first_seen.set()

    with chat_server(script) as server, ChatClient(server.base_url, KEY) as client:
        body = build_body("Q", [], set(), ChatParams(), stream=True)
        answer = client.send(body, on_delta=on_delta)
    assert server_saw_it.is_set() and pieces == ["first", " second"]
    assert answer.text == "first second" and answer.finish_reason == "stop"


# -- faults -----------------------------------------------------------------------------------------------


def test_chat_401_exits_1_with_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    with NVCFEmulator(api_keys=["nvapi-the-right-key"]) as emu:
        code, out, err = run(against(emu, "What is this?", str(HOPPER)), capsys)
        assert emu.chat_count == 0
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "refused the key (401 Unauthorized)" in err and "NVIDIA_API_KEY" in err
    assert KEY not in err


def test_chat_429_is_retried_after_retry_after(emu: NVCFEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    emu.inject("429", path_prefix="/v1/chat", retry_after=0)
    code, out, _ = run(against(emu, "What is this?", str(HOPPER)), capsys)
    assert code == 0 and out.startswith("received 1 image")
    assert emu.counts["fault"] == 1 and emu.chat_count == 1


def test_chat_429_every_time_exits_1_naming_the_status_and_attempts(
    emu: NVCFEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    emu.inject("429", path_prefix="/v1/chat", retry_after=0, times=2)
    code, out, err = run(against(emu, "What is this?", str(HOPPER)), capsys)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "429 Too Many Requests" in err and "on 2 attempts" in err


def test_chat_500_after_retries_exits_1_and_deletes_the_assets(
    emu: NVCFEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    emu.inject("500", path_prefix="/v1/chat", times=2)
    code, out, err = run(against(emu, "What is this?", str(HOPPER), "--mode", "asset"), capsys)
    assert code == 1 and out == "" and "500 Internal Server Error" in err and "on 2 attempts" in err
    assert emu.upload_count == 1 and emu.assets() == []


def test_chat_dropped_connection_exits_1_and_deletes_the_assets(
    emu: NVCFEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    emu.inject("drop", path_prefix="/v1/chat")
    code, _, err = run(against(emu, "What is this?", str(HOPPER), "--mode", "asset", "--stream"), capsys)
    assert code == 1 and err.count("\n") == 1 and "was lost before the answer was complete" in err
    assert emu.assets() == []


def test_chat_stream_cut_before_done_exits_1_after_the_partial_answer(capsys: pytest.CaptureFixture[str]) -> None:
    with chat_server(lambda ex: ex.events([{"content": "A woman"}, {"content": " in"}], done=False)) as server:
        args = ["chat", "Who?", "--base-url", server.base_url, "--api-key", KEY, "--stream"]
        code, out, err = run(args, capsys)
    assert code == 1 and out == "A woman in\n"
    assert "closed the stream before the answer was complete (10 characters received" in err


def test_chat_with_a_broken_file_sends_nothing(emu: NVCFEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(against(emu, "What is this?", str(HOPPER), str(BROKEN)), capsys)
    assert code == 1 and out == "" and "damaged" in err
    assert emu.chat_count == 0 and emu.assets() == []


def test_chat_with_more_than_ten_assets_sends_nothing_and_leaves_nothing(
    emu: NVCFEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = []
    for i in range(11):
        images.append(tmp_path / f"c{i:02d}.png")
        shutil.copy(HOPPER, images[-1])
        with images[-1].open("ab") as fh:
            fh.write(bytes([i]))  # different bytes: eleven uploads, not one
    code, out, err = run(against(emu, "What are these?", *map(str, images), "--mode", "asset"), capsys)
    assert code == 1 and out == "" and "at most 10" in err
    assert emu.chat_count == 0 and emu.assets() == []


def test_chat_with_a_url_names_the_option_when_fetching_is_off(
    emu: NVCFEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(against(emu, "What is this?", "https://example.com/cat.jpg"), capsys)
    assert code == 1 and "--fetch-urls" in err and emu.chat_count == 0


def test_chat_without_a_key_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["chat", "Hi"], capsys)
    assert code == 2 and "no API key" in err and "NVIDIA_API_KEY" in err


def test_chat_refuses_to_send_the_key_over_plain_http_to_another_machine(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["chat", "Hi", "--base-url", "http://example.com/v1", "--api-key", KEY], capsys)
    assert code == 2 and "plain http" in err and "--allow-insecure-http" in err and KEY not in err


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://integrate.api.nvidia.com/v1", True),
        ("http://127.0.0.1:8000/v1", True),
        ("http://127.9.9.9/v1", True),
        ("http://localhost:8000/v1", True),
        ("http://[::1]:8000/v1", True),
        ("http://example.com/v1", False),
        ("http://10.0.0.5/v1", False),
        ("http://127.0.0.1.nip.io/v1", False),
        ("ftp://example.com/v1", False),
    ],
)
def test_key_goes_only_over_https_or_to_loopback(url: str, allowed: bool) -> None:
    if allowed:
        check_key_transport(url)
    else:
        with pytest.raises(ConfigError):
            check_key_transport(url)


def test_plain_http_is_allowed_when_asked() -> None:
    check_key_transport("http://example.com/v1", allow_insecure_http=True)


def test_chat_error_of_a_refused_request_keeps_the_status() -> None:
    with chat_server(lambda ex: ex.json({"error": {"message": "model not found"}}, status=404)) as server:
        with ChatClient(server.base_url, KEY) as client, pytest.raises(ChatError) as caught:
            client.send(build_body("Q", [], set(), ChatParams(), stream=False))
    assert caught.value.status_code == 404 and caught.value.code == "chat_failed"
    assert "404 Not Found: model not found" in caught.value.message


def test_ctrl_c_while_waiting_for_the_answer_deletes_the_uploaded_assets(emu: NVCFEmulator) -> None:
    arrived, release = threading.Event(), threading.Event()

    def hold(ex: Exchange) -> None:
        arrived.set()
        release.wait(60)

    with chat_server(hold) as server:
        args = ["chat", "What is this?", str(HOPPER), "--mode", "asset", "--no-stream"]
        args += ["--base-url", server.base_url, "--assets-url", emu.assets_url, "--api-key", KEY]
        env = {k: v for k, v in os.environ.items() if k != "NVIDIA_API_KEY"}
        proc = subprocess.Popen([sys.executable, "-m", "nvmedia", *args], stderr=subprocess.PIPE, text=True, env=env)
        try:
            assert arrived.wait(60)  # the request is out: the asset exists and is referenced
            assert len(emu.assets()) == 1
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            release.set()
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130 and "interrupted" in err
    assert emu.assets() == [] and emu.delete_count == 1


def test_chat_json_and_stream_together_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["chat", "Hi", "--emulate", "--json", "--stream"], capsys)
    assert code == 2 and "--json" in err


def test_chat_prompt_dash_is_read_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("What is in\nthis picture?\n"))
    with chat_server(lambda ex: ex.answer(ex.prompt)) as server:
        code, out, _ = run(["chat", "-", "--base-url", server.base_url, "--api-key", KEY], capsys)
    assert code == 0 and out == "What is in\nthis picture?\n"


def test_chat_stream_dropped_midway_by_the_emulator_exits_1_after_the_partial_answer(
    emu: NVCFEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    emu.inject("drop", path_prefix="/v1/chat", after_chunks=3)
    code, out, err = run(against(emu, "What is this?", str(HOPPER), "--mode", "asset", "--stream"), capsys)
    assert code == 1 and out.startswith("received") and out.endswith("\n")
    assert out != "received 1 image (0 inline, 1 asset)\n"  # cut short
    assert err.count("\n") == 1 and "before the answer was complete" in err
    assert emu.assets() == []
