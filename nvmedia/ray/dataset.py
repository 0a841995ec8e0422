"""``prepare_dataset``: nvmedia's preparation as a Ray Data pipeline.

The adapter between Ray Data and the per-item functions the local engine uses
(``Settings``, ``normalize_stage.normalize_source``, the plan, the wire format and
``Client.deliver``): switching it to another front door is a change
to this module and ``stages.py`` only.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path, PurePosixPath
from typing import Any, Final

try:
    import pyarrow.fs as pafs
    import ray
    import ray.data
except ImportError as exc:
    from .session import missing_ray

    raise missing_ray(exc) from None

from ..client import Client
from ..config import parse_size
from ..errors import ConfigError
from ..keep import KeptName, plan_kept_names
from ..plan import MODES, Mode
from ..profiles import Profile, get_profile
from ..settings import Settings
from ..wire import AudioPartStyle
from .jobs import check_job_id, job_description, new_job_id
from .records import RECORD_COLUMNS
from .stages import NAME_COLUMN_FOR_BYTES, URI_RE, DedupeRegistry, Output, Uploader, normalize_batch

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE: Final = 8
"""Sources per ``map_batches`` call: a task's start-up costs milliseconds, a photo tens of them."""
DEFAULT_UPLOADS_PER_NODE: Final = 8
TAKEOVER_S: Final = 30 * 60
"""How long uploads of the same bytes wait on one that never reports back (its worker died)."""


def prepare_dataset(
    ds: ray.data.Dataset,
    *,
    column: str = "path",
    mode: Mode = "auto",
    profile: str | Path | Profile | None = None,
    inline_limit: int | None = None,
    request_limit: int | None = None,
    assets_url: str | None = None,
    api_key: str | None = None,
    dry_run: bool = False,
    keep: str | os.PathLike[str] | None = None,
    keep_metadata: bool = False,
    trim_s: float | None = None,
    split_long_audio: bool = False,
    audio_part: AudioPartStyle = "audio_url",
    max_memory: int | str | None = None,
    cache: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    allow_insecure_http: bool = False,
    job: str | None = None,
    filesystem: Any = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    uploads_per_node: int = DEFAULT_UPLOADS_PER_NODE,
) -> ray.data.Dataset:
    """Prepare every source of a Ray Dataset: sniff, probe, normalize, plan and deliver, on the cluster.

    Each row's ``column`` holds a path (local to the workers, or a URI such as
    ``s3://bucket/cat.heic`` that pyarrow can open, or a path on ``filesystem``) or the
    file's bytes. Normalization runs in CPU tasks (``map_batches``, ``batch_size`` sources
    each); uploads run in an actor pool, one actor per node with at most
    ``uploads_per_node`` uploads at a time, and the same bytes are uploaded once per job
    across all workers. Each source is its own request (the CLI's ``--group file``).

    Args:
        ds: the sources, one per row.
        column: the column holding each source's path or bytes. Beside a bytes column, a
            ``path`` column (``ray.data.read_binary_files(..., include_paths=True)``) names the source.
        mode, profile, inline_limit, request_limit, keep_metadata, trim_s, split_long_audio,
            audio_part: as for ``nvmedia.prepare`` and the CLI.
        keep: a folder (on each worker's node) for a copy of each output, named as the CLI names
            sources given as files (``cat.heic`` -> ``cat.jpg``; ``~2``... when two share a file name).
            The names are planned on the driver first, which reads the source column once (for
            bytes: the ``path`` column beside it); each source must appear once.
        max_memory: bytes (or ``"1G"``) that image decodes may hold at once in each worker
            process (default: a quarter of the node's RAM); given, each normalize task also asks
            Ray for that much of its node's memory, so a node runs only as many as fit.
        assets_url, api_key: the asset API; default ``$NVMEDIA_ASSETS_URL`` / ``$NVIDIA_API_KEY``, read
            here on the driver and handed to the workers.
        dry_run: normalize and plan, upload nothing.
        allow_insecure_http: allow the key over plain http to a host that is not loopback.
        cache: also reuse (and record) uploads in the asset-id cache of each node. Off by default:
            a job then references only assets it uploaded itself (deduplicated across its workers), so
            ``assets delete --job`` of any other job never breaks its records. With ``cache=True`` a
            reused asset belongs to the run that uploaded it, not to this job.
        cache_dir: the caches' folder (asset ids and normalized outputs); one on a shared filesystem
            shares it across nodes.
        job: names this run's assets: each is described ``nvmedia job <job>``, so
            ``nvmedia assets delete --job <job>`` removes them. Default: a new id (``new_job_id()``), logged.
            The job's dedupe actor, ``nvmedia-dedupe-<job>``, lives as long as this driver.
        filesystem: a ``pyarrow.fs.FileSystem`` (or an fsspec one) to read the paths from.
        batch_size: sources per task.
        uploads_per_node: concurrent uploads of each node's upload actor.

    Returns:
        A lazy Dataset with one row per item sent (one per source, or one per piece), holding the
        fields of the CLI manifest's item records (``type``, ``source``, ``status``, ``kind``,
        ``input``, ``output``, ``actions``, ``delivery``, ``asset_id``, ``part``, ``tag``,
        ``headers``, ``warnings``, ``error``, …; nested objects as JSON text, see
        ``nvmedia.ray.records.row_to_record``), plus the source column (for bytes: the ``path``
        column). Rows come in input order when the Dataset's ``preserve_order`` is set.

    Raises:
        ConfigError: an option is unusable (checked here, before anything runs), or ``keep`` is given
            and a source appears twice.

    Example:
        >>> ds = ray.data.from_items([{"path": "/data/cat.heic"}])  # doctest: +SKIP
        >>> nvmedia.ray.prepare_dataset(ds, job="run-42").write_parquet("/data/prepared")
    """
    if mode not in MODES:
        raise ConfigError(
            f"mode {mode!r} is not one of {', '.join(MODES)}", hint="pass mode='auto', 'inline' or 'asset'"
        )
    if job is None:
        job = new_job_id()
        logger.info("nvmedia Ray job %s: its assets are described %r", job, job_description(job))
    cache_folder = workers_cache_dir(cache_dir)
    client = Client(
        api_key=api_key,
        assets_url=assets_url,
        cache=cache,
        cache_dir=cache_folder,
        allow_insecure_http=allow_insecure_http,
        description=job_description(job),
    )
    settings = Settings(
        mode=mode,
        profile=get_profile(profile),
        inline_limit=inline_limit,
        request_limit=request_limit,
        dry_run=dry_run,
        keep=Path(keep).absolute() if keep is not None else None,  # workers do not share this cwd
        keep_metadata=keep_metadata,
        trim_s=trim_s,
        split_long_audio=split_long_audio,
        audio_part=audio_part,
        max_memory=parse_size(max_memory, what="max_memory") if max_memory is not None else None,
        cache_dir=cache_folder,
        description=job_description(job),
    )
    return build(
        ds,
        column=column,
        settings=settings,
        client=client,
        job=job,
        filesystem=filesystem,
        batch_size=batch_size,
        uploads_per_node=uploads_per_node,
        output="records",
        kept_names=plan_kept(ds, column, settings.keep, filesystem, pieces=split_long_audio)
        if settings.keep is not None
        else None,
    )


