"""Showing URLs without their secrets.

An asset API URL may carry a key (``http://KEY@host/...``, ``?key=KEY``) and a
presigned upload URL carries its signature in the query string: neither may
reach a message, a log record or a repr. ``redact_url`` is the one way a URL is
shown; ``redact_text`` cleans URLs inside free text (error bodies, log lines).
"""

from __future__ import annotations

import logging
import re
from typing import Final
from urllib.parse import urlsplit

import httpx

_URL_IN_TEXT_RE: Final = re.compile(
    r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^\s/?#@\"'<>]*@)?([^\s?\"'<>]*)(\?[^\s\"'<>]*)?"
)


def redact_url(url: str | httpx.URL) -> str:
    """``url`` without its query string, fragment or credentials, safe to show.

    Example:
        >>> redact_url("https://bucket.s3.amazonaws.com/a/b?X-Amz-Signature=abc")
        'https://bucket.s3.amazonaws.com/a/b?REDACTED'
        >>> redact_url("http://nvapi-secret@127.0.0.1:8080/v2/nvcf/assets")
        'http://127.0.0.1:8080/v2/nvcf/assets'
    """
    text = str(url)
    try:
        parts = urlsplit(text)
    except ValueError:
        parts = None
    if parts is None or not parts.scheme or not parts.netloc:
        return redact_text(text.split("#", 1)[0])
    host = parts.netloc.rsplit("@", 1)[-1]
    had_query = bool(parts.query) or text.split("#", 1)[0].endswith("?")
    return f"{parts.scheme}://{host}{parts.path}{'?REDACTED' if had_query else ''}"


def redact_text(text: str) -> str:
    """``text`` with the credentials and query string of every URL in it replaced.

    Example:
        >>> redact_text("PUT http://user:pw@h/p?X-Amz-Signature=abc failed")
        'PUT http://h/p?REDACTED failed'
    """
    return _URL_IN_TEXT_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{'?REDACTED' if m.group(3) else ''}", text)


class _RedactQueryStrings(logging.Filter):
    """Removes URL credentials and query strings from httpx's own request log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_url(a) if isinstance(a, httpx.URL) else redact_text(a) if isinstance(a, str) else a
                for a in record.args
            )
        if isinstance(record.msg, str):
            record.msg = redact_text(record.msg)
        return True


def install_log_redaction() -> None:
    """Make httpx's request log lines safe (idempotent)."""
    httpx_logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactQueryStrings) for f in httpx_logger.filters):
        httpx_logger.addFilter(_RedactQueryStrings())
