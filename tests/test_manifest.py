"""Manifest lines are exactly json.dumps(record, ensure_ascii=False), however the base64 is lifted out."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from nvmedia.manifest import record_line
from nvmedia.wire import inline_uri, media_part, tag


def _inline_record(payload: bytes, source: str, mime: str = "image/png") -> dict[str, Any]:
    b64 = base64.b64encode(payload).decode()
    url = inline_uri(mime, b64)
    return {
        "type": "item",
        "source": source,
        "status": "ok",
        "part": media_part("image", mime, url),
        "tag": tag("image", url),
        "headers": {},
    }


def _expected(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


@given(payload=st.binary(min_size=0, max_size=6000), source=st.text(max_size=40))
def test_inline_items_encode_exactly_as_json_dumps(payload: bytes, source: str) -> None:
    record = _inline_record(payload, source)
    line = record_line(record)
    assert line == _expected(record)
    assert json.loads(line) == record


def test_a_request_record_with_several_and_repeated_payloads() -> None:
    first, second = _inline_record(b"\x89PNG" * 900, "a.png"), _inline_record(b"\xff\xd8" * 1200, "b.jpg")
    request = {
        "type": "request",
        "content": [first["part"], second["part"], first["part"]],
        "tags": first["tag"] + second["tag"],
        "headers": {},
    }
    assert record_line(request) == _expected(request)


def test_input_audio_data_is_bare_base64() -> None:
    b64 = base64.b64encode(b"RIFF" + bytes(5000)).decode()
    part = media_part("audio", "audio/wav", inline_uri("audio/wav", b64), audio_part="input_audio", b64=b64)
    record = {"type": "item", "part": part}
    assert part["type"] == "input_audio"
    assert record_line(record) == _expected(record)


@given(text=st.text(min_size=1100, max_size=1400))
def test_long_strings_that_are_not_base64_are_escaped_as_json_does(text: str) -> None:
    # A long source name or message that looks like a data URI but holds quotes, backslashes,
    # control or non-ASCII characters must go through the ordinary encoder.
    for value in (text, "data:image/png;base64," + text, "x" * 1100 + ";base64," + text + '"tail'):
        record = {"source": value, "input_audio": {"data": text}, "data": value}
        assert record_line(record) == _expected(record)


def test_a_name_that_is_not_utf8_makes_a_valid_utf8_line_and_keeps_its_bytes() -> None:
    import os

    from nvmedia.items import Item

    name = os.fsdecode(b"photos/caf\xe9.png")  # as Python hands over a Latin-1 name: U+DCE9 for byte 0xE9
    item = Item(source=name, status="skipped", reason=f"hidden: {name}")
    line = record_line(item.to_record())
    record = json.loads(line.encode("utf-8").decode("utf-8"))  # encodes: no lone surrogate is left
    assert record["source"] == "photos/caf\ufffd.png" and record["reason"] == "hidden: photos/caf\ufffd.png"
    assert base64.b64decode(record["source_bytes_b64"]) == b"photos/caf\xe9.png"
    assert "source_bytes_b64" not in json.loads(record_line(Item(source="photos/café.png").to_record()))
