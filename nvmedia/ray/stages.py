"""The work each Ray worker does: normalize a batch of sources (CPU tasks), then upload (an actor pool).

Stage one turns each row's source into its items (one, or one per piece with
``split_long_audio``) with the same per-item functions as the local engine:
``pipeline.normalize_source``, then the plan, then inline delivery. When nothing
is to be uploaded (``dry_run``) it also finishes the items; otherwise it hands each
source on as a pickled ``Pending``, carrying the normalized bytes of its asset
items, because the upload actor may run on another node. Stage two uploads them,
a bounded number at a time per actor, asking the run's ``DedupeRegistry`` first so
that the same bytes are uploaded once per run across all workers.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pickle
import re
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal, cast

try:
    import pyarrow as pa
    import pyarrow.fs as pafs
    import ray
except ImportError as exc:
    from .session import missing_ray

    raise missing_ray(exc) from None

from ..assembly import attach_asset, deliver_inline, inline_share, plan_group
from ..client import Client
from ..errors import InputError, MediaError, NVMediaError
from ..items import Item
from ..keep import KeptName
from ..memory import MemoryBudget
from ..normalize_stage import normalize_source
from ..plan import InlineShare
from ..settings import Settings
from ..sources import Source
from ..wire import asset_headers
from ..workers import read_test_hooks
from .records import RECORD_COLUMNS, RECORD_SCHEMA, record_to_row

Output = Literal["records", "items"]
"""What the last stage gives: manifest records as columns (the library), or pickled ``Item`` lists (the CLI)."""

PENDING_COLUMN: Final = "__nvmedia_pending"
ITEMS_COLUMN: Final = "__nvmedia_items"
SOURCE_COLUMN: Final = "__nvmedia_source"
"""The CLI's source column: each row's ``Source`` as the driver planned it (walked, named for ``--keep``), pickled."""
CWD_COLUMN: Final = "__nvmedia_cwd"
"""The driver's working folder: a worker moves there (when its node has it) so paths and messages match."""
NAME_COLUMN_FOR_BYTES: Final = "path"
"""Beside a bytes column, the column naming each source (``ray.data.read_binary_files(include_paths=True)``)."""

URI_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")


@dataclass
class Pending:
    """One source between the stages: its items, and the normalized bytes of those to upload."""

    items: list[Item]
    payloads: list[bytes | None]


# -- stage one -------------------------------------------------------------------------------------


def normalize_batch(
    batch: pa.Table,
    *,
    column: str,
    settings: Settings,
    filesystem: pafs.FileSystem | None,
    final: bool,
    output: Output,
    kept_names: Any = None,
) -> pa.Table:
    """Normalize, plan and deliver inline every source of ``batch``; upload nothing.

    Args:
        batch: rows with the source in ``column`` (a path, a URI or bytes; the CLI's pickled ``Source``).
        column: the source column.
        settings: the run's settings.
        filesystem: where paths are read from; None for local paths and URIs pyarrow knows.
        final: nothing is to be uploaded (a dry run): finish the items here.
        output: the shape of the rows given back when ``final``.
        kept_names: with ``settings.keep`` in the library, a reference to the ``KeptName`` of each
            source (by its name), planned on the driver (``dataset.plan_kept``).
    """
    _start_worker_process()
    fit_chars = _fit_chars(settings)
    budget = _memory_budget(settings.max_memory)
    names = _kept_names(kept_names)
    done: list[Pending] = []
    for row in _rows(batch, column):
        with tempfile.TemporaryDirectory(prefix="nvmedia-ray-") as tmp:
            item = _prepare_one(row, settings, filesystem, Path(tmp), fit_chars, budget, names)
            items = item.expanded()
            plan_group(items, settings)
            payloads: list[bytes | None] = []
            for it in items:
                payload = None
                if it.ok and it.delivery == "inline":
                    deliver_inline(it, settings)
                elif it.ok and it.delivery == "asset" and not settings.dry_run:
                    assert it.output_path is not None
                    payload = it.output_path.read_bytes()
                it.output_path, it.b64 = None, None  # the workdir goes away with this block
                payloads.append(payload)
            done.append(Pending(items, payloads))
    carried = _carried(batch, column)
    if final:
        for pending in done:
            finish(pending.items, settings)
        return output_table(batch, carried, [p.items for p in done], output)
    return pa.table(
        {
            **{name: batch.column(name) for name in carried},
            # large_binary: a batch of videos can pass the 2 GiB that one binary array holds
            PENDING_COLUMN: pa.array([pickle.dumps(p, protocol=5) for p in done], type=pa.large_binary()),
        }
    )


