"""rewrite_messages: every media reference of a conversation made acceptable, bad ones refused before any upload.

Real files (the committed corpus, images and recordings made here), real ffmpeg, the real
emulator over loopback for uploads, and its chat endpoint (in-process, through its
transport) to prove the service would accept each rewritten conversation.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import shutil
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from support import CORPUS
from test_audio_split import _talk  # the 12 s recording a 5 s limit cuts in three, at its pauses

import nvmedia
from nvmedia.errors import FetchError, InputError, MediaError, PlanError
from nvmedia.messages import find_references, find_tags, parse_data_uri
from nvmedia.sniff import sniff_bytes
from nvmedia.testing import NVCFEmulator

KEY = "nvapi-messages-test-key-DO-NOT-LEAK"
WEBP = CORPUS / "pillow__hopper.webp"  # 3 KB: inline as it is
HEIC = CORPUS / "pillow__hopper.heif"  # becomes a JPEG
FLAC = CORPUS / "pydub__test-192khz-32bit.flac"  # becomes a 16 kHz mono MP3, inline
WAV = CORPUS / "pydub__test1-24bit.wav"  # 2.65 MB: sent as it is (tags cut), too big to inline: an asset


@pytest.fixture()
def emu() -> Iterator[NVCFEmulator]:
    with NVCFEmulator() as emulator:
        yield emulator


def _rewrite(emu: NVCFEmulator, messages: list[dict[str, Any]], **options: Any) -> nvmedia.Rewritten:
    options.setdefault("cache", False)
    return nvmedia.rewrite_messages(messages, assets_url=emu.assets_url, api_key=KEY, **options)


def _ask(emu: NVCFEmulator, messages: list[Any], headers: dict[str, str]) -> str:
    """The emulator's chat answer to ``messages`` (it checks every media reference as the service does)."""
    with httpx.Client(transport=emu.transport) as http:
        response = http.post(
            emu.chat_url,
            json={"model": "nvidia/nemotron-3-nano-omni", "messages": messages},
            headers={"Authorization": f"Bearer {KEY}", **headers},
        )
    assert response.status_code == 200, response.text
    answer: str = response.json()["choices"][0]["message"]["content"]
    return answer


def _user(*content: Any) -> dict[str, Any]:
    """A user message: string content for one string, else a list of parts."""
    if len(content) == 1 and isinstance(content[0], str):
        return {"role": "user", "content": content[0]}
    return {"role": "user", "content": list(content)}


def _image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _noise_jpeg(path: Path, seed: int, size: int = 480) -> Path:
    """A photo-like JPEG of seeded noise, about 250 KB: sent as it is, too big to inline."""
    rng = random.Random(seed)
    Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3)).save(path, quality=92)
    return path


def _asset_id(url: str) -> str:
    data = parse_data_uri(url)
    assert data is not None and data.encoding == "asset_id", url
    return data.payload


# -------------------------------------------------------------------------------------- tags, pure


@pytest.mark.parametrize(
    "text",
    [
        '<img src="cat.png" />',
        "<img src='cat.png'>",
        "<IMG SRC='cat.png'/>",
        '<img alt="a cat" src="cat.png">',
        "<img\n  class=x\n  src=cat.png/>",
        "<img data-x=1 src = \"cat.png\" alt='y' />",
        "<Img src='cat.png' src='dog.png'>",
    ],
)
def test_tag_forms_all_name_their_source(text: str) -> None:
    (tag,) = find_tags(f"Look: {text} please", "t")
    assert tag.src == "cat.png" and tag.kind == "image"


def test_tag_names_in_prose_are_not_references() -> None:
    assert find_tags("use the <img> tag, or <video controls>; <audio", "t") == []


