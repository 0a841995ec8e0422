"""Batch inference: one chat request per input (or per group of inputs), several in flight, one answer record each.

``plan_units`` turns paths (files, folders, URLs) into units, one per request;
``run_batch`` answers them. Media is prepared on a small pool of its own
(``prepare_media``) while answers are awaited on ``jobs`` connections, so
preparing the next inputs overlaps the requests in flight even with one job.
Records reach ``on_record`` in input order; an answer that comes back early
waits for the ones before it (at most about two rounds of ``jobs`` units are
started ahead of the one awaited). The assets a unit uploaded are deleted once its answer is in, unless
they are kept.

``AnswerFile`` writes the records as JSON Lines as they come, flushed line by
line, so an interrupted run keeps what it had answered and ``--resume``
continues it: answered (``ok``) and ``skipped`` records are kept, failed ones
(and groups sent without an input that failed) are asked again, and the
finished file is put back in input order. Each answer record carries what
shaped it (``asked``: the prompt's SHA-256, the model and the sampling
parameters, ``--group``); ``--resume`` refuses a file whose answers were asked
differently, or that holds records of inputs not in this run, naming each
difference, rather than keep answers to another question. A request is known
across runs by its inputs' SHA-256 as given (``sources_sha256``: a URL's query
string included, yet not shown) and by which time the batch names them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from .chat import Answer, ChatClient, ChatParams, MediaOptions, build_body, media_kinds, prepare_media, release
from .errors import ConfigError, MediaError, NVMediaError
from .sniff import sniff_path
from .sources import Group, expand

if TYPE_CHECKING:
    from .client import Client
    from .prepared import Prepared

RECORD_TYPE: Final = "answer"
UnitKey = tuple[tuple[str, ...], int]
"""What identifies a request across runs: its inputs' SHA-256s and which time this run names them (0: the first)."""
_WAKE_S: Final = 0.25
DONE_STATUSES: Final = frozenset({"ok", "skipped"})
"""Record statuses ``--resume`` keeps (unless inputs of the request ``failed``); the rest are asked again."""


@dataclass(frozen=True)
class Unit:
    """One request of a batch.

    Attributes:
        index: its place in input order.
        sources: the inputs' names, as records show them.
        inputs: what is prepared (paths or URLs).
        prompt: the text sent with the media.
        skip_reason: set when nothing is sent (a hidden file, not media...).
        source_sha256: the SHA-256 of each input as given (a URL with its query string): records
            name URLs without their query string, and these tell apart URLs that differ only there.
        occurrence: how many earlier requests of the batch have the same inputs (a file named twice).
        grouping: which inputs share a request in this batch (``--group``).
    """

    index: int
    sources: tuple[str, ...]
    inputs: tuple[str, ...]
    prompt: str
    skip_reason: str | None = None
    source_sha256: tuple[str, ...] = ()
    occurrence: int = 0
    grouping: Group = "file"

    @property
    def key(self) -> UnitKey:
        """What identifies it across runs (``--resume``)."""
        return self.source_sha256, self.occurrence


def source_sha256(given: str) -> str:
    """The SHA-256 of an input as given (its whole URL, query string included): it names it without showing it."""
    return hashlib.sha256(given.encode("utf-8", "surrogateescape")).hexdigest()


def _not_media_reason(path: Path) -> str | None:
    """Why a file found in a folder walk is skipped, or None to send it (preparation reports read errors)."""
    try:
        if path.stat().st_size == 0:
            return None
        sniffed = sniff_path(path)
    except OSError:
        return None
    return None if sniffed.is_media else f"not media ({sniffed.description})"


