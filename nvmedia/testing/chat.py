"""The emulator's chat endpoint: checking media references and shaping answers.

Every media reference in a chat request is found (list-form parts, and
``<img/audio/video src="..."/>`` tags in the text of user messages; elsewhere a tag
is text) and checked the way the service
would: an inline ``data:<mime>;base64,...`` URI must decode to bytes of the
claimed type, and an ``asset_id`` URI must name an uploaded asset of the caller
that the ``NVCF-INPUT-ASSET-REFERENCES`` header lists.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from . import magic

ASSET_HEADER: Final = "NVCF-INPUT-ASSET-REFERENCES"
MAX_ASSET_HEADER_CHARS: Final = 370
DEFAULT_MODEL: Final = "nvidia/nemotron-3-nano-omni"

_TAG_RE: Final = re.compile(r"<(img|audio|video)\b[^>]*?\bsrc\s*=\s*([\"'])(.*?)\2", re.IGNORECASE | re.DOTALL)
_DATA_URI_RE: Final = re.compile(r"data:([^;,]*);(base64|asset_id),(.*)", re.DOTALL)
_TAG_KIND: Final = {"img": "image", "audio": "audio", "video": "video"}
_PART_KIND: Final = {"image_url": "image", "video_url": "video", "audio_url": "audio"}
_AUDIO_FORMATS: Final = {"wav": "audio/wav", "mp3": "audio/mpeg"}


class ChatRejected(Exception):
    """The request is refused with an HTTP status and a human detail."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class AssetView:
    """What the chat check needs to know about one stored asset.

    Attributes:
        path: where its uploaded bytes are, or None when nothing was uploaded.
        content_type: the content type it was created with.
    """

    path: str | None
    content_type: str


@dataclass
class Received:
    """What a valid chat request carried."""

    counts: dict[str, int] = field(default_factory=lambda: {"image": 0, "audio": 0, "video": 0})
    inline: int = 0
    assets: list[str] = field(default_factory=list)
    text_chars: int = 0

    def describe(self) -> str:
        """A sentence like ``received 1 image, 1 audio (1 inline, 1 asset)``."""
        plural = {"image": "images", "audio": "audio", "video": "videos"}
        parts = [f"{n} {kind if n == 1 else plural[kind]}" for kind, n in self.counts.items() if n]
        if not parts:
            return f"received no media; {self.text_chars} characters of text"
        n_assets = len(self.assets)
        return f"received {', '.join(parts)} ({self.inline} inline, {n_assets} asset{'' if n_assets == 1 else 's'})"


def parse_asset_header(value: str | None) -> list[str]:
    """The asset ids of an ``NVCF-INPUT-ASSET-REFERENCES`` header, canonicalised.

    Raises:
        ChatRejected: 400 when the header is longer than 370 characters or an item is not a UUID.
    """
    if value is None or not value.strip():
        return []
    if len(value) > MAX_ASSET_HEADER_CHARS:
        raise ChatRejected(
            400,
            f"{ASSET_HEADER} is {len(value)} characters long; at most {MAX_ASSET_HEADER_CHARS} are allowed "
            "(10 asset ids)",
        )
    ids = []
    for item in value.split(","):
        try:
            ids.append(str(uuid.UUID(item.strip())))
        except ValueError:
            raise ChatRejected(400, f"{ASSET_HEADER} item {item.strip()!r} is not a UUID") from None
    return ids


@dataclass(frozen=True)
class MediaRef:
    """One media reference found in a chat request.

    Attributes:
        where: where it is, for messages (``messages[0].content[1] (image_url)``).
        kind: ``image``, ``audio`` or ``video``, from the part type or tag.
        url: the URL of a URL part or tag.
        audio_data: the base64 of an ``input_audio`` part.
        audio_format: the format of an ``input_audio`` part.
    """

    where: str
    kind: str
    url: str | None = None
    audio_data: str | None = None
    audio_format: str | None = None


def _refs_in_text(text: str, where: str) -> Iterator[MediaRef]:
    for match in _TAG_RE.finditer(text):
        yield MediaRef(f"{where} <{match.group(1).lower()}> tag", _TAG_KIND[match.group(1).lower()], url=match.group(3))


