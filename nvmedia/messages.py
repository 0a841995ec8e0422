"""Media references in OpenAI-format chat messages: finding them and writing their replacements.

Pure functions, no I/O. A reference is one of:

* a list-form part: ``image_url``, ``video_url``, ``audio_url`` (``{"url": ...}``, or NVIDIA's
  bare string), or ``input_audio`` (``{"data": base64, "format": ...}``);
* a tag in a user message's string content or ``text`` part: ``<img|audio|video ... src=... ...>``
  with the attributes in any order, ``"``, ``'`` or no quotes, any case, self-closing or not.

Text in other messages is text: a model's answer holding HTML (``<img src="logo.png">``) names
no media, so tags there are left as they are. Parts are references in every role (the service
refuses media outside user messages, and the caller decides what to do about it).

``find_references`` lists them in message order; ``apply_replacements`` returns a deep copy of
the messages with each reference replaced by the media that stands for it: a part becomes one
part per piece (a split recording becomes several parts, in order), a tag one tag per piece
(joined by a space), with its other attributes (``alt``...) kept. The messages given are never
modified.

Example:
    >>> refs = find_references([{"role": "user", "content": "<IMG alt='a cat' SRC='cat.heic'>"}])
    >>> refs[0].kind, refs[0].url, refs[0].where
    ('image', 'cat.heic', 'messages[0].content <img> tag')
"""

from __future__ import annotations

import copy
import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from .errors import InputError
from .names import shown as escaped
from .sniff import Kind

Form = Literal["part", "input_audio", "tag"]

PART_KINDS: Final[dict[str, Kind]] = {"image_url": "image", "video_url": "video", "audio_url": "audio"}
"""List-form part types that carry a URL, and the kind each announces."""
TAG_KINDS: Final[dict[str, Kind]] = {"img": "image", "audio": "audio", "video": "video"}
_PART_TYPES: Final[dict[Kind, str]] = {kind: part for part, kind in PART_KINDS.items()}
_TAG_NAMES: Final[dict[Kind, str]] = {kind: name for name, kind in TAG_KINDS.items()}
_INPUT_AUDIO_FORMATS: Final = {"audio/wav": "wav", "audio/mpeg": "mp3"}

_TAG_START: Final = re.compile(r"<(img|audio|video)(?=[\s/>])", re.IGNORECASE)
_ATTR_NAME: Final = re.compile(r"[^\s=/>\"']+")
_DATA_URI: Final = re.compile(r"data:([^,]*),(.*)", re.IGNORECASE | re.DOTALL)
_SHOWN_CHARS: Final = 240


@dataclass(frozen=True)
class Tag:
    """One ``<img|audio|video src=...>`` tag found in a text.

    Attributes:
        name: the tag name as written (``IMG``).
        start: where the tag begins in the text (its ``<``).
        end: where the opening tag ends (after its ``>``).
        src: the ``src`` value, with HTML character references decoded.
        src_start: where the raw ``src`` value begins (inside its quotes).
        src_end: where the raw ``src`` value ends.
        quote: the quote around the value: ``"``, ``'`` or empty.
    """

    name: str
    start: int
    end: int
    src: str
    src_start: int
    src_end: int
    quote: str

    @property
    def kind(self) -> Kind:
        return TAG_KINDS[self.name.lower()]