def plan_units(
    paths: Sequence[str], *, prompt: str | None = None, prompts: Mapping[str, str] | None = None, group: Group = "file"
) -> list[Unit]:
    """The requests of a batch, in input order.

    Args:
        paths: files, folders (walked recursively, in sorted order) and URLs.
        prompt: the text sent with every request.
        prompts: per-input texts by path, instead of ``prompt`` (one request per input).
        group: ``file`` (one request per input), ``dir`` (per folder) or ``all`` (one request).

    Raises:
        ConfigError: neither or both of ``prompt`` and ``prompts``, or ``prompts`` with a group.
    """
    if (prompt is None) == (prompts is None):
        raise ConfigError("give one prompt for all inputs or one prompt per input", hint="pass PROMPT or --prompt-file")
    if prompts is not None and group != "file":
        raise ConfigError(
            "per-input prompts (a JSONL --prompt-file) send one request per input",
            hint="drop --group, or use a text --prompt-file",
        )
    grouped: dict[str, tuple[list[str], list[str], str, list[str]]] = {}  # group -> names, inputs, prompt, SHA-256s
    order: list[str | tuple[str, str, str]] = []  # a group, or a skipped source's (name, reason, SHA-256)
    for source in expand(paths, group):
        reason = source.skip_reason
        if reason is None and not source.explicit and source.path is not None:
            reason = _not_media_reason(source.path)
        given_sha256 = source_sha256(source.url or source.name)
        if reason is not None:
            order.append((source.name, reason, given_sha256))
            continue
        if prompts is not None and not source.explicit:
            raise ConfigError(
                f"per-input prompts name files or URLs, but {source.name} was found in a folder",
                hint="list each file in the .jsonl --prompt-file",
            )
        text = prompts[source.url or source.name] if prompts is not None else prompt
        assert text is not None
        if source.group not in grouped:
            grouped[source.group] = ([], [], text, [])
            order.append(source.group)
        names, inputs, _, hashes = grouped[source.group]
        names.append(source.name)
        inputs.append(source.url or (str(source.path) if source.path is not None else source.name))
        hashes.append(given_sha256)
    units: list[Unit] = []
    seen: dict[tuple[str, ...], int] = {}
    for index, entry in enumerate(order):
        if isinstance(entry, tuple):
            name, reason, given_sha256 = entry
            unit = Unit(index, (name,), (), "", skip_reason=reason, source_sha256=(given_sha256,))
        else:
            names, inputs, text, hashes = grouped[entry]
            unit = Unit(index, tuple(names), tuple(inputs), text, source_sha256=tuple(hashes))
        occurrence = seen.get(unit.source_sha256, 0)
        seen[unit.source_sha256] = occurrence + 1
        units.append(dataclasses.replace(unit, occurrence=occurrence, grouping=group))
    return units


