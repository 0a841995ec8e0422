"""Manifest records as table rows (Arrow, Parquet) and back, losslessly.

A manifest record's fields become columns of one fixed schema, so blocks made on
different workers (an image's record beside a failed file's) always line up:
strings stay strings, ``actions`` and ``warnings`` are lists of strings, and the
nested objects (``input``, ``output``, ``error``, ``piece``, ``part``, ``headers``)
are JSON text. A field a record lacks is null; ``row_to_record`` leaves such
fields out again, giving back exactly the CLI's record.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

try:
    import pyarrow as pa
except ImportError as exc:
    from .session import missing_ray

    raise missing_ray(exc) from None

RECORD_COLUMNS: Final = (
    "type",
    "source",
    "status",
    "kind",
    "reason",
    "input",
    "error",
    "output",
    "piece",
    "actions",
    "kept",
    "delivery",
    "asset_id",
    "part",
    "tag",
    "headers",
    "warnings",
    "extra",
)
"""The columns, in the order the manifest writes its fields; ``extra`` holds fields added later, as JSON."""

JSON_COLUMNS: Final = frozenset({"input", "error", "output", "piece", "part", "headers", "extra"})
LIST_COLUMNS: Final = frozenset({"actions", "warnings"})

_ALWAYS: Final[dict[str, frozenset[str]]] = {
    "ok": frozenset({"type", "source", "status", "kind", "actions", "delivery", "asset_id", "warnings"}),
    "error": frozenset({"type", "source", "status", "kind", "error", "warnings"}),
    "skipped": frozenset({"type", "source", "status", "kind", "reason"}),
}
"""Fields a record of each status carries even when null (``kind`` of an unknown file, ``asset_id`` of inline)."""

RECORD_SCHEMA: Final = pa.schema(
    [pa.field(name, pa.list_(pa.string()) if name in LIST_COLUMNS else pa.string()) for name in RECORD_COLUMNS]
)


def record_to_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """One manifest record as a row of ``RECORD_SCHEMA``."""
    row: dict[str, Any] = dict.fromkeys(RECORD_COLUMNS)
    extra = {k: v for k, v in record.items() if k not in RECORD_COLUMNS}
    for name in RECORD_COLUMNS[:-1]:
        value = record.get(name)
        if value is not None and name in JSON_COLUMNS:
            value = json.dumps(value, ensure_ascii=False)
        row[name] = value
    row["extra"] = json.dumps(extra, ensure_ascii=False) if extra else None
    return row


def row_to_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest record a row of ``RECORD_SCHEMA`` holds (other columns of the row are ignored)."""
    always = _ALWAYS.get(str(row.get("status")), frozenset())
    record: dict[str, Any] = {}
    for name in RECORD_COLUMNS[:-1]:
        value = row.get(name)
        if value is None and name not in always:
            continue
        if value is not None and name in JSON_COLUMNS:
            value = json.loads(value)
        elif value is not None and name in LIST_COLUMNS:
            value = list(value)
        record[name] = value
    extra = row.get("extra")
    if extra is not None:
        record.update(json.loads(extra))
    return record


def records_table(records: list[dict[str, Any]]) -> pa.Table:
    """Records as an Arrow table of ``RECORD_SCHEMA``."""
    return pa.Table.from_pylist([record_to_row(r) for r in records], schema=RECORD_SCHEMA)
