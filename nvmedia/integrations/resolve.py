"""What each media reference of a conversation stands for: kept as it is, or a source to prepare.

``resolve`` turns one ``messages.Reference`` into a ``Keep`` (an asset id the service already
holds, or inline data it accepts as it is) or a ``Prepare`` (a local file, a remote URL or
decoded bytes for ``prepare``), and raises the reference's error otherwise. Local paths are
checked here, before anything is prepared or uploaded:

* ``~`` is expanded and ``file://`` URLs percent-decoded (to the bytes of the name: ``%E9`` is
  byte 0xE9); a ``file://`` URL naming another host is refused;
* a path no file can have (a NUL character, a lone surrogate) is ``not_found`` before anything
  is looked up, so it says nothing about what exists, inside ``local_root`` or out;
* with a ``local_root``, a path is read only when it lies under that folder once ``..`` and
  links are resolved (relative paths are taken from the folder); a path outside it gets the
  same error whether it exists or not;
* a path that leads to the same file as another (``cat.heic``, ``./cat.heic``, a hard link)
  gets the same key, so it is prepared once.
"""

from __future__ import annotations

import binascii
import hashlib
import os
import re
import stat
import uuid
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote_to_bytes, urlsplit

import pybase64

from ..errors import FetchError, InputError, MediaError
from ..fetch import display_url, is_remote_url
from ..messages import DataURI, Reference, parse_data_uri, shorten
from ..plan import Mode
from ..profiles import Profile
from ..sniff import SNIFF_BYTES, sniff_bytes

_OTHER_URL: Final = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_LOCAL_FILE_HOSTS: Final = ("", "localhost")
_WHITESPACE: Final = re.compile(r"\s+")


@dataclass(frozen=True)
class Keep:
    """A reference that stays as it is.

    Attributes:
        asset_id: the asset it names (canonical UUID), or None for inline data.
        inline_chars: the base64 characters it carries inline (0 for an asset).
        data: the decoded bytes of inline data, in case the request budget sends them to ``prepare`` after all.
    """

    asset_id: str | None = None
    inline_chars: int = 0
    data: bytes | None = None


@dataclass(frozen=True)
class Prepare:
    """A reference that ``prepare`` must make ready.

    Attributes:
        key: the same for references to the same file, URL or bytes (each is prepared once).
        source: what ``prepare`` gets: a path, an ``http(s)`` URL, or bytes.
        shown: how the reference reads in messages (the path as written, the URL without its query).
    """

    key: object
    source: str | bytes
    shown: str


Target = Keep | Prepare


@dataclass(frozen=True)
class Context:
    """What resolving depends on.

    Attributes:
        local_root: the folder local paths must lie under (links resolved), or None for any path.
        fetch_urls: ``http(s)`` URLs may be fetched (else they are refused here, before any work).
        profile: the target profile (formats accepted as they are).
        inline_limit: base64 characters under which inline data is sent as it is.
        mode: the delivery mode; ``asset`` sends nothing inline, so no inline data is kept.
    """

    local_root: str | None
    fetch_urls: bool
    profile: Profile
    inline_limit: int
    mode: Mode


def resolve(ref: Reference, ctx: Context) -> Target:
    """What ``ref`` stands for.

    Raises:
        InputError: ``not_found``, ``unreadable`` or ``empty`` for a local path or empty data.
        FetchError: ``fetch_blocked`` for a URL that may not be fetched (fetching off, another scheme or host).
        MediaError: ``corrupt_media`` for base64 data that does not decode.
    """
    if ref.form == "input_audio":
        return _input_audio(ref, ctx)
    url = ref.url
    if not url:
        raise InputError(f"{ref.where}: the reference is empty", code="not_found", hint="name a file, URL or data URI")
    data_uri = parse_data_uri(url)
    if data_uri is not None:
        return _data(ref, data_uri, ctx)
    if is_remote_url(url):
        if not ctx.fetch_urls:
            raise FetchError(
                f"{ref.where}: {shorten(display_url(url))} is a remote URL, and fetching is off",
                code="fetch_blocked",
                hint="pass fetch_urls=True to fetch it (public addresses only; url_allow=[...] opens others)",
            )
        return Prepare(key=("url", url), source=url, shown=shorten(display_url(url)))
    if url[:5].lower() == "file:":
        return _local(ref, _file_url_path(ref, url), ctx)
    if _OTHER_URL.match(url):
        scheme = url.split(":", 1)[0]
        raise FetchError(
            f"{ref.where}: {shorten(display_url(url))} is a {scheme}: URL; only local paths, file://, "
            "http(s):// and data: URIs can be read",
            code="fetch_blocked",
            hint="download it first and pass the file's path, or an http(s) URL with fetch_urls=True",
        )
    return _local(ref, url, ctx)


