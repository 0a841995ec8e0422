"""``Settings``: everything one run needs to know about what to do (where to send is the client's business).

A ``Client`` builds one per call from its own configuration and the call's options
(``options.py``); the stage functions (``normalize_stage``, ``assembly``, ``delivery``)
read it. It is plain data, picklable, so it travels to worker processes and Ray tasks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .config import output_cache_cap
from .plan import Mode
from .profiles import DEFAULT_PROFILE, Profile
from .sources import Group
from .wire import AudioPartStyle
from .workers import PoolKind

if TYPE_CHECKING:
    from .fetch import FetchPolicy

DEFAULT_DESCRIPTION = "nvmedia upload"

ProgressFn = Callable[[str, int, int, str], None]
"""``progress(stage, done, total, name)``: stage is ``normalize`` or ``upload``; ``name`` is the
input in progress (the first one not finished), or the last one when all are done."""


@dataclass
class Settings:
    """What a run does: how to shape outputs, how to group and deliver them, where its files go."""

    mode: Mode = "auto"
    profile: Profile = DEFAULT_PROFILE
    inline_limit: int | None = None
    request_limit: int | None = None
    group: Group = "file"
    dry_run: bool = False
    keep: Path | None = None
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    pool: PoolKind = "thread"
    cache_dir: Path | None = None
    audio_part: AudioPartStyle = "audio_url"
    keep_metadata: bool = False
    background: tuple[int, int, int] = (255, 255, 255)
    trim_s: float | None = None
    split_long_audio: bool = False
    description: str = DEFAULT_DESCRIPTION
    max_memory: int | None = None
    """Bytes that image decodes may hold at once across the run's workers (None: a quarter of RAM)."""
    output_cache_bytes: int = field(default_factory=output_cache_cap)
    """Cap of the normalized-output cache (``outputs_cache.py``) in ``cache_dir``; 0 turns it off."""
    fetch: FetchPolicy | None = None
    """How http(s) sources are fetched; None refuses them (``fetch_urls=False``, no ``--fetch-urls``)."""

    @property
    def effective_inline_limit(self) -> int:
        return self.inline_limit if self.inline_limit is not None else self.profile.inline_limit

    @property
    def effective_request_limit(self) -> int:
        if self.request_limit is not None:
            return self.request_limit
        if self.profile.request_limit is not None:
            return self.profile.request_limit
        return self.effective_inline_limit