@dataclass(frozen=True)
class Reference:
    """One media reference in a conversation.

    Attributes:
        message: the index of its message.
        role: that message's role.
        part: the index of its part in a list content, or None in a string content.
        form: ``part`` (a URL part), ``input_audio`` (base64 data and a format) or ``tag``.
        kind: the kind the part type or tag name announces (the media itself decides in the end).
        url: the URL, path or data URI it names (empty for ``input_audio``).
        audio_data: the base64 data of an ``input_audio`` part.
        audio_format: the format of an ``input_audio`` part.
        tag: the tag, for the ``tag`` form.
    """

    message: int
    role: str
    part: int | None
    form: Form
    kind: Kind
    url: str = ""
    audio_data: str | None = None
    audio_format: str | None = None
    tag: Tag | None = None

    @property
    def where(self) -> str:
        """Where it is, for messages: ``messages[2].content[1] (image_url)``, ``messages[0].content <img> tag``."""
        at = f"messages[{self.message}].content" + (f"[{self.part}]" if self.part is not None else "")
        if self.tag is not None:
            return f"{at} <{self.tag.name.lower()}> tag"
        return f"{at} ({_PART_TYPES[self.kind] if self.form == 'part' else 'input_audio'})"

    @property
    def shown(self) -> str:
        """The reference as it may be shown in a message: short, a data URI cut after its type."""
        if self.form == "input_audio":
            return f"input_audio ({self.audio_format or 'no format'})"
        return shorten(self.url)


@dataclass(frozen=True)
class Media:
    """What stands for a reference in the rewritten messages: one piece of media.

    Attributes:
        kind: ``image``, ``audio`` or ``video`` (the media's own kind, which decides the part type and tag).
        url: ``data:<mime>;base64,<b64>`` or ``data:<mime>;asset_id,<uuid>``.
    """

    kind: Kind
    url: str


@dataclass(frozen=True)
class DataURI:
    """A parsed ``data:`` URI.

    Attributes:
        mime: the media type it claims, lower case (empty when none).
        encoding: ``base64``, ``asset_id`` or ``percent`` (plain URL-encoded data).
        payload: what follows the comma.
    """

    mime: str
    encoding: Literal["base64", "asset_id", "percent"]
    payload: str


def parse_data_uri(url: str) -> DataURI | None:
    """``data:<mime>[;params][;base64|;asset_id],<payload>`` parsed, or None when ``url`` is not a data URI.

    Example:
        >>> parse_data_uri("data:image/PNG;base64,iVBO")
        DataURI(mime='image/png', encoding='base64', payload='iVBO')
    """
    match = _DATA_URI.fullmatch(url.strip()) if url[:5].lower() == "data:" else None
    if match is None:
        return None
    params = [p.strip().lower() for p in match.group(1).split(";")]
    mime = params[0] if "/" in params[0] else ""
    encoding: Literal["base64", "asset_id", "percent"] = "percent"
    if params[-1] == "base64":
        encoding = "base64"
    elif params[-1] == "asset_id":
        encoding = "asset_id"
    return DataURI(mime, encoding, match.group(2))


def shorten(text: str) -> str:
    """``text`` cut for a message: a data URI to its type, anything else to 240 characters.

    Control characters and bytes that are not UTF-8 are escaped (``\\x00``): a message stays one printable line.

    Example:
        >>> shorten("data:image/png;base64," + "A" * 1000)
        'data:image/png;base64,... (1022 characters)'
    """
    data = parse_data_uri(text) if text[:5].lower() == "data:" else None
    if data is not None and data.encoding != "asset_id":
        head = text[: text.index(",") + 1]
        return f"{head}... ({len(text)} characters)"
    text = escaped(text)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def find_tags(text: str, where: str) -> list[Tag]:
    """Every ``<img|audio|video>`` tag with a ``src`` in ``text``, in order.

    A tag name alone in prose (``use the <img> tag``) is not a reference; a tag whose quoted value
    never ends is an error rather than a guess.

    Raises:
        InputError: ``unreadable``, naming ``where`` and the character, for a quote that is never closed.
    """
    tags: list[Tag] = []
    at = 0
    while True:
        start = _TAG_START.search(text, at)
        if start is None:
            return tags
        tag = _read_tag(text, start.start(), start.group(1), where)
        if tag is not None:
            tags.append(tag)
            at = tag.end
        else:
            at = start.end()


