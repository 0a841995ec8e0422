"""Showing URLs without their secrets.

An asset API URL may carry a key (``http://KEY@host/...``, ``?key=KEY``) and a
presigned upload URL carries its signature in the query string: neither may
reach a message, a log record or a repr. ``redact_url`` is the one way a URL is
shown; ``redact_text`` cleans URLs inside free text (error bodies, log lines).
"""

from __future__ import annotations

import json
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


def s3_error_fields(text: str) -> tuple[str, str]:
    """The ``Code`` and ``Message`` of an S3 XML error body (empty when absent)."""
    code = re.search(r"<Code>([^<]{0,100})</Code>", text)
    message = re.search(r"<Message>([^<]{0,300})</Message>", text)
    return (code.group(1) if code else "", message.group(1) if message else "")


def error_detail(resp: httpx.Response) -> str:
    """A short, redacted explanation from an error body (problem details, OpenAI's error object, S3 XML or text)."""
    text = resp.text[:4000]
    found = ""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        for candidate in (body.get("detail"), body.get("message"), error, body.get("title")):
            if isinstance(candidate, dict):
                candidate = candidate.get("message")
            if isinstance(candidate, str) and candidate:
                found = candidate
                break
    elif "<Error>" in text:
        code, message = s3_error_fields(text)
        found = f"{code}: {message}" if code else message
    else:
        found = " ".join(text.split())
    found = redact_text(found)
    return found[:300] + ("..." if len(found) > 300 else "")
