"""Same asset, one upload: a small SQLite cache from content to asset id.

The key is the SHA-256 of the normalized bytes, the content type, the asset API
URL and a fingerprint of the API key (a truncated SHA-256: the key itself is never
stored). Rows expire after ``ttl_s`` (12 hours by default, well under the
service's 24-hour asset lifetime). The database runs in WAL mode with a busy
timeout, so two processes can use it at once. A cache must never break a run: if
the database cannot be used, the cache logs a warning and behaves as empty.

The caller still checks a cached id with the service before sending it and
re-uploads when the service no longer knows it (``forget`` drops the row).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Final

from .config import ASSET_CACHE_FILE, cache_folder

logger = logging.getLogger(__name__)

DEFAULT_TTL_S: Final = 12 * 3600
CACHE_FILE: Final = ASSET_CACHE_FILE
_BUSY_TIMEOUT_MS: Final = 10_000
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS assets (
    sha256       TEXT NOT NULL,
    content_type TEXT NOT NULL,
    assets_url   TEXT NOT NULL,
    key_id       TEXT NOT NULL,
    asset_id     TEXT NOT NULL,
    created_at   REAL NOT NULL,
    PRIMARY KEY (sha256, content_type, assets_url, key_id)
);
CREATE INDEX IF NOT EXISTS assets_by_id ON assets (asset_id);
"""


def default_cache_path() -> Path:
    """``$NVMEDIA_CACHE_DIR/assets.sqlite3``, else the platform's user cache folder for nvmedia."""
    return cache_folder() / CACHE_FILE


def key_fingerprint(api_key: str | None) -> str:
    """A short, one-way identifier of an API key (16 hex digits of its SHA-256); ``-`` for no key.

    Example:
        >>> len(key_fingerprint("nvapi-secret"))
        16
    """
    if not api_key:
        return "-"
    return hashlib.sha256(b"nvmedia-key\x00" + api_key.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _enable_wal(db: sqlite3.Connection) -> None:
    """Switch to WAL, waiting while another process does the same.

    SQLite answers "database is locked" at once, without its busy handler, when two
    connections change the journal mode together; so wait here, within the busy timeout.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _normalize_url(assets_url: str) -> str:
    return assets_url.split("?", 1)[0].split("#", 1)[0].rstrip("/")


class AssetCache:
    """Content hash -> asset id, in SQLite, shared safely between threads and processes.

    Args:
        path: the database file; default ``default_cache_path()``.
        ttl_s: seconds a row stays valid.
        clock: the time source (seconds since the epoch); tests pass their own.

    Example:
        >>> with AssetCache(Path("/tmp/c.sqlite3")) as cache:  # doctest: +SKIP
        ...     cache.put(digest, "image/png", url, key, asset_id)
        ...     cache.get(digest, "image/png", url, key)
    """

    def __init__(
        self, path: Path | None = None, ttl_s: float = DEFAULT_TTL_S, *, clock: Callable[[], float] = time.time
    ) -> None:
        if ttl_s < 0:
            raise ValueError(f"ttl_s must be 0 or more, got {ttl_s}")
        self.path = Path(path) if path is not None else default_cache_path()
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._broken = False

    def __repr__(self) -> str:
        return f"AssetCache(path={str(self.path)!r}, ttl_s={self.ttl_s:g})"

    def __enter__(self) -> AssetCache:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connection (reopened on next use)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _connect(self) -> sqlite3.Connection | None:
        """The connection, opened on first use; None when the cache is unusable."""
        if self._db is not None or self._broken:
            return self._db
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            db = sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            _enable_wal(db)
            db.execute("PRAGMA synchronous = NORMAL")
            db.executescript(_SCHEMA)
            try:
                os.chmod(self.path, 0o600)
            except OSError:
                pass
        except (sqlite3.Error, OSError) as exc:
            self._disable(exc)
            return None
        self._db = db
        return db

    def _disable(self, exc: BaseException) -> None:
        if not self._broken:
            logger.warning("asset cache %s is unusable (%s); uploads will not be reused", self.path, exc)
        self._broken = True
        if self._db is not None:
            self._db.close()
            self._db = None

    def get(self, sha256: str, content_type: str, assets_url: str, api_key: str | None) -> str | None:
        """The cached asset id for this content, service and key, or None (also when the row expired)."""
        with self._lock:
            db = self._connect()
            if db is None:
                return None
            try:
                row = db.execute(
                    "SELECT asset_id FROM assets WHERE sha256 = ? AND content_type = ? AND assets_url = ? "
                    "AND key_id = ? AND created_at > ?",
                    (sha256, content_type, _normalize_url(assets_url), key_fingerprint(api_key), self._cutoff()),
                ).fetchone()
            except sqlite3.Error as exc:
                self._disable(exc)
                return None
        return str(row[0]) if row is not None else None

    def put(self, sha256: str, content_type: str, assets_url: str, api_key: str | None, asset_id: str) -> None:
        """Remember that this content is uploaded as ``asset_id`` (replacing an older row); expired rows go."""
        with self._lock:
            db = self._connect()
            if db is None:
                return
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.execute("DELETE FROM assets WHERE created_at <= ?", (self._cutoff(),))
                    db.execute(
                        "INSERT OR REPLACE INTO assets VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            sha256,
                            content_type,
                            _normalize_url(assets_url),
                            key_fingerprint(api_key),
                            asset_id,
                            self._clock(),
                        ),
                    )
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                self._disable(exc)

    def forget(self, asset_id: str) -> int:
        """Drop every row naming ``asset_id`` (deleted, or unknown to the service); returns how many."""
        return self._write("DELETE FROM assets WHERE asset_id = ?", (asset_id,))

    def clear(self) -> int:
        """Drop every row; returns how many."""
        return self._write("DELETE FROM assets", ())

    def _write(self, sql: str, params: tuple[str, ...]) -> int:
        with self._lock:
            db = self._connect()
            if db is None:
                return 0
            try:
                return db.execute(sql, params).rowcount
            except sqlite3.Error as exc:
                self._disable(exc)
                return 0

    def _cutoff(self) -> float:
        return self._clock() - self.ttl_s
