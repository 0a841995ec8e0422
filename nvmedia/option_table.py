"""The one table of options: each library parameter, its command-line flag, type, defaults and help.

``nvmedia.Client`` and ``Client.prepare`` take these options as keyword arguments; the
``nvmedia`` command builds its flags from the same rows (``cli.py``), so a flag and its
parameter can never drift apart. Defaults differ between the two only where a row says
so (``group``: ``all`` in the library, ``file`` on the command line; ``pool``: threads in
the library, forked processes on the command line).

Messages and hints name options through ``ref``: a marker the front door renders as
``--trim 60`` on the command line and ``trim_s=60`` in the library (``render``). The
command line switches the rendering for the time it runs (``front_door("cli")``).

This module imports nothing from nvmedia, so every layer may use ``ref``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final, Literal

Front = Literal["library", "cli"]
Scope = Literal["client", "call", "cli"]
"""``client``: a ``Client(...)`` keyword; ``call``: a ``prepare(...)`` keyword; ``cli``: the command line only."""
FlagKind = Literal["value", "switch", "negated", "append"]
"""``value`` takes a value; ``switch`` sets True; ``negated`` sets False (``--no-cache``); ``append`` repeats."""
CliType = Literal["str", "count", "float", "size", "size0", "path"]
"""How the command line reads a value: text, a whole number >= 1, seconds, bytes (``size0``: 0 allowed), a path."""

PREPARE, INSPECT, MEDIA = "prepare", "inspect", "media"
"""The option sets: ``nvmedia prepare``, ``nvmedia inspect``, and the media options of ``chat``/``batch``."""


@dataclass(frozen=True)
class OptionSpec:
    """One row of the table.

    Attributes:
        name: the library parameter (``None`` for command-line-only rows that map to no parameter).
        flag: the long flag, or None for a library-only option.
        scope: ``client``, ``call`` or ``cli`` (see ``Scope``).
        kind: how the flag is given (see ``FlagKind``).
        library_default: the library's default, as documented.
        cli_default: the command line's default (what argparse starts from).
        help: the flag's help text.
        sets: the option sets (``PREPARE``, ``INSPECT``, ``MEDIA``) whose command takes the flag.
        cli_type: how the command line reads the value.
        choices: the values allowed, if limited.
        metavar: the value's name in ``--help``.
        short: a short flag (``-j``), if any.
    """

    name: str | None
    flag: str | None
    scope: Scope
    kind: FlagKind = "value"
    library_default: object = None
    cli_default: object = None
    help: str = ""
    sets: tuple[str, ...] = (PREPARE,)
    cli_type: CliType = "str"
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    short: str | None = None

    @property
    def dest(self) -> str:
        """The argparse attribute the flag fills (the parameter's name, or the flag's)."""
        if self.kind == "negated" or self.name is None:
            assert self.flag is not None
            return self.flag.lstrip("-").replace("-", "_")
        return self.name


OPTIONS: Final[tuple[OptionSpec, ...]] = (
    # -- what a call does ------------------------------------------------------------------------------------
    OptionSpec(
        "mode",
        "--mode",
        "call",
        library_default="auto",
        cli_default="auto",
        choices=("auto", "inline", "asset"),
        help="auto: inline when it fits, else upload (default); inline: shrink to fit or fail; asset: upload all",
        sets=(PREPARE, INSPECT, MEDIA),
    ),
    OptionSpec(
        "profile",
        "--profile",
        "call",
        library_default=None,
        cli_default="nemotron-3-nano-omni",
        help="profile name or a .toml/.json profile file (default: nemotron-3-nano-omni)",
        sets=(PREPARE, INSPECT, MEDIA),
    ),
    OptionSpec(
        "inline_limit",
        "--inline-limit",
        "call",
        cli_type="count",
        metavar="CHARS",
        help="base64 characters above which an item is uploaded (default 180000)",
        sets=(PREPARE, INSPECT, MEDIA),
    ),
    OptionSpec(
        "request_limit",
        "--request-limit",
        "call",
        cli_type="count",
        metavar="CHARS",
        help="base64 characters of inline media per request (default: the inline limit)",
        sets=(PREPARE, INSPECT),
    ),
    OptionSpec(
        "group",
        "--group",
        "call",
        library_default="all",
        cli_default="file",
        choices=("file", "dir", "all"),
        help="which inputs share one request (default: file; the library's default is all)",
    ),
    OptionSpec("dry_run", "--dry-run", "call", "switch", False, False, "normalize and plan; upload nothing"),
    OptionSpec(
        "keep", "--keep", "call", cli_type="path", metavar="DIR", help="also write each normalized file into DIR"
    ),
    OptionSpec(
        "keep_metadata",
        "--keep-metadata",
        "call",
        "switch",
        False,
        False,
        "do not strip EXIF/XMP/IPTC/text metadata",
        sets=(PREPARE, INSPECT),
    ),
    OptionSpec(
        "trim_s",
        "--trim",
        "call",
        cli_type="float",
        metavar="SECONDS",
        help="cut audio/video over the profile's limit to its first SECONDS",
        sets=(PREPARE, INSPECT),
    ),
    OptionSpec(
        "split_long_audio",
        "--split-long-audio",
        "call",
        "switch",
        False,
        False,
        "send audio over the profile's limit as pieces cut at its pauses (one item per piece)",
        sets=(PREPARE, INSPECT),
    ),
    OptionSpec(
        "audio_part",
        "--audio-part",
        "call",
        library_default="audio_url",
        cli_default="audio_url",
        choices=("audio_url", "input_audio"),
        help="content part for inline audio (default: audio_url)",
    ),
    OptionSpec(
        "fetch_urls",
        "--fetch-urls",
        "call",
        "switch",
        False,
        False,
        "fetch http(s) URLs given as inputs (public addresses only; default: URLs are refused)",
        sets=(PREPARE, INSPECT, MEDIA),
    ),
    OptionSpec(
        "url_allow",
        "--url-allow",
        "call",
        "append",
        (),
        [],
        "let --fetch-urls reach this host name or network although it is not public (repeatable)",
        sets=(PREPARE, INSPECT, MEDIA),
        metavar="HOST|CIDR",
    ),
    OptionSpec(
        "resume",
        "--resume",
        "call",
        "switch",
        None,
        False,
        "keep the records of -o FILE whose source is unchanged and do only the rest (same options needed)",
    ),
    OptionSpec("on_error", None, "call", library_default="raise", choices=("raise", "keep")),
    OptionSpec("keep_assets", None, "call", library_default=False, help="assets outlive a with-block"),
    OptionSpec("progress", None, "call", help="progress(stage, done, total, name)"),
    # -- where and how a client works ------------------------------------------------------------------------
    OptionSpec(
        "assets_url",
        "--assets-url",
        "client",
        metavar="URL",
        help="asset API base (default $NVMEDIA_ASSETS_URL)",
        sets=(PREPARE, MEDIA),
    ),
    OptionSpec("api_key", "--api-key", "client", metavar="KEY", help="bearer key (default $NVIDIA_API_KEY)"),
    OptionSpec(
        "allow_insecure_http",
        "--allow-insecure-http",
        "client",
        "switch",
        False,
        False,
        "allow sending the key over plain http to a host that is not loopback",
    ),
    OptionSpec("cache", "--no-cache", "client", "negated", True, True, "do not reuse earlier uploads"),
    OptionSpec("cache_dir", None, "client", help="folder of the caches (default $NVMEDIA_CACHE_DIR)"),
    OptionSpec(
        "jobs",
        "--jobs",
        "client",
        cli_type="count",
        metavar="N",
        short="-j",
        help="parallel workers (default: CPUs)",
    ),
    OptionSpec(
        "pool",
        "--pool",
        "client",
        library_default="thread",
        cli_default="process",
        choices=("process", "thread"),
        help="run -j workers as forked processes (default, Linux) or threads (the library's default)",
    ),
    OptionSpec(
        "max_memory",
        "--max-memory",
        "client",
        cli_type="size",
        metavar="BYTES",
        help="memory that image decodes may hold at once across workers, e.g. 1G or 512M "
        "(default: a quarter of RAM); an image whose decode alone needs more is too_large",
        sets=(PREPARE, INSPECT),
    ),
    OptionSpec(
        "output_cache",
        "--output-cache-size",
        "client",
        library_default=True,
        cli_type="size0",
        metavar="BYTES",
        help="cap of the converted-file cache, e.g. 500M (default 2G or $NVMEDIA_OUTPUT_CACHE_SIZE; 0: off)",
    ),
    OptionSpec(
        "output_cache", "--no-output-cache", "client", "negated", True, True, "do not reuse or store converted files"
    ),
    OptionSpec("http_client", None, "client", help="an httpx.Client (or httpx.AsyncClient) to send through"),
    # -- the command line only -------------------------------------------------------------------------------
    OptionSpec(None, "--emulate", "cli", "switch", False, False, "upload to an in-process local emulator"),
)


def options_for(option_set: str) -> Iterator[OptionSpec]:
    """The rows whose flag the given command takes, in table order."""
    return (o for o in OPTIONS if o.flag is not None and option_set in o.sets)


def spec(name: str) -> OptionSpec:
    """The first row for parameter ``name``.

    Raises:
        KeyError: no option has that name.
    """
    for option in OPTIONS:
        if option.name == name:
            return option
    raise KeyError(name)


# -- references in messages, rendered by the front door ------------------------------------------------------

_front: Front = "library"
_REF: Final = re.compile("\x02([a-z_]+)(?:\x1f([^\x03]*))?\x03")
_NO_VALUE: Final = object()


def ref(name: str, value: object = _NO_VALUE) -> str:
    """A reference to option ``name`` (with a value) for a message or hint; ``render`` spells it out.

    Example:
        >>> render(f"pass {ref('trim_s', 60)}")
        'pass trim_s=60'
        >>> with front_door("cli"):
        ...     render(f"pass {ref('trim_s', 60)} or {ref('split_long_audio')}")
        'pass --trim 60 or --split-long-audio'
    """
    spec(name)  # a typo in a name is a bug: fail where the message is written
    if value is _NO_VALUE:
        return f"\x02{name}\x03"
    return f"\x02{name}\x1f{_encode(value)}\x03"


def _encode(value: object) -> str:
    if isinstance(value, bool):
        return "\x01true" if value else "\x01false"
    if isinstance(value, str):
        return "\x01s" + value
    return str(value)


def _spell(name: str, encoded: str | None, front: Front) -> str:
    rows = [o for o in OPTIONS if o.name == name]
    if front == "cli":
        flagged = [o for o in rows if o.flag is not None]
        if flagged:
            if encoded == "\x01false":
                negated = [o for o in flagged if o.kind == "negated"]
                if negated:
                    return str(negated[0].flag)
            row = next((o for o in flagged if o.kind != "negated"), flagged[0])
            if row.kind == "switch" or encoded is None or encoded in ("\x01true", "\x01false"):
                return str(row.flag)
            shown = encoded[2:] if encoded.startswith("\x01s") else encoded
            return f"{row.flag} {shown}"
    if encoded is None:
        kinds = {o.kind for o in rows}
        return f"{name}=True" if "switch" in kinds else f"{name}=False" if kinds == {"negated"} else name
    if encoded in ("\x01true", "\x01false"):
        return f"{name}={encoded == chr(1) + 'true'}"
    if encoded.startswith("\x01s"):
        quoted = f'"{encoded[2:]}"'
        return f"{name}=[{quoted}]" if rows and rows[0].kind == "append" else f"{name}={quoted}"
    return f"{name}={encoded}"


def render(text: str, front: Front | None = None) -> str:
    """``text`` with its option references spelled for ``front`` (default: the current front door)."""
    if "\x02" not in text:
        return text
    chosen = front or _front
    return _REF.sub(lambda m: _spell(m.group(1), m.group(2), chosen), text)


def current_front() -> Front:
    """The front door messages are rendered for now: ``library`` unless the command line runs."""
    return _front


@contextmanager
def front_door(front: Front) -> Iterator[None]:
    """Render option references for ``front`` while the block runs (the command line wraps itself in it).

    Process-wide on purpose: errors are rendered on worker threads and in forked workers too.
    """
    global _front
    before, _front = _front, front
    try:
        yield
    finally:
        _front = before