_worker_started = False
_budgets: dict[int | None, MemoryBudget] = {}
_plans: dict[str, dict[str, KeptName]] = {}


def _start_worker_process() -> None:
    """Once per Ray worker process: read the test hooks every worker process reads (``workers.py``)."""
    global _worker_started
    if not _worker_started:
        read_test_hooks()
        _worker_started = True


def _memory_budget(limit: int | None) -> MemoryBudget:
    """This worker process's memory budget for image decodes (one per process: its tasks run one at a time).

    Ray's workers share no memory, so the budget applies per worker; ``build`` asks Ray to schedule
    normalize tasks so that the budgets of one node fit its memory when ``max_memory`` is given.
    """
    budget = _budgets.get(limit)
    if budget is None:
        budget = _budgets[limit] = MemoryBudget(limit)
    return budget


def _kept_names(reference: Any) -> dict[str, KeptName] | None:
    """The library's planned kept names, fetched once per worker process."""
    if reference is None:
        return None
    key = reference.hex()
    plan = _plans.get(key)
    if plan is None:
        plan = _plans[key] = ray.get(reference)
    return plan


@dataclass
class _Row:
    """One row's source: what the column holds, its name, and (from the CLI) the ``Source`` planned on the driver."""

    value: object
    name: str
    source: Source | None = None
    cwd: str | None = None


def _rows(batch: pa.Table, column: str) -> list[_Row]:
    values = batch.column(column).to_pylist()
    cwd = _optional(batch, CWD_COLUMN)
    if column == SOURCE_COLUMN:
        sources: list[Source] = [pickle.loads(blob) for blob in values]
        return [_Row(s, s.name, s, cwd[i] if cwd is not None else None) for i, s in enumerate(sources)]
    names = _names(batch, column, values)
    return [_Row(value, names[i]) for i, value in enumerate(values)]


def _prepare_one(
    row: _Row,
    settings: Settings,
    filesystem: pafs.FileSystem | None,
    workdir: Path,
    fit_chars: InlineShare | None,
    budget: MemoryBudget,
    kept_names: dict[str, KeptName] | None,
) -> Item:
    """One source through ``normalize_source`` (after fetching it when it lives on another filesystem)."""
    if row.source is not None:
        return normalize_source(_readable(row.source, row.cwd), settings, workdir, fit_chars, budget)
    name, value = row.name, row.value
    kept = kept_names.get(name) if kept_names is not None else None
    base = PurePosixPath(PurePosixPath(name).name or "source")
    if isinstance(value, (bytes, bytearray)):
        source = Source(name, data=bytes(value), rel=base, kept=kept)
        return normalize_source(source, settings, workdir, fit_chars, budget)
    if not isinstance(value, str) or not value:
        item = Item(source=name)
        item.fail(
            InputError(
                f"{name}: the source column holds {type(value).__name__}, not a path or bytes",
                code="not_found" if value is None or value == "" else "unreadable",
                hint="give each row a path (str) or the file's bytes",
            )
        )
        return item
    if filesystem is not None or URI_RE.match(value):
        try:
            local = _fetch(value, filesystem, workdir)
        except NVMediaError as exc:
            item = Item(source=name)
            item.fail(exc)
            return item
        return normalize_source(Source(name, local, rel=base, kept=kept), settings, workdir, fit_chars, budget)
    return normalize_source(Source(name, Path(value), rel=base, kept=kept), settings, workdir, fit_chars, budget)


def _readable(source: Source, cwd: str | None) -> Source:
    """``source`` read as the driver reads it: from its working folder when this node has it, else made absolute."""
    if source.path is None or cwd is None or source.path.is_absolute():
        return source
    if os.getcwd() != cwd:
        try:
            os.chdir(cwd)  # a worker process serves one job: nvmedia's
        except OSError:
            source.path = Path(cwd) / source.path
    return source


