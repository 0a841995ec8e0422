"""The shapes that go on the wire: data URIs, content parts, tags, the header.

Pure functions, no I/O. The part types mirror the OpenAI SDK's
``ChatCompletionContentPart*Param`` TypedDicts so nvmedia's output can be passed
where those are expected; ``video_url`` and ``audio_url`` are NVIDIA's additions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, TypedDict

from .formats import BY_CONTAINER
from .sniff import Kind

ASSET_HEADER = "NVCF-INPUT-ASSET-REFERENCES"
MAX_ASSET_HEADER_CHARS = 370

AudioPartStyle = Literal["audio_url", "input_audio"]


class URLRef(TypedDict):
    url: str


class InputAudio(TypedDict):
    data: str
    format: Literal["wav", "mp3"]


class ImageURLPart(TypedDict):
    type: Literal["image_url"]
    image_url: URLRef


class VideoURLPart(TypedDict):
    type: Literal["video_url"]
    video_url: URLRef


class AudioURLPart(TypedDict):
    type: Literal["audio_url"]
    audio_url: URLRef


class InputAudioPart(TypedDict):
    type: Literal["input_audio"]
    input_audio: InputAudio


class TextPart(TypedDict):
    type: Literal["text"]
    text: str


MediaPart = ImageURLPart | VideoURLPart | AudioURLPart | InputAudioPart
ContentPart = TextPart | MediaPart

_TAGS: dict[str, str] = {"image": "img", "audio": "audio", "video": "video"}
_AUDIO_FORMATS: dict[str, Literal["wav", "mp3"]] = {BY_CONTAINER["wav"].mime: "wav", BY_CONTAINER["mp3"].mime: "mp3"}


def b64_len(n_bytes: int) -> int:
    """Length of the standard (padded) base64 encoding of ``n_bytes`` bytes."""
    return 4 * ((n_bytes + 2) // 3)


def b64encode(data: bytes) -> str:
    """Standard base64 (same output as ``base64.b64encode``), by pybase64 (tens of times faster)."""
    import pybase64

    return pybase64.b64encode(data).decode("ascii")


def inline_uri(mime: str, b64: str) -> str:
    """``data:<mime>;base64,<b64>``."""
    return f"data:{mime};base64,{b64}"


def asset_uri(mime: str, asset_id: str) -> str:
    """``data:<mime>;asset_id,<uuid>``."""
    return f"data:{mime};asset_id,{asset_id}"


def media_part(
    kind: Kind, mime: str, url: str, *, audio_part: AudioPartStyle = "audio_url", b64: str | None = None
) -> MediaPart:
    """The list-form content part for one media item.

    ``input_audio`` is used only when asked for, for inline WAV/MP3 audio (``b64`` given);
    otherwise audio is an ``audio_url`` part.
    """
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": url}}
    if kind == "video":
        return {"type": "video_url", "video_url": {"url": url}}
    fmt = _AUDIO_FORMATS.get(mime)
    if audio_part == "input_audio" and b64 is not None and fmt is not None:
        return {"type": "input_audio", "input_audio": {"data": b64, "format": fmt}}
    return {"type": "audio_url", "audio_url": {"url": url}}


def tag(kind: Kind, url: str) -> str:
    """The string-form reference: ``<img src="..." />``, ``<audio .../>`` or ``<video .../>``."""
    return f'<{_TAGS[kind]} src="{url}" />'


def tags(tag_strings: Iterable[str]) -> str:
    """Several tags joined the way they are placed in a text message."""
    return " ".join(tag_strings)


def asset_headers(asset_ids: Sequence[str]) -> dict[str, str]:
    """``{"NVCF-INPUT-ASSET-REFERENCES": "id1,id2"}``, or ``{}`` when there are none."""
    if not asset_ids:
        return {}
    return {ASSET_HEADER: ",".join(asset_ids)}


def text_part(text: str) -> TextPart:
    return {"type": "text", "text": text}
