"""Clients end to end against the emulator: the official openai SDK (sync, async, streaming) and raw httpx.

The SDK reaches the emulator's chat endpoint in-process (``http_client`` over
``emu.transport``); nvmedia uploads to the same emulator over loopback. The emulator
checks every media reference the way the service does, and answers with what it received.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI
from support import CORPUS

import nvmedia
from nvmedia.cli import main
from nvmedia.testing import NVCFEmulator

KEY = "nvapi-openai-test-key-DO-NOT-LEAK"
MODEL = "nvidia/nemotron-3-nano-omni-30b-a3b-reasoning"
IMAGE = CORPUS / "pillow__hopper.heif"  # becomes an inline JPEG
TALK = CORPUS / "pydub__test1-24bit.wav"  # 2.65 MB: an asset


@pytest.fixture()
def emu() -> Iterator[NVCFEmulator]:
    with NVCFEmulator() as emulator:
        yield emulator


@pytest.fixture()
def clip(av_files: dict[str, Path]) -> Path:
    """A 1 s 320x240 H.264/AAC MP4 (made by fixtures/make_av.py): inline as it is."""
    return av_files["mp4_h264_aac"]


def _conversation(tmp_path: Path, clip: Path) -> list[dict[str, Any]]:
    shutil.copy(IMAGE, tmp_path / "cat.heic")
    return [
        {"role": "system", "content": "/no_think"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in the picture and the recording?"},
                {"type": "image_url", "image_url": {"url": "file://" + str(tmp_path / "cat.heic")}},
            ],
        },
        {"role": "assistant", "content": "A portrait, and I need the recording."},
        {"role": "user", "content": f"Here: <audio src='{TALK}'> and a clip <video src=\"{clip}\"/>"},
    ]


def _options(emu: NVCFEmulator) -> dict[str, Any]:
    return {"assets_url": emu.assets_url, "api_key": KEY, "cache": False}


def test_openai_sdk_sync_request_with_extra_headers(emu: NVCFEmulator, tmp_path: Path, clip: Path) -> None:
    client = OpenAI(base_url=emu.base_url + "/v1", api_key=KEY, http_client=httpx.Client(transport=emu.transport))
    with nvmedia.rewrite_messages(_conversation(tmp_path, clip), **_options(emu)) as rw:
        reply = client.chat.completions.create(model=MODEL, messages=rw.messages, extra_headers=rw.headers)
        assert len(emu.assets(KEY)) == 1
    assert reply.choices[0].message.content == "received 1 image, 1 audio, 1 video (2 inline, 1 asset)"
    assert emu.assets(KEY) == []
    chat = [r for r in emu.requests if r.path == "/v1/chat/completions"]
    assert chat[-1].headers["nvcf-input-asset-references"] == rw.asset_ids[0]


def test_openai_sdk_async_request(emu: NVCFEmulator, tmp_path: Path, clip: Path) -> None:
    async def ask() -> str | None:
        client = AsyncOpenAI(
            base_url=emu.base_url + "/v1", api_key=KEY, http_client=httpx.AsyncClient(transport=emu.transport)
        )
        async with await nvmedia.arewrite_messages(_conversation(tmp_path, clip), **_options(emu)) as rw:
            reply = await client.chat.completions.create(model=MODEL, messages=rw.messages, extra_headers=rw.headers)
        await client.close()
        return reply.choices[0].message.content

    assert asyncio.run(ask()) == "received 1 image, 1 audio, 1 video (2 inline, 1 asset)"
    assert emu.assets(KEY) == []


def test_openai_sdk_streaming_request(emu: NVCFEmulator, tmp_path: Path, clip: Path) -> None:
    client = OpenAI(base_url=emu.base_url + "/v1", api_key=KEY, http_client=httpx.Client(transport=emu.transport))
    with nvmedia.rewrite_messages(_conversation(tmp_path, clip), **_options(emu)) as rw:
        stream = client.chat.completions.create(
            model=MODEL, messages=rw.messages, extra_headers=rw.headers, stream=True
        )
        answer = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert answer == "received 1 image, 1 audio, 1 video (2 inline, 1 asset)"
    assert emu.assets(KEY) == []


def test_openai_sdk_over_loopback_as_users_run_it(emu: NVCFEmulator, tmp_path: Path, clip: Path) -> None:
    client = OpenAI(base_url=emu.base_url + "/v1", api_key=KEY)
    with nvmedia.rewrite_messages(_conversation(tmp_path, clip), **_options(emu)) as rw:
        reply = client.chat.completions.create(model=MODEL, messages=rw.messages, extra_headers=rw.headers)
    assert reply.choices[0].message.content == "received 1 image, 1 audio, 1 video (2 inline, 1 asset)"


def test_raw_httpx_request_built_from_a_cli_request_record(
    emu: NVCFEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "manifest.jsonl"
    args = ["--assets-url", emu.assets_url, "--api-key", KEY, "--no-cache", "-q"]
    assert main(["prepare", str(IMAGE), str(TALK), "--group", "all", *args, "-o", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    (request,) = [r for r in records if r["type"] == "request"]
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Describe both."}, *request["content"]]}],
    }
    answer = httpx.post(
        emu.chat_url, json=body, headers={"Authorization": f"Bearer {KEY}", **request["headers"]}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "received 1 image, 1 audio (1 inline, 1 asset)"
    tags_body = {"model": MODEL, "messages": [{"role": "user", "content": f"Describe both. {request['tags']}"}]}
    answer = httpx.post(
        emu.chat_url, json=tags_body, headers={"Authorization": f"Bearer {KEY}", **request["headers"]}, timeout=30
    )
    assert answer.json()["choices"][0]["message"]["content"] == "received 1 image, 1 audio (1 inline, 1 asset)"
    (asset_id,) = request["headers"]["NVCF-INPUT-ASSET-REFERENCES"].split(",")
    assert main(["assets", "delete", asset_id, *args[:4]]) == 0
    assert emu.assets(KEY) == []