def _read_tag(text: str, start: int, name: str, where: str) -> Tag | None:
    """The tag opening at ``start``, or None when it has no ``src`` or no end (then it is prose)."""
    i = start + 1 + len(name)
    src: tuple[str, int, int, str] | None = None
    while i < len(text):
        i = _skip_space(text, i)
        if i >= len(text):
            break
        if text[i] == ">":
            return _tag(name, start, i + 1, src)
        if text.startswith("/>", i):
            return _tag(name, start, i + 2, src)
        attr = _ATTR_NAME.match(text, i)
        if attr is None:
            i += 1  # a stray quote or slash: HTML ignores it
            continue
        i = _skip_space(text, attr.end())
        if i >= len(text) or text[i] != "=":
            continue  # an attribute without a value (``controls``)
        i = _skip_space(text, i + 1)
        if i < len(text) and text[i] in "\"'":
            quote = text[i]
            close = text.find(quote, i + 1)
            if close < 0:
                raise InputError(
                    f"{where}: the {attr.group(0)}= value of the <{name.lower()}> tag at character {start} opens "
                    f"a {quote} quote that is never closed ({shorten(text[start:])!r})",
                    code="unreadable",
                    hint=f"close the quote: <{name.lower()} src={quote}...{quote} />",
                )
            value = (text[i + 1 : close], i + 1, close, quote)
            i = close + 1
        else:
            end = i
            while end < len(text) and not text[end].isspace() and text[end] != ">":
                end += 1
            if end > i and text[end - 1] == "/" and text.startswith(">", end):
                end -= 1  # <img src=cat.png/>: the slash closes the tag
            value = (text[i:end], i, end, "")
            i = end
        if attr.group(0).lower() == "src" and src is None:
            src = value
    return None


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _tag(name: str, start: int, end: int, src: tuple[str, int, int, str] | None) -> Tag | None:
    if src is None:
        return None
    raw, src_start, src_end, quote = src
    return Tag(name, start, end, html.unescape(raw).strip(), src_start, src_end, quote)


def find_references(messages: Sequence[Mapping[str, Any]]) -> list[Reference]:
    """Every media reference in ``messages``, in order: parts in any role, tags in user messages.

    Messages that are not mappings, and parts of other types (``text`` aside, which is
    searched for tags in user messages), are left alone.

    Raises:
        InputError: a tag with a quote that is never closed.
    """
    refs: list[Reference] = []
    for m, message in enumerate(messages):
        if not isinstance(message, Mapping):
            continue
        role = str(message.get("role", ""))
        content = message.get("content")
        # Only users name media in text: in an answer, a system prompt or a tool's output, a tag is text.
        tags_are_media = role == "user"
        if isinstance(content, str):
            if not tags_are_media:
                continue
            where = f"messages[{m}].content"
            refs.extend(Reference(m, role, None, "tag", t.kind, t.src, tag=t) for t in find_tags(content, where))
            continue
        if not isinstance(content, list):
            continue
        for p, part in enumerate(content):
            if not isinstance(part, Mapping):
                continue
            ptype = part.get("type")
            if ptype == "text" and isinstance(part.get("text"), str):
                if not tags_are_media:
                    continue
                where = f"messages[{m}].content[{p}]"
                tags = find_tags(part["text"], where)
                refs.extend(Reference(m, role, p, "tag", t.kind, t.src, tag=t) for t in tags)
            elif isinstance(ptype, str) and ptype in PART_KINDS:
                url = _part_url(part.get(ptype))
                if url is not None:
                    refs.append(Reference(m, role, p, "part", PART_KINDS[ptype], url.strip()))
            elif ptype == "input_audio" and isinstance(part.get("input_audio"), Mapping):
                audio = part["input_audio"]
                data, fmt = audio.get("data"), audio.get("format")
                refs.append(
                    Reference(
                        m,
                        role,
                        p,
                        "input_audio",
                        "audio",
                        audio_data=data if isinstance(data, str) else "",
                        audio_format=str(fmt).lower() if fmt is not None else None,
                    )
                )
    return refs


