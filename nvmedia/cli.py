"""The ``nvmedia`` command: ``prepare``, ``inspect``, ``assets``, ``emulator`` (``chat``, ``batch``: cli_chat.py).

Only argparse and the standard library load at start; the pipeline and its
heavy dependencies load when a command needs them (``nvmedia --help`` stays fast).
Exit status: 0 when every input is ok or skipped, 1 when any input is an error,
2 for a usage or configuration error (one line on stderr), 143 or 130 when SIGTERM
or SIGINT stopped the run (the manifest then holds every request finished).
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import shutil
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

from . import __version__
from .arg_types import int_at_least
from .cli_chat import add_parsers, cmd_batch, cmd_chat
from .errors import ConfigError, NVMediaError, no_space_error
from .names import shown
from .option_table import INSPECT, PREPARE, OptionSpec, Scope, front_door, options_for
from .signals import Interrupted, interruptible, received, stop_on_signals

if TYPE_CHECKING:
    from .client import Client
    from .items import Item, Request
    from .resume import EarlierManifest
    from .settings import Settings

EXIT_OK, EXIT_ITEM_ERROR, EXIT_USAGE = 0, 1, 2

_SECRET_OPTION = re.compile(r"^(--?[\w-]*(?:key|api|token|secret|passw|auth|credential)[\w-]*)(=.*)?$", re.IGNORECASE)
"""An option whose name says it carries a credential (``--api-key``, a mistyped ``--api-kye``, ``--token=...``)."""
REDACTED = "REDACTED"


def redact_usage_error(message: str) -> str:
    """``message`` (argparse's, which echoes the arguments it did not recognise) with credentials replaced.

    The value after, or joined to, an option whose name looks like a key option is replaced,
    and so is any word that looks like an NVIDIA key (``nvapi-...``).

    Example:
        >>> redact_usage_error("unrecognized arguments: --api-kee nvapi-123 --token=abc")
        'unrecognized arguments: --api-kee REDACTED --token=REDACTED'
    """
    words = message.split(" ")
    shown: list[str] = []
    hide_next = False
    for word in words:
        secret_option = _SECRET_OPTION.match(word)
        if hide_next and word:
            shown.append(REDACTED)
            hide_next = False
        elif secret_option is not None:
            hide_next = secret_option.group(2) is None
            shown.append(secret_option.group(1) + (f"={REDACTED}" if secret_option.group(2) else ""))
        else:
            shown.append(REDACTED if word.startswith("nvapi-") else word)
    return " ".join(shown)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error never repeats a key typed after a mistyped option."""

    def error(self, message: str) -> NoReturn:
        super().error(redact_usage_error(message))


_positive_int = int_at_least(1)


def _size_type(flag: str, *, allow_zero: bool) -> Callable[[str], int]:
    """An argparse type reading sizes (``1G``, ``512M``, ``1.5G``) the one way ``config.parse_size`` does."""

    def size(text: str) -> int:
        from .config import parse_size

        try:
            return parse_size(text, what=flag, allow_zero=allow_zero)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(f"{exc.message} ({exc.hint})") from None

    return size


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nvmedia",
        description="Make images, audio and video acceptable to NVIDIA's hosted multimodal models.",
        epilog="Run 'nvmedia COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="store_true", help="show versions (nvmedia, ffmpeg, Pillow, PyAV) and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    prep = sub.add_parser("prepare", help="normalize, plan and deliver media; write a JSON Lines manifest")
    prep.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (folders are walked recursively)")
    prep.add_argument("-o", "--output", default="-", metavar="FILE", help="manifest destination; '-' is stdout")
    add_table_options(prep, PREPARE)
    prep.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing on stderr but usage and configuration errors"
    )
    prep.add_argument("--engine", choices=("local", "ray"), default="local", help="run here, or on Ray (nvmedia[ray])")
    prep.add_argument("--address", metavar="ADDR", help="with --engine ray: join this cluster (auto, ray://HOST:PORT)")
    prep.add_argument(
        "--output-format", choices=("jsonl", "parquet"), default="jsonl", help="parquet: -o names a folder of files"
    )

    insp = sub.add_parser("inspect", help="what each file is and what prepare would do; nothing is written")
    insp.add_argument("paths", nargs="+", metavar="PATH")
    insp.add_argument("--json", action="store_true", help="one JSON object per file")
    add_table_options(insp, INSPECT)

    assets = sub.add_parser("assets", help="list or delete uploaded assets")
    _add_service_options(assets)
    asub = assets.add_subparsers(dest="assets_command", metavar="ACTION", required=True)
    _add_service_options(asub.add_parser("list", help="print the asset ids of this key, one per line"), after=True)
    delete = asub.add_parser(
        "delete",
        help="delete assets by id, or all of them",
        description="Delete assets; prints 'deleted ID', 'not found ID' or 'failed ID: reason' for each and "
        "goes on past failures. Exit status 1 when any was not found or failed.",
    )
    delete.add_argument("ids", nargs="*", metavar="ID")
    delete.add_argument("--all", action="store_true", help="delete every asset of this key")
    delete.add_argument("--job", metavar="ID", help="delete the assets of this job (described 'nvmedia job ID')")
    _add_service_options(delete, after=True)

    emu = sub.add_parser("emulator", help="run the local NVCF emulator; prints its base URL first")
    emu.add_argument("--host", default="127.0.0.1")
    emu.add_argument("--port", type=int, default=0)
    emu.add_argument("--latency-api", type=float, default=0.0, metavar="S", help="seconds added to each asset-API call")
    emu.add_argument("--latency-upload", type=float, default=0.0, metavar="S", help="seconds added to each upload")
    emu.add_argument("--latency-chat", type=float, default=0.0, metavar="S", help="seconds added to each chat request")
    emu.add_argument("--storage-dir", metavar="DIR", help="where uploaded bytes are kept (default: a temp folder)")
    add_parsers(sub)
    return parser