def read_prompt_file(path: Path) -> tuple[str | None, dict[str, str] | None]:
    """A ``--prompt-file``: ``.jsonl``/``.ndjson`` gives per-input prompts, anything else one prompt (its text).

    Per-input lines are ``{"source": PATH_OR_URL, "prompt": TEXT}``; a relative source is
    relative to the file's folder. Returns ``(prompt, None)`` or ``(None, {source: prompt})``.

    Raises:
        ConfigError: the file cannot be read, is empty, or a line is not such an object.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read the prompt file {path}: {exc}", hint="check the path and that it is UTF-8 text"
        ) from None
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        prompt = text.strip()
        if not prompt:
            raise ConfigError(f"the prompt file {path} is empty", hint="write the prompt into it")
        return prompt, None
    prompts: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("source"), str)
            or not isinstance(entry.get("prompt"), str)
        ):
            raise ConfigError(
                f"{path} line {number} is not a JSON object with string fields source and prompt",
                hint='write one {"source": "photos/a.jpg", "prompt": "..."} per line',
            )
        source = entry["source"]
        if "://" not in source and not os.path.isabs(source):
            source = os.path.join(os.path.dirname(str(path)), source)
        if source in prompts:
            raise ConfigError(f"{path} line {number}: {entry['source']} appears twice", hint="one line per input")
        prompts[source] = entry["prompt"]
    if not prompts:
        raise ConfigError(f"the prompt file {path} has no entries", hint='one {"source", "prompt"} object per line')
    return None, prompts


# -- records ----------------------------------------------------------------------------------------------

_SHAPING_PARAMS: Final = ("model", "max_tokens", "reasoning_budget", "seed", "temperature", "top_p", "think")
"""The ``ChatParams`` fields that shape an answer, as recorded in ``asked`` (and named by their flags)."""


def asked(prompt: str, params: ChatParams, group: Group = "file") -> dict[str, Any]:
    """What shapes the answer to ``prompt``: its SHA-256 (not the text), the model, the sampling parameters
    and ``--group`` (which inputs share a request)."""
    shaping = {name: getattr(params, name) for name in _SHAPING_PARAMS}
    return {"prompt_sha256": hashlib.sha256(prompt.encode("utf-8")).hexdigest(), **shaping, "group": group}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-") if name != "think" else "--think/--no-think"


def _shown_value(value: object) -> str:
    return "none" if value is None else json.dumps(value) if isinstance(value, bool) else str(value)


def asked_differently(earlier: Mapping[str, Any] | None, now: Mapping[str, Any]) -> list[str]:
    """What differs between how an answer was asked (``earlier``, None when unrecorded) and ``now``."""
    if earlier is None:
        return ["prompt and options (the record does not say which)"]
    differences = ["prompt"] if earlier.get("prompt_sha256") != now["prompt_sha256"] else []
    for name in _SHAPING_PARAMS:
        if earlier.get(name) != now[name]:
            differences.append(f"{_flag(name)} ({_shown_value(earlier.get(name))}, now {_shown_value(now[name])})")
    differences += _other_group(earlier, now["group"])
    return differences


def _other_group(earlier: Mapping[str, Any], group: str) -> list[str]:
    """``--group`` as a difference when the earlier answer was asked with another one (older records do not say)."""
    if "group" not in earlier or earlier["group"] == group:
        return []
    return [f"--group ({_shown_value(earlier['group'])}, now {group})"]


def skipped_record(unit: Unit) -> dict[str, Any]:
    return {
        "type": RECORD_TYPE,
        "sources": list(unit.sources),
        "sources_sha256": list(unit.source_sha256),
        "status": "skipped",
        "reason": unit.skip_reason,
    }


def answer_record(
    unit: Unit,
    *,
    answer: Answer | None = None,
    error: NVMediaError | None = None,
    failed: Iterable[tuple[str, NVMediaError]] = (),
    asset_ids: Sequence[str] = (),
    warnings: Sequence[str] = (),
    asked_as: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON object of one answered (or failed) request; ``asked_as`` is its ``asked`` value."""
    record: dict[str, Any] = {
        "type": RECORD_TYPE,
        "sources": list(unit.sources),
        "sources_sha256": list(unit.source_sha256),
        "status": "ok" if error is None else "error",
        "answer": answer.text if answer is not None else None,
        "reasoning": answer.reasoning if answer is not None else None,
        "usage": answer.usage if answer is not None else None,
        "model": answer.model if answer is not None else None,
        "finish_reason": answer.finish_reason if answer is not None else None,
        "latency_s": round(answer.latency_s, 3) if answer is not None else None,
        "error": error.to_dict() if error is not None else None,
    }
    if asked_as is not None:
        record["asked"] = dict(asked_as)
    failed_list = [{"source": source, "error": exc.to_dict()} for source, exc in failed]
    if failed_list:
        record["failed"] = failed_list
    if asset_ids:
        record["asset_ids"] = list(asset_ids)
    if warnings:
        record["warnings"] = list(warnings)
    return record


# -- running ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchSettings:
    """What every request of a batch shares.

    Attributes:
        client: the chat endpoint.
        params: model and sampling parameters.
        media: how media is prepared.
        jobs: requests in flight.
        keep_assets: leave uploaded assets in place (their ids go into the records).
    """

    client: ChatClient
    params: ChatParams
    media: MediaOptions
    jobs: int = 4
    keep_assets: bool = False


def _prepare(unit: Unit, media: MediaOptions, client: Client) -> Prepared | NVMediaError:
    try:
        return prepare_media(unit.inputs, media, client)
    except NVMediaError as exc:  # the asset API unreachable, no key for an upload...
        return exc


