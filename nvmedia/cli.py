"""The ``nvmedia`` command: ``prepare``, ``inspect``, ``assets``, ``emulator``.

Only argparse and the standard library load at start; the pipeline and its
heavy dependencies load when a command needs them (``nvmedia --help`` stays fast).
Exit status: 0 when every input is ok or skipped, 1 when any input is an error,
2 for a usage or configuration error (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from . import __version__
from .errors import ConfigError, NVMediaError

if TYPE_CHECKING:
    from .items import Item

EXIT_OK, EXIT_ITEM_ERROR, EXIT_USAGE = 0, 1, 2


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nvmedia",
        description="Make images, audio and video acceptable to NVIDIA's hosted multimodal models.",
        epilog="Run 'nvmedia COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="store_true", help="show versions (nvmedia, ffmpeg, Pillow, PyAV) and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    prep = sub.add_parser("prepare", help="normalize, plan and deliver media; write a JSON Lines manifest")
    prep.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (folders are walked recursively)")
    prep.add_argument("-o", "--output", default="-", metavar="FILE", help="manifest destination; '-' is stdout")
    prep.add_argument(
        "--mode",
        choices=("auto", "inline", "asset"),
        default="auto",
        help="auto: inline when it fits, else upload (default); inline: shrink to fit or fail; asset: upload all",
    )
    prep.add_argument("--profile", default="nemotron-3-nano-omni", help="profile name or a .toml/.json profile file")
    prep.add_argument("--inline-limit", type=_positive_int, metavar="CHARS", help="base64 characters (default 180000)")
    prep.add_argument(
        "--request-limit",
        type=_positive_int,
        metavar="CHARS",
        help="base64 characters of inline media per request (default: the inline limit)",
    )
    prep.add_argument(
        "--group", choices=("file", "dir", "all"), default="file", help="which inputs share one request (default: file)"
    )
    prep.add_argument("--assets-url", metavar="URL", help="asset API base (default $NVMEDIA_ASSETS_URL)")
    prep.add_argument("--api-key", metavar="KEY", help="bearer key (default $NVIDIA_API_KEY)")
    prep.add_argument("--dry-run", action="store_true", help="normalize and plan; upload nothing")
    prep.add_argument("--emulate", action="store_true", help="upload to an in-process local emulator")
    prep.add_argument("--keep", metavar="DIR", type=Path, help="also write each normalized file into DIR")
    prep.add_argument("--keep-metadata", action="store_true", help="do not strip EXIF/XMP/IPTC/text metadata")
    prep.add_argument("--trim", type=float, metavar="SECONDS", help="cut audio/video over the profile's limit")
    prep.add_argument(
        "--split-long-audio",
        action="store_true",
        help="send audio over the profile's limit as pieces cut at its pauses (one item per piece)",
    )
    prep.add_argument(
        "-j",
        "--jobs",
        type=_positive_int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="parallel workers (default: CPUs)",
    )
    prep.add_argument(
        "--pool",
        choices=("process", "thread"),
        default="process",
        help="run -j workers as forked processes (default, Linux) or threads",
    )
    prep.add_argument("--no-cache", action="store_true", help="do not reuse earlier uploads")
    prep.add_argument(
        "--audio-part",
        choices=("audio_url", "input_audio"),
        default="audio_url",
        help="content part for inline audio (default: audio_url)",
    )
    prep.add_argument("--engine", choices=("local", "ray"), default="local", help="run here, or on Ray (nvmedia[ray])")
    prep.add_argument("--address", metavar="ADDR", help="with --engine ray: join this cluster (auto, ray://HOST:PORT)")
    prep.add_argument(
        "--output-format", choices=("jsonl", "parquet"), default="jsonl", help="parquet: -o names a folder of files"
    )

    insp = sub.add_parser("inspect", help="what each file is and what prepare would do; nothing is written")
    insp.add_argument("paths", nargs="+", metavar="PATH")
    insp.add_argument("--json", action="store_true", help="one JSON object per file")
    insp.add_argument("--profile", default="nemotron-3-nano-omni")
    insp.add_argument("--mode", choices=("auto", "inline", "asset"), default="auto")

    assets = sub.add_parser("assets", help="list or delete uploaded assets")
    assets.add_argument("--assets-url", metavar="URL")
    assets.add_argument("--api-key", metavar="KEY")
    asub = assets.add_subparsers(dest="assets_command", metavar="ACTION", required=True)
    asub.add_parser("list", help="print the asset ids of this key, one per line")
    delete = asub.add_parser("delete", help="delete assets by id, or all of them")
    delete.add_argument("ids", nargs="*", metavar="ID")
    delete.add_argument("--all", action="store_true", help="delete every asset of this key")
    delete.add_argument("--job", metavar="ID", help="delete the assets of this job (described 'nvmedia job ID')")

    emu = sub.add_parser("emulator", help="run the local NVCF emulator; prints its base URL first")
    emu.add_argument("--host", default="127.0.0.1")
    emu.add_argument("--port", type=int, default=0)
    emu.add_argument("--latency-api", type=float, default=0.0, metavar="S", help="seconds added to each asset-API call")
    emu.add_argument("--latency-upload", type=float, default=0.0, metavar="S", help="seconds added to each upload")
    emu.add_argument("--storage-dir", metavar="DIR", help="where uploaded bytes are kept (default: a temp folder)")
    return parser


class _Progress:
    """A one-line progress display on a terminal's stderr, and a summary line at the end.

    Called from the workers' and the uploads' threads, hence the lock.
    """

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.last = 0.0
        self.shown = False
        self.lock = threading.Lock()

    def __call__(self, stage: str, done: int, total: int, name: str) -> None:
        with self.lock:
            now = time.monotonic()
            if done < total and now - self.last < 0.1:
                return
            self.last = now
            width = 24
            filled = width * done // max(total, 1)
            label = name if len(name) <= 40 else "…" + name[-39:]
            self.stream.write(f"\r\x1b[K{stage:9} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label}")
            self.stream.flush()
            self.shown = True

    def finish(self, summary: str | None = None) -> None:
        with self.lock:
            if self.shown:
                self.stream.write("\r\x1b[K")
            if summary:
                self.stream.write(summary + "\n")
            self.stream.flush()


def _fail(message: str, hint: str = "") -> int:
    line = f"nvmedia: error: {message}"
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


def _cmd_prepare(args: argparse.Namespace) -> int:
    from .manifest import record_line
    from .pipeline import Settings, run
    from .profiles import get_profile

    if args.emulate and args.dry_run:
        return _fail("--emulate and --dry-run do not go together", "pick one")
    settings = Settings(
        mode=args.mode,
        profile=get_profile(args.profile),
        inline_limit=args.inline_limit,
        request_limit=args.request_limit,
        group=args.group,
        assets_url=args.assets_url,
        api_key=args.api_key,
        dry_run=args.dry_run,
        emulate=args.emulate,
        keep=args.keep,
        jobs=args.jobs,
        pool=args.pool,
        use_cache=not args.no_cache,
        audio_part=args.audio_part,
        keep_metadata=args.keep_metadata,
        trim_s=args.trim,
        split_long_audio=args.split_long_audio,
    )
    progress = _Progress(sys.stderr) if sys.stderr.isatty() else None
    if args.address is not None and args.engine != "ray":
        return _fail("--address goes with --engine ray", "add --engine ray")
    if args.engine == "ray":
        from .ray.cli import run_on_ray

        results = run_on_ray(args.paths, settings, address=args.address, progress=progress)
    else:
        results = run(args.paths, settings, progress=progress)
    if args.output_format == "parquet":
        from .ray.cli import write_parquet

        return write_parquet(results, args.output, group=args.group, finish=progress.finish if progress else None)
    to_stdout = args.output == "-"
    target = Path(args.output)
    partial = target.with_name(f".{target.name}.part") if not to_stdout else None
    out: IO[str]
    if partial is not None:
        try:
            out = partial.open("w", encoding="utf-8")
        except OSError as exc:
            return _fail(f"cannot write {args.output}: {exc.strerror}", "check the folder exists and is writable")
    else:
        out = sys.stdout
    counts = {"ok": 0, "skipped": 0, "error": 0, "uploaded": 0}
    summary = None
    try:
        for items, request in results:
            for item in items:
                counts[item.status] += 1
                counts["uploaded"] += item.uploaded
                out.write(record_line(item.to_record()))
            if request is not None:
                out.write(record_line(request.to_record()))
            out.flush()
        summary = (
            f"{sum(counts[s] for s in ('ok', 'skipped', 'error'))} inputs: {counts['ok']} ok, "
            f"{counts['skipped']} skipped, {counts['error']} errors; {counts['uploaded']} uploaded"
            + (f" -> {args.output}" if not to_stdout else "")
        )
    except BaseException:
        if partial is not None:
            out.close()
            partial.unlink(missing_ok=True)
        raise
    finally:
        if progress is not None:
            progress.finish(summary)
    if partial is not None:
        out.close()
        os.replace(partial, target)
    return EXIT_ITEM_ERROR if counts["error"] else EXIT_OK


def _describe(item: Item) -> str:
    lines = [f"{item.source}"]
    if item.status == "skipped":
        lines.append(f"  skipped: {item.reason}")
        return "\n".join(lines)
    if item.input is not None:
        lines.append(f"  input:   {item.kind} {_fields(item.input.to_record())}")
    if item.status == "error" and item.error is not None:
        lines.append(f"  error:   {item.error.code}: {item.error.message}")
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
    from .pipeline import Settings, run
    from .profiles import get_profile

    settings = Settings(mode=args.mode, profile=get_profile(args.profile), dry_run=True, group="file")
    any_error = False
    for items, _ in run(args.paths, settings):
        for item in items:
            any_error = any_error or item.status == "error"
            if args.json:
                print(json.dumps(item.to_record(), ensure_ascii=False))
            else:
                print(_describe(item))
    return EXIT_ITEM_ERROR if any_error else EXIT_OK


def _cmd_assets(args: argparse.Namespace) -> int:
    from .assets import AssetClient

    api_key = args.api_key or os.environ.get("NVIDIA_API_KEY")
    if not api_key:
        return _fail("no API key", "set NVIDIA_API_KEY or pass --api-key")
    with AssetClient(api_key=api_key, base_url=args.assets_url) as client:
        if args.assets_command == "list":
            for asset_id in client.list():
                print(asset_id)
            return EXIT_OK
        if (args.job is not None) + args.all + bool(args.ids) != 1:
            return _fail(
                "name asset ids, --all or --job ID (one of them)", "nvmedia assets delete ID... | --all | --job ID"
            )
        if args.job is not None:
            from .ray.jobs import delete_job_command

            return delete_job_command(client, args.job)
        ids = client.list() if args.all else args.ids
        for asset_id in ids:
            client.delete(asset_id)
            print(f"deleted {asset_id}")
    return EXIT_OK


def _cmd_emulator(args: argparse.Namespace) -> int:
    from .testing.emulator import main as emulator_main

    argv = ["--host", args.host, "--port", str(args.port)]
    argv += ["--latency-api", str(args.latency_api), "--latency-upload", str(args.latency_upload)]
    if args.storage_dir:
        argv += ["--storage-dir", args.storage_dir]
    return emulator_main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.version:
        print(_versions())
        return EXIT_OK
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    commands = {"prepare": _cmd_prepare, "inspect": _cmd_inspect, "assets": _cmd_assets, "emulator": _cmd_emulator}
    try:
        return commands[args.command](args)
    except ConfigError as exc:
        return _fail(exc.message, exc.hint)
    except NVMediaError as exc:
        return _fail(exc.message, exc.hint)
    except KeyboardInterrupt:
        print("nvmedia: interrupted", file=sys.stderr)
        return 130
