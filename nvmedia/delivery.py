"""Delivery: uploads, dedupe, the shared asset-id cache, and who owns each asset.

**Who owns an asset decides who deletes it** (DESIGN.md). Every call that uploads
has a ``Delivery`` with an ``Owner``:

* ``block``: the call runs in a ``with``/``async with`` block. What it uploads belongs
  to the block: deleted when the block ends, and never entered in the shared cache,
  so nobody else is ever handed an asset that the block will delete.
* ``long_lived``: the call runs outside a block (``prepare`` without ``with``,
  ``await aclient.prepare``, ``keep_assets=True``). Its uploads enter the shared cache
  once the call has finished, and nobody's exit deletes them.
* ``stream``: a run whose records are written as it goes (the command line). Its
  uploads enter the cache as they finish; they are in the manifest, nobody deletes them.
* ``pending``: a sync ``prepare`` has returned, and it is not known yet whether its
  result will be used in a block (``with client.prepare(x) as prep`` uploads before
  ``__enter__``). Its uploads stay out of the cache until the result is first used
  outside a block, or closed, or collected (long-lived), or entered (block).

A call reuses an asset from the cache only when the service still holds it
(``LiveAssets``: listed once per client, listed again on a miss), and never deletes
what it reused. A call that fails or is cancelled deletes every asset it created.

``upload_flow`` is one item's delivery as a sans-I/O flow (``_flow.FlowRunner``): the
sync pipeline performs its steps on threads, the async client on the event loop (its
blocking steps, SQLite and hashing, on worker threads).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from ._asset_results import DeleteReport
from .assembly import attach_asset
from .cache import AssetCache
from .errors import CleanupError, ConfigError, NVMediaError
from .items import Item

Owner = Literal["pending", "block", "long_lived", "stream"]

LISTING_MAX_AGE_S: Final = 600.0
"""A listing of the service's assets is trusted this long; older, it is taken again before a reuse."""


