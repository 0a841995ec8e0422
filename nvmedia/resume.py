"""``--resume``: which records of an earlier manifest still hold, so that a run does only the rest.

Every item record carries a ``resume`` object: the source's state when it was read (size,
mtime, inode, ``recent`` when it had just been modified, and its SHA-256 when the run had
it at hand) and the options that shape records. A run resuming from that manifest:

- refuses (``ConfigError``, exit 2) when the earlier records were made with other
  record-shaping options (profile, mode, limits, group, ``--keep``, ``--dry-run``...),
  naming each difference: mixing records made under two settings would give a manifest
  no single run could have written;
- keeps the records of a request (a file with ``--group file``, a folder's files with
  ``--group dir``, everything with ``--group all``) only when each of its sources is
  unchanged and has ``ok`` or ``skipped`` records; errors are tried again, since they may
  have been passing faults (network, disk, a timeout under load);
- holds a source unchanged when its size and mtime are the ones recorded; when in doubt,
  because the file had been modified less than 2 s before the earlier run read it
  (``SourceState.recent``: a coarse file-system clock would not show a second edit) or it
  is another file now (another inode), its bytes must match the recorded SHA-256, and
  without one it is redone;
- checks that every asset id the kept records name still exists (one listing of the
  service's assets for the whole run) and that every ``kept`` copy still holds the
  recorded bytes; otherwise that request is redone (and re-uploaded).

Kept records are read back from the manifest when their turn comes, so the earlier
manifest is never held in memory whole. A line that is not a whole record (the torn last
line of a killed run) is ignored, and so are its source's other pieces.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import json
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Final

from .errors import ConfigError
from .items import Item
from .media_info import RECORD_FIELDS, MediaInfo
from .option_table import OPTIONS
from .option_table import ref as option_ref
from .profiles import Profile
from .settings import Settings
from .source_state import SourceState, file_sha256

if TYPE_CHECKING:
    from .sources import Source

RECORD_KEY: Final = "resume"

_NOT_SHAPING: Final = frozenset(
    {"jobs", "pool", "cache_dir", "description", "output_cache_bytes", "max_memory", "engine", "fetch"}
)
"""Settings that change how a run works, not what its records say; every other field must match."""


@functools.lru_cache(maxsize=16)
def profile_label(profile: Profile) -> str:
    """``name#digest``: the profile's name and a digest of all its fields (a changed limit is another profile)."""
    fields = json.dumps(dataclasses.asdict(profile), sort_keys=True, default=repr)
    return f"{profile.name}#{hashlib.sha256(fields.encode()).hexdigest()[:12]}"


def _plain(value: object) -> object:
    if isinstance(value, Profile):
        return profile_label(value)
    if isinstance(value, Path):
        return os.path.abspath(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool, list)):
        return value
    return repr(value)


@functools.cache
def _shaping_fields() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(Settings) if f.name not in _NOT_SHAPING)


def record_options(settings: Settings) -> dict[str, Any]:
    """The options that shape a run's records, as the manifest stores them."""
    options: dict[str, Any] = {}
    for name in _shaping_fields():
        if name == "inline_limit":
            options[name] = settings.effective_inline_limit
        elif name == "request_limit":
            options[name] = settings.effective_request_limit
        else:
            options[name] = _plain(getattr(settings, name))
    return options


def resume_record(state: SourceState | None, source_sha256: str | None, settings: Settings) -> dict[str, Any] | None:
    """An item record's ``resume`` object (None for in-memory sources, which cannot be resumed)."""
    if state is None:
        return None
    record = state.to_record()
    if source_sha256 is not None:
        record["sha256"] = source_sha256
    record["options"] = record_options(settings)
    return record


