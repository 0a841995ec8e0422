"""OpenAI-style chat messages: replace local media references with ready-to-send ones.

For clients that build messages themselves and want nvmedia only in their upload
step: parts and tags that point at local files are normalized, inlined or uploaded
(one request for the whole message list) and rewritten in a copy of the messages.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from typing import Any

from ..api import prepare
from ..errors import NVMediaError

_PART_URL_KEYS = {"image_url": "image", "video_url": "video", "audio_url": "audio"}
_TAG_RE = re.compile(r'<(img|audio|video)\s+src="([^"]+)"\s*/>')


def _local_path(url: str) -> str | None:
    if url.startswith("file://"):
        return url[len("file://") :]
    if url.startswith("data:") or "://" in url:
        return None
    return url


def _literal(text: str) -> Callable[[re.Match[str]], str]:
    """A ``re.sub`` replacement that inserts ``text`` as is (no backslash processing)."""
    return lambda _match: text


def rewrite_messages(messages: Sequence[dict[str, Any]], **options: Any) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Replace local file references in chat messages with ready-to-send media.

    Parts like ``{"type": "image_url", "image_url": {"url": "photos/cat.heic"}}`` (a path or
    ``file://`` URL) and ``<img src="photos/cat.heic" />`` tags in string content are
    normalized, inlined or uploaded together (one request), and rewritten in place
    in a copy of ``messages``. Returns the new messages and the headers to send.

    Keyword options are those of ``prepare``. Assets are not deleted afterwards:
    the caller sends the request and can delete them with ``AssetClient``.
    """
    new_messages = copy.deepcopy(list(messages))
    refs: list[tuple[str, Any]] = []  # (path, where)
    for message in new_messages:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                key = part.get("type") if isinstance(part, dict) else None
                if key in _PART_URL_KEYS and isinstance(part.get(key), dict):
                    path = _local_path(str(part[key].get("url", "")))
                    if path is not None:
                        refs.append((path, part))
        elif isinstance(content, str):
            for match in _TAG_RE.finditer(content):
                path = _local_path(match.group(2))
                if path is not None:
                    refs.append((path, message))
    if not refs:
        return new_messages, {}
    options.setdefault("group", "all")
    prep = prepare(list(dict.fromkeys(p for p, _ in refs)), **options)  # each file once
    by_path = {it.source: it for it in prep.items}
    for path, where in refs:
        item = by_path[path]
        if item.part is None or item.tag is None:
            raise NVMediaError(f"{path} was not delivered", code="asset_api_error")
        if "content" in where and isinstance(where["content"], str):
            pattern = r'<(img|audio|video)\s+src="' + re.escape(path) + r'"\s*/>'
            where["content"] = re.sub(pattern, _literal(item.tag), where["content"])
        else:
            where.clear()
            where.update(item.part)
    headers = prep.headers
    prep.close()
    return new_messages, headers