def plan_kept(
    ds: ray.data.Dataset, column: str, keep: Path, filesystem: Any, *, pieces: bool
) -> ray.ObjectRef[dict[str, KeptName]]:
    """Name every source's kept copy on the driver, before any work, as the local engine does (``keep.py``).

    Reads the column naming the sources once (the paths, or for bytes the ``path`` column beside
    them): each source keeps its file name, with ``~2``, ``~3``... when another source's name
    is the same (in the Dataset's order). The names go to the object store; workers fetch them once.

    Raises:
        ConfigError: the names are not unique in the Dataset (a source listed twice would have two
            kept copies and nothing to tell its rows apart), or a bytes column has no names beside it.
    """
    names_column = column
    if column not in ds.columns():
        raise ConfigError(f"the Dataset has no column {column!r}", hint="pass column= naming the sources")
    if _is_bytes(ds, column):
        if NAME_COLUMN_FOR_BYTES not in ds.columns():
            raise ConfigError(
                "keep= with a column of bytes needs a 'path' column beside it naming each source",
                hint="read the files with ray.data.read_binary_files(..., include_paths=True)",
            )
        names_column = NAME_COLUMN_FOR_BYTES
    names = [str(row[names_column]) for row in ds.select_columns([names_column]).iter_rows()]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigError(
                f"keep=: {name} appears more than once in the Dataset, and each row needs its own kept copy",
                hint="drop the duplicate rows (or pass keep=None)",
            )
        seen.add(name)
    keep.mkdir(parents=True, exist_ok=True)
    local = [Path(n) for n in names if filesystem is None and not URI_RE.match(n)]
    relative = [PurePosixPath(n).name or "source" for n in names]
    planned = plan_kept_names(relative, keep, local, pieces=pieces)
    return ray.put({name: kept for name, kept in zip(names, planned, strict=True) if kept is not None})


def _is_bytes(ds: ray.data.Dataset, column: str) -> bool:
    schema = ds.schema()
    if schema is None:
        return False
    types = dict(zip(schema.names, schema.types, strict=True))
    return str(types.get(column)) in ("binary", "large_binary")