def _cli_type(option: OptionSpec) -> Callable[[str], Any] | None:
    """How argparse reads the option's value (``option_table.CliType``)."""
    if option.cli_type == "count":
        return _positive_int
    if option.cli_type == "float":
        return float
    if option.cli_type in ("size", "size0"):
        assert option.flag is not None
        return _size_type(option.flag, allow_zero=option.cli_type == "size0")
    if option.cli_type == "path":
        return Path
    return None


def add_table_options(parser: Any, option_set: str) -> None:
    """Add the flags of ``option_set`` (``PREPARE``, ``INSPECT``, ``MEDIA``) from the option table to a parser."""
    for option in options_for(option_set):
        assert option.flag is not None
        flags = [option.short, option.flag] if option.short else [option.flag]
        if option.kind in ("switch", "negated"):
            parser.add_argument(*flags, dest=option.dest, action="store_true", help=option.help)
            continue
        default = option.cli_default
        if option.name == "jobs":
            default = os.cpu_count() or 1
        parser.add_argument(
            *flags,
            dest=option.dest,
            action="append" if option.kind == "append" else "store",
            type=_cli_type(option),
            choices=option.choices,
            default=list(default) if isinstance(default, (list, tuple)) else default,
            metavar=option.metavar,
            help=option.help,
        )


def table_options(args: argparse.Namespace, option_set: str, scope: Scope) -> dict[str, Any]:
    """The library options the flags of ``option_set`` give, for a ``Client`` (``client``) or a call (``call``)."""
    options: dict[str, Any] = {}
    for option in options_for(option_set):
        if option.scope != scope or option.name is None or not hasattr(args, option.dest):
            continue
        value = getattr(args, option.dest)
        if option.kind == "negated":
            if value:
                options[option.name] = False
        elif option.kind == "append":
            options[option.name] = tuple(value or ())
        elif value is not None:
            options[option.name] = value
    return options


def _add_service_options(parser: argparse.ArgumentParser, *, after: bool = False) -> None:
    """The asset-service options; ``after`` also accepts them after a sub-command without undoing earlier ones."""
    keep: dict[str, Any] = {"default": argparse.SUPPRESS} if after else {}
    parser.add_argument("--assets-url", metavar="URL", help="asset API base (default $NVMEDIA_ASSETS_URL)", **keep)
    parser.add_argument("--api-key", metavar="KEY", help="bearer key (default $NVIDIA_API_KEY)", **keep)
    parser.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow sending the key over plain http to a host that is not loopback",
        **keep,
    )