def _part_url(value: object) -> str | None:
    """The URL of an ``image_url``-style value: ``{"url": ...}`` or NVIDIA's bare string."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("url"), str):
        return str(value["url"])
    return None


def apply_replacements(messages: Sequence[Any], replacements: Mapping[Reference, Sequence[Media]]) -> list[Any]:
    """A deep copy of ``messages`` with each reference in ``replacements`` replaced by its media.

    References not in ``replacements`` are left as they are. A part keeps its other keys
    (``detail``...), a tag its other attributes; the part type and tag name follow the media's
    own kind (an ``<img>`` that names a video becomes a ``<video>``).
    """
    out = copy.deepcopy(list(messages))
    by_place: dict[tuple[int, int | None], list[Reference]] = {}
    for ref in replacements:
        by_place.setdefault((ref.message, ref.part), []).append(ref)
    for (m, p), refs in by_place.items():
        message = out[m]
        if p is None:
            message["content"] = _replace_tags(message["content"], refs, replacements)
            continue
        part = message["content"][p]
        if refs[0].form == "tag":
            part["text"] = _replace_tags(part["text"], refs, replacements)
    for m in sorted({ref.message for ref in replacements if ref.form != "tag"}):
        content = out[m]["content"]
        new_content: list[Any] = []
        for p, part in enumerate(content):
            media_ref = next((r for r in by_place.get((m, p), ()) if r.form != "tag"), None)
            new_content.extend(_parts_for(part, media_ref, replacements[media_ref]) if media_ref else [part])
        out[m]["content"] = new_content
    return out


def _replace_tags(text: str, refs: Sequence[Reference], replacements: Mapping[Reference, Sequence[Media]]) -> str:
    pieces: list[str] = []
    at = 0
    for ref in sorted(refs, key=lambda r: r.tag.start if r.tag is not None else 0):
        tag = ref.tag
        assert tag is not None
        pieces.append(text[at : tag.start])
        pieces.append(" ".join(_render_tag(text, tag, media) for media in replacements[ref]))
        at = tag.end
    pieces.append(text[at:])
    return "".join(pieces)


def _render_tag(text: str, tag: Tag, media: Media) -> str:
    """The tag as written, with ``media``'s URL as its ``src`` and its kind's name when that differs."""
    name = tag.name if tag.kind == media.kind else _TAG_NAMES[media.kind]
    quote = tag.quote or '"'
    head = "<" + name + text[tag.start + 1 + len(tag.name) : tag.src_start - len(tag.quote)]
    return head + quote + media.url + quote + text[tag.src_end + len(tag.quote) : tag.end]


def _parts_for(part: Mapping[str, Any], ref: Reference, media: Sequence[Media]) -> list[dict[str, Any]]:
    """The parts that stand for ``part``: one per piece, in the part's own form where the media allows it."""
    out: list[dict[str, Any]] = []
    for piece in media:
        if ref.form == "input_audio":
            audio = _input_audio(piece.url)
            if audio is not None:
                extra = {k: v for k, v in part.items() if k not in ("type", "input_audio")}
                out.append({"type": "input_audio", "input_audio": audio, **extra})
                continue
            out.append({"type": "audio_url", "audio_url": {"url": piece.url}})  # an asset: only a URL can name it
            continue
        ptype = _PART_TYPES[piece.kind]
        old_type = str(part["type"])
        inner = part.get(old_type)
        value: Any = piece.url if isinstance(inner, str) else {**dict(inner or {}), "url": piece.url}
        extra = {k: v for k, v in part.items() if k not in ("type", old_type)}
        out.append({"type": ptype, ptype: value, **extra})
    return out


def _input_audio(url: str) -> dict[str, str] | None:
    """``{"data", "format"}`` for an inline WAV or MP3 data URI, else None."""
    data = parse_data_uri(url)
    if data is None or data.encoding != "base64" or data.mime not in _INPUT_AUDIO_FORMATS:
        return None
    return {"data": data.payload, "format": _INPUT_AUDIO_FORMATS[data.mime]}