@given(
    name=st.sampled_from(["img", "IMG", "Audio", "video"]),
    before=st.lists(st.sampled_from(['alt="a b"', "alt='c'", "width=3", "controls", 'title="x > y"']), max_size=3),
    after=st.lists(st.sampled_from(['alt="a b"', "alt='c'", "width=3", "controls"]), max_size=3),
    quote_char=st.sampled_from(['"', "'", ""]),
    ending=st.sampled_from([">", "/>", " />", "></img>"]),
    src=st.sampled_from(["cat.png", "dir with space/cat.png", "file:///tmp/a%20b.png", "data:image/png;base64,AAAA"]),
)
def test_any_attribute_order_quote_and_ending_finds_the_src(
    name: str, before: list[str], after: list[str], quote_char: str, ending: str, src: str
) -> None:
    if not quote_char and " " in src:
        src = src.replace(" ", "_")
    text = f"x <{name} {' '.join([*before, f'src={quote_char}{src}{quote_char}', *after])}{ending} y"
    (tag,) = find_tags(text, "t")
    assert tag.src == src and text[tag.start : tag.end].endswith(">")


# -------------------------------------------------------------------------------------- the forms found


def test_single_quoted_tag_is_rewritten(emu: NVCFEmulator) -> None:
    messages, headers = _rewrite(emu, [_user(f"What is this? <img src='{WEBP}'>")])
    content = messages[0]["content"]
    assert content.startswith("What is this? <img src='data:image/webp;base64,") and content.endswith("'>")
    assert _ask(emu, messages, headers) == "received 1 image (1 inline, 0 assets)"


def test_alt_attribute_is_kept_in_any_attribute_order(emu: NVCFEmulator) -> None:
    messages, headers = _rewrite(emu, [_user(f'<img alt="my cat" src="{WEBP}" width=40>')])
    content = messages[0]["content"]
    assert content.startswith('<img alt="my cat" src="data:image/webp;base64,') and content.endswith('" width=40>')
    assert _ask(emu, messages, headers) == "received 1 image (1 inline, 0 assets)"


def test_upper_case_tag_is_rewritten(emu: NVCFEmulator) -> None:
    messages, headers = _rewrite(emu, [_user(f'<IMG SRC="{HEIC}"/>')])
    assert messages[0]["content"].startswith('<IMG SRC="data:image/jpeg;base64,')
    assert _ask(emu, messages, headers) == "received 1 image (1 inline, 0 assets)"


def test_tags_in_text_parts_are_rewritten(emu: NVCFEmulator) -> None:
    messages, headers = _rewrite(emu, [_user(_text(f'Compare <img src="{WEBP}" /> with <audio src="{WAV}" />.'))])
    text = messages[0]["content"][0]["text"]
    asset_id = headers.get("NVCF-INPUT-ASSET-REFERENCES")
    assert f'<audio src="data:audio/wav;asset_id,{asset_id}" />.' in text and "data:image/webp;base64," in text
    assert _ask(emu, messages, headers) == "received 1 image, 1 audio (1 inline, 1 asset)"


def test_input_audio_flac_is_normalized_to_an_accepted_format(emu: NVCFEmulator) -> None:
    part = {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(FLAC.read_bytes()).decode(), "format": "flac"},
    }
    messages, headers = _rewrite(emu, [_user(_text("Transcribe."), part)])
    new = messages[0]["content"][1]
    assert new["type"] == "input_audio" and new["input_audio"]["format"] == "mp3"
    assert sniff_bytes(base64.b64decode(new["input_audio"]["data"])).container == "mp3"
    assert _ask(emu, messages, headers) == "received 1 audio (1 inline, 0 assets)"


def test_input_audio_too_big_to_inline_becomes_an_audio_url_asset(emu: NVCFEmulator) -> None:
    part = {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(WAV.read_bytes()).decode(), "format": "wav"},
    }
    rw = _rewrite(emu, [_user(part)])
    (asset_id,) = rw.asset_ids
    assert rw.messages[0]["content"] == [
        {"type": "audio_url", "audio_url": {"url": f"data:audio/wav;asset_id,{asset_id}"}}
    ]
    assert _ask(emu, rw.messages, rw.headers) == "received 1 audio (0 inline, 1 asset)"