def _fetch(path: str, filesystem: pafs.FileSystem | None, workdir: Path) -> Path:
    """Copy a file from another filesystem into ``workdir`` (streamed: memory stays flat)."""
    try:
        if filesystem is None:
            filesystem, path = pafs.FileSystem.from_uri(path)
        target = workdir / "fetched"
        with filesystem.open_input_stream(path) as src, target.open("wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        return target
    except FileNotFoundError:
        raise InputError(f"{path} does not exist", code="not_found", hint="check the path") from None
    except (OSError, pa.ArrowException) as exc:
        raise InputError(
            f"cannot read {path}: {exc}",
            code="unreadable",
            hint="check the path and the credentials of its filesystem (pass filesystem= for one pyarrow cannot infer)",
        ) from None


def _names(batch: pa.Table, column: str, values: Sequence[object]) -> list[str]:
    """How each source is named in its records: the path, or for bytes the ``path`` column beside them."""
    beside = _optional(batch, NAME_COLUMN_FOR_BYTES) if column != NAME_COLUMN_FOR_BYTES else None
    names = []
    for index, value in enumerate(values):
        if isinstance(value, (bytes, bytearray)):
            given = beside[index] if beside is not None else None
            names.append(str(given) if given else f"<bytes sha256:{hashlib.sha256(value).hexdigest()[:12]}>")
        else:
            names.append(str(value) if value is not None else "<none>")
    return names


def _optional(batch: pa.Table, name: str) -> list[Any] | None:
    return batch.column(name).to_pylist() if name in batch.column_names else None


def _fit_chars(settings: Settings) -> InlineShare | None:
    """Each source is its own request on Ray (``--group file``): the whole request budget is its own."""
    return inline_share(settings, 1)


# -- both stages ------------------------------------------------------------------------------------


def finish(items: list[Item], settings: Settings) -> None:
    """Give one source's items their header (the ids of its request's assets)."""
    headers = asset_headers([it.asset_id for it in items if it.ok and it.asset_id])
    for it in items:
        if it.ok and not (settings.dry_run and it.delivery == "asset"):
            it.headers = headers


def _carried(batch: pa.Table, column: str) -> list[str]:
    """The input columns the records keep: the source column, or for bytes the ``path`` beside them."""
    if pa.types.is_binary(batch.schema.field(column).type) or pa.types.is_large_binary(batch.schema.field(column).type):
        return [NAME_COLUMN_FOR_BYTES] if NAME_COLUMN_FOR_BYTES in batch.column_names else []
    return [column] if column not in RECORD_COLUMNS else []


def output_table(batch: pa.Table, carried: list[str], per_source: list[list[Item]], output: Output) -> pa.Table:
    """The stage's rows: one per item sent (records, with the ``carried`` input columns), or one per source."""
    if output == "items":
        blobs = [pickle.dumps(items, protocol=5) for items in per_source]
        return pa.table({ITEMS_COLUMN: pa.array(blobs, type=pa.large_binary())})
    origin = [index for index, items in enumerate(per_source) for _ in items]
    rows = [record_to_row(it.to_record()) for items in per_source for it in items]
    table = pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)
    for name in reversed(carried):
        table = table.add_column(0, name, batch.column(name).take(pa.array(origin, type=pa.int64())))
    return table


# -- stage two ----------------------------------------------------------------------------------------


