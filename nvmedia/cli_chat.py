"""The ``chat`` and ``batch`` commands (and the ``--fetch-urls`` options ``prepare`` shares).

Only argparse loads when the parsers are built; the chat client, the pipeline
and the emulator load when a command runs. Exit status: 0 when every request
was answered, 1 when one failed (a clear line on stderr says why), 2 for a
usage or configuration error, 130 when interrupted by Ctrl-C (SIGINT), 143 by SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .arg_types import int_at_least
from .errors import ConfigError, NVMediaError
from .names import shown
from .signals import interrupt_on_signals

if TYPE_CHECKING:
    from .batch import Unit
    from .chat import Channel, ChatClient, ChatParams, MediaOptions
    from .fetch import FetchPolicy

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
EMULATOR_KEY = "nvapi-emulator-local-key"
DEFAULT_MODEL_SHOWN = "nvidia/nemotron-3-nano-omni-30b-a3b-reasoning"
DEFAULT_BASE_URL_SHOWN = "https://integrate.api.nvidia.com/v1"
"""The library's defaults (``nvmedia.chat``), repeated here so ``--help`` does not load the HTTP stack."""
DEFAULT_BATCH_JOBS = 4
_DIM, _RESET = "\x1b[2m", "\x1b[0m"


_count = int_at_least(1)
_budget = int_at_least(-1, "-1: no budget")


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):  # NaN and infinities are not JSON: no service would take them
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text}")
    return value


# -- options shared with `prepare` ------------------------------------------------------------------------


def add_fetch_arguments(parser: Any) -> None:
    """Add ``--fetch-urls`` and ``--url-allow`` to a parser or argument group (``prepare``, ``chat``, ``batch``)."""
    parser.add_argument(
        "--fetch-urls",
        action="store_true",
        help="fetch http(s) URLs given as inputs (public addresses only; default: URLs are refused)",
    )
    parser.add_argument(
        "--url-allow",
        action="append",
        default=[],
        metavar="HOST|CIDR",
        help="let --fetch-urls reach this host name or network although it is not public (repeatable)",
    )


def fetch_policy(args: argparse.Namespace) -> FetchPolicy | None:
    """The fetch rules the flags ask for, or None when URLs are not to be fetched.

    Raises:
        ConfigError: ``--url-allow`` without ``--fetch-urls``, or an entry that is not a host or network.
    """
    if args.url_allow and not args.fetch_urls:
        raise ConfigError("--url-allow only applies to fetched URLs", hint="add --fetch-urls")
    if not args.fetch_urls:
        return None
    from .fetch import FetchPolicy

    return FetchPolicy(allow=tuple(args.url_allow))


# -- parsers ----------------------------------------------------------------------------------------------


class _InputsAfterDoubleDash(argparse.ArgumentParser):
    """A sub-command parser that takes the words after a ``--`` that follows its options as more inputs.

    argparse fills all positionals at their first run of words, so in
    ``chat PROMPT --emulate -- -odd.png`` the words after ``--`` would be left over
    ("unrecognized arguments"); ``prepare`` takes them, and so do ``chat`` and ``batch``.
    """

    inputs_dest = "sources"

    def parse_known_args(  # type: ignore[override]  # one signature for typeshed's overloads
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras[:1] == ["--"]:
            getattr(parsed, self.inputs_dest).extend(extras[1:])
            extras = []
        return parsed, extras


def _take_inputs_after_double_dash(parser: argparse.ArgumentParser, dest: str) -> None:
    # add_parser builds every sub-command with the top parser's class; these two need one more step.
    parser.__class__ = _InputsAfterDoubleDash
    assert isinstance(parser, _InputsAfterDoubleDash)
    parser.inputs_dest = dest


def _add_endpoint_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model and endpoint")
    model.add_argument("-m", "--model", metavar="MODEL", help=f"model id (default: {DEFAULT_MODEL_SHOWN})")
    model.add_argument("--base-url", metavar="URL", help=f"OpenAI-compatible base (default: {DEFAULT_BASE_URL_SHOWN})")
    model.add_argument("--api-key", metavar="KEY", help="bearer key (default: $NVIDIA_API_KEY)")
    model.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="send the key over plain http to another machine (default: https, or http to this machine only)",
    )
    model.add_argument(
        "--emulate", action="store_true", help="answer with an in-process local emulator (offline; no key needed)"
    )
    model.add_argument("--max-tokens", type=_count, metavar="N", help="most tokens in the answer")
    model.add_argument(
        "--reasoning-budget", type=_budget, metavar="N", help="most tokens spent reasoning (-1: no budget)"
    )
    model.add_argument("--seed", type=int, metavar="N", help="sampling seed, for repeatable answers")
    model.add_argument("--temperature", type=_finite, metavar="T", help="sampling temperature")
    model.add_argument("--top-p", type=_finite, metavar="P", help="nucleus sampling mass")
    model.add_argument(
        "--think",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="send a /think or /no_think system message (default: /no_think when audio or video is attached)",
    )
    model.add_argument(
        "--timeout", type=_seconds, default=300.0, metavar="S", help="seconds to wait for the endpoint (default 300)"
    )
    model.add_argument(
        "--max-attempts",
        type=_count,
        default=5,
        metavar="N",
        help="attempts per request on 429, 5xx or a lost connection (default 5)",
    )
    media = parser.add_argument_group("media")
    media.add_argument("--mode", choices=("auto", "inline", "asset"), default="auto", help="as for prepare")
    media.add_argument("--profile", default=None, help="profile name or file (default: nemotron-3-nano-omni)")
    media.add_argument("--inline-limit", type=_count, metavar="CHARS", help="base64 characters (default 180000)")
    media.add_argument("--assets-url", metavar="URL", help="asset API base (default: $NVMEDIA_ASSETS_URL)")
    add_fetch_arguments(media)


