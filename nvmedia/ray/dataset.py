"""``prepare_dataset``: nvmedia's preparation as a Ray Data pipeline.

The adapter between Ray Data and the per-item functions the local engine uses
(``pipeline.Settings``, ``pipeline.normalize_source``, the plan, the wire format and
the asset client's ``Delivery``): switching it to another front door is a change
to this module and ``stages.py`` only.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any, Final

try:
    import pyarrow.fs as pafs
    import ray
    import ray.data
except ImportError as exc:
    from .session import missing_ray

    raise missing_ray(exc) from None

from ..errors import ConfigError
from ..pipeline import DEFAULT_ASSETS_URL, Settings
from ..plan import MODES, Mode
from ..profiles import Profile, get_profile
from ..wire import AudioPartStyle
from .jobs import check_job_id, job_description, new_job_id
from .records import RECORD_COLUMNS
from .stages import DedupeRegistry, Output, Uploader, normalize_batch

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
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
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
        mode, profile, inline_limit, request_limit, keep, keep_metadata, trim_s, split_long_audio,
            audio_part: as for ``nvmedia.prepare`` and the CLI (``keep`` is a folder on each worker's node).
        assets_url, api_key: the asset API; default ``$NVMEDIA_ASSETS_URL`` / ``$NVIDIA_API_KEY``, read
            here on the driver and handed to the workers.
        dry_run: normalize and plan, upload nothing.
        cache, cache_dir: reuse earlier uploads recorded in the asset-id cache of each node
            (a ``cache_dir`` on a shared filesystem shares it across nodes).
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
        ConfigError: an option is unusable (checked here, before anything runs).

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
    settings = Settings(
        mode=mode,
        profile=get_profile(profile),
        inline_limit=inline_limit,
        request_limit=request_limit,
        assets_url=assets_url or os.environ.get("NVMEDIA_ASSETS_URL") or DEFAULT_ASSETS_URL,
        api_key=api_key or os.environ.get("NVIDIA_API_KEY") or None,
        dry_run=dry_run,
        keep=Path(keep).absolute() if keep is not None else None,  # workers do not share this cwd
        keep_metadata=keep_metadata,
        trim_s=trim_s,
        split_long_audio=split_long_audio,
        audio_part=audio_part,
        use_cache=cache,
        cache_dir=Path(cache_dir).absolute() if cache_dir is not None else None,
        description=job_description(job),
    )
    return build(
        ds,
        column=column,
        settings=settings,
        job=job,
        filesystem=filesystem,
        batch_size=batch_size,
        uploads_per_node=uploads_per_node,
        output="records",
    )


def build(
    ds: ray.data.Dataset,
    *,
    column: str,
    settings: Settings,
    job: str,
    filesystem: Any,
    batch_size: int,
    uploads_per_node: int,
    output: Output,
) -> ray.data.Dataset:
    """The pipeline: normalize in tasks, then (unless nothing is uploaded) upload in an actor pool."""
    check_job_id(job)
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
    normalized = ds.map_batches(
        functools.partial(normalize_batch, column=column, settings=settings, filesystem=fs, final=final, output=output),
        batch_size=batch_size,
        batch_format="pyarrow",
        num_cpus=1,
    )
    if final:
        return normalized
    registry = ray.remote(num_cpus=0)(DedupeRegistry).options(name=registry_name(job), get_if_exists=True)
    _REGISTRIES[job] = registry.remote(TAKEOVER_S)
    alive = [node for node in ray.nodes() if node.get("Alive")]  # type: ignore[no-untyped-call]
    return normalized.map_batches(
        Uploader,
        batch_size=batch_size,
        batch_format="pyarrow",
        fn_constructor_kwargs={
            "settings": settings,
            "registry": _REGISTRIES[job],
            "column": column,
            "output": output,
            "uploads": uploads_per_node,
        },
        concurrency=max(1, len(alive)),  # Ray Data spreads an actor pool over the nodes: one actor per node
        num_cpus=0,  # waits on the network; the CPUs stay with normalization
    )


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