def _width(text: str) -> int:
    """Terminal columns ``text`` takes (wide East Asian characters take two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _fit(text: str, columns: int) -> str:
    """``text`` cut to ``columns`` terminal columns, the middle replaced by an ellipsis when it is too long."""
    if _width(text) <= columns:
        return text
    if columns <= 1:
        return "…"[:columns]
    head, tail, room = "", "", columns - 1
    left, right = 0, len(text)
    while left < right:  # take characters from both ends, more from the start
        take_head = _width(head) <= 2 * _width(tail)
        char = text[left] if take_head else text[right - 1]
        if _width(head) + _width(tail) + _width(char) > room:
            break
        if take_head:
            head, left = head + char, left + 1
        else:
            tail, right = char + tail, right - 1
    return f"{head}…{tail}"


class _Progress:
    """A one-line progress display on a terminal's stderr, kept to the terminal's width.

    Called from the workers' and the uploads' threads, hence the lock. Other lines (errors,
    the summary) go through ``line`` so that they never mix with the bar.
    """

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.last = 0.0
        self.bar = ""
        self.lock = threading.Lock()

    def _columns(self) -> int:
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError):
            columns = 0
        return columns if columns > 0 else shutil.get_terminal_size().columns  # 0: a terminal that never said

    def __call__(self, stage: str, done: int, total: int, name: str) -> None:
        with self.lock:
            now = time.monotonic()
            if done < total and now - self.last < 0.1:
                return
            self.last = now
            columns = self._columns() - 1  # never the last column: some terminals wrap there
            width = max(8, min(24, columns // 5))
            filled = width * done // max(total, 1)
            head = f"{stage:9} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
            self.bar = _fit(head + _fit(shown(name), max(columns - _width(head), 0)), columns)
            self.stream.write(f"\r\x1b[K{self.bar}")
            self.stream.flush()

    def line(self, text: str) -> None:
        """Print a line of its own, then the bar again below it."""
        with self.lock:
            self.stream.write(f"\r\x1b[K{text}\n{self.bar}" if self.bar else text + "\n")
            self.stream.flush()

    def finish(self) -> None:
        with self.lock:
            if self.bar:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
            self.bar = ""


class _Report:
    """What the command tells on stderr: one line per error as records are written, and a summary."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.progress = _Progress(sys.stderr) if sys.stderr.isatty() and not quiet else None
        self.counts = {"ok": 0, "skipped": 0, "error": 0, "uploaded": 0, "manifest": 0, "output_cache": 0}

    def record(self, item: Item) -> None:
        self.counts[item.status] += 1
        self.counts["uploaded"] += item.uploaded
        if item.reused_from is not None:
            self.counts[item.reused_from] += 1
        if item.status == "error" and item.error is not None:
            self.say(f"{shown(item.source)}: {item.error.code}: {shown(item.error.message)}")

    def say(self, text: str) -> None:
        if self.quiet:
            return
        if self.progress is not None:
            self.progress.line(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def summary(self, destination: str | None, interrupted: Interrupted | None = None, *, resumed: bool = False) -> str:
        c = self.counts
        inputs = c["ok"] + c["skipped"] + c["error"]
        counts = f"{c['ok']} ok, {c['skipped']} skipped, {_plural(c['error'], 'error')}; {c['uploaded']} uploaded"
        if resumed:
            counts += f"; {c['manifest']} kept from {shown(destination or '-')}"
        if c["output_cache"]:
            counts += f"; {_plural(c['output_cache'], 'converted file')} reused"
        if interrupted is not None:
            text = f"interrupted by {interrupted.name} after {_plural(inputs, 'input')}: {counts}"
        else:
            text = f"{_plural(inputs, 'input')}: {counts}"
        return text + (f" -> {shown(destination)}" if destination else "")

    def finish(self, summary: str) -> None:
        if self.progress is not None:
            self.progress.finish()
        if not self.quiet:
            print(summary, file=sys.stderr, flush=True)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _fail(message: str, hint: str = "") -> int:
    line = f"nvmedia: error: {shown(message)}"
    if hint:
        line += f" ({hint})"
    print(line.replace("\n", " "), file=sys.stderr)
    return EXIT_USAGE


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    lines = [f"nvmedia {__version__}"]
    for dist in ("Pillow", "pillow-heif", "av", "httpx"):
        try:
            lines.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            lines.append(f"{dist} (not installed)")
    try:
        from .ffmpeg import ffmpeg_version

        path, line = ffmpeg_version()
        lines.append(f"ffmpeg {path}: {line}")
    except NVMediaError as exc:
        lines.append(f"ffmpeg: {exc.message}")
    return "\n".join(lines)


class _ManifestError(Exception):
    """The manifest could not be written (exit 2; the previous manifest at -o is left as it was)."""

    def __init__(self, error: NVMediaError) -> None:
        super().__init__(error.message)
        self.error = error


class _Manifest:
    """Where the records go: stdout, or a temporary file beside ``-o FILE`` renamed over it once complete."""

    def __init__(self, output: str) -> None:
        self.to_stdout = output == "-"
        self.target = Path(output)
        self.partial: Path | None = None
        self.failed = False
        self.written = 0
        self.out: IO[str] = sys.stdout
        if not self.to_stdout:
            partial = self.partial_of(self.target)
            try:
                fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            except OSError as exc:
                raise ConfigError(
                    f"cannot write {output}: {exc.strerror}", hint="check the folder exists and is writable"
                ) from None
            self.partial = partial
            self.out = os.fdopen(fd, "w", encoding="utf-8")

    @staticmethod
    def partial_of(target: Path) -> Path:
        """Where the manifest for ``target`` is written until complete (a killed run leaves it for --resume)."""
        return target.with_name(f".{target.name}.part")

    @property
    def own_files(self) -> list[Path]:
        """The files this manifest writes: never inputs."""
        return [] if self.partial is None else [self.target, self.partial]

    @property
    def where(self) -> str:
        return "stdout" if self.to_stdout else str(self.target)

    def write(self, items: list[Item], request: Request | None) -> None:
        from .manifest import record_line

        lines = [record_line(item.to_record()) for item in items]
        if request is not None:
            lines.append(record_line(request.to_record()))
        text = "".join(lines)
        size = len(text.encode("utf-8"))
        try:
            self.out.write(text)
            self.out.flush()
        except OSError as exc:
            # Over a file size limit what counts is the whole file; out of space, what is left to write.
            raise self._failure(exc, self.written + size if exc.errno == errno.EFBIG else size) from None
        self.written += size

    def commit(self) -> None:
        """Make the manifest durable and put it in place (atomically over the previous one)."""
        try:
            self.out.flush()
            if self.partial is not None:
                os.fsync(self.out.fileno())
                self.out.close()
                os.replace(self.partial, self.target)
                self.partial = None
        except OSError as exc:
            raise self._failure(exc, None) from None

    def discard(self) -> None:
        """Drop what was written unless committed (the previous manifest at -o stays as it was)."""
        if self.partial is not None:
            try:
                self.out.close()
            except OSError:
                pass  # its buffer could not be flushed either: the file goes anyway
            self.partial.unlink(missing_ok=True)
            self.partial = None
        elif self.to_stdout and self.failed:
            try:  # what is still buffered for stdout would fail again, noisily, when Python exits
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
            except (OSError, ValueError):
                pass

    def _failure(self, exc: OSError, needed: int | None) -> _ManifestError:
        self.failed = True
        what = f"the manifest to {self.where}"
        folder = None if self.to_stdout else self.target.parent
        error = no_space_error(exc, folder, what, needed) or ConfigError(
            f"cannot write {what}: {exc.strerror}", hint="check the destination can be written"
        )
        return _ManifestError(error)


@contextmanager
def _client(args: argparse.Namespace, options: dict[str, Any]) -> Iterator[Client]:
    """The ``Client`` the flags describe; with ``--emulate``, one reaching an in-process emulator.

    The emulator is reached through its transport, or over loopback with ``--engine ray``.
    """
    from .client import Client

    if not getattr(args, "emulate", False):
        with Client(**options) as client:
            yield client
        return
    import httpx

    from .api import EMULATOR_KEY
    from .testing import NVCFEmulator

    emulator = NVCFEmulator()
    try:
        if getattr(args, "engine", "local") == "ray":
            # Ray's workers are other processes: they reach the emulator over loopback.
            emulator.start()
            options.update(api_key=EMULATOR_KEY, assets_url=emulator.assets_url, cache=False)
            with Client(**options) as client:
                yield client
            return
        options.update(api_key=EMULATOR_KEY, assets_url=emulator.assets_url, cache=False)
        with httpx.Client(transport=emulator.transport) as http, Client(http_client=http, **options) as client:
            yield client
    finally:
        emulator.stop()


class _ParquetManifest:
    """``--output-format parquet``: the item records as Parquet files in a new folder, put in place once complete.

    The files (``part-00000.parquet``…, ``ROWS_PER_PARQUET_FILE`` rows each) are written into a
    folder beside ``output`` and renamed to it at ``commit``, so a failed or stopped run leaves no
    half-written folder. Rows hold the manifest's fields as ``nvmedia.ray.records`` lays them out.
    """

    ROWS_PER_FILE = 10_000
    to_stdout = False

    def __init__(self, output: str) -> None:
        try:
            import pyarrow  # noqa: F401 - only to fail now, naming the extra
        except ImportError as exc:
            from .ray.session import missing_ray

            raise missing_ray(exc) from None
        self.target = Path(output)
        if self.target.exists() and (not self.target.is_dir() or any(self.target.iterdir())):
            raise ConfigError(f"{output} exists and is not an empty folder", hint="pass a new folder with -o")
        self.partial: Path | None = _Manifest.partial_of(self.target)
        shutil.rmtree(self.partial, ignore_errors=True)
        try:
            self.partial.mkdir(parents=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot write {output}: {exc.strerror}", hint="check the folder above it exists and is writable"
            ) from None
        self.rows: list[dict[str, object]] = []
        self.files = 0

    @property
    def own_files(self) -> list[Path]:
        """The folders this manifest writes: never inputs."""
        return [self.target, _Manifest.partial_of(self.target)]

    @property
    def where(self) -> str:
        return str(self.target)

    def write(self, items: list[Item], request: Request | None) -> None:
        from .ray.records import record_to_row

        self.rows.extend(record_to_row(item.to_record()) for item in items)
        if len(self.rows) >= self.ROWS_PER_FILE:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from .ray.records import RECORD_SCHEMA

        assert self.partial is not None
        try:
            table = pa.Table.from_pylist(self.rows, schema=RECORD_SCHEMA)
            pq.write_table(table, self.partial / f"part-{self.files:05d}.parquet")
        except OSError as exc:
            raise self._failure(exc) from None
        self.files += 1
        self.rows.clear()

    def commit(self) -> None:
        """Write the last rows (an empty file when there were none) and put the folder in place."""
        if self.rows or not self.files:
            self._flush()
        assert self.partial is not None
        try:
            if self.target.exists():
                self.target.rmdir()
            os.replace(self.partial, self.target)
        except OSError as exc:
            raise self._failure(exc) from None
        self.partial = None

    def discard(self) -> None:
        """Drop the folder unless committed."""
        if self.partial is not None:
            shutil.rmtree(self.partial, ignore_errors=True)
            self.partial = None

    def _failure(self, exc: OSError) -> _ManifestError:
        what = f"the Parquet files to {self.target}"
        error = no_space_error(exc, self.target.parent, what, None) or ConfigError(
            f"cannot write {what}: {exc.strerror}", hint="check the destination can be written"
        )
        return _ManifestError(error)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from .resume import EarlierManifest
    from .sources import identity

    if args.emulate and args.dry_run:
        return _fail("--emulate and --dry-run do not go together", "pick one")
    if args.address is not None and args.engine != "ray":
        return _fail("--address goes with --engine ray", "add --engine ray")
    if args.engine == "ray":
        from .ray.session import check_address, import_ray

        if args.group != "file":
            return _fail(
                f"--group {args.group} is not available with --engine ray: each file is its own request there",
                "drop --group, or use --engine local",
            )
        if args.address is not None:
            check_address(args.address)
        import_ray(local=args.address is None)  # before any work: a missing Ray is exit 2 naming the extra
    if args.output_format == "parquet":
        if args.output == "-":
            return _fail("--output-format parquet writes a folder, not stdout", "pass -o FOLDER")
        if args.group != "file":
            return _fail(
                f"--output-format parquet holds item records only, and --group {args.group} adds request records",
                "use --output-format jsonl with --group dir|all",
            )
        if args.resume:
            return _fail(
                "--resume and --output-format parquet do not go together: --resume reads a JSON Lines manifest",
                "use --output-format jsonl to resume",
            )
    if args.output != "-" and identity(args.output) in {identity(p) for p in args.paths}:
        return _fail(f"-o {args.output} is also an input", "write the manifest elsewhere")
    call = table_options(args, PREPARE, "call")
    call.pop("resume")  # the command line's --resume reads -o FILE, opened below
    report = _Report(args.quiet)
    with _client(args, table_options(args, PREPARE, "client")) as client:
        settings = client.settings(**call)
        if not (settings.dry_run or settings.mode == "inline" or args.emulate):
            with interruptible():
                _preflight(client, settings)  # before any work: a missing key or a dead API is exit 2 now
        if args.resume and args.output == "-":
            return _fail("--resume needs -o FILE", "the earlier run's manifest is read from FILE, then replaced")
        target = Path(args.output)
        # Read before the partial manifest is opened: a killed run's leftover partial is resumed too.
        earlier = EarlierManifest.load(target, settings, leftover=_Manifest.partial_of(target)) if args.resume else None
        try:
            manifest: _Manifest | _ParquetManifest
            if args.output_format == "parquet":
                manifest = _ParquetManifest(args.output)
            else:
                manifest = _Manifest(args.output)
            try:
                return _write_manifest(args, client, call, manifest, report, earlier)
            finally:
                manifest.discard()
        finally:
            if earlier is not None:
                earlier.close()


def _preflight(client: Client, settings: Settings) -> None:
    """Uploads may be needed: the key must be set and the asset API must answer (``ConfigError`` if not)."""
    if client._api_key is None:
        raise ConfigError(
            f"no API key, and in --mode {settings.mode} files too big to send inline are uploaded",
            hint="set NVIDIA_API_KEY or pass --api-key (or use --mode inline, --dry-run or --emulate)",
        )
    client.check_service()


def _write_manifest(
    args: argparse.Namespace,
    client: Client,
    call: dict[str, Any],
    manifest: _Manifest | _ParquetManifest,
    report: _Report,
    earlier: EarlierManifest | None,
) -> int:
    from .workers import end_child_processes

    def stopping(uploads: int) -> None:
        if args.engine == "local":
            end_child_processes()  # workers and every ffmpeg: this process owns all its children
        signum = received()
        name = Interrupted(signum).name if signum is not None else "interrupted"
        waiting = f"; finishing the {_plural(uploads, 'upload')} in progress" if uploads else ""
        report.say(f"nvmedia: {name}: stopping{waiting}, then writing the manifest")

    interrupted: Interrupted | None = None
    records: Generator[tuple[list[Item], Request | None], None, None]
    if args.engine == "ray":
        from .ray.cli import run_on_ray

        # Ray's own processes are ended by the engine (its cluster stops, or its tasks are cancelled).
        records = run_on_ray(
            args.paths,
            client.settings(**call),
            client,
            address=args.address,
            progress=report.progress,
            exclude=manifest.own_files,
            on_stop=stopping,
            resume=earlier,
            log=None if args.quiet else sys.stderr,
            announce_job=not args.emulate,
        )
    else:
        records = client.stream(
            args.paths,
            exclude=manifest.own_files,
            on_stop=stopping,
            earlier=earlier,
            progress=report.progress,
            **call,
        )
    failed: _ManifestError | None = None
    try:
        for items, request in records:
            manifest.write(items, request)
            for item in items:
                report.record(item)
    except Interrupted as exc:
        interrupted = exc
    except _ManifestError as exc:
        records.close()  # stops the workers and the uploads not started
        failed = exc
    finally:
        if report.progress is not None:
            report.progress.finish()
    try:
        if failed is None:
            manifest.commit()
    except _ManifestError as exc:
        failed = exc
    if failed is not None:
        return _fail(failed.error.message, failed.error.hint)
    signum = received()
    if interrupted is None and signum is not None:
        interrupted = Interrupted(signum)  # it came once all the work was done: still honour it
    report.finish(report.summary(None if manifest.to_stdout else args.output, interrupted, resumed=args.resume))
    if interrupted is not None:
        return interrupted.exit_status
    return EXIT_ITEM_ERROR if report.counts["error"] else EXIT_OK


def _describe(item: Item) -> str:
    lines = [shown(item.source)]
    if item.status == "skipped":
        lines.append(f"  skipped: {item.reason}")
        return "\n".join(lines)
    if item.input is not None:
        lines.append(f"  input:   {item.kind} {_fields(item.input.to_record())}")
    if item.status == "error" and item.error is not None:
        lines.append(f"  error:   {item.error.code}: {shown(item.error.message)}")
        if item.error.hint:
            lines.append(f"  hint:    {item.error.hint}")
        return "\n".join(lines)
    if item.output is not None:
        lines.append(f"  output:  {_fields(item.output.to_record(), skip=('sha256',))}")
    lines.append(f"  actions: {', '.join(item.actions) if item.actions else 'none (sent as is)'}")
    lines.append(f"  would be sent: {item.delivery}")
    for warning in item.warnings:
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)