def add_parsers(sub: Any) -> None:
    """Add ``chat`` and ``batch`` to the ``nvmedia`` sub-command parsers."""
    chat = sub.add_parser(
        "chat",
        help="ask a model about media: one request, the answer on stdout",
        description="Prepare the media, send one chat request with PROMPT, print the answer, and delete "
        "the assets it uploaded.",
    )
    _take_inputs_after_double_dash(chat, "sources")
    chat.add_argument("prompt", metavar="PROMPT", help="the question ('-' reads it from stdin)")
    chat.add_argument("sources", nargs="*", metavar="FILE|URL", help="media to send with it (files, folders, URLs)")
    out = chat.add_argument_group("output")
    out.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="print the answer as it is written (default: when stdout is a terminal)",
    )
    out.add_argument("--json", action="store_true", help="print the whole response as JSON (not streamed)")
    out.add_argument(
        "--show-reasoning",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="print the model's reasoning on stderr (default: when stderr is a terminal, dimmed)",
    )
    _add_endpoint_arguments(chat)

    batch = sub.add_parser(
        "batch",
        usage="nvmedia batch [OPTIONS] PROMPT PATH... -o answers.jsonl\n"
        "       nvmedia batch [OPTIONS] --prompt-file PROMPT.txt PATH... -o answers.jsonl\n"
        "       nvmedia batch [OPTIONS] --prompt-file PROMPTS.jsonl -o answers.jsonl",
        help="one chat request per input (or group); one JSON line per answer",
        description="Answer PROMPT for every input (files, folders walked recursively, URLs): one request per "
        "input or per --group, -j at a time, one JSON line per request in input order.",
    )
    _take_inputs_after_double_dash(batch, "words")
    batch.add_argument("words", nargs="*", metavar="PROMPT PATH", help="the prompt, then files, folders or URLs")
    batch.add_argument("-o", "--output", default="-", metavar="FILE", help="answers (JSON Lines); '-' is stdout")
    batch.add_argument(
        "-j", "--jobs", type=_count, default=DEFAULT_BATCH_JOBS, metavar="N", help="requests in flight (default 4)"
    )
    batch.add_argument(
        "--group", choices=("file", "dir", "all"), default="file", help="which inputs share one request (default: file)"
    )
    batch.add_argument(
        "--resume", action="store_true", help="keep the answers already in FILE and ask only for the rest"
    )
    batch.add_argument(
        "--prompt-file",
        type=Path,
        metavar="F",
        help='the prompt from a text file; or per-input prompts from a .jsonl of {"source", "prompt"} lines',
    )
    batch.add_argument(
        "--keep-assets", action="store_true", help="do not delete uploaded assets (their ids go into the records)"
    )
    batch.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="answer here, or in Ray tasks (nvmedia[ray]; -j is then per Ray worker)",
    )
    batch.add_argument("--address", metavar="ADDR", help="with --engine ray: join this cluster (auto, ray://HOST:PORT)")
    _add_endpoint_arguments(batch)


# -- shared plumbing ----------------------------------------------------------------------------------------


