from __future__ import annotations

import base64
import typing

from openai.types.chat import ChatCompletionContentPartImageParam, ChatCompletionContentPartInputAudioParam

from nvmedia.wire import asset_headers, asset_uri, b64_len, b64encode, inline_uri, media_part, tag, tags

UUID = "b5b841c3-11c2-4c34-b057-9475e82c5369"


def test_b64_matches_standard_library_and_length_formula() -> None:
    for n in range(0, 50):
        data = bytes(range(n))
        encoded = b64encode(data)
        assert encoded == base64.b64encode(data).decode()
        assert len(encoded) == b64_len(n)


def test_data_uris_have_the_contract_shapes() -> None:
    assert inline_uri("image/png", "AAAA") == "data:image/png;base64,AAAA"
    assert asset_uri("video/mp4", UUID) == f"data:video/mp4;asset_id,{UUID}"


def test_parts_per_kind() -> None:
    url = asset_uri("image/jpeg", UUID)
    assert media_part("image", "image/jpeg", url) == {"type": "image_url", "image_url": {"url": url}}
    assert media_part("video", "video/mp4", url)["type"] == "video_url"
    assert media_part("audio", "audio/wav", url) == {"type": "audio_url", "audio_url": {"url": url}}


def test_input_audio_part_only_for_inline_wav_or_mp3() -> None:
    part = media_part("audio", "audio/mpeg", "data:audio/mpeg;base64,AAAA", audio_part="input_audio", b64="AAAA")
    assert part == {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "mp3"}}
    uploaded = media_part("audio", "audio/wav", asset_uri("audio/wav", UUID), audio_part="input_audio")
    assert uploaded["type"] == "audio_url"


def test_tags_and_header() -> None:
    url = asset_uri("image/png", UUID)
    assert tag("image", url) == f'<img src="{url}" />'
    assert tag("audio", "x") == '<audio src="x" />'
    assert tag("video", "x") == '<video src="x" />'
    assert tags(["<a />", "<b />"]) == "<a /> <b />"
    assert asset_headers([]) == {}
    assert asset_headers([UUID, UUID]) == {"NVCF-INPUT-ASSET-REFERENCES": f"{UUID},{UUID}"}


def _conforms(value: object, typed_dict: type) -> bool:
    """True when ``value`` has every required key of ``typed_dict`` and no key it does not declare."""
    hints = typing.get_type_hints(typed_dict)
    required = getattr(typed_dict, "__required_keys__", frozenset())
    return isinstance(value, dict) and required <= value.keys() and value.keys() <= hints.keys()


def test_parts_fit_the_openai_sdk_shapes() -> None:
    image = media_part("image", "image/png", "data:image/png;base64,AAAA")
    assert _conforms(image, ChatCompletionContentPartImageParam)
    assert _conforms(image["image_url"], typing.get_type_hints(ChatCompletionContentPartImageParam)["image_url"])
    audio = media_part("audio", "audio/wav", "data:audio/wav;base64,AAAA", audio_part="input_audio", b64="AAAA")
    assert _conforms(audio, ChatCompletionContentPartInputAudioParam)