def _answer(unit: Unit, prepared_future: Future[Prepared | NVMediaError], settings: BatchSettings) -> dict[str, Any]:
    prepared = prepared_future.result()
    asked_as = asked(unit.prompt, settings.params, unit.grouping)
    if isinstance(prepared, NVMediaError):
        return answer_record(unit, error=prepared, asked_as=asked_as)
    answer: Answer | None = None
    error: NVMediaError | None = None
    failed = [(it.source, it.error) for it in prepared.items if it.status == "error" and it.error is not None]
    asset_ids: list[str] = []
    try:
        if not any(it.ok and it.part is not None for it in prepared.items):
            error = failed[0][1] if failed else MediaError("nothing to send: no input of this request is media")
            failed = failed[1:]
        else:
            body = build_body(unit.prompt, prepared.content, media_kinds(prepared), settings.params, stream=False)
            try:
                answer = settings.client.send(body, prepared.headers)
            except NVMediaError as exc:
                error = exc
        asset_ids = prepared.asset_ids if settings.keep_assets else []
    finally:
        warnings = release(prepared, keep_assets=settings.keep_assets)
    return answer_record(
        unit, answer=answer, error=error, failed=failed, asset_ids=asset_ids, warnings=warnings, asked_as=asked_as
    )


@dataclass
class _Slot:
    unit: Unit
    prepared: Future[Prepared | NVMediaError] | None
    record: Future[dict[str, Any]]


def run_batch(
    units: Sequence[Unit],
    settings: BatchSettings,
    on_record: Callable[[Unit, dict[str, Any]], None],
    on_stopping: Callable[[int], None] | None = None,
) -> None:
    """Answer ``units`` and hand each record to ``on_record`` in input order.

    When interrupted (Ctrl-C) or when ``on_record`` raises, requests not yet started
    are dropped, those in flight finish (and delete their assets; ``on_stopping``
    is told how many), the answers already in are still handed over (in input
    order, with gaps), and the exception propagates.
    """
    jobs = max(1, settings.jobs)
    preparers = max(1, min(jobs, os.cpu_count() or 1))
    # Preparation runs up to a second round of requests ahead, so a round of answers never waits for it.
    window = 2 * jobs + 2 * preparers
    media_client = settings.media.client(jobs=preparers)  # one connection pool and cache for the whole run
    prepare_pool = ThreadPoolExecutor(preparers, thread_name_prefix="nvmedia-batch-prepare")
    send_pool = ThreadPoolExecutor(jobs, thread_name_prefix="nvmedia-batch-send")
    slots: dict[int, _Slot] = {}

    def start(position: int) -> _Slot:
        unit = units[position]
        if unit.skip_reason is not None:
            done: Future[dict[str, Any]] = Future()
            done.set_result(skipped_record(unit))
            return _Slot(unit, None, done)
        prepared = prepare_pool.submit(_prepare, unit, settings.media, media_client)
        return _Slot(unit, prepared, send_pool.submit(_answer, unit, prepared, settings))

    started = 0
    try:
        for position in range(len(units)):
            while started < len(units) and started <= position + window:
                slots[started] = start(started)
                started += 1
            record = _wait(slots[position].record)
            on_record(slots.pop(position).unit, record)
    except BaseException:
        _wind_down(slots, prepare_pool, send_pool, on_record, on_stopping)
        raise
    finally:
        prepare_pool.shutdown(wait=True)
        send_pool.shutdown(wait=True)
        media_client.close()


def _wait(future: Future[dict[str, Any]]) -> dict[str, Any]:
    """``future.result()``, waking now and then: a Ctrl-C delivered to a worker thread still reaches this one."""
    while True:
        try:
            return future.result(timeout=_WAKE_S)
        except FutureTimeout:
            continue


def _wind_down(
    slots: dict[int, _Slot],
    prepare_pool: ThreadPoolExecutor,
    send_pool: ThreadPoolExecutor,
    on_record: Callable[[Unit, dict[str, Any]], None],
    on_stopping: Callable[[int], None] | None,
) -> None:
    never_sent = [slot for slot in slots.values() if slot.record.cancel()]
    if on_stopping is not None:
        on_stopping(sum(1 for slot in slots.values() if not slot.record.done()))
    for slot in never_sent:
        if slot.prepared is not None:
            slot.prepared.cancel()
    send_pool.shutdown(wait=True, cancel_futures=True)
    prepare_pool.shutdown(wait=True, cancel_futures=True)
    for slot in never_sent:  # prepared, but its request never went out: nobody else deletes its assets
        if slot.prepared is not None and not slot.prepared.cancelled() and slot.prepared.exception() is None:
            outcome = slot.prepared.result()
            if not isinstance(outcome, NVMediaError):
                release(outcome)
    for position in sorted(slots):
        slot = slots[position]
        if slot.record.done() and not slot.record.cancelled() and slot.record.exception() is None:
            try:
                on_record(slot.unit, slot.record.result())
            except Exception:  # the first failure is the one to report
                break