def _error_line(exc: NVMediaError, prefix: str = "") -> str:
    line = f"nvmedia: error: {prefix}{exc.message}"
    if exc.hint:
        line += f" ({exc.hint})"
    return shown(line)


def _params(args: argparse.Namespace) -> ChatParams:
    from .chat import DEFAULT_MODEL, ChatParams

    return ChatParams(
        model=args.model or DEFAULT_MODEL,
        max_tokens=args.max_tokens,
        reasoning_budget=args.reasoning_budget,
        seed=args.seed,
        temperature=args.temperature,
        top_p=args.top_p,
        think=args.think,
    )


@contextmanager
def _endpoint(args: argparse.Namespace) -> Iterator[tuple[ChatClient, MediaOptions]]:
    """The chat client and media options the flags describe (with ``--emulate``, a local emulator serving both)."""
    from .chat import ChatClient, MediaOptions

    policy = fetch_policy(args)
    emulator = None
    key: str | None
    if args.emulate:
        if args.base_url or args.assets_url:
            raise ConfigError("--emulate answers with its own endpoint", hint="drop --base-url and --assets-url")
        from .testing import NVCFEmulator

        emulator = NVCFEmulator().start()
        base_url, assets_url, key = f"{emulator.base_url}/v1", emulator.assets_url, EMULATOR_KEY
    else:
        base_url, assets_url = args.base_url, args.assets_url
        key = args.api_key or os.environ.get("NVIDIA_API_KEY")
    try:
        media = MediaOptions(
            mode=args.mode,
            profile=args.profile,
            inline_limit=args.inline_limit,
            assets_url=assets_url,
            api_key=key,
            fetch_urls=policy is not None,
            url_allow=policy.allow if policy is not None else (),
            cache=bool(getattr(args, "keep_assets", False)) and emulator is None,
            allow_insecure_http=args.allow_insecure_http,
        )
        with ChatClient(
            base_url,
            key,
            timeout_s=args.timeout,
            max_attempts=args.max_attempts,
            allow_insecure_http=args.allow_insecure_http,
        ) as client:
            yield client, media
    finally:
        if emulator is not None:
            emulator.stop()


# -- chat -------------------------------------------------------------------------------------------------


class _AnswerPrinter:
    """Prints a streamed answer on stdout and, when shown, the reasoning apart on stderr (dimmed on a terminal)."""

    def __init__(self, out: IO[str], err: IO[str], *, show_reasoning: bool, dim: bool) -> None:
        self.out, self.err = out, err
        self.show_reasoning, self.dim = show_reasoning, dim
        self._in_reasoning = False
        self._last = ""

    def __call__(self, channel: Channel, text: str) -> None:
        if channel == "reasoning":
            if self.show_reasoning:
                self.err.write(f"{_DIM}{text}{_RESET}" if self.dim else text)
                self.err.flush()
                self._in_reasoning = True
            return
        if self._in_reasoning:
            self.err.write("\n\n")
            self.err.flush()
            self._in_reasoning = False
        self.out.write(text)
        self.out.flush()
        self._last = text

    def finish(self) -> None:
        if self._in_reasoning:
            self.err.write("\n")
            self.err.flush()
        if self._last and not self._last.endswith("\n"):
            self.out.write("\n")
            self.out.flush()


def _read_prompt(text: str) -> str:
    prompt = sys.stdin.read() if text == "-" else text
    if not prompt.strip():
        raise ConfigError("the prompt is empty", hint="pass the question as the first argument")
    return prompt.strip() if text == "-" else prompt


def _for_chat(exc: NVMediaError, args: argparse.Namespace) -> NVMediaError:
    """``exc`` with a hint that names what ``chat`` can do (the library's hints name ``prepare``'s options)."""
    if exc.code == "too_many_assets":
        inline = ", let small ones go inline (--mode auto)" if args.mode == "asset" else ""
        hint = f"send fewer files{inline}, or ask about them in several requests: nvmedia batch --group file|dir"
    elif "--trim" in exc.hint:  # chat has no --trim: prepare makes the shorter copy
        limit = re.search(r"--trim (\d+)", exc.hint)
        if limit is not None:
            hint = (
                f"chat sends whole files: make a copy of the first {limit.group(1)} s with "
                f"nvmedia prepare FILE --trim {limit.group(1)} --keep DIR --dry-run, and send that"
            )
        else:
            copy = "a shorter copy (nvmedia prepare FILE --trim SECONDS --keep DIR --dry-run)"
            hint = re.sub(r"--trim\b[^,;)]*", copy, exc.hint, count=1)
    else:
        return exc
    return NVMediaError(exc.message, code=exc.code, hint=hint)