class Uploader:
    """Ray Data's upload actor: delivers the asset items of each batch, at most ``uploads`` at once.

    Uploads through ``Client.deliver`` (the run's client, remade in this actor from its
    configuration: key, asset API, cache) and asks the run's ``DedupeRegistry`` before each upload.
    """

    def __init__(
        self, *, settings: Settings, client: Client, registry: Any, generation: int, output: Output, uploads: int
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._generation = generation
        self._output: Output = output
        self._client = client
        self._pool = ThreadPoolExecutor(max_workers=max(1, uploads), thread_name_prefix="nvmedia-ray-upload")

    def __call__(self, batch: pa.Table) -> pa.Table:
        pending: list[Pending] = [pickle.loads(blob) for blob in batch.column(PENDING_COLUMN).to_pylist()]
        work = [
            (item, payload)
            for p in pending
            for item, payload in zip(p.items, p.payloads, strict=True)
            if payload is not None and item.ok and item.delivery == "asset"
        ]
        for _ in self._pool.map(self._deliver, work):
            pass
        for p in pending:
            finish(p.items, self._settings)
        # Stage one carried the columns the records keep (never the bytes themselves) beside the pending items.
        carried = [name for name in batch.column_names if name != PENDING_COLUMN]
        return output_table(batch, carried, [p.items for p in pending], self._output)

    def _deliver(self, job: tuple[Item, bytes]) -> None:
        item, payload = job
        assert item.output is not None and item.kind is not None
        mime = item.output.mime
        if item.output.sha256 is None:
            item.output.sha256 = hashlib.sha256(payload).hexdigest()
        digest = item.output.sha256
        try:
            asset_id = self._claimed(digest, mime)
            if asset_id is None:
                try:
                    asset_id = self._upload(item, payload)
                finally:
                    ray.get(self._registry.release.remote(digest, mime, asset_id, self._generation))
                if asset_id is None:
                    return  # the upload failed the item
        except NVMediaError as exc:  # a ConfigError too: the CLI turns it into exit status 2
            item.fail(exc)
            return
        except Exception as exc:  # noqa: BLE001 - one bad upload must never stop the run
            item.fail(
                MediaError(
                    f"{item.source}: unexpected {type(exc).__name__} while uploading: {exc}",
                    code="upload_failed",
                    hint="run again; if it keeps failing, please report it",
                )
            )
            return
        attach_asset(item, asset_id)

    def _claimed(self, digest: str, mime: str) -> str | None:
        """The job's asset for these bytes, or None when this actor is to upload them (then ``release``).

        An id recorded for an earlier Dataset of the job is looked up first: one deleted or expired
        since is forgotten, and the bytes are uploaded again.
        """
        while True:
            asset_id, recorded_in = ray.get(self._registry.claim.remote(digest, mime))
            if asset_id is None or recorded_in == self._generation:
                return cast("str | None", asset_id)
            if self._client.get_asset(asset_id) is not None:
                ray.get(self._registry.confirm.remote(digest, mime, asset_id, self._generation))
                return cast(str, asset_id)
            ray.get(self._registry.forget.remote(digest, mime, asset_id))

    def _upload(self, item: Item, payload: bytes) -> str | None:
        """Upload ``payload`` as the item's output; its asset id, or None when the item failed."""
        fd, name = tempfile.mkstemp(prefix="nvmedia-ray-upload-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
            item.output_path = Path(name)
            self._client.deliver([item])
            return item.asset_id if item.ok else None
        finally:
            item.output_path = None
            os.unlink(name)


class DedupeRegistry:
    """The run's content-hash -> asset id map, one named actor shared by every upload actor.

    ``claim`` gives the asset id when the same bytes were uploaded already in this run, or
    None: the caller then uploads and must ``release`` with the id (or None when it failed).
    Meanwhile other claimants of the same bytes wait. A claimant that never releases (its
    worker died) is taken over after ``takeover_s``; at worst that uploads the bytes twice.
    """

    def __init__(self, takeover_s: float) -> None:
        self._takeover_s = takeover_s
        self._ids: dict[tuple[str, str], tuple[str, int]] = {}
        self._busy: dict[tuple[str, str], asyncio.Event] = {}
        self._generation = 0

    async def new_generation(self) -> int:
        """A number for a new Dataset of the job: ids recorded under an older one are checked before reuse."""
        self._generation += 1
        return self._generation

    async def claim(self, digest: str, mime: str) -> tuple[str | None, int]:
        """The asset id for these bytes and the generation it was recorded (or last checked) in; or
        ``(None, 0)``, and the caller uploads."""
        key = (digest, mime)
        while True:
            known = self._ids.get(key)
            if known is not None:
                return known
            busy = self._busy.get(key)
            if busy is None:
                self._busy[key] = asyncio.Event()
                return None, 0
            try:
                await asyncio.wait_for(busy.wait(), self._takeover_s)
            except asyncio.TimeoutError:
                if self._busy.get(key) is busy:
                    busy.set()
                    self._busy[key] = asyncio.Event()
                    return None, 0

    async def release(self, digest: str, mime: str, asset_id: str | None, generation: int) -> None:
        key = (digest, mime)
        if asset_id is not None:
            self._ids[key] = (asset_id, generation)
        busy = self._busy.pop(key, None)
        if busy is not None:
            busy.set()

    async def confirm(self, digest: str, mime: str, asset_id: str, generation: int) -> None:
        """``asset_id`` was found on the service during ``generation``: no need to look again in it."""
        if self._ids.get((digest, mime), (None, 0))[0] == asset_id:
            self._ids[(digest, mime)] = (asset_id, generation)

    async def forget(self, digest: str, mime: str, asset_id: str) -> None:
        """``asset_id`` is gone from the service: the next claimant of these bytes uploads them."""
        if self._ids.get((digest, mime), (None, 0))[0] == asset_id:
            del self._ids[(digest, mime)]

    async def count(self) -> int:
        """How many distinct contents have an asset in this run."""
        return len(self._ids)