# -- the answers file ---------------------------------------------------------------------------------------


def read_records(path: Path) -> list[dict[str, Any]]:
    """The answer records of an earlier run; a torn or foreign line (an interrupted write) is ignored."""
    records: list[dict[str, Any]] = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return records
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("type") == RECORD_TYPE and isinstance(record.get("sources"), list):
            records.append(record)
    return records


def _keys(records: Iterable[Mapping[str, Any]]) -> list[UnitKey]:
    """The unit key of each record of a file, in file order (which is input order)."""
    keys: list[UnitKey] = []
    seen: dict[tuple[str, ...], int] = {}
    for record in records:
        hashes = record.get("sources_sha256")
        if not isinstance(hashes, list):  # an older file: its names are the inputs as given (URLs would not match)
            hashes = [source_sha256(str(s)) for s in record["sources"]]
        given = tuple(str(h) for h in hashes)
        keys.append((given, seen.get(given, 0)))
        seen[given] = keys[-1][1] + 1
    return keys


def _line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


class AnswerFile:
    """Where answer records go: a JSON Lines file written as they come (or a stream such as stdout).

    Args:
        target: the file, or None to write to ``stream``.
        resume: keep the answered and skipped records already in ``target``.
        stream: the text stream used when ``target`` is None.
        asked_now: with ``resume``, how each unit (by key) is asked in this run; an answer
            kept for a unit asked differently stops the run before the file is touched.
        units: with ``resume``, this run's units: a kept record of other inputs (or of another
            ``--group``) stops the run before the file is touched.

    Attributes:
        done: the keys of the records kept from an earlier run.
    """

    def __init__(
        self,
        target: Path | None,
        *,
        resume: bool = False,
        stream: IO[str] | None = None,
        asked_now: Mapping[UnitKey, Mapping[str, Any]] | None = None,
        units: Sequence[Unit] | None = None,
    ) -> None:
        self.target = target
        self.done: set[UnitKey] = set()
        self._kept: list[dict[str, Any]] = []
        self._kept_keys: list[UnitKey] = []
        self._written_keys: list[UnitKey] = []
        self._lock = threading.Lock()
        self._out: IO[str] | None = None
        if target is None:
            if stream is None:
                raise ConfigError("no output for the answers", hint="pass -o FILE")
            self._out = stream
            return
        if resume:
            earlier = read_records(target)
            for record, key in zip(earlier, _keys(earlier), strict=True):
                # A group sent without some of its inputs is not answered yet: ask it again whole.
                done = record.get("status") in DONE_STATUSES and not record.get("failed")
                if done and key not in self.done:
                    self.done.add(key)
                    self._kept.append(record)
                    self._kept_keys.append(key)
            group = units[0].grouping if units else None
            if asked_now is not None:
                _refuse_answers_asked_differently(target, self._kept, self._kept_keys, asked_now, group)
            if units is not None:
                _refuse_records_of_other_inputs(target, self._kept, self._kept_keys, units)
        # The file is opened with the first record: a run that stops before (a configuration
        # error, an interruption) leaves the earlier one as it was. Whether it can be is checked now.
        folder = target.parent
        reason = None
        if not folder.is_dir():
            reason = "no such folder"
        elif not os.access(folder, os.W_OK | os.X_OK):
            reason = "permission denied"
        elif target.is_dir():
            reason = "it is a folder"
        if reason is not None:
            raise ConfigError(f"cannot write {target}: {reason}", hint="check the folder exists and is writable")

    def _open(self) -> IO[str]:
        """The file, opened for appending once the earlier run's kept records are rewritten."""
        assert self.target is not None
        try:
            # Failed and torn lines of the earlier run go now; their inputs are asked again.
            self._replace([_line(r) for r in self._kept])
            return self.target.open("a", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot write {self.target}: {exc.strerror}", hint="check the folder exists and is writable"
            ) from None

    def _replace(self, lines: Iterable[str]) -> None:
        assert self.target is not None
        partial = self.target.with_name(f".{self.target.name}.part")
        with partial.open("w", encoding="utf-8") as fh:
            fh.writelines(lines)
        os.replace(partial, self.target)

    def write(self, record: Mapping[str, Any], key: UnitKey) -> None:
        """Write the record of the unit ``key`` names and flush it (so an interruption loses nothing written)."""
        with self._lock:
            if self._out is None:
                self._out = self._open()
            self._out.write(_line(record))
            self._out.flush()
            self._written_keys.append(key)

    def finish(self, order: Sequence[UnitKey], *, completed: bool = True) -> None:
        """Close the file; after a resumed run, put its records in input order (``order``: the units' keys).

        A run that did not complete (``completed`` false) and wrote no record leaves the file untouched.
        """
        if self.target is None:
            return
        with self._lock:
            if self._out is None:
                if not completed:
                    return
                self._out = self._open()  # a run with nothing to ask still leaves its (resumed) file
            self._out.close()
        if not self._kept:
            return  # a fresh run wrote in input order already
        records = read_records(self.target)
        keys = self._kept_keys + self._written_keys
        if len(records) != len(keys):
            return  # a write failed half-way: leave the lines as they are (--resume reads them back)
        rank = {key: i for i, key in enumerate(order)}
        latest = dict(zip(keys, records, strict=True))
        ordered = sorted(latest.items(), key=lambda entry: rank.get(entry[0], len(rank)))
        self._replace(_line(record) for _, record in ordered)