def _exit_status(exc: NVMediaError) -> int:
    """2 for a usage or configuration error; 1 for the rest, such as a refused key (``auth_failed``)
    or an unreachable asset API (``asset_api_error``), whichever endpoint it comes from."""
    return EXIT_USAGE if isinstance(exc, ConfigError) and exc.code == "config" else EXIT_ERROR


def cmd_chat(args: argparse.Namespace) -> int:
    """``nvmedia chat PROMPT [FILE|URL ...]``; SIGTERM, like Ctrl-C, still deletes the uploaded assets."""
    with interrupt_on_signals():
        return _chat(args)


def _chat(args: argparse.Namespace) -> int:
    from .chat import ask

    def warn(message: str) -> None:
        print(f"nvmedia: warning: {message}", file=sys.stderr)

    try:
        prompt = _read_prompt(args.prompt)
        if args.json and args.stream:
            raise ConfigError("--json prints the whole response at the end", hint="drop --stream or --json")
        stream = not args.json and (args.stream if args.stream is not None else sys.stdout.isatty())
        show = args.show_reasoning if args.show_reasoning is not None else sys.stderr.isatty()
        printer = _AnswerPrinter(
            sys.stdout, sys.stderr, show_reasoning=show, dim=sys.stderr.isatty() and not os.environ.get("NO_COLOR")
        )
        with _endpoint(args) as (client, media):
            try:
                answer = ask(
                    prompt,
                    args.sources,
                    client=client,
                    params=_params(args),
                    media=media,
                    stream=stream,
                    on_delta=None if args.json else printer,
                    on_warning=warn,
                )
            finally:
                printer.finish()
    except NVMediaError as exc:
        print(_error_line(_for_chat(exc, args)), file=sys.stderr)
        return _exit_status(exc)
    if args.json:
        print(json.dumps(answer.response, indent=2, ensure_ascii=False))
    return EXIT_OK


# -- batch ------------------------------------------------------------------------------------------------


class _BatchProgress:
    """One line on a terminal's stderr: requests answered so far, errors, and the last input."""

    def __init__(self, stream: IO[str], total: int) -> None:
        self.stream, self.total = stream, total
        self.done = self.errors = 0
        self.shown = False
        self._last = 0.0
        self._lock = threading.Lock()

    def record(self, unit: Unit, status: str) -> None:
        with self._lock:
            self.done += 1
            self.errors += status == "error"
            now = time.monotonic()
            if self.done < self.total and now - self._last < 0.1:
                return
            self._last = now
            name = unit.sources[0] if unit.sources else ""
            label = name if len(name) <= 40 else "…" + name[-39:]
            errors = f", {self.errors} error{'s' if self.errors != 1 else ''}" if self.errors else ""
            self.stream.write(f"\r\x1b[Kanswered {self.done}/{self.total}{errors} {label}")
            self.stream.flush()
            self.shown = True

    def clear(self) -> None:
        with self._lock:
            if self.shown:
                self.stream.write("\r\x1b[K")
                self.stream.flush()


def _batch_inputs(args: argparse.Namespace) -> tuple[str | None, dict[str, str] | None, list[str]]:
    """The prompt (or per-input prompts) and the paths the positional words and ``--prompt-file`` give."""
    from .batch import read_prompt_file

    words = list(args.words)
    if args.prompt_file is None:
        if len(words) < 2:
            raise ConfigError("batch needs a prompt and at least one path", hint='nvmedia batch "PROMPT" PATH...')
        return words[0], None, words[1:]
    prompt, prompts = read_prompt_file(args.prompt_file)
    if prompts is not None:
        if words:
            raise ConfigError(
                "with per-input prompts (a .jsonl --prompt-file) the inputs are the file's sources",
                hint="drop the PATH arguments",
            )
        return None, prompts, list(prompts)
    if not words:
        raise ConfigError("batch needs at least one path", hint="nvmedia batch --prompt-file F PATH...")
    return prompt, None, words


def _summary(counts: dict[str, int], resumed: int, elapsed: float, output: str, interrupted: bool) -> str:
    total = counts["ok"] + counts["skipped"] + counts["error"]
    errors, left_out = counts["error"], counts["failed_inputs"]
    text = (
        f"{total} request{'s' if total != 1 else ''}: {counts['ok']} answered, {counts['skipped']} skipped, "
        f"{errors} error{'s' if errors != 1 else ''}"
    )
    if left_out:
        their = "its" if left_out == 1 else "their"
        text += f"; {left_out} input{'s' if left_out != 1 else ''} failed (left out of {their} request)"
    if resumed:
        text += f"; {resumed} already answered (--resume)"
    text += f"; {elapsed:.1f} s"
    if output != "-":
        text += f" -> {output}"
    return text + (" (interrupted)" if interrupted else "")