def _fields(record: dict[str, Any], skip: Sequence[str] = ()) -> str:
    return " ".join(f"{k}={v}" for k, v in record.items() if k not in skip)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .client import Client
    from .manifest import record_line

    any_error = False
    with Client(**table_options(args, INSPECT, "client")) as client:
        for item in client.inspect_all(args.paths, **table_options(args, INSPECT, "call")):
            any_error = any_error or item.status == "error"
            if args.json:
                sys.stdout.write(record_line(item.to_record()))
            else:
                print(_describe(item))
    return EXIT_ITEM_ERROR if any_error else EXIT_OK


def _cmd_assets(args: argparse.Namespace) -> int:
    from .assets import AssetClient

    job: str | None = getattr(args, "job", None)
    if args.assets_command == "delete" and job is not None:
        from .ray.jobs import check_job_id

        if args.all or args.ids:
            return _fail(
                "name asset ids, --all or --job ID (one of them)", "nvmedia assets delete ID... | --all | --job ID"
            )
        check_job_id(job)
    elif args.assets_command == "delete" and args.all == bool(args.ids):
        return _fail("name asset ids or pass --all (not both)", "nvmedia assets delete ID... | --all | --job ID")
    api_key = args.api_key or os.environ.get("NVIDIA_API_KEY")
    if not api_key:
        return _fail("no API key", "set NVIDIA_API_KEY or pass --api-key")
    client = AssetClient(api_key=api_key, base_url=args.assets_url, allow_insecure_http=args.allow_insecure_http)
    with client:
        if args.assets_command == "list":
            for asset_id in client.list():
                print(asset_id)
            return EXIT_OK
        if job is not None:
            from .ray.jobs import delete_job_command

            return delete_job_command(client, job)
        # No total deadline here: the user is watching and can interrupt.
        report = client.delete_many(client.list() if args.all else args.ids, deadline_s=None)
    for outcome in report.outcomes:
        if outcome.status == "failed":
            print(f"failed {outcome.asset_id}: {outcome.reason}")
        else:
            print(f"{outcome.status.replace('_', ' ')} {outcome.asset_id}")
    return EXIT_ITEM_ERROR if report.failed or report.not_found else EXIT_OK


def _cmd_emulator(args: argparse.Namespace) -> int:
    from .testing.emulator import main as emulator_main

    argv = ["--host", args.host, "--port", str(args.port)]
    argv += ["--latency-api", str(args.latency_api), "--latency-upload", str(args.latency_upload)]
    argv += ["--latency-chat", str(args.latency_chat)]
    if args.storage_dir:
        argv += ["--storage-dir", args.storage_dir]
    return emulator_main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Messages and hints name options by their flags (``--trim``) while it runs.
    """
    with front_door("cli"):
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.version:
        print(_versions())
        return EXIT_OK
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    commands = {"prepare": _cmd_prepare, "inspect": _cmd_inspect, "assets": _cmd_assets, "emulator": _cmd_emulator}
    commands |= {"chat": cmd_chat, "batch": cmd_batch}
    try:
        if args.command == "prepare":
            with stop_on_signals():
                return _cmd_prepare(args)
        return commands[args.command](args)
    except ConfigError as exc:
        return _fail(exc.message, exc.hint)
    except NVMediaError as exc:
        return _fail(exc.message, exc.hint)
    except Interrupted as exc:
        print(f"nvmedia: interrupted by {exc.name}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("nvmedia: interrupted", file=sys.stderr)
        return 130