def _refuse_answers_asked_differently(
    target: Path,
    kept: Sequence[Mapping[str, Any]],
    kept_keys: Sequence[UnitKey],
    asked_now: Mapping[UnitKey, Mapping[str, Any]],
    group: str | None,
) -> None:
    """Stop a resumed run whose kept answers were asked with another prompt, model, parameters or ``--group``.

    Raises:
        ConfigError: naming how many answers differ and each difference.
    """
    differences: dict[str, None] = {}  # ordered, without repeats
    count = 0
    for record, key in zip(kept, kept_keys, strict=True):
        if record.get("status") != "ok":
            continue  # skipped inputs do not depend on the question
        earlier = record.get("asked")
        now = asked_now.get(key)
        if now is not None:
            found = asked_differently(earlier if isinstance(earlier, dict) else None, now)
        elif isinstance(earlier, dict) and group is not None:
            found = _other_group(earlier, group)  # a request of other inputs: another --group would say why
        else:
            continue
        count += bool(found)
        differences.update(dict.fromkeys(found))
    if count:
        raise ConfigError(
            f"--resume: {count} answer{'s' if count != 1 else ''} in {target} {'were' if count != 1 else 'was'} "
            f"asked with another {', '.join(differences)}",
            hint="resume with the same prompt and options, or drop --resume (or pick another -o) to ask again",
        )


def _refuse_records_of_other_inputs(
    target: Path, kept: Sequence[Mapping[str, Any]], kept_keys: Sequence[UnitKey], units: Sequence[Unit]
) -> None:
    """Stop a resumed run whose file holds answers (or skips) of inputs this run does not have.

    Keeping them would leave answers nobody asked for this time, out of input order, and
    with ``--group`` changed an input answered twice; dropping them would lose answers.

    Raises:
        ConfigError: naming how many such records there are and the first few inputs.
    """
    planned = {unit.key for unit in units}
    other = [record for record, key in zip(kept, kept_keys, strict=True) if key not in planned]
    if not other:
        return
    shown_names = [", ".join(str(s) for s in record["sources"]) for record in other[:3]]
    more = f" and {len(other) - 3} more" if len(other) > 3 else ""
    raise ConfigError(
        f"--resume: {target} holds {len(other)} record{'s' if len(other) != 1 else ''} of inputs not in this run "
        f"({', '.join(shown_names)}{more})",
        hint="resume with the same inputs, or drop --resume (or pick another -o) to start a new file",
    )