def cmd_batch(args: argparse.Namespace) -> int:
    """``nvmedia batch PROMPT PATH... -o answers.jsonl``; SIGTERM, like Ctrl-C, lets the requests in flight finish."""
    with interrupt_on_signals():
        return _batch(args)


def _batch(args: argparse.Namespace) -> int:
    from .batch import AnswerFile, BatchSettings, asked, plan_units, run_batch

    started = time.monotonic()
    try:
        prompt, prompts, paths = _batch_inputs(args)
        if args.resume and args.output == "-":
            raise ConfigError("--resume continues an answers file", hint="pass -o FILE")
        if args.address is not None and args.engine != "ray":
            raise ConfigError("--address goes with --engine ray", hint="add --engine ray")
        if args.engine == "ray":
            from .ray.session import check_address, import_ray

            if args.address is not None:
                check_address(args.address)
            import_ray(local=args.address is None)  # before any work: a missing Ray is exit 2 naming the extra
        units = plan_units(paths, prompt=prompt, prompts=prompts, group=args.group)
        params = _params(args)
        with _endpoint(args) as (client, media):
            from .chat import CONNECT_TIMEOUT_S
            from .reach import check_reachable

            # Before any input is prepared: a mistyped --base-url would cost a whole preparation pass.
            timeout_s = min(args.timeout, CONNECT_TIMEOUT_S)
            check_reachable(client.base_url, what="the chat endpoint", flag="--base-url", timeout_s=timeout_s)
            asked_now = {
                unit.key: asked(unit.prompt, params, unit.grouping) for unit in units if unit.skip_reason is None
            }
            answers = AnswerFile(
                None if args.output == "-" else Path(args.output),
                resume=args.resume,
                stream=sys.stdout,
                asked_now=asked_now,
                units=units,
            )
            todo = [unit for unit in units if unit.key not in answers.done]
            counts = {"ok": 0, "skipped": 0, "error": 0, "failed_inputs": 0}
            progress = _BatchProgress(sys.stderr, len(todo)) if sys.stderr.isatty() else None

            def on_record(unit: Unit, record: dict[str, Any]) -> None:
                answers.write(record, unit.key)
                counts[record["status"]] += 1
                if progress is not None:
                    progress.record(unit, record["status"])
                # One line per failure: the request's, and each input a group was sent without.
                failures = [(", ".join(unit.sources), record["error"])] if record["status"] == "error" else []
                failures += [(entry["source"], entry["error"]) for entry in record.get("failed", ())]
                counts["failed_inputs"] += len(record.get("failed", ()))
                if failures and progress is not None:
                    progress.clear()
                for where, error in failures:
                    print(shown(f"nvmedia: error: {where}: {error['code']}: {error['message']}"), file=sys.stderr)

            def on_stopping(in_flight: int) -> None:
                if progress is not None:
                    progress.clear()
                if in_flight:
                    print(
                        f"nvmedia: stopping; waiting for {in_flight} request{'s' if in_flight != 1 else ''} in flight "
                        "to finish and delete their assets",
                        file=sys.stderr,
                        flush=True,
                    )

            interrupted = True
            try:
                settings = BatchSettings(client, params, media, args.jobs, args.keep_assets)
                if args.engine == "ray":
                    from .ray.batch import run_batch_on_ray

                    cpus = os.cpu_count() or 1
                    run_batch_on_ray(
                        todo, settings, on_record, address=args.address, cpus=cpus, on_stopping=on_stopping
                    )
                else:
                    run_batch(todo, settings, on_record=on_record, on_stopping=on_stopping)
                interrupted = False
            finally:
                answers.finish([unit.key for unit in units], completed=not interrupted)
                if progress is not None:
                    progress.clear()
                resumed = len(units) - len(todo)
                summary = _summary(counts, resumed, time.monotonic() - started, args.output, interrupted)
                print(summary, file=sys.stderr)
    except NVMediaError as exc:
        print(_error_line(exc), file=sys.stderr)
        return _exit_status(exc)
    return EXIT_ERROR if counts["error"] or counts["failed_inputs"] else EXIT_OK