class LiveAssets:
    """The ids the service holds for the client's key: listed once, listed again on a miss or when old.

    ``list_ids`` lists them (one ``GET /v2/nvcf/assets``); it is called with no lock of
    the caller's held but this object's own.

    Args:
        list_ids: lists the key's asset ids.
        max_age_s: how long a listing is trusted.
        clock: the time source (seconds, monotonic).
    """

    def __init__(
        self,
        list_ids: Callable[[], Iterable[str]],
        *,
        max_age_s: float = LISTING_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._list_ids = list_ids
        self._max_age_s = max_age_s
        self._clock = clock
        self._ids: set[str] | None = None
        self._listed_at = float("-inf")
        self._lock = threading.Lock()

    def ids(self) -> set[str]:
        """The live ids (listing them unless a listing is fresh)."""
        with self._lock:
            if self._ids is None or self._clock() - self._listed_at > self._max_age_s:
                self._relist()
            assert self._ids is not None
            return set(self._ids)

    def holds(self, asset_id: str, *, listed_since: float) -> bool:
        """Whether the service holds ``asset_id``.

        An id missing from a listing taken before ``listed_since`` (the caller's start) is
        looked for in a fresh listing: another process may have uploaded it since.
        """
        with self._lock:
            if self._ids is None or self._clock() - self._listed_at > self._max_age_s:
                self._relist()
            assert self._ids is not None
            if asset_id in self._ids:
                return True
            if self._listed_at < listed_since:
                self._relist()
            return asset_id in self._ids

    def add(self, asset_id: str) -> None:
        """An id the service now holds (this client uploaded it)."""
        with self._lock:
            if self._ids is not None:
                self._ids.add(asset_id)

    def discard(self, asset_ids: Iterable[str]) -> None:
        """Ids the service no longer holds (deleted)."""
        with self._lock:
            if self._ids is not None:
                self._ids.difference_update(asset_ids)

    def _relist(self) -> None:
        started = self._clock()
        self._ids = set(self._list_ids())
        self._listed_at = started


class AssetStore:
    """What one client knows about its assets: the shared id cache (SQLite) and the ids live on the service.

    Args:
        cache: the hash -> id cache, or None when uploads are not reused.
        assets_url: the asset API base (part of the cache key).
        api_key: the key (its fingerprint is part of the cache key).
        live: the live ids.
    """

    def __init__(self, cache: AssetCache | None, assets_url: str, api_key: str | None, live: LiveAssets) -> None:
        self._cache = cache
        self._assets_url = assets_url
        self._api_key = api_key
        self.live = live

    def cached(self, digest: str, mime: str) -> str | None:
        """The cached id of these bytes, if any (not checked with the service)."""
        if self._cache is None:
            return None
        return self._cache.get(digest, mime, self._assets_url, self._api_key)

    def remember(self, entries: Iterable[tuple[str, str, str]]) -> None:
        """Enter ``(digest, mime, asset_id)`` rows in the shared cache: these assets are long-lived."""
        if self._cache is None:
            return
        for digest, mime, asset_id in entries:
            self._cache.put(digest, mime, self._assets_url, self._api_key, asset_id)

    def forget(self, asset_ids: Collection[str]) -> None:
        """These assets are gone: out of the cache and the live ids."""
        if self._cache is not None:
            for asset_id in asset_ids:
                self._cache.forget(asset_id)
        self.live.discard(asset_ids)


UploadKey = tuple[str, str]
"""``(sha256 of the bytes, MIME type)``: what makes two uploads the same."""


def upload_key(item: Item) -> UploadKey:
    """The key of an item's output (its SHA-256, set by the normalize stage, and its MIME type)."""
    assert item.output is not None and item.output.sha256 is not None
    return item.output.sha256, item.output.mime


class Delivery:
    """One call's delivery: what it reused, what it created and uploaded, and who owns that.

    Thread-safe: the sync pipeline uploads from several threads.

    Args:
        store: the client's asset store (None: nothing is reused or remembered).
        owner: who owns the uploads (see the module docstring).
        description: the description uploads carry.
    """

    def __init__(self, store: AssetStore | None, owner: Owner, description: str) -> None:
        self.store = store
        self.description = description
        self.started = time.monotonic()
        self._owner: Owner = owner
        self._lock = threading.Lock()
        self._by_key: dict[UploadKey, str] = {}
        self._key_locks: dict[UploadKey, threading.Lock] = {}
        self._created: list[str] = []
        self._uploaded: list[str] = []
        self._not_remembered: list[tuple[str, str, str]] = []

    @property
    def owner(self) -> Owner:
        return self._owner

    @property
    def created(self) -> list[str]:
        """Every asset this call created, whether its upload finished or not (a copy)."""
        with self._lock:
            return list(self._created)

    @property
    def uploaded(self) -> list[str]:
        """The assets this call uploaded and still owns (a copy)."""
        with self._lock:
            return list(self._uploaded)

    def lock_for(self, key: UploadKey) -> threading.Lock:
        """A lock per key: identical outputs of one call are uploaded once, even with uploads in parallel."""
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def reusable(self, key: UploadKey) -> str | None:
        """An asset holding these bytes already: uploaded earlier in this call, or long-lived and still live.

        May list the service's assets (``LiveAssets.holds``); a cached id the service no
        longer holds is dropped from the cache.
        """
        with self._lock:
            earlier = self._by_key.get(key)
        if earlier is not None or self.store is None:
            return earlier
        cached = self.store.cached(*key)
        if cached is None:
            return None
        if self.store.live.holds(cached, listed_since=self.started):
            return cached
        self.store.forget([cached])
        return None

    def note_created(self, asset_id: str) -> None:
        """An asset was created for this call (its upload may still fail or be cancelled)."""
        with self._lock:
            self._created.append(asset_id)

    def note_uploaded(self, key: UploadKey, asset_id: str) -> None:
        """An upload of this call finished: the asset is this call's, remembered as its owner says."""
        with self._lock:
            self._by_key[key] = asset_id
            self._uploaded.append(asset_id)
            remember_now = self._owner == "stream"
            if not remember_now:
                self._not_remembered.append((*key, asset_id))
        if self.store is not None:
            self.store.live.add(asset_id)
            if remember_now:
                self.store.remember([(*key, asset_id)])

    def claim_for_block(self) -> bool:
        """A block takes this call's uploads (``pending`` -> ``block``); False when they are long-lived already."""
        with self._lock:
            if self._owner in ("pending", "block"):
                self._owner = "block"
                return True
            return False

    def make_long_lived(self) -> None:
        """A call outside any block: its uploads enter the shared cache, and nobody's exit deletes them."""
        with self._lock:
            if self._owner not in ("pending", "long_lived"):
                return
            self._owner = "long_lived"
            entries, self._not_remembered = self._not_remembered, []
        if self.store is not None and entries:
            self.store.remember(entries)

    def deleted(self, asset_ids: Collection[str]) -> None:
        """These assets of this call were deleted (or are gone): forgotten everywhere."""
        gone = set(asset_ids)
        with self._lock:
            self._uploaded = [i for i in self._uploaded if i not in gone]
            self._created = [i for i in self._created if i not in gone]
            self._not_remembered = [e for e in self._not_remembered if e[2] not in gone]
            self._by_key = {k: v for k, v in self._by_key.items() if v not in gone}
        if self.store is not None:
            self.store.forget(gone)


# -- one item's delivery, as a flow the sync and async shells perform ----------------------------------------


@dataclass(frozen=True)
class Blocking:
    """Call ``fn(*args)`` (SQLite, a listing): directly in a sync shell, on a worker thread in an async one."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Upload:
    """Create an asset and upload the file to it (``upload_file``); the outcome is the asset id."""

    path: Path
    content_type: str
    description: str
    on_created: Callable[[str], None]


DeliveryStep = Blocking | Upload
UploadFlow = Generator[DeliveryStep, Any, None]


def upload_flow(item: Item, delivery: Delivery) -> UploadFlow:
    """Deliver one asset item: reuse an asset holding its bytes, else upload it; the item gets its reference.

    A failed upload fails the item (the run goes on); a ``ConfigError`` (no key) stops the run.
    """
    assert item.output is not None and item.output_path is not None
    key = upload_key(item)
    try:
        asset_id = yield Blocking(delivery.reusable, (key,))
        if asset_id is None:
            asset_id = yield Upload(item.output_path, item.output.mime, delivery.description, delivery.note_created)
            yield Blocking(delivery.note_uploaded, (key, asset_id))
            item.uploaded = True
    except ConfigError:
        raise
    except NVMediaError as exc:
        item.fail(exc)
        return
    attach_asset(item, asset_id)


# -- cleanup ----------------------------------------------------------------------------------------------


def settle_cleanup(report: DeleteReport, delivery: Delivery, body_error: BaseException | None) -> CleanupError | None:
    """After deleting a call's assets: forget what went; report what did not.

    When ``body_error`` (the with-body's exception, or the failure that stopped the call)
    is given, the ids that could not be deleted are added to it as a note and None is
    returned: that exception goes on, never replaced. Otherwise a ``CleanupError`` lists them.
    """
    delivery.deleted([*report.deleted, *report.not_found])
    if not report.failed:
        return None
    if body_error is not None:
        add_note(
            body_error,
            f"nvmedia: {len(report.failed)} uploaded asset(s) could not be deleted: {', '.join(report.failed)} "
            "(delete them with `nvmedia assets delete ID...`; the service removes them after 24 h)",
        )
        return None
    try:
        report.raise_for_failures()
    except CleanupError as exc:
        return exc
    return None


def add_note(error: BaseException, note: str) -> None:
    """``error.add_note(note)`` (Python 3.11+), or the same list by hand on 3.10."""
    adder = getattr(error, "add_note", None)
    if adder is not None:
        adder(note)
    else:
        notes = getattr(error, "__notes__", None)
        if not isinstance(notes, list):
            notes = []
            error.__notes__ = notes  # type: ignore[attr-defined]
        notes.append(note)
