"""The CLI on Ray: ``nvmedia prepare --engine ray [--address …]`` and ``--output-format parquet``.

``run_on_ray`` yields what ``pipeline.run`` yields (each source's items, in input
order), so the command writes the same manifest whichever engine ran;
``write_parquet`` writes those items as a folder of Parquet files instead of JSON
Lines, with either engine.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from ..errors import ConfigError
from ..items import Item, Request
from ..pipeline import DEFAULT_ASSETS_URL, EMULATOR_KEY, ProgressFn, Settings
from ..sources import SourceLike, expand
from .jobs import job_description, new_job_id
from .session import check_address, import_ray, missing_ray, quiet_ray_data, ray_session

if TYPE_CHECKING:
    from ..testing import NVCFEmulator

ROWS_PER_PARQUET_FILE: Final = 10_000
MAX_BLOCKS: Final = 4096
"""At most this many blocks of sources: a million files make blocks of 245, each a task's work."""


def run_on_ray(
    paths: Sequence[SourceLike],
    settings: Settings,
    *,
    address: str | None = None,
    progress: ProgressFn | None = None,
    log: IO[str] | None = None,
) -> Iterator[tuple[list[Item], Request | None]]:
    """``pipeline.run`` on Ray: each source's items, in input order (never a request record).

    Folders are walked here, on the driver; each file is one row of the Dataset. Without
    ``address`` a one-node cluster on loopback is started with ``settings.jobs`` CPUs.

    Raises:
        ConfigError: Ray is missing or unreachable, ``--group`` is not ``file``, or an upload
            needs a key that is missing or an asset API that cannot be reached.
    """
    if settings.group != "file":
        raise ConfigError(
            f"--group {settings.group} is not available with --engine ray: each file is its own request there",
            hint="drop --group, or use --engine local",
        )
    if address is not None:
        address = check_address(address)
    ray = import_ray(local=address is None)
    from .dataset import DEFAULT_BATCH_SIZE, DEFAULT_UPLOADS_PER_NODE, build, release_registry
    from .stages import CWD_COLUMN, ITEMS_COLUMN, REAL_PATH_COLUMN, REL_COLUMN, SKIP_COLUMN, WALKED_COLUMN

    sources = expand(paths, "file")
    job = new_job_id()
    emulator: NVCFEmulator | None = None
    if settings.emulate:
        from ..testing import NVCFEmulator

        emulator = NVCFEmulator().start()
        settings = dataclasses.replace(
            settings, emulate=False, assets_url=emulator.assets_url, api_key=EMULATOR_KEY, use_cache=False
        )
    settings = dataclasses.replace(
        settings,
        assets_url=settings.assets_url or os.environ.get("NVMEDIA_ASSETS_URL") or DEFAULT_ASSETS_URL,
        api_key=settings.api_key or os.environ.get("NVIDIA_API_KEY") or None,
        description=job_description(job),
    )
    if not settings.dry_run and emulator is None:  # the emulator's assets go when it stops
        print(
            f"nvmedia: Ray job {job}: its uploads are described '{job_description(job)}' "
            f"(nvmedia assets delete --job {job} removes them)",
            file=log if log is not None else sys.stderr,
        )
    cwd = os.getcwd()
    rows = [
        {
            "path": s.name,
            REAL_PATH_COLUMN: str(s.path) if s.path is not None else None,
            CWD_COLUMN: cwd,
            REL_COLUMN: str(s.rel),
            WALKED_COLUMN: not s.explicit,
            SKIP_COLUMN: s.skip_reason,
        }
        for s in sources
    ]
    try:
        if not rows:
            return
        with ray_session(address, num_cpus=settings.jobs), quiet_ray_data():
            context = ray.data.DataContext.get_current()
            saved = (context.execution_options.preserve_order, context.enable_progress_bars)
            saved_print = context.print_on_execution_start
            context.execution_options.preserve_order = True  # the manifest is in input order
            context.enable_progress_bars = False  # nvmedia draws its own, on a terminal only
            context.print_on_execution_start = False
            try:
                blocks = min(MAX_BLOCKS, -(-len(rows) // DEFAULT_BATCH_SIZE))
                prepared = build(
                    ray.data.from_items(rows, override_num_blocks=blocks),
                    column="path",
                    settings=settings,
                    job=job,
                    filesystem=None,
                    batch_size=DEFAULT_BATCH_SIZE,
                    uploads_per_node=DEFAULT_UPLOADS_PER_NODE,
                    output="items",
                )
                done = 0
                for batch in prepared.iter_batches(batch_format="pyarrow", batch_size=None):
                    table: Any = batch
                    for blob in table.column(ITEMS_COLUMN).to_pylist():
                        items: list[Item] = pickle.loads(blob)
                        for item in items:
                            if isinstance(item.error, ConfigError):
                                raise item.error
                        done += 1
                        if progress is not None and items:
                            progress("prepare", done, len(rows), items[0].source)
                        yield items, None
            finally:
                (context.execution_options.preserve_order, context.enable_progress_bars) = saved
                context.print_on_execution_start = saved_print
                release_registry(job)
    finally:
        if emulator is not None:
            emulator.stop()


def write_parquet(
    results: Iterator[tuple[list[Item], Request | None]],
    output: str,
    *,
    group: str,
    finish: Callable[[str | None], None] | None = None,
) -> int:
    """Write the item records of ``results`` as Parquet files ``part-00000.parquet``… in the folder ``output``.

    Rows hold the manifest's fields as ``nvmedia.ray.records.RECORD_SCHEMA`` lays them out, in
    input order. The folder appears only once complete (written beside it, then renamed).

    Returns:
        The exit status: 1 when any input is an error, else 0.

    Raises:
        ConfigError: ``output`` is stdout or a folder that is not empty, or ``group`` is not ``file``.
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise missing_ray(exc) from None
    from .records import RECORD_SCHEMA, record_to_row

    if output == "-":
        raise ConfigError("--output-format parquet writes a folder, not stdout", hint="pass -o FOLDER")
    if group != "file":
        raise ConfigError(
            f"--output-format parquet holds item records only, and --group {group} adds request records",
            hint="use --output-format jsonl with --group dir|all",
        )
    target = Path(output)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{output} exists and is not an empty folder", hint="pass a new folder with -o")
    partial = target.with_name(f".{target.name}.part")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    counts = {"ok": 0, "skipped": 0, "error": 0, "uploaded": 0}
    rows: list[dict[str, object]] = []
    files = 0

    def flush() -> None:
        nonlocal files
        pq.write_table(pa.Table.from_pylist(rows, schema=RECORD_SCHEMA), partial / f"part-{files:05d}.parquet")
        files += 1
        rows.clear()

    summary = None
    try:
        for items, _request in results:
            for item in items:
                counts[item.status] += 1
                counts["uploaded"] += item.uploaded
                rows.append(record_to_row(item.to_record()))
                if len(rows) >= ROWS_PER_PARQUET_FILE:
                    flush()
        if rows or not files:
            flush()
        if target.exists():
            target.rmdir()
        os.replace(partial, target)
        summary = (
            f"{counts['ok'] + counts['skipped'] + counts['error']} inputs: {counts['ok']} ok, "
            f"{counts['skipped']} skipped, {counts['error']} errors; {counts['uploaded']} uploaded -> {output}"
        )
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        if finish is not None:
            finish(summary)
    return 1 if counts["error"] else 0