def test_oversized_data_uri_is_uploaded(emu: NVCFEmulator, tmp_path: Path) -> None:
    big = _noise_jpeg(tmp_path / "big.jpg", seed=1).read_bytes()
    uri = _data_uri("image/jpeg", big)
    assert len(uri) > 180_000
    messages, headers = _rewrite(emu, [_user(_text("What is it?"), _image_part(uri))])
    (asset_id,) = [a.asset_id for a in emu.assets(KEY)]
    assert messages[0]["content"][1]["image_url"]["url"] == f"data:image/jpeg;asset_id,{asset_id}"
    assert headers == {"NVCF-INPUT-ASSET-REFERENCES": asset_id}
    assert _ask(emu, messages, headers) == "received 1 image (0 inline, 1 asset)"


def test_heic_data_uri_is_converted(emu: NVCFEmulator) -> None:
    messages, headers = _rewrite(emu, [_user(_image_part(_data_uri("image/heic", HEIC.read_bytes())))])
    assert messages[0]["content"][0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert _ask(emu, messages, headers) == "received 1 image (1 inline, 0 assets)"


def test_accepted_inline_data_uri_is_left_as_it_is(emu: NVCFEmulator) -> None:
    uri = _data_uri("image/webp", WEBP.read_bytes())
    rw = _rewrite(emu, [_user(_image_part(uri))])
    assert rw.messages[0]["content"][0]["image_url"]["url"] == uri and rw.items == []
    assert emu.create_count == 0


def test_data_uri_whose_bytes_are_not_the_claimed_type_is_normalized(emu: NVCFEmulator) -> None:
    uri = _data_uri("image/png", WEBP.read_bytes())  # a WEBP claiming to be a PNG: the service refuses it
    rw = _rewrite(emu, [_user(_image_part(uri))])
    assert rw.messages[0]["content"][0]["image_url"]["url"].startswith("data:image/webp;base64,")
    assert _ask(emu, rw.messages, rw.headers) == "received 1 image (1 inline, 0 assets)"


def test_part_keeps_its_other_keys_and_follows_the_media_kind(emu: NVCFEmulator) -> None:
    rw = _rewrite(emu, [_user({"type": "image_url", "image_url": {"url": str(WEBP), "detail": "low"}})])
    assert rw.messages[0]["content"][0]["image_url"]["detail"] == "low"
    rw = _rewrite(emu, [_user(_image_part(str(FLAC)), _text(f"and <img alt=x src='{FLAC}'>"))])  # recordings
    assert rw.messages[0]["content"][0]["type"] == "audio_url"
    assert rw.messages[0]["content"][1]["text"].startswith("and <audio alt=x src='data:audio/mpeg;base64,")
    assert _ask(emu, rw.messages, rw.headers) == "received 2 audio (2 inline, 0 assets)"


def test_file_url_is_percent_decoded(emu: NVCFEmulator, tmp_path: Path) -> None:
    photo = tmp_path / "my photo.jpg"
    shutil.copy(CORPUS / "pillow__hopper_gray.jpg", photo)
    messages, _ = _rewrite(emu, [_user(_image_part("file://" + quote(str(photo))))])
    assert messages[0]["content"][0]["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_home_folder_is_expanded(emu: NVCFEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copy(WEBP, tmp_path / "cat.webp")
    rw = _rewrite(emu, [_user("<img src='~/cat.webp'>")])
    assert "data:image/webp;base64," in rw.messages[0]["content"]


# -------------------------------------------------------------------------------------- one file, one id; pieces


def test_same_file_by_two_spellings_gets_one_asset(
    emu: NVCFEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(WAV, tmp_path / "talk.wav")
    monkeypatch.chdir(tmp_path)
    messages = [
        _user(f'<audio src="talk.wav" /> again: <audio src="./talk.wav" /> and <audio src="{tmp_path}/talk.wav">')
    ]
    new, headers = _rewrite(emu, messages)
    (asset_id,) = [a.asset_id for a in emu.assets(KEY)]
    assert headers == {"NVCF-INPUT-ASSET-REFERENCES": asset_id}
    assert new[0]["content"].count(f"data:audio/wav;asset_id,{asset_id}") == 3
    assert emu.create_count == 1


def test_split_audio_pieces_all_take_the_reference_place_in_order(emu: NVCFEmulator, tmp_path: Path) -> None:
    talk = _talk(tmp_path / "talk.wav")
    profile = nvmedia.NEMOTRON_3_NANO_OMNI.replace(name="short-audio", max_audio_s=5.0)
    messages = [
        _user(_text("Part form:"), {"type": "audio_url", "audio_url": {"url": str(talk)}}, _text("end")),
        _user(f"Tag form: <audio src='{talk}' alt=memo> end"),
    ]
    rw = _rewrite(emu, messages, profile=profile, split_long_audio=True, mode="asset")
    new, headers = rw
    content = new[0]["content"]
    assert [p["type"] for p in content] == ["text", "audio_url", "audio_url", "audio_url", "text"]
    urls = [p["audio_url"]["url"] for p in content[1:4]]
    ids = [_asset_id(url) for url in urls]
    assert len(set(ids)) == 3 and headers == {"NVCF-INPUT-ASSET-REFERENCES": ",".join(ids)}
    tags = " ".join(f"<audio src='{url}' alt=memo>" for url in urls)
    assert new[1]["content"] == f"Tag form: {tags} end"
    assert _ask(emu, new, headers) == "received 6 audio (0 inline, 6 assets)"  # the emulator counts references
    assert [(it.piece[0], it.asset_id) for it in rw.items if it.piece] == [(1, ids[0]), (2, ids[1]), (3, ids[2])]


# -------------------------------------------------------------------------------------- headers, deleting, the input


def test_leaving_the_block_deletes_what_it_uploaded_and_nothing_else(emu: NVCFEmulator, tmp_path: Path) -> None:
    with nvmedia.AssetClient(api_key=KEY, base_url=emu.assets_url) as assets:
        earlier = assets.upload_file(WAV, "audio/wav")
    messages = [
        _user(_text("First"), {"type": "audio_url", "audio_url": {"url": f"data:audio/wav;asset_id,{earlier}"}}),
        _user(_text("Then"), _image_part(str(_noise_jpeg(tmp_path / "big.jpg", seed=2)))),
    ]
    with _rewrite(emu, messages) as rw:
        new = rw.uploaded_ids
        assert len(new) == 1 and rw.asset_ids == [earlier, *new]
        assert rw.headers == {"NVCF-INPUT-ASSET-REFERENCES": f"{earlier},{new[0]}"}
        assert _ask(emu, rw.messages, rw.headers) == "received 1 image, 1 audio (0 inline, 2 assets)"
    assert [a.asset_id for a in emu.assets(KEY)] == [earlier]


def test_async_rewrite_deletes_at_the_end_of_its_block(emu: NVCFEmulator) -> None:
    async def main() -> list[str]:
        messages = [_user(f"<audio src='{WAV}'>")]
        rw = await nvmedia.arewrite_messages(messages, assets_url=emu.assets_url, api_key=KEY, cache=False)
        async with rw:
            assert len(emu.assets(KEY)) == 1
        return rw.asset_ids

    assert len(asyncio.run(main())) == 1 and emu.assets(KEY) == []


def test_input_is_never_modified_and_the_result_unpacks_as_before(emu: NVCFEmulator) -> None:
    messages = [
        {"role": "system", "content": "/no_think"},
        _user(_text("Hi"), _image_part(str(WEBP))),
        {"role": "assistant", "content": "Hello."},
        _user(f"and <audio src='{WAV}'>"),
    ]
    before = repr(messages)
    new, headers = _rewrite(emu, messages)
    assert repr(messages) == before
    assert new[0] == messages[0] and new[2] == messages[2] and new[0] is not messages[0]
    assert list(headers) == ["NVCF-INPUT-ASSET-REFERENCES"]


def test_no_media_gives_the_messages_back_untouched(emu: NVCFEmulator) -> None:
    messages = [_user("Just text, <b>bold</b> and a <img> mention.")]
    rw = _rewrite(emu, messages)
    assert rw.messages == messages and rw.headers == {} and rw.items == [] and emu.requests == []


def test_inline_data_already_in_the_conversation_counts_against_the_request_budget(
    emu: NVCFEmulator, tmp_path: Path
) -> None:
    uris = [
        _data_uri("image/jpeg", _noise_jpeg(tmp_path / f"s{i}.jpg", seed=10 + i, size=300).read_bytes())
        for i in range(3)
    ]
    assert all(90_000 < len(u) < 180_000 for u in uris)  # each fits alone; together they are over 180,000
    rw = _rewrite(emu, [_user(*[_image_part(u) for u in uris])])
    inline = [p["image_url"]["url"] for p in rw.messages[0]["content"] if ";base64," in p["image_url"]["url"]]
    assert sum(len(u) for u in inline) < 180_000 and len(rw.asset_ids) == 3 - len(inline) >= 2
    assert _ask(emu, rw.messages, rw.headers).endswith(f"({len(inline)} inline, {len(rw.asset_ids)} assets)")


# -------------------------------------------------------------------------------------- remote URLs


@pytest.fixture()
def origin(tmp_path: Path) -> Iterator[str]:
    """A loopback HTTP server serving a folder holding ``cat.webp``; yields its base URL."""
    folder = tmp_path / "www"
    folder.mkdir()
    shutil.copy(WEBP, folder / "cat.webp")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_https_url_without_fetch_urls_is_refused_naming_the_option(emu: NVCFEmulator) -> None:
    with pytest.raises(FetchError) as caught:
        _rewrite(emu, [_user(_image_part("https://example.com/cat.jpg?sig=s3cr3t"))])
    err = caught.value
    assert err.code == "fetch_blocked" and "fetch_urls=True" in err.hint
    assert "messages[0].content[0] (image_url)" in err.message and "s3cr3t" not in str(err)


def test_url_is_fetched_with_fetch_urls_and_url_allow(emu: NVCFEmulator, origin: str) -> None:
    rw = _rewrite(emu, [_user(f'<img src="{origin}/cat.webp">')], fetch_urls=True, url_allow=["127.0.0.1"])
    assert rw.messages[0]["content"].startswith('<img src="data:image/webp;base64,')


@pytest.mark.parametrize("host", ["127.0.0.1", "169.254.169.254"])
def test_https_url_to_a_private_address_is_blocked_without_url_allow(emu: NVCFEmulator, host: str) -> None:
    with pytest.raises(FetchError) as caught:
        _rewrite(emu, [_user(_image_part(f"https://{host}/latest/meta-data.png"))], fetch_urls=True)
    assert caught.value.code == "fetch_blocked" and host in caught.value.message
    assert emu.create_count == 0


# -------------------------------------------------------------------------------------- bad input


def test_missing_file_is_not_found_naming_the_reference(emu: NVCFEmulator, tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        _rewrite(emu, [_user(_text("hi"), _image_part(str(tmp_path / "nope.png")))])
    assert caught.value.code == "not_found"
    assert caught.value.message == f"messages[0].content[1] (image_url): {tmp_path / 'nope.png'} does not exist"


def test_folder_reference_is_a_clear_error(emu: NVCFEmulator, tmp_path: Path) -> None:
    shutil.copy(WEBP, tmp_path / "cat.webp")
    with pytest.raises(InputError) as caught:
        _rewrite(emu, [_user(f"<img src='{tmp_path}'>")])
    assert caught.value.code == "unreadable" and "is a folder" in caught.value.message


@pytest.mark.parametrize("role", ["system", "assistant", "tool"])
def test_media_outside_user_messages_is_refused_before_any_upload(emu: NVCFEmulator, role: str) -> None:
    messages = [_user(f"<audio src='{WAV}'>"), {"role": role, "content": [_text("see"), _image_part(str(HEIC))]}]
    with pytest.raises(InputError) as caught:
        _rewrite(emu, messages)
    article = "an" if role == "assistant" else "a"
    assert f"messages[1].content[1] (image_url): {article} {role} message references media" in caught.value.message
    assert emu.requests == []


@pytest.mark.parametrize("in_a_text_part", [False, True])
@pytest.mark.parametrize("role", ["system", "assistant", "tool"])
def test_markup_in_a_model_answer_is_text_and_the_next_turn_goes_through(
    emu: NVCFEmulator, role: str, in_a_text_part: bool
) -> None:
    markup = 'Here is the HTML: <img src="logo.png" alt="logo"> <video src=https://example.com/a.mp4 controls>'
    answer = {"role": role, "content": [_text(markup)] if in_a_text_part else markup}
    messages = [_user(f"Write HTML with my logo <img src='{WEBP}'>"), answer, _user("Thanks! Now make it blue.")]
    rw = _rewrite(emu, messages)
    assert rw.messages[1] == answer and rw.messages[2] == messages[2]
    assert _ask(emu, rw.messages, rw.headers) == "received 1 image (1 inline, 0 assets)"


def test_markup_in_user_text_is_refused_naming_the_option_or_the_path_and_how_to_send_it_as_text(
    emu: NVCFEmulator,
) -> None:
    with pytest.raises(FetchError) as fetch_caught:
        _rewrite(emu, [_user('Why does <img src="https://example.com/a.png"> not show?')])
    assert fetch_caught.value.code == "fetch_blocked" and "fetch_urls=True" in fetch_caught.value.hint
    assert "&lt;img" in fetch_caught.value.hint
    with pytest.raises(InputError) as input_caught:
        _rewrite(emu, [_user("Fix this markup: <img src=photo.jpg>")])
    assert input_caught.value.code == "not_found"
    assert input_caught.value.message == "messages[0].content <img> tag: photo.jpg does not exist"
    assert "&lt;img" in input_caught.value.hint
    escaped = [_user('Why does &lt;img src="https://example.com/a.png"&gt; not show?')]
    rw = _rewrite(emu, escaped)
    assert rw.messages == escaped and emu.requests == []
    assert _ask(emu, rw.messages, rw.headers).startswith("received no media")


def test_twelve_distinct_images_are_refused_before_any_upload(emu: NVCFEmulator, tmp_path: Path) -> None:
    images = [_noise_jpeg(tmp_path / f"photo{i:02}.jpg", seed=i) for i in range(12)]
    with pytest.raises(PlanError) as caught:
        _rewrite(emu, [_user(_text("Which is sharpest?"), *[_image_part(str(p)) for p in images])])
    assert caught.value.code == "too_many_assets"
    assert caught.value.message.startswith("the conversation needs 12 assets") and "at most 10" in caught.value.message
    assert emu.requests == []


def test_assets_already_referenced_count_toward_the_cap(emu: NVCFEmulator, tmp_path: Path) -> None:
    known = [f"data:image/jpeg;asset_id,{i:08x}-0000-4000-8000-000000000000" for i in range(9)]
    images = [_noise_jpeg(tmp_path / f"p{i}.jpg", seed=20 + i) for i in range(2)]
    with pytest.raises(PlanError) as caught:
        _rewrite(emu, [_user(*[_image_part(u) for u in known], *[_image_part(str(p)) for p in images])])
    assert "needs 11 assets (9 already referenced, 2 to upload)" in caught.value.message
    assert emu.requests == []


def test_input_audio_with_invalid_base64_is_corrupt_media(emu: NVCFEmulator) -> None:
    part = {"type": "input_audio", "input_audio": {"data": "UklGR!!not base64", "format": "wav"}}
    with pytest.raises(MediaError) as caught:
        _rewrite(emu, [_user(part)])
    assert caught.value.code == "corrupt_media" and "messages[0].content[0] (input_audio)" in caught.value.message


def test_tag_with_an_unterminated_quote_is_refused(emu: NVCFEmulator) -> None:
    with pytest.raises(InputError) as caught:
        _rewrite(emu, [_user(f'Look <img alt="x" src="{WEBP} /> here')])
    assert caught.value.code == "unreadable" and "never closed" in caught.value.message
    assert "messages[0].content" in caught.value.message


def test_file_url_naming_another_host_is_refused(emu: NVCFEmulator) -> None:
    for url in ("file://fileserver/share/cat.png", "file://../cat.png"):
        with pytest.raises(FetchError) as caught:
            _rewrite(emu, [_user(_image_part(url))])
        assert caught.value.code == "fetch_blocked" and "this machine" in caught.value.message


def test_other_schemes_are_refused(emu: NVCFEmulator) -> None:
    with pytest.raises(FetchError) as caught:
        _rewrite(emu, [_user(_image_part("s3://bucket/cat.png"))])
    assert caught.value.code == "fetch_blocked" and "s3:" in caught.value.message


def test_error_from_the_media_names_the_reference_as_written(emu: NVCFEmulator, tmp_path: Path) -> None:
    shutil.copy(CORPUS / "pillow__truncated_jpeg.jpg", tmp_path / "broken.jpg")
    os.symlink(tmp_path / "broken.jpg", tmp_path / "link.jpg")
    with pytest.raises(nvmedia.NVMediaError) as caught:
        _rewrite(emu, [_user(_image_part(str(tmp_path / "link.jpg")))])
    assert caught.value.code == "corrupt_media"
    assert caught.value.message.startswith(f"messages[0].content[0] (image_url): {tmp_path / 'link.jpg'}: broken.jpg: ")


# -------------------------------------------------------------------------------------- local_root


@pytest.fixture()
def served(tmp_path: Path) -> tuple[Path, Path]:
    """``(root, outside)``: a folder local paths may be read from, holding ``cat.webp``; a file beside it."""
    root = tmp_path / "uploads"
    (root / "sub").mkdir(parents=True)
    shutil.copy(WEBP, root / "cat.webp")
    outside = tmp_path / "secret.webp"
    shutil.copy(WEBP, outside)
    return root, outside


def test_local_root_reads_relative_paths_from_the_folder(emu: NVCFEmulator, served: tuple[Path, Path]) -> None:
    root, _ = served
    rw = _rewrite(emu, [_user("<img src='cat.webp'> <img src='sub/../cat.webp'>")], local_root=root)
    assert rw.messages[0]["content"].count("data:image/webp;base64,") == 2 and len(rw.items) == 1


def test_path_outside_local_root_is_refused_without_saying_whether_it_exists(
    emu: NVCFEmulator, served: tuple[Path, Path]
) -> None:
    root, outside = served
    errors = []
    for name in ("secret.webp", "absent.webp"):
        with pytest.raises(InputError) as caught:
            _rewrite(emu, [_user(_image_part(f"../{name}"))], local_root=root)
        errors.append((caught.value.code, caught.value.message.replace(name, "NAME"), caught.value.hint))
    assert errors[0] == errors[1]
    assert errors[0][1] == "messages[0].content[0] (image_url): ../NAME is outside the folder local files are read from"
    with pytest.raises(InputError) as caught:
        _rewrite(emu, [_user(_image_part(str(outside)))], local_root=root)
    assert "outside the folder" in caught.value.message and emu.requests == []


def test_file_url_with_dot_dot_cannot_leave_local_root(emu: NVCFEmulator, served: tuple[Path, Path]) -> None:
    root, outside = served
    with pytest.raises(InputError) as caught:
        _rewrite(emu, [_user(_image_part(f"file://{root}/sub/../../{outside.name}"))], local_root=root)
    assert "outside the folder" in caught.value.message


def test_link_inside_local_root_leading_outside_is_refused(emu: NVCFEmulator, served: tuple[Path, Path]) -> None:
    root, outside = served
    os.symlink(outside, root / "innocent.webp")
    with pytest.raises(InputError) as caught:
        _rewrite(emu, [_user("<img src='innocent.webp'>")], local_root=root)
    assert "outside the folder" in caught.value.message


HOSTILE_REFERENCES = [
    pytest.param("{root}/cat.webp\x00", "not_found", id="nul-in-a-path"),
    pytest.param("cat.png\x00", "not_found", id="nul-relative"),
    pytest.param("file://{root}/a%00b.png", "not_found", id="nul-in-a-file-url"),
    pytest.param("~\x00/cat.png", "not_found", id="nul-after-tilde"),
    pytest.param("../secret.webp\x00", "not_found", id="nul-outside"),
    pytest.param("{root}/cat\ud800.png", "not_found", id="lone-surrogate"),
    pytest.param("file://{root}/%ED%A0%80.png", "not_found", id="percent-encoded-surrogate"),
    pytest.param("file://{root}/%ZZ.png", "not_found", id="invalid-percent-encoding"),
    pytest.param("file://[::1/cat.png", "unreadable", id="file-url-with-a-broken-host"),
    pytest.param("{root}/" + "a" * 300 + ".png", "unreadable", id="name-too-long"),
    pytest.param("{root}/" + "/".join(["a" * 200] * 30), "unreadable", id="path-too-long"),
    pytest.param("{root}/sub", "unreadable", id="folder"),
    pytest.param("{root}/fifo", "unreadable", id="fifo"),
    pytest.param("/dev/zero", "unreadable", id="device"),
]


@pytest.mark.parametrize("under_local_root", [False, True])
@pytest.mark.parametrize(("reference", "code"), HOSTILE_REFERENCES)
def test_hostile_reference_is_an_input_error_naming_it(
    emu: NVCFEmulator, served: tuple[Path, Path], reference: str, code: str, under_local_root: bool
) -> None:
    root, _ = served
    os.mkfifo(root / "fifo")
    url = reference.format(root=root)
    for content in (_image_part(url), f"<img src='{url}'>"):
        with pytest.raises(InputError) as caught:
            _rewrite(emu, [_user(content)], local_root=root if under_local_root else None)
        err = caught.value
        assert err.code == code, err
        assert err.message.startswith("messages[0].content"), err.message
        assert err.message.encode() and "\n" not in err.message and "\x00" not in err.message
    assert emu.requests == []


def test_nul_outside_local_root_says_nothing_about_what_exists(emu: NVCFEmulator, served: tuple[Path, Path]) -> None:
    root, _ = served
    errors = []
    for name in ("secret.webp", "absent.webp"):
        with pytest.raises(InputError) as caught:
            _rewrite(emu, [_user(_image_part(f"../{name}\x00"))], local_root=root)
        errors.append((caught.value.code, caught.value.message.replace(name, "NAME"), caught.value.hint))
    assert errors[0] == errors[1]


def test_percent_encoded_bytes_of_a_file_url_name_the_file_with_those_bytes(emu: NVCFEmulator, tmp_path: Path) -> None:
    (tmp_path / os.fsdecode(b"caf\xe9.webp")).write_bytes(WEBP.read_bytes())  # Latin-1 name: not UTF-8
    rw = _rewrite(emu, [_user(_image_part(f"file://{quote(str(tmp_path))}/caf%E9.webp"))])
    assert rw.messages[0]["content"][0]["image_url"]["url"].startswith("data:image/webp;base64,")


# -------------------------------------------------------------------------------------- what is found


def test_every_reference_form_is_found_in_message_order() -> None:
    messages = [
        {"role": "system", "content": "/no_think"},
        {
            "role": "user",
            "content": [
                _text("a <video src=v.mp4> b"),
                {"type": "video_url", "video_url": {"url": "v2.mov"}},
                {"type": "audio_url", "audio_url": "bare.wav"},
                {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "FLAC"}},
                {"type": "file", "file": {"file_id": "f"}},
            ],
        },
        "not a message",
        {"role": "user", "content": None},
    ]
    refs = find_references(messages)
    assert [(r.where, r.url or r.audio_format) for r in refs] == [
        ("messages[1].content[0] <video> tag", "v.mp4"),
        ("messages[1].content[1] (video_url)", "v2.mov"),
        ("messages[1].content[2] (audio_url)", "bare.wav"),
        ("messages[1].content[3] (input_audio)", "flac"),
    ]