def _url_of(part: dict[str, Any], key: str, where: str) -> str:
    value = part.get(key)
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str):
        raise ChatRejected(400, f"{where}: {key}.url must be a string")
    return url


def extract_refs(messages: object) -> tuple[list[MediaRef], int]:
    """Every media reference in ``messages`` and the number of text characters.

    Raises:
        ChatRejected: 400 when the messages are not in the chat-completions shape.
    """
    if not isinstance(messages, list) or not messages:
        raise ChatRejected(400, "messages must be a non-empty list")
    refs: list[MediaRef] = []
    text_chars = 0
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ChatRejected(400, f"{where} must be an object with a role")
        found = len(refs)
        _collect_refs(message, where, refs)
        if len(refs) > found and message["role"] != "user":
            # The service takes media from user messages only; anywhere else fails the request.
            raise ChatRejected(
                400, f"{where} ({message['role']}): media is accepted only in user messages, found {refs[found].where}"
            )
        text_chars += _text_chars(message.get("content"))
    return refs, text_chars


def _text_chars(content: object) -> int:
    if isinstance(content, str):
        return len(_TAG_RE.sub("", content))
    if isinstance(content, list):
        return sum(
            len(_TAG_RE.sub("", p["text"]))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    return 0


def _collect_refs(message: dict[str, Any], where: str, refs: list[MediaRef]) -> None:
    """Append the media references of one message to ``refs``.

    Raises:
        ChatRejected: 400 when the message's content is not in the chat-completions shape.
    """
    content = message.get("content")
    if content is None:
        return
    if isinstance(content, str):
        if message.get("role") == "user":
            refs.extend(_refs_in_text(content, f"{where}.content"))
        return
    if not isinstance(content, list):
        raise ChatRejected(400, f"{where}.content must be a string or a list of parts")
    for j, part in enumerate(content):
        pwhere = f"{where}.content[{j}]"
        if not isinstance(part, dict):
            raise ChatRejected(400, f"{pwhere} must be an object")
        ptype = part.get("type")
        if ptype == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise ChatRejected(400, f"{pwhere}.text must be a string")
            if message.get("role") == "user":  # a model's answer may hold HTML: text, not media
                refs.extend(_refs_in_text(text, pwhere))
        elif isinstance(ptype, str) and ptype in _PART_KIND:
            refs.append(MediaRef(f"{pwhere} ({ptype})", _PART_KIND[ptype], url=_url_of(part, ptype, pwhere)))
        elif ptype == "input_audio":
            audio = part.get("input_audio")
            if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
                raise ChatRejected(400, f"{pwhere}: input_audio must be an object with data and format")
            where_audio = f"{pwhere} (input_audio)"
            refs.append(MediaRef(where_audio, "audio", audio_data=audio["data"], audio_format=audio.get("format")))
        else:
            raise ChatRejected(400, f"{pwhere}: unsupported content part type {ptype!r}")


def _decode_b64(payload: str, where: str) -> bytes:
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ChatRejected(400, f"{where}: the base64 payload does not decode") from None
    if not data:
        raise ChatRejected(400, f"{where}: the base64 payload is empty")
    return data


def _check_inline(data: bytes, mime: str, where: str) -> None:
    actual = magic.media_type_of(data[: magic.HEAD_BYTES])
    if not magic.matches(mime, actual):
        raise ChatRejected(
            400, f"{where}: the data is declared as {mime} but its bytes are {actual or 'not an accepted media type'}"
        )
    problem = magic.decode_problem(data, mime)
    if problem:
        raise ChatRejected(400, f"{where}: {problem}")


def check_request(
    body: dict[str, Any],
    asset_header: str | None,
    resolve: Callable[[str], AssetView | None],
    asset_problem: Callable[[str, str, str], str | None],
) -> Received:
    """Check every media reference of a chat request.

    Args:
        body: the decoded JSON body.
        asset_header: the raw ``NVCF-INPUT-ASSET-REFERENCES`` value, if any.
        resolve: the caller's asset by canonical id, or None when it does not exist for this key.
        asset_problem: ``(asset_id, path, mime) -> why the stored bytes are not that media, or None``.

    Raises:
        ChatRejected: 400 for malformed or mistyped media, 404 for an unknown asset.
    """
    listed = parse_asset_header(asset_header)
    for asset_id in listed:
        if resolve(asset_id) is None:
            raise ChatRejected(404, f"NotFound error: failed to find asset {asset_id}")
    refs, text_chars = extract_refs(body.get("messages"))
    got = Received(text_chars=text_chars)
    for ref in refs:
        if ref.audio_data is not None:
            mime = _AUDIO_FORMATS.get(str(ref.audio_format))
            if mime is None:
                raise ChatRejected(400, f"{ref.where}: format must be 'wav' or 'mp3', not {ref.audio_format!r}")
            _check_inline(_decode_b64(ref.audio_data, ref.where), mime, ref.where)
            got.inline += 1
            got.counts["audio"] += 1
            continue
        url = ref.url or ""
        match = _DATA_URI_RE.fullmatch(url)
        if match is None:
            shown = url[:40] + ("..." if len(url) > 40 else "")
            raise ChatRejected(400, f"{ref.where}: {shown!r} is not a data:<mime>;base64 or ;asset_id URI")
        mime, encoding, payload = match.groups()
        if magic.kind_of_mime(mime) != ref.kind:
            raise ChatRejected(400, f"{ref.where}: {mime or 'an empty type'} is not an accepted {ref.kind} type")
        if encoding == "base64":
            _check_inline(_decode_b64(payload, ref.where), mime, ref.where)
            got.inline += 1
        else:
            _check_asset_ref(payload, mime, ref.where, listed, resolve, asset_problem)
            got.assets.append(str(uuid.UUID(payload.strip())))
        got.counts[ref.kind] += 1
    return got


def _check_asset_ref(
    payload: str,
    mime: str,
    where: str,
    listed: list[str],
    resolve: Callable[[str], AssetView | None],
    asset_problem: Callable[[str, str, str], str | None],
) -> None:
    try:
        asset_id = str(uuid.UUID(payload.strip()))
    except ValueError:
        raise ChatRejected(400, f"{where}: asset id {payload[:40]!r} is not a UUID") from None
    view = resolve(asset_id)
    if view is None:
        raise ChatRejected(404, f"NotFound error: failed to find asset {asset_id}")
    if asset_id not in listed:
        raise ChatRejected(400, f"{where}: asset {asset_id} is used but not listed in the {ASSET_HEADER} header")
    if view.path is None:
        raise ChatRejected(400, f"{where}: asset {asset_id} was created but its upload never completed")
    problem = asset_problem(asset_id, view.path, mime)
    if problem:
        raise ChatRejected(400, f"{where}: asset {asset_id}: {problem}")


def _usage(body: dict[str, Any], answer: str) -> dict[str, int]:
    prompt = max(1, len(json.dumps(body.get("messages"), ensure_ascii=False)) // 4)
    completion = len(answer.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion(body: dict[str, Any], answer: str) -> dict[str, Any]:
    """A ``chat.completion`` object whose message is ``answer``."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(body.get("model") or DEFAULT_MODEL),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": _usage(body, answer),
    }


def completion_stream(body: dict[str, Any], answer: str) -> bytes:
    """The server-sent events of a streamed answer, ending with ``data: [DONE]``, as one body."""
    return b"".join(completion_events(body, answer))


def completion_events(body: dict[str, Any], answer: str) -> list[bytes]:
    """The server-sent events of a streamed answer, one ``data: ...`` event each, the last ``data: [DONE]``."""
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": str(body.get("model") or DEFAULT_MODEL),
    }

    def chunk(delta: dict[str, str], finish: str | None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    events = [chunk({"role": "assistant", "content": ""}, None)]
    words = answer.split(" ")
    events += [chunk({"content": w if i == 0 else " " + w}, None) for i, w in enumerate(words)]
    events.append(chunk({}, "stop"))
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        events.append({**base, "choices": [], "usage": _usage(body, answer)})
    lines = [f"data: {json.dumps(e, separators=(',', ':'))}\n\n".encode() for e in events]
    lines.append(b"data: [DONE]\n\n")
    return lines