def _show(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _differences(earlier: dict[str, Any], now: dict[str, Any]) -> list[str]:
    named = [o.name for o in OPTIONS if o.name is not None and o.flag is not None]
    in_table = list(dict.fromkeys(n for n in named if n in earlier or n in now))
    names = [*in_table, *sorted((set(earlier) | set(now)) - set(in_table))]
    return [
        f"{option_ref(name) if name in in_table else name} {_show(earlier.get(name))} (now {_show(now.get(name))})"
        for name in names
        if earlier.get(name) != now.get(name)
    ]


@dataclass(frozen=True)
class _Ref:
    """Where one item record is, and what deciding to keep it needs (the record itself stays on disk)."""

    file: int
    offset: int
    length: int
    status: str
    piece: tuple[int, int] | None
    state: SourceState | None
    source_sha256: str | None
    asset_id: str | None
    kept: str | None
    output: tuple[int, str] | None


def _source_name(record: dict[str, Any]) -> str | None:
    encoded = record.get("source_bytes_b64")
    if isinstance(encoded, str):
        try:
            return os.fsdecode(base64.b64decode(encoded, validate=True))
        except ValueError:
            return None
    name = record.get("source")
    return name if isinstance(name, str) else None


def _ref(record: dict[str, Any], file: int, offset: int, length: int) -> _Ref:
    state = sha = None
    resume = record.get(RECORD_KEY)
    if isinstance(resume, dict):
        try:
            state = SourceState.from_record(resume)
        except (KeyError, TypeError, ValueError):
            state = None
        sha = resume.get("sha256") if isinstance(resume.get("sha256"), str) else None
    piece = record.get("piece")
    try:
        where = (int(piece["index"]), int(piece["count"])) if isinstance(piece, dict) else None
    except (KeyError, TypeError, ValueError):
        where = (0, 0)  # a piece that cannot be placed: its source is redone
    out = record.get("output")
    output = None
    if isinstance(out, dict) and isinstance(out.get("bytes"), int) and isinstance(out.get("sha256"), str):
        output = (out["bytes"], out["sha256"])
    asset_id, kept = record.get("asset_id"), record.get("kept")
    return _Ref(
        file=file,
        offset=offset,
        length=length,
        status=str(record.get("status")),
        piece=where,
        state=state,
        source_sha256=sha,
        asset_id=asset_id if isinstance(asset_id, str) else None,
        kept=kept if isinstance(kept, str) else None,
        output=output,
    )


def _info(record: object, kind: Any) -> MediaInfo | None:
    if not isinstance(record, dict):
        return None
    known = {name: record[name] for name in RECORD_FIELDS if name in record and name not in ("mime", "bytes")}
    # The container is not part of the manifest; an item read back from one has none.
    return MediaInfo(kind=kind, container="", mime=record["mime"], bytes=record["bytes"], **known)


def item_from_record(record: dict[str, Any], group: str) -> Item:
    """The ``Item`` whose ``to_record()`` is ``record`` (an ``ok`` or ``skipped`` item record)."""
    kind = record.get("kind")
    item = Item(source=record["source"], status=record["status"], kind=kind, group=group)
    item.resume = record.get(RECORD_KEY)
    item.reused_from = "manifest"
    if item.status == "skipped":
        item.reason = record.get("reason")
        return item
    item.input = _info(record.get("input"), kind)
    item.output = _info(record.get("output"), kind)
    piece = record.get("piece")
    if piece is not None:
        item.piece = (piece["index"], piece["count"], piece["start_s"], piece["end_s"])
    item.actions = list(record.get("actions", []))
    item.kept = record.get("kept")
    item.delivery = record.get("delivery")
    item.asset_id = record.get("asset_id")
    if "part" in record:
        item.part = record["part"]
        item.tag = record.get("tag")
    item.headers = record.get("headers")
    item.warnings = list(record.get("warnings", []))
    return item


class EarlierManifest:
    """The item records of an earlier run's manifest, indexed by source; see the module docstring.

    Use ``load``; close it (or use it as a context manager) once the run that resumes is over.
    """

    def __init__(self, name: str, files: list[IO[bytes]], runs: dict[str, list[list[_Ref]]]) -> None:
        self.name = name
        self._files = files
        self._runs = runs

    @classmethod
    def load(cls, manifest: Path, settings: Settings, *, leftover: Path | None = None) -> EarlierManifest:
        """Index ``manifest`` (and ``leftover``, the partial manifest a killed run left, which wins per source).

        A missing file is an empty manifest. Once the records are known to fit ``settings``, the
        leftover is unlinked, its bytes still readable here: the new run writes its own partial
        manifest in its place, and its records are the leftover's plus what it does.

        Raises:
            ConfigError: a file cannot be read, is not a manifest, or its records were made with
                other record-shaping options than ``settings``.
        """
        files: list[IO[bytes]] = []
        runs: dict[str, list[list[_Ref]]] = {}
        options: dict[str, dict[str, Any]] = {}
        took_leftover = False
        try:
            for path in (manifest, leftover):
                if path is None:
                    continue
                try:
                    fh = path.open("rb")
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise ConfigError(
                        f"{option_ref('resume')}: cannot read {path}: {exc.strerror}",
                        hint="check the file's permissions",
                    ) from None
                files.append(fh)
                runs.update(_index(fh, len(files) - 1, options, path))
                took_leftover = path is leftover
            now = json.loads(json.dumps(record_options(settings)))
            for earlier in options.values():
                if earlier != now:
                    raise ConfigError(
                        f"{option_ref('resume')}: {manifest} was written with other options: "
                        + "; ".join(_differences(earlier, now)),
                        hint=f"repeat the earlier run's options, or drop {option_ref('resume')} to redo every input "
                        "(converted files still come from the output cache)",
                    )
        except BaseException:
            for opened in files:
                opened.close()
            raise
        if took_leftover and leftover is not None:
            leftover.unlink(missing_ok=True)
        return cls(str(manifest), files, runs)

    def close(self) -> None:
        for fh in self._files:
            fh.close()
        self._files = []

    def __enter__(self) -> EarlierManifest:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def keep(self, sources: Sequence[Source], known_ids: Callable[[], set[str]]) -> KeptRequests:
        """Decide which requests of this run keep their earlier records (see the module docstring).

        Args:
            sources: this run's sources, in order, with their groups.
            known_ids: the asset ids the service holds (called once, and only if a kept record names one).
        """
        queues = {name: deque(found) for name, found in self._runs.items()}
        order: list[str] = []
        members: dict[str, list[tuple[Source, list[_Ref] | None]]] = {}
        for source in sources:
            if source.group not in members:
                order.append(source.group)
                members[source.group] = []
            queue = queues.get(source.name)
            members[source.group].append((source, queue.popleft() if queue else None))
        hashes: dict[Path, str | None] = {}
        kept = {
            group: members[group]
            for group in order
            if all(self._holds(source, found, hashes) for source, found in members[group])
        }
        named = {ref.asset_id for found in _runs_of(kept) for ref in found if ref.asset_id is not None}
        if named:
            known = known_ids()
            kept = {
                group: chosen
                for group, chosen in kept.items()
                if all(ref.asset_id in known for found in _runs_of({group: chosen}) for ref in found if ref.asset_id)
            }
        return KeptRequests(self, order, kept)

    def _holds(self, source: Source, found: list[_Ref] | None, hashes: dict[Path, str | None]) -> bool:
        """Whether ``found`` (the records of ``source`` in the earlier manifest) still hold."""
        if source.skip_reason is not None:
            return True  # skipped by name or link: rebuilt without reading anything
        if found is None or source.path is None or source.data is not None:
            return False
        first = found[0]
        if first.status == "skipped":
            if len(found) != 1 or source.explicit:
                return False
        elif first.status != "ok" or any(ref.status != "ok" for ref in found) or not _whole(found):
            return False
        state = first.state
        if state is None:
            return False
        try:
            now = SourceState.of(source.path)
        except OSError:
            return False
        if (now.bytes, now.mtime_ns) != (state.bytes, state.mtime_ns):
            return False
        if state.recent or now.ino != state.ino:
            if first.source_sha256 is None:
                return False
            if source.path not in hashes:
                try:
                    hashes[source.path] = file_sha256(source.path)
                except OSError:
                    hashes[source.path] = None
            if hashes[source.path] != first.source_sha256:
                return False
        return all(ref.kept is None or _kept_intact(ref) for ref in found)

    def read(self, ref: _Ref) -> dict[str, Any]:
        """The record ``ref`` points at, read back from its manifest."""
        fh = self._files[ref.file]
        fh.seek(ref.offset)
        data = fh.read(ref.length)
        try:
            record = json.loads(data)
        except ValueError:
            raise ConfigError(
                f"{option_ref('resume')}: {self.name} changed while this run was reading it", hint="run again"
            ) from None
        if not isinstance(record, dict):
            raise ConfigError(
                f"{option_ref('resume')}: {self.name} changed while this run was reading it", hint="run again"
            )
        return record


def _runs_of(chosen: dict[str, list[tuple[Source, list[_Ref] | None]]]) -> Iterator[list[_Ref]]:
    for members in chosen.values():
        for source, found in members:
            if found is not None and source.skip_reason is None:
                yield found


def _whole(found: list[_Ref]) -> bool:
    """One record, or every piece of a split source, in order."""
    if found[0].piece is None:
        return len(found) == 1
    return [ref.piece for ref in found] == [(n, len(found)) for n in range(1, len(found) + 1)]


def _kept_intact(ref: _Ref) -> bool:
    assert ref.kept is not None
    if ref.output is None:
        return False
    path = Path(ref.kept)
    try:
        return path.stat().st_size == ref.output[0] and file_sha256(path) == ref.output[1]
    except OSError:
        return False


def _index(fh: IO[bytes], file: int, options: dict[str, dict[str, Any]], path: Path) -> dict[str, list[list[_Ref]]]:
    """Each source's records in one manifest: a list of runs (one record, or a split source's pieces)."""
    runs: dict[str, list[list[_Ref]]] = {}
    offset = 0
    records = lines = 0
    ours = False  # a line that starts like a record: a torn one is no proof of a foreign file
    current: tuple[str, list[_Ref]] | None = None  # the split source whose pieces are being read
    for line in fh:
        start, offset = offset, offset + len(line)
        if not line.strip():
            continue
        lines += 1
        ours = ours or line.startswith(b'{"type": "')
        try:
            record = json.loads(line)
        except ValueError:
            current = None  # a torn line: the pieces around it cannot be trusted
            continue
        if not isinstance(record, dict) or record.get("type") not in ("item", "request"):
            continue
        records += 1
        if record["type"] != "item":
            continue
        name = _source_name(record)
        if name is None:
            current = None
            continue
        resume = record.get(RECORD_KEY)
        if isinstance(resume, dict) and isinstance(resume.get("options"), dict):
            options.setdefault(json.dumps(resume["options"], sort_keys=True), resume["options"])
        ref = _ref(record, file, start, len(line))
        if ref.piece is not None and ref.piece[0] > 1 and current is not None and current[0] == name:
            current[1].append(ref)
            continue
        found = [ref]
        runs.setdefault(name, []).append(found)
        current = (name, found) if ref.piece is not None else None
    if lines and not records and not ours:
        raise ConfigError(
            f"{option_ref('resume')}: {path} is not an nvmedia manifest (none of its {lines} lines is a record)",
            hint=f"pass the -o FILE of the earlier run, or drop {option_ref('resume')}",
        )
    return runs


class KeptRequests:
    """The requests a resumed run takes from the earlier manifest, given back in the run's order."""

    def __init__(
        self, earlier: EarlierManifest, order: list[str], kept: dict[str, list[tuple[Source, list[_Ref] | None]]]
    ) -> None:
        self._earlier = earlier
        self._order = order
        self._where = {name: at for at, name in enumerate(order)}
        self._kept = kept
        self._next = 0

    def __contains__(self, group: object) -> bool:
        return group in self._kept

    def __len__(self) -> int:
        return len(self._kept)

    def before(self, group: str | None) -> Iterator[list[Item]]:
        """The items of each kept request that comes before ``group`` (None: all the rest), read back now.

        Call it with the run's groups in order; each kept request is given once, and a group
        already passed gives nothing.
        """
        if group is not None and self._where.get(group, len(self._order)) < self._next:
            return
        while self._next < len(self._order):
            name = self._order[self._next]
            self._next += 1
            if name == group:
                return
            if name in self._kept:
                yield self._items(name)

    def _items(self, group: str) -> list[Item]:
        items = []
        for source, found in self._kept[group]:
            if source.skip_reason is not None:
                skipped = Item(source=source.name, group=group, status="skipped", reason=source.skip_reason)
                skipped.reused_from = "manifest"
                items.append(skipped)
                continue
            assert found is not None
            items.extend(item_from_record(self._earlier.read(ref), group) for ref in found)
        return items