def build(
    ds: ray.data.Dataset,
    *,
    column: str,
    settings: Settings,
    client: Client,
    job: str,
    filesystem: Any,
    batch_size: int,
    uploads_per_node: int,
    output: Output,
    kept_names: Any = None,
) -> ray.data.Dataset:
    """The pipeline: normalize in tasks, then (unless nothing is uploaded) upload in an actor pool.

    With ``settings.max_memory`` each normalize task asks Ray for that much of its node's memory
    (at most the largest node's), so that the per-worker memory budgets of one node fit in it.
    """
    check_job_id(job)
    if column not in ds.columns():
        found = ", ".join(ds.columns()) or "none"
        raise ConfigError(
            f"the Dataset has no column {column!r} (its columns: {found})", hint="pass column= naming the sources"
        )
    if column in RECORD_COLUMNS and column != "source":
        raise ConfigError(
            f"column {column!r} has the name of a record field",
            hint="rename it (ds.rename_columns) and pass the new name as column=",
        )
    for name, value in (("batch_size", batch_size), ("uploads_per_node", uploads_per_node)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}", hint=f"pass {name}=8")
    fs = _filesystem(filesystem)
    final = settings.dry_run
    alive = [node for node in ray.nodes() if node.get("Alive")]  # type: ignore[no-untyped-call]
    hints: dict[str, Any] = {}
    if settings.max_memory is not None:
        largest = max((int(node.get("Resources", {}).get("memory", 0)) for node in alive), default=0)
        if largest > 0:
            hints["memory"] = min(settings.max_memory, largest)  # a larger hint could never be scheduled
    normalized = ds.map_batches(
        functools.partial(
            normalize_batch,
            column=column,
            settings=settings,
            filesystem=fs,
            final=final,
            output=output,
            kept_names=kept_names,
        ),
        batch_size=batch_size,
        batch_format="pyarrow",
        num_cpus=1,
        **hints,
    )
    if final:
        return normalized
    if job not in _REGISTRIES:
        # The first handle owns the actor: replacing it by the one get_if_exists gives for a later
        # Dataset of the job dropped the owner's last reference, and Ray killed the registry mid-run.
        registry = ray.remote(num_cpus=0)(DedupeRegistry).options(name=registry_name(job), get_if_exists=True)
        _REGISTRIES[job] = registry.remote(TAKEOVER_S)
    # Ids the job recorded for an earlier Dataset are checked before they are handed out again:
    # they may have been deleted (assets delete --job) or have expired since.
    generation = ray.get(_REGISTRIES[job].new_generation.remote())
    return normalized.map_batches(
        Uploader,
        batch_size=batch_size,
        batch_format="pyarrow",
        fn_constructor_kwargs={
            "settings": settings,
            "client": client,
            "registry": _REGISTRIES[job],
            "generation": generation,
            "output": output,
            "uploads": uploads_per_node,
        },
        concurrency=max(1, len(alive)),  # Ray Data spreads an actor pool over the nodes: one actor per node
        num_cpus=0,  # waits on the network; the CPUs stay with normalization
    )


def workers_cache_dir(given: str | os.PathLike[str] | None) -> Path | None:
    """The caches' folder as the driver sees it (``$NVMEDIA_CACHE_DIR`` read here), made absolute for the workers."""
    folder = given if given is not None else os.environ.get("NVMEDIA_CACHE_DIR")
    return Path(folder).absolute() if folder else None


def registry_name(job: str) -> str:
    """The name of a job's ``DedupeRegistry`` actor."""
    return f"nvmedia-dedupe-{job}"


_REGISTRIES: dict[str, Any] = {}
"""This driver's dedupe actors, by job. Ray stops an actor once no handle to it is left, and the
Dataset holding one may be gone while the job goes on (a second ``prepare_dataset`` of the same
job): held here, each lives as long as the driver, or until ``release_registry``."""


def release_registry(job: str) -> None:
    """Stop a job's dedupe actor (the CLI does when its run ends)."""
    registry = _REGISTRIES.pop(job, None)
    if registry is not None:
        ray.kill(registry)


def _filesystem(filesystem: Any) -> pafs.FileSystem | None:
    if filesystem is None or isinstance(filesystem, pafs.FileSystem):
        return filesystem
    try:
        from fsspec import AbstractFileSystem
    except ImportError:
        AbstractFileSystem = None  # noqa: N806
    if AbstractFileSystem is not None and isinstance(filesystem, AbstractFileSystem):
        return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem))
    raise ConfigError(
        f"filesystem must be a pyarrow.fs.FileSystem or an fsspec filesystem, got {type(filesystem).__name__}",
        hint="pass pyarrow.fs.S3FileSystem(...) or fsspec.filesystem('s3'), or None for local paths and URIs",
    )