def _file_url_path(ref: Reference, url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # a broken host: ``file://[::1/cat.png``
        raise InputError(
            f"{ref.where}: {shorten(url)} is not a valid file:// URL ({exc})",
            code="unreadable",
            hint="write file:///path (three slashes) for a file on this machine",
        ) from None
    if parts.netloc.lower() not in _LOCAL_FILE_HOSTS:
        raise FetchError(
            f"{ref.where}: {shorten(url)} names the host {parts.netloc!r}; file:// URLs are read only from "
            "this machine",
            code="fetch_blocked",
            hint="write file:///path (three slashes) for a file on this machine",
        )
    # Percent escapes stand for bytes of the name, as on the file system (not for UTF-8 text only).
    return os.fsdecode(unquote_to_bytes(parts.path))


def _local(ref: Reference, written: str, ctx: Context) -> Prepare:
    shown = shorten(written)
    if not _can_name_a_file(written):
        raise InputError(
            f"{ref.where}: {shown} does not exist (no file name holds a NUL character or a lone surrogate)",
            code="not_found",
            hint="check the path",
        )
    path = os.path.expanduser(written)
    if ctx.local_root is not None:
        real = os.path.realpath(os.path.join(ctx.local_root, path))
        if os.path.commonpath([real, ctx.local_root]) != ctx.local_root:
            # Said the same way whether the path exists or not: nothing about the outside leaks.
            raise InputError(
                f"{ref.where}: {shown} is outside the folder local files are read from",
                code="unreadable",
                hint="name a file inside the folder given as local_root",
            )
    else:
        real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(f"{ref.where}: {shown} does not exist", code="not_found", hint="check the path") from None
    except OSError as exc:
        raise InputError(
            f"{ref.where}: cannot read {shown}: {exc.strerror}", code="unreadable", hint="check its permissions"
        ) from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(
            f"{ref.where}: {shown} is a folder; a reference names one file",
            code="unreadable",
            hint="reference each file of the folder, or pass the folder to nvmedia.prepare",
        )
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{ref.where}: {shown} is not a regular file", code="unreadable", hint="name a media file")
    return Prepare(key=("file", st.st_dev, st.st_ino), source=real, shown=shown)


def _can_name_a_file(path: str) -> bool:
    """False for a path the OS refuses before looking: a NUL, or a character that is no byte of a name."""
    if "\x00" in path:
        return False
    try:
        os.fsencode(path)
    except UnicodeEncodeError:
        return False
    return True


def _data(ref: Reference, data_uri: DataURI, ctx: Context) -> Target:
    if data_uri.encoding == "asset_id":
        try:
            return Keep(asset_id=str(uuid.UUID(data_uri.payload.strip())))
        except ValueError:
            raise InputError(
                f"{ref.where}: the asset id {shorten(data_uri.payload)!r} is not a UUID",
                code="unreadable",
                hint="asset ids look like 8-4-4-4-12 hex digits, as nvmedia.prepare returns them",
            ) from None
    if data_uri.encoding == "base64":
        payload = _WHITESPACE.sub("", data_uri.payload)
        data = _b64decode(payload, f"{ref.where}: the base64 data of {ref.shown}")
    else:
        payload = ""
        data = unquote_to_bytes(data_uri.payload)
    if not data:
        raise InputError(f"{ref.where}: {ref.shown} holds no data", code="empty", hint="remove the empty reference")
    if payload and _as_is(data, data_uri.mime, len(payload), ctx):
        return Keep(inline_chars=len(payload), data=data)
    return _bytes(data, f"the {data_uri.mime or 'untyped'} data URI at {ref.where}")


def _input_audio(ref: Reference, ctx: Context) -> Target:
    payload = _WHITESPACE.sub("", ref.audio_data or "")
    data = _b64decode(payload, f"{ref.where}: the base64 data")
    if not data:
        raise InputError(f"{ref.where}: input_audio holds no data", code="empty", hint="remove the empty part")
    mime = {"wav": "audio/wav", "mp3": "audio/mpeg"}.get(ref.audio_format or "", "")
    if mime and _as_is(data, mime, len(payload), ctx):
        return Keep(inline_chars=len(payload), data=data)
    return _bytes(data, f"the {ref.audio_format or 'untyped'} input_audio at {ref.where}")


def _bytes(data: bytes, shown: str) -> Prepare:
    return Prepare(key=("bytes", hashlib.sha256(data).digest()), source=data, shown=shown)


def keep_to_prepare(kept: Keep, shown: str) -> Prepare:
    """Inline data kept as it is, sent to ``prepare`` after all (the request budget needs planning)."""
    assert kept.data is not None
    return _bytes(kept.data, shown)


def _b64decode(payload: str, what: str) -> bytes:
    try:
        return pybase64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaError(
            f"{what} is not valid base64 ({exc}; {len(payload)} characters)",
            code="corrupt_media",
            hint="encode the file with standard base64 (A-Z, a-z, 0-9, +, /, = padding)",
        ) from None


def _as_is(data: bytes, claimed: str, b64_chars: int, ctx: Context) -> bool:
    """Inline data the service takes as it is: a format the profile accepts, as claimed, under the inline limit."""
    if ctx.mode == "asset" or b64_chars >= ctx.inline_limit:
        return False
    sniffed = sniff_bytes(data[:SNIFF_BYTES])
    formats = {
        "image": ctx.profile.image_formats,
        "audio": ctx.profile.audio_formats,
        "video": ctx.profile.video_formats,
    }
    return sniffed.kind is not None and sniffed.container in formats[sniffed.kind] and sniffed.mime == claimed
