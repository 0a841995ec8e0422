"""LangChain: with_media(ChatNVIDIA) end to end against the emulator over loopback.

ChatNVIDIA sends with ``requests`` (sync) and ``aiohttp`` (async) to the emulator's chat
endpoint, which checks every media reference and the asset header as the service does and
answers with what it received.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_nvidia_ai_endpoints import ChatNVIDIA
from support import CORPUS

import nvmedia
from nvmedia.integrations.langchain import with_media
from nvmedia.testing import NVCFEmulator

KEY = "nvapi-langchain-test-key-DO-NOT-LEAK"
OMNI = "nvidia/nemotron-3-nano-omni-30b-a3b-reasoning"  # not in ChatNVIDIA's table: plain chat handling
VLM = "nvidia/nemotron-nano-12b-v2-vl"  # typed "vlm" by ChatNVIDIA: it rewrites the asset header
IMAGE = CORPUS / "pillow__hopper.heif"  # an inline JPEG
TALK = CORPUS / "pydub__test1-24bit.wav"  # 2.65 MB: an asset
MEMO = CORPUS / "pydub__test-192khz-32bit.flac"  # an inline MP3


@pytest.fixture()
def emu() -> Iterator[NVCFEmulator]:
    with NVCFEmulator() as emulator:
        yield emulator


def _chat(emu: NVCFEmulator, model: str = OMNI, **options: Any) -> Any:
    llm = ChatNVIDIA(base_url=emu.base_url + "/v1", model=model, api_key=KEY)
    return with_media(llm, assets_url=emu.assets_url, api_key=KEY, cache=False, **options)


def _large_image(tmp_path: Path) -> Path:
    """A photo-like JPEG of about 700 KB: an image asset."""
    import random

    from PIL import Image

    rng = random.Random(5)
    path = tmp_path / "large.jpg"
    Image.frombytes("RGB", (800, 800), rng.randbytes(800 * 800 * 3)).save(path, quality=92)
    return path


def _sent_header(emu: NVCFEmulator) -> str | None:
    chat = [r for r in emu.requests if r.path == "/v1/chat/completions"]
    return chat[-1].headers.get("nvcf-input-asset-references")


def test_invoke_gets_every_asset_into_the_header(emu: NVCFEmulator, tmp_path: Path) -> None:
    photo = _large_image(tmp_path)
    message = HumanMessage(
        content=[
            {"type": "text", "text": "Describe both."},
            {"type": "image_url", "image_url": {"url": str(photo)}},
            {"type": "audio_url", "audio_url": {"url": str(TALK)}},
        ]
    )
    answer = _chat(emu).invoke([SystemMessage(content="/no_think"), message])
    assert isinstance(answer, AIMessage) and answer.content == "received 1 image, 1 audio (0 inline, 2 assets)"
    assert len((_sent_header(emu) or "").split(",")) == 2
    assert emu.assets(KEY) == [] and emu.delete_count == 2


def test_vlm_typed_model_keeps_audio_and_video_assets_in_the_header(emu: NVCFEmulator, tmp_path: Path) -> None:
    photo = _large_image(tmp_path)
    message = HumanMessage(content=f'Compare <img src="{photo}" /> with <audio src="{TALK}" />')
    answer = _chat(emu, model=VLM).invoke([message])
    assert answer.content == "received 1 image, 1 audio (0 inline, 2 assets)"
    assert len((_sent_header(emu) or "").split(",")) == 2


def test_message_with_only_audio_keeps_its_audio(emu: NVCFEmulator) -> None:
    message = HumanMessage(
        content=[{"type": "text", "text": "Transcribe."}, {"type": "audio_url", "audio_url": {"url": str(MEMO)}}]
    )
    assert _chat(emu).invoke([message]).content == "received 1 audio (1 inline, 0 assets)"
    message = HumanMessage(
        content=[{"type": "text", "text": "And this."}, {"type": "audio_url", "audio_url": {"url": str(TALK)}}]
    )
    assert _chat(emu).invoke([message]).content == "received 1 audio (0 inline, 1 asset)"


def test_ainvoke(emu: NVCFEmulator) -> None:
    message = HumanMessage(content=f"What is this? <img src='{IMAGE}'> <audio src='{TALK}'>")
    answer = asyncio.run(_chat(emu).ainvoke([message]))
    assert answer.content == "received 1 image, 1 audio (1 inline, 1 asset)"
    assert emu.assets(KEY) == []


def test_stream_deletes_its_assets_once_the_answer_is_complete(emu: NVCFEmulator) -> None:
    chunks = _chat(emu).stream([HumanMessage(content=f"Listen: <audio src='{TALK}'>")])
    first = next(chunks)
    assert len(emu.assets(KEY)) == 1  # the answer is still streaming
    text = first.content + "".join(str(c.content) for c in chunks)
    assert text == "received 1 audio (0 inline, 1 asset)" and emu.assets(KEY) == []


def test_astream(emu: NVCFEmulator) -> None:
    async def collect() -> str:
        parts = [c.content async for c in _chat(emu).astream(f"Look: <img src='{IMAGE}'>")]
        return "".join(str(p) for p in parts)

    assert asyncio.run(collect()) == "received 1 image (1 inline, 0 assets)"


def test_prompt_templates_and_standard_blocks_are_read(emu: NVCFEmulator) -> None:
    prompt = ChatPromptTemplate.from_messages([("system", "/no_think"), ("user", "{question} <img src='{path}'>")])
    chain = prompt | _chat(emu)
    assert chain.invoke({"question": "What?", "path": str(IMAGE)}).content == "received 1 image (1 inline, 0 assets)"
    blocks = [
        {"type": "text", "text": "Both?"},
        {"type": "image", "url": str(IMAGE)},
        {"type": "audio", "url": str(MEMO)},
    ]
    assert _chat(emu).invoke([HumanMessage(content=blocks)]).content == "received 1 image, 1 audio (2 inline, 0 assets)"


def test_urls_are_fetched_when_asked(emu: NVCFEmulator, tmp_path: Path) -> None:
    shutil.copy(IMAGE, tmp_path / "cat.heic")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cat.heic"
        chat = _chat(emu, fetch_urls=True, url_allow=["127.0.0.1"])
        assert chat.invoke(f"What is this? <img src='{url}'>").content == "received 1 image (1 inline, 0 assets)"
    finally:
        server.shutdown()
        server.server_close()


def test_media_in_a_system_message_is_refused_before_anything_is_sent(emu: NVCFEmulator) -> None:
    system = SystemMessage(content=[{"type": "audio_url", "audio_url": {"url": str(TALK)}}])
    with pytest.raises(nvmedia.InputError) as caught:
        _chat(emu).invoke([system, HumanMessage(content="Hi")])
    assert "a system message references media" in caught.value.message and emu.requests == []


def test_the_model_answering_with_html_does_not_end_the_conversation(emu: NVCFEmulator) -> None:
    conversation = [
        HumanMessage(content=f"Write an HTML page with my logo <img src='{IMAGE}'>"),
        AIMessage(content='<html><img src="logo.png"></html>'),
        SystemMessage(content="Answer in <audio src=x.wav> style, briefly."),
        HumanMessage(content="Thanks! Now make it blue."),
    ]
    assert _chat(emu).invoke(conversation).content == "received 1 image (1 inline, 0 assets)"


def test_assets_are_deleted_when_the_call_fails(emu: NVCFEmulator) -> None:
    emu.inject("500", times=5, path_prefix="/v1/chat")
    with pytest.raises(Exception, match="500"):
        _chat(emu).invoke([HumanMessage(content=f"<audio src='{TALK}'>")])
    assert emu.create_count == 1 and emu.assets(KEY) == []


def test_only_chat_nvidia_is_wrapped() -> None:
    with pytest.raises(TypeError, match="ChatNVIDIA"):
        with_media(object())  # type: ignore[arg-type]
