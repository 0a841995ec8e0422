"""Manifest lines: one JSON object per line, written fast even when it carries megabytes of base64.

``json.dumps`` scans every character of every string for characters to escape; an
inline item's record carries its base64 twice (in ``part`` and in ``tag``), and a
request record once more per item, so on a folder of small images that scan costs
as much as all the other work. Base64 never needs escaping in JSON, so each payload
is swapped for a short token before encoding and put back afterwards: the line is
exactly what ``json.dumps(record, ensure_ascii=False)`` gives, without the scan.

A line is always valid UTF-8: a string holding bytes that are not UTF-8 (a file name, or a
message quoting one) is written with U+FFFD in their place (``names.py``; the records carry
the exact bytes of names beside them).
"""

from __future__ import annotations

import json
import string
import uuid
from typing import Any

from .names import utf8_text

_MIN_PAYLOAD = 1024
"""Strings shorter than this are encoded the ordinary way."""

_BASE64_ALPHABET = (string.ascii_letters + string.digits + "+/=").encode()
_TOKEN = f"nvmedia-payload-{uuid.uuid4().hex}-"
_DATA_URI_MARK = ";base64,"


def record_line(record: dict[str, Any]) -> str:
    """``json.dumps(record, ensure_ascii=False) + "\\n"``, quicker for records carrying inline media, always UTF-8."""
    payloads: dict[str, str] = {}
    light = _lift(record, payloads, key=None)
    line = json.dumps(light, ensure_ascii=False)
    for payload, token in payloads.items():
        line = line.replace(token, payload)
    return line + "\n"


def _lift(value: Any, payloads: dict[str, str], key: str | None) -> Any:
    if isinstance(value, dict):
        return {k: _lift(v, payloads, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_lift(v, payloads, None) for v in value]
    if isinstance(value, str) and not value.isascii():
        return utf8_text(value)  # base64 is ASCII: a string that is not cannot be a payload
    if isinstance(value, str) and len(value) >= _MIN_PAYLOAD:
        # A data URI (in a part's url or in a tag), or the bare base64 of an input_audio part.
        mark = value.find(_DATA_URI_MARK)
        if mark >= 0:
            start = mark + len(_DATA_URI_MARK)
        elif key == "data":
            start = 0
        else:
            return value
        end = value.find('"', start)
        end = len(value) if end < 0 else end
        payload = value[start:end]
        if len(payload) < _MIN_PAYLOAD or not _is_base64_text(payload):
            return value
        token = payloads.setdefault(payload, f"{_TOKEN}{len(payloads):06d}")  # fixed width: no token prefixes another
        return value[:start] + token + value[end:]
    return value


def _is_base64_text(text: str) -> bool:
    """Only base64's alphabet, so JSON leaves it as it is (checked exactly, at C speed)."""
    return text.isascii() and not text.encode("ascii").translate(None, _BASE64_ALPHABET)
