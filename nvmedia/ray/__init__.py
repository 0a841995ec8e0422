"""nvmedia on Ray Data: the same per-item preparation over millions of files, on a cluster.

``prepare_dataset`` maps sniff, probe, normalize, plan and deliver over a Ray Dataset
of paths (or of bytes) and gives back a Dataset of item records with the fields of the
CLI manifest; ``nvmedia prepare --engine ray`` runs the CLI on it. Ray is an optional
dependency (``pip install "nvmedia[ray]"``): this package imports it only when a
function needs it, so ``nvmedia.ray.jobs`` (job ids, finding and deleting a job's
assets) works without Ray.

Example:
    >>> import ray, nvmedia.ray  # doctest: +SKIP
    >>> ds = ray.data.from_items([{"path": "/data/cat.heic"}, {"path": "/data/talk.flac"}])
    >>> records = nvmedia.ray.prepare_dataset(ds, mode="auto", job="run-42")
    >>> records.write_parquet("/data/prepared")
    >>> nvmedia.ray.row_to_record(records.take(1)[0])  # the CLI manifest's record
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .jobs import job_description, new_job_id

__all__ = ["job_description", "new_job_id", "prepare_dataset", "row_to_record"]

_LAZY = {"prepare_dataset": "dataset", "row_to_record": "records"}
"""Names whose modules import Ray or pyarrow: loaded on first use (a ``ConfigError`` naming the extra without them)."""

if TYPE_CHECKING:
    from .dataset import prepare_dataset
    from .records import row_to_record


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nvmedia.ray' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
