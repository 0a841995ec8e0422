"""Per-input results and per-request results: the manifest's records as objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import NVMediaError
from .media_info import MediaInfo
from .names import name_bytes_b64, utf8_text
from .sniff import Kind
from .wire import MediaPart

Status = Literal["ok", "skipped", "error"]


@dataclass
class Item:
    """What happened to one input (one manifest ``item`` record).

    ``output_path`` is the normalized file while the run is in progress; it is not
    part of the record and is gone once ``prepare`` returns (see ``kept``). An input
    cut into pieces (``--split-long-audio``) holds one item per piece in ``pieces``,
    each with ``piece`` = (number, count, start_s, end_s); the pieces are what is sent.
    ``resume`` is the record's ``resume`` object (see ``resume.py``); ``reused_from`` says
    when nothing was converted for it: ``manifest`` (kept by ``--resume``) or ``output_cache``.
    """

    source: str
    status: Status = "ok"
    kind: Kind | None = None
    input: MediaInfo | None = None
    output: MediaInfo | None = None
    actions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    delivery: Literal["inline", "asset"] | None = None
    asset_id: str | None = None
    part: MediaPart | None = None
    tag: str | None = None
    headers: dict[str, str] | None = None
    kept: str | None = None
    reason: str | None = None
    error: NVMediaError | None = None
    group: str = ""
    piece: tuple[int, int, float, float] | None = None
    pieces: list[Item] = field(default_factory=list, repr=False)
    output_path: Path | None = field(default=None, repr=False)
    b64: str | None = field(default=None, repr=False)
    uploaded: bool = field(default=False, repr=False)
    resume: dict[str, Any] | None = field(default=None, repr=False)
    reused_from: Literal["manifest", "output_cache"] | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def expanded(self) -> list[Item]:
        """The items this input sends: its pieces when it was split (``--split-long-audio``), else itself."""
        return self.pieces if self.pieces else [self]

    def fail(self, error: NVMediaError) -> None:
        """Mark the item as failed, dropping any delivery already decided."""
        self.status = "error"
        self.error = error
        self.delivery = None
        self.asset_id = None
        self.part = None
        self.tag = None
        self.headers = None

    def to_record(self) -> dict[str, Any]:
        """The manifest's JSON object for this item."""
        record: dict[str, Any] = {"type": "item", "source": utf8_text(self.source)}
        _add_bytes(record, "source", self.source)
        record.update(status=self.status, kind=self.kind)
        if self.status == "skipped":
            record["reason"] = self.reason
            if self.resume is not None:
                record["resume"] = self.resume
            return record
        if self.input is not None:
            record["input"] = self.input.to_record()
        if self.status == "error":
            assert self.error is not None
            record["error"] = self.error.to_dict()
            record["warnings"] = self.warnings
            return record
        if self.output is not None:
            record["output"] = self.output.to_record()
        if self.piece is not None:
            number, count, start, end = self.piece
            record["piece"] = {"index": number, "count": count, "start_s": round(start, 3), "end_s": round(end, 3)}
        record["actions"] = self.actions
        if self.kept is not None:
            record["kept"] = utf8_text(self.kept)
            _add_bytes(record, "kept", self.kept)
        record["delivery"] = self.delivery
        record["asset_id"] = self.asset_id
        if self.part is not None:
            record["part"] = self.part
            record["tag"] = self.tag
        if self.headers is not None:
            record["headers"] = self.headers
        record["warnings"] = self.warnings
        if self.resume is not None:
            record["resume"] = self.resume
        return record


@dataclass
class Request:
    """The items that share one request, and what to send (one manifest ``request`` record)."""

    sources: list[str]
    content: list[MediaPart]
    tags: str
    headers: dict[str, str]

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"type": "request", "sources": [utf8_text(s) for s in self.sources]}
        raw = [name_bytes_b64(s) for s in self.sources]
        if any(raw):
            record["sources_bytes_b64"] = raw
        record.update(content=self.content, tags=self.tags, headers=self.headers)
        return record


def _add_bytes(record: dict[str, Any], field_name: str, name: str) -> None:
    """Beside a name that is not UTF-8, its exact bytes (``source_bytes_b64``...; see ``names.py``)."""
    raw = name_bytes_b64(name)
    if raw is not None:
        record[f"{field_name}_bytes_b64"] = raw
