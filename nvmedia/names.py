"""Names that are not UTF-8 or hold control characters: how the manifest records them and stderr shows them.

On Linux a file name is bytes, and Python hands a name that is not valid UTF-8 over as a
string holding lone surrogates (``os.fsdecode``: byte 0xE9 becomes U+DCE9). Such a string
cannot be written as UTF-8, so:

- the manifest (JSON, UTF-8) writes the name with U+FFFD in place of each byte that is not
  UTF-8, and beside it, under ``<field>_bytes_b64``, the base64 of the name's exact bytes;
- lines on stderr and ``inspect`` show each such byte as ``\\xNN``.

Names that are UTF-8 are written as they are, with no ``_bytes_b64`` field.

A name may also hold control characters (a newline, a tab, ESC...), which would break the
"one line per error" promise of stderr or drive the terminal; ``shown`` escapes them too
(``\\n``, ``\\t``, ``\\x1b``), along with Unicode's line separators and bidirectional
overrides. The manifest needs nothing more: JSON escapes them itself.
"""

from __future__ import annotations

import base64
import re


def is_utf8(text: str) -> bool:
    """True when ``text`` can be written as UTF-8 (it holds no lone surrogate)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _raw(text: str) -> bytes:
    """The bytes a name stands for: surrogate escapes back to their bytes (other lone surrogates kept as such)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def utf8_text(text: str) -> str:
    """``text`` as valid UTF-8: each byte that is not UTF-8 becomes U+FFFD."""
    return text if is_utf8(text) else _raw(text).decode("utf-8", "replace")


def name_bytes_b64(name: str) -> str | None:
    """Base64 of a name's exact bytes, or None when the name is UTF-8 (nothing to add)."""
    return None if is_utf8(name) else base64.b64encode(_raw(name)).decode("ascii")


_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""Characters that end a line or steer the terminal: C0 and C1 controls, DEL, line and paragraph
separators, and the bidirectional marks and overrides that make text read in another order."""
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def shown(text: str) -> str:
    """``text`` for a terminal or a log line, on one line and inert.

    Each byte that is not UTF-8 shows as ``\\xNN``, and each control character as its escape
    (``\\n``, ``\\t``, ``\\x1b``, ``\\u202e``).
    """
    if not is_utf8(text):
        text = _raw(text).decode("utf-8", "backslashreplace")
    return _UNSAFE.sub(_escape, text)
