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
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .jobs import job_description, new_job_id

__all__ = ["job_description", "new_job_id", "prepare_dataset"]

if TYPE_CHECKING:
    from .dataset import prepare_dataset


def __getattr__(name: str) -> Any:
    if name != "prepare_dataset":
        raise AttributeError(f"module 'nvmedia.ray' has no attribute {name!r}")
    from .dataset import prepare_dataset

    globals()[name] = prepare_dataset
    return prepare_dataset
