"""``Client`` and ``AsyncClient``: the one front door, configured once and reused.

A client holds the configuration (key, asset API, profile, caches, workers), the HTTP
connection pool (an ``AssetClient``/``AsyncAssetClient`` over the ``httpx`` client you
give or one of its own), the asset-id cache, the converted-file cache, the memory
budget and the worker pools, each created on first use and reused by every call. The
command line and the module-level functions (``nvmedia.prepare``...) run through it.

**Configuration.** Each argument, else its environment variable (``config.py``), else
the default. The asset API URL and key go only over https, or plain http to a loopback
address, unless ``allow_insecure_http=True``: any other URL is a ``ConfigError`` when the
client is made, before anything is sent.

**An injected ``http_client``.** It contributes its transport, connection pool, proxies,
TLS settings, limits, event hooks and default timeout. nvmedia builds every request
itself, so where they overlap the client's own arguments win: requests go to
``assets_url`` (or ``$NVMEDIA_ASSETS_URL``), never to the ``http_client``'s ``base_url``;
they carry ``Authorization: Bearer <api_key>`` on API calls and nothing on uploads, never
the ``http_client``'s default headers, query parameters, cookies or ``auth``; redirects
are not followed. nvmedia never closes an ``http_client`` it was given.

**Ownership of assets** is described in ``prepared.py``: an asset uploaded inside a
``with``/``async with`` block belongs to it and is deleted at its end; one uploaded
outside a block is long-lived, enters the cache and is deleted by nobody's exit.

Example:
    >>> with nvmedia.Client(api_key="nvapi-...") as client:  # doctest: +SKIP
    ...     with client.prepare(["cat.heic", "talk.flac"]) as prep:
    ...         openai.chat.completions.create(..., messages=[prep.message("Describe.")], extra_headers=prep.headers)
    >>> async with nvmedia.AsyncClient() as aclient:  # doctest: +SKIP
    ...     async with aclient.prepare(["clip.mov"]) as prep:
    ...         ...
"""

from __future__ import annotations

import functools
import os
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from typing_extensions import Unpack

from ._asset_endpoint import check_assets_url
from ._asset_results import AssetInfo, DeleteReport
from ._redact import redact_url
from .config import ASSET_CACHE_FILE, env_api_key, env_assets_url
from .delivery import AssetStore, Delivery, LiveAssets, Owner, settle_cleanup
from .errors import AssetAPIError, AuthError, ConfigError, NVMediaError
from .items import Item, Request
from .memory import MemoryBudget
from .option_table import ref
from .options import (
    INSPECT_KEYS,
    PREPARE_KEYS,
    ClientConfig,
    InspectOptions,
    PrepareOptions,
    ProfileLike,
    call_settings,
    checked,
    client_config,
)
from .prepared import PrepareCall, Prepared
from .settings import DEFAULT_DESCRIPTION, Settings
from .sources import SourceLike
from .workers import PoolKind

if TYPE_CHECKING:
    import anyio
    import httpx

    from .assets import AssetClient, AsyncAssetClient
    from .cache import AssetCache
    from .integrations.openai import Rewritten
    from .resume import EarlierManifest

ASYNC_UPLOADS: Final = 64
"""Uploads an ``AsyncClient`` has in flight at once, over all its calls: on the event loop they cost
no thread, only a connection (httpx's pool holds up to 100)."""

Sources = SourceLike | Sequence[SourceLike]
"""A path, folder, ``bytes`` or binary file object, or a list of them."""
Record = tuple[list[Item], Request | None]


def source_list(sources: Sources) -> list[SourceLike]:
    """One source or many, as a list."""
    if isinstance(sources, (str, os.PathLike, bytes, bytearray, memoryview)) or hasattr(sources, "read"):
        return [sources]  # type: ignore[list-item]
    return list(sources)


def _made_from(kind: type[_ClientBase[Any, Any]], configuration: dict[str, Any]) -> _ClientBase[Any, Any]:
    return kind(**configuration)


HttpT = TypeVar("HttpT")
AssetsT = TypeVar("AssetsT")


class _ClientBase(ABC, Generic[HttpT, AssetsT]):
    """What both clients hold: configuration, the asset cache, the known assets, the memory budget.

    The arguments are described in ``Client``; ``HttpT`` is the kind of ``http_client`` taken
    (``httpx.Client`` or ``httpx.AsyncClient``), ``AssetsT`` the asset client made over it.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        assets_url: str | None = None,
        profile: ProfileLike = None,
        cache: bool = True,
        cache_dir: str | os.PathLike[str] | None = None,
        http_client: HttpT | None = None,
        jobs: int | None = None,
        pool: PoolKind = "thread",
        allow_insecure_http: bool = False,
        max_memory: int | str | None = None,
        output_cache: bool | int | str = True,
        timeout: float | None = None,
        description: str = DEFAULT_DESCRIPTION,
    ) -> None:
        self._check_pool(pool)
        self._http_client = http_client
        self._assets: AssetsT | None = None
        key = api_key if api_key is not None else env_api_key()
        self._api_key = (key or "").strip() or None
        self._given_url = assets_url or env_assets_url()
        self._checked_url: str | None = None
        self._allow_insecure_http = allow_insecure_http
        self._timeout = timeout
        self._config: ClientConfig = client_config(
            profile=os.fspath(profile) if isinstance(profile, os.PathLike) else profile,
            jobs=jobs,
            pool=pool,
            cache=cache,
            cache_dir=cache_dir,
            max_memory=max_memory,
            output_cache=output_cache,
            description=description,
        )
        self._configuration: dict[str, Any] = {
            "api_key": self._api_key,
            "assets_url": self._given_url,
            "profile": self._config.profile,
            "cache": cache,
            "cache_dir": self._config.cache_dir,
            "jobs": self._config.jobs,
            "pool": pool,
            "allow_insecure_http": allow_insecure_http,
            "max_memory": self._config.max_memory,
            "output_cache": self._config.output_cache_bytes,
            "timeout": timeout,
            "description": description,
        }
        self._lock = threading.RLock()
        self._closed = False
        self._asset_cache: AssetCache | None = None
        self._store: AssetStore | None = None
        self._budget: MemoryBudget | None = None
        self._pending: weakref.WeakSet[Delivery] = weakref.WeakSet()

    @property
    def assets_url(self) -> str:
        """The asset API base the client talks to (credentials written into the URL dropped).

        Raises:
            ConfigError: the URL is not an http(s) URL, or is plain http to a host that is not
                loopback without ``allow_insecure_http`` (checked before any request is sent).
        """
        if self._checked_url is None:
            self._checked_url = check_assets_url(self._given_url, allow_insecure_http=self._allow_insecure_http)
        return self._checked_url

    def configuration(self, **changes: Any) -> dict[str, Any]:
        """The keyword arguments that make a client like this one (with ``changes``), an ``http_client`` aside.

        Holds the key: for making a client in another process (Ray's workers), never for printing.
        """
        unknown = set(changes) - set(self._configuration)
        if unknown:
            raise TypeError(f"configuration() got an unexpected keyword argument {sorted(unknown)[0]!r}")
        return {**self._configuration, **changes}

    def __reduce__(self) -> tuple[Any, ...]:
        """A client pickles as its configuration (a new one, with pools of its own, in the other process)."""
        if getattr(self, "_http_client", None) is not None:
            raise ConfigError(
                f"a {type(self).__name__} made with an http_client cannot be sent to another process",
                hint="make the client without http_client= (its transport stays in this process)",
            )
        return (_made_from, (type(self), self.configuration()))

    def __repr__(self) -> str:
        key = "***" if self._api_key else None
        state = ", closed" if self._closed else ""
        return f"{type(self).__name__}(assets_url={redact_url(self._given_url)!r}, api_key={key}{state})"

    # -- what every call needs ------------------------------------------------------------------------------

    def _check_pool(self, pool: PoolKind) -> None:
        """Refuse a worker pool this kind of client cannot run on (checked before anything else)."""

    @abstractmethod
    def _asset_client_type(self) -> Callable[..., AssetsT]:
        """The asset client class this kind of client sends through."""

    def _asset_client(self) -> AssetsT:
        """The asset client over the connection pool, made on first use (``ConfigError`` when no key is set)."""
        key = self._need_key()
        with self._lock:
            self._check_open()
            if self._assets is None:
                self._assets = self._asset_client_type()(
                    api_key=key,
                    base_url=self.assets_url,
                    http_client=self._http_client,
                    timeout=self._timeout,
                    allow_insecure_http=self._allow_insecure_http,
                )
            return self._assets

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError(
                f"this {type(self).__name__} is closed",
                hint=f"make a new {type(self).__name__}, or keep this one open while you use it",
            )

    def _settings(self, options: dict[str, Any], *, group: str = "all") -> Settings:
        return call_settings(self._config, options, group=group)  # type: ignore[arg-type]

    def _memory_budget(self) -> MemoryBudget:
        with self._lock:
            if self._budget is None:
                self._budget = MemoryBudget(self._config.max_memory)
            return self._budget

    def _need_key(self) -> str:
        if self._api_key is None:
            raise ConfigError(
                "an upload is needed but no API key is set",
                hint=f"set NVIDIA_API_KEY or pass {ref('api_key')} (or use {ref('dry_run', True)} or "
                f"{ref('mode', 'inline')})",
            )
        return self._api_key

    def _asset_store(self, list_ids: Callable[[], list[str]]) -> AssetStore:
        with self._lock:
            if self._store is None:
                if self._config.cache and self._asset_cache is None:
                    from .cache import AssetCache

                    self._asset_cache = AssetCache(self._config.cache_dir / ASSET_CACHE_FILE)
                live = LiveAssets(functools.partial(self._listing, list_ids))
                self._store = AssetStore(self._asset_cache, self.assets_url, self._api_key, live)
            return self._store

    def _listing(self, list_ids: Callable[[], list[str]]) -> list[str]:
        """The key's asset ids; a refused key or an unreachable API is a ``ConfigError`` (CLI exit 2)."""
        try:
            return list_ids()
        except AuthError as exc:
            raise ConfigError(
                f"the asset API refused the key: {exc.message}", code="auth_failed", hint=exc.hint
            ) from None
        except AssetAPIError as exc:
            if exc.status_code is not None:
                raise
            raise ConfigError(
                f"the asset API at {redact_url(self.assets_url)} is unreachable: {exc.message}",
                code="asset_api_error",
                hint=f"check {ref('assets_url')} / NVMEDIA_ASSETS_URL and the network, or use {ref('dry_run', True)}",
            ) from None

    def _delivery(self, owner: Owner, store: AssetStore | None) -> Delivery:
        delivery = Delivery(store, owner, self._config.description)
        if owner == "pending":
            self._pending.add(delivery)
        return delivery

    def _close_shared(self) -> None:
        """Uploads still undecided become long-lived; the cache closes."""
        for delivery in list(self._pending):
            delivery.make_long_lived()
        if self._asset_cache is not None:
            self._asset_cache.close()


class Client(_ClientBase["httpx.Client", "AssetClient"]):
    """The synchronous front door: prepare media with one configuration, pools and caches reused by every call.

    Args:
        api_key: the bearer key of the asset API; default ``$NVIDIA_API_KEY`` (needed only to upload).
        assets_url: the asset API base; default ``$NVMEDIA_ASSETS_URL``, else NVCF's.
        profile: the default profile of every call (a built-in name, a ``.toml``/``.json`` file or a ``Profile``).
        cache: reuse earlier uploads of the same bytes (the asset-id cache).
        cache_dir: the folder of the asset-id cache and the converted-file cache; default
            ``$NVMEDIA_CACHE_DIR``, else the platform's user cache folder.
        http_client: an ``httpx.Client`` to send through (see the module docstring for what wins);
            never closed by the client.
        jobs: parallel workers (default: the number of CPUs).
        pool: ``thread`` (default) or ``process`` (forked workers, for programs that are nvmedia alone).
        allow_insecure_http: allow sending the key over plain http to a host that is not loopback.
        max_memory: bytes (or ``"1G"``) that image decodes may hold at once (default a quarter of RAM).
        output_cache: reuse and keep converted files: ``True`` (cap from ``$NVMEDIA_OUTPUT_CACHE_SIZE``,
            else 2 GiB), ``False``, or the cap (bytes or ``"500M"``).
        timeout: seconds per connect/read/write of each asset call (default 60, or the ``http_client``'s).
        description: the description uploaded assets carry.

    Raises:
        ConfigError: an option is out of range, or the asset API URL may not carry the key.

    Example:
        >>> with Client(api_key="nvapi-...") as client:  # doctest: +SKIP
        ...     with client.prepare(["cat.heic"]) as prep:
        ...         prep.content, prep.headers
    """

    _http_client: httpx.Client | None
    _normalize_pool: ThreadPoolExecutor | None = None
    _upload_pool: ThreadPoolExecutor | None = None

    # -- resources, created on first use ---------------------------------------------------------------------

    def _asset_client_type(self) -> Callable[..., AssetClient]:
        from .assets import AssetClient

        return AssetClient

    def _store_for_calls(self) -> AssetStore:
        return self._asset_store(lambda: self._asset_client().list())

    def _pools(self) -> tuple[ThreadPoolExecutor | None, ThreadPoolExecutor]:
        from .pipeline import upload_threads

        with self._lock:
            self._check_open()
            if self._normalize_pool is None and self._config.pool == "thread":
                self._normalize_pool = ThreadPoolExecutor(self._config.jobs, thread_name_prefix="nvmedia-normalize")
            if self._upload_pool is None:
                self._upload_pool = ThreadPoolExecutor(
                    upload_threads(self._config.jobs), thread_name_prefix="nvmedia-upload"
                )
            return self._normalize_pool, self._upload_pool

    def _delete_many(self, asset_ids: Collection[str]) -> DeleteReport:
        if not self._closed:
            return self._asset_client().delete_many(asset_ids)
        from .assets import AssetClient

        # A result may outlive its client (a default client replaced): delete over a connection of its own.
        with AssetClient(
            api_key=self._need_key(), base_url=self.assets_url, allow_insecure_http=self._allow_insecure_http
        ) as assets:
            return assets.delete_many(asset_ids)

    # -- calls ------------------------------------------------------------------------------------------------

    def _records(
        self,
        sources: Sources,
        settings: Settings,
        delivery: Delivery,
        *,
        progress: Any = None,
        resume: EarlierManifest | None = None,
        exclude: Iterable[Path] = (),
        on_stop: Callable[[int], None] | None = None,
    ) -> Generator[Record, None, None]:
        from .pipeline import Sender, run

        normalize_pool, upload_pool = self._pools()
        yield from run(
            source_list(sources),
            settings,
            delivery=delivery,
            sender=Sender(self._asset_client, upload_pool),
            pool=normalize_pool,
            budget=self._memory_budget(),
            progress=progress,
            resume=resume,
            exclude=exclude,
            on_stop=on_stop,
        )

    def _discard(self, delivery: Delivery, error: BaseException) -> None:
        """A call failed or was interrupted: delete every asset it created (failures noted on ``error``)."""
        created = delivery.created
        if not created:
            return
        try:
            report = self._delete_many(created)
        except NVMediaError as exc:
            from .delivery import add_note

            add_note(error, f"nvmedia: could not delete the assets {', '.join(created)}: {exc.message}")
            return
        settle_cleanup(report, delivery, error)

    def prepare(self, sources: Sources, **options: Unpack[PrepareOptions]) -> Prepared:
        """Make media ready to send: normalize, plan inline-or-asset, upload, and build content parts.

        Use the result in a ``with`` block to have the assets it uploaded deleted at the end
        of the block (see ``prepared.py`` for the ownership rules).

        Args:
            sources: paths, folders, ``bytes`` or binary file objects (one or a list); ``http(s)``
                URLs with ``fetch_urls=True``.
            **options: ``mode`` (``auto``: inline when it fits, else upload; ``inline``: shrink to fit
                or fail; ``asset``), ``profile``, ``group`` (``all``, the default: everything in one
                request; ``dir``; ``file``), ``inline_limit``, ``request_limit``, ``dry_run``, ``keep``
                (a folder for copies of the outputs), ``audio_part``, ``keep_metadata``, ``trim_s``,
                ``split_long_audio``, ``fetch_urls`` and ``url_allow``, ``resume`` (an earlier
                manifest whose records that still hold are reused), ``on_error`` (``raise`` the
                first input's error, after deleting what was uploaded, or ``keep`` failed items),
                ``keep_assets`` (assets outlive a with-block), ``progress``.

        Returns:
            A ``Prepared``.

        Raises:
            NVMediaError: an input failed (with ``on_error="raise"``), or the configuration is unusable.
            TypeError: an option this method does not take.
        """
        opts = checked(options, PREPARE_KEYS, "prepare")
        self._check_open()
        settings = self._settings(opts)
        earlier = self._earlier(opts.get("resume"), settings)
        delivery = self._delivery("pending", None if settings.dry_run else self._store_for_calls())
        items: list[Item] = []
        requests: list[Request] = []
        try:
            for group_items, request in self._records(
                sources, settings, delivery, progress=opts.get("progress"), resume=earlier
            ):
                items.extend(group_items)
                if request is not None:
                    requests.append(request)
        except BaseException as exc:
            self._discard(delivery, exc)
            raise
        finally:
            if earlier is not None:
                earlier.close()
        failed = next((it.error for it in items if it.status == "error" and it.error is not None), None)
        if opts.get("on_error", "raise") == "raise" and failed is not None:
            self._discard(delivery, failed)
            raise failed
        prepared = Prepared(items, requests, delivery, delete=self._delete_many)
        if opts.get("keep_assets", False):
            delivery.make_long_lived()
        return prepared

    def stream(
        self,
        sources: Sources,
        *,
        exclude: Iterable[Path] = (),
        on_stop: Callable[[int], None] | None = None,
        earlier: EarlierManifest | None = None,
        **options: Unpack[PrepareOptions],
    ) -> Generator[Record, None, None]:
        """``prepare`` as it goes: each request's items (and request record) once delivered, in input order.

        What the command line writes its manifest from. The assets are long-lived and enter the
        cache as they are uploaded; nothing is deleted, not even when the run is interrupted
        (the requests finished so far are yielded first; see ``pipeline.run``).

        Args:
            sources: as for ``prepare``.
            exclude: files a folder walk passes over (the run's own outputs).
            on_stop: told, once interrupted, how many uploads it waits for.
            earlier: an earlier manifest already opened (instead of ``resume``).
            **options: as for ``prepare`` (``on_error``, ``keep_assets`` do not apply).
        """
        opts = checked(options, PREPARE_KEYS, "stream")
        self._check_open()
        settings = self._settings(opts, group="file")
        own_earlier = earlier is None and opts.get("resume") is not None
        earlier = earlier if earlier is not None else self._earlier(opts.get("resume"), settings)
        delivery = self._delivery("stream", None if settings.dry_run else self._store_for_calls())
        try:
            yield from self._records(
                sources,
                settings,
                delivery,
                progress=opts.get("progress"),
                resume=earlier,
                exclude=exclude,
                on_stop=on_stop,
            )
        finally:
            if own_earlier and earlier is not None:
                earlier.close()

    def settings(self, **options: Unpack[PrepareOptions]) -> Settings:
        """The ``Settings`` a call with these options runs with (``group`` defaulting to ``file``, as ``stream``)."""
        return self._settings(checked(options, PREPARE_KEYS, "settings"), group="file")

    def inspect(self, source: SourceLike, **options: Unpack[InspectOptions]) -> Item:
        """What ``source`` is and what ``prepare`` would do with it; nothing is written, cached or sent.

        Raises:
            TypeError: an option this method does not take.
        """
        return next(self.inspect_all([source], **options))

    def inspect_all(self, sources: Sources, **options: Unpack[InspectOptions]) -> Iterator[Item]:
        """``inspect`` for each input (a folder gives one item per file), in input order."""
        opts = checked(options, INSPECT_KEYS, "inspect")
        self._check_open()
        return inspect_items(source_list(sources), self._settings({**opts, "dry_run": True}, group="file"))

    def check_service(self) -> None:
        """Check now that the key is set and the asset API answers with it (one listing, reused by calls).

        Raises:
            ConfigError: no key, the key was refused, or the asset API is unreachable.
        """
        self._check_open()
        self._need_key()
        self._store_for_calls().live.ids()

    def rewrite_messages(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        local_root: str | os.PathLike[str] | None = None,
        **options: Unpack[PrepareOptions],
    ) -> Rewritten:
        """Make every media reference in a chat conversation one the service accepts, through this client.

        ``nvmedia.rewrite_messages`` with this client's ``prepare``: see it for the references
        found and the errors. Used as a context manager, the result's block owns what the call
        uploaded (deleted when it ends); assets reused from the cache are never deleted.

        Example:
            >>> with client.rewrite_messages(messages) as rw:  # doctest: +SKIP
            ...     openai.chat.completions.create(model=m, messages=rw.messages, extra_headers=rw.headers)
        """
        from .integrations.openai import rewrite_messages

        return rewrite_messages(messages, local_root=local_root, prepare=self.prepare, **options)

    def live_asset_ids(self) -> set[str]:
        """The asset ids the service holds for the key (listed once per client; empty without a key).

        What ``--resume`` checks the asset ids of earlier records against.

        Raises:
            ConfigError: the key was refused, or the asset API is unreachable.
        """
        self._check_open()
        if self._api_key is None:
            return set()
        return self._store_for_calls().live.ids()

    def get_asset(self, asset_id: str) -> AssetInfo | None:
        """What the service knows about one asset of the key, or None when it holds no such asset (404).

        Raises:
            ConfigError: no key is set.
            AssetAPIError: the asset API failed.
        """
        self._check_open()
        return self._asset_client().get(asset_id)

    def deliver(self, items: Sequence[Item]) -> None:
        """Upload (or reuse from the cache) each asset item's output file, on this thread; the assets are long-lived.

        For engines that run the stages themselves (Ray's upload actors): each item planned
        ``delivery="asset"``, with its file at ``item.output_path`` and its SHA-256 in
        ``item.output.sha256``, gets its asset id, part and tag, or fails (``item.error``).
        The assets enter the cache and nobody's exit deletes them, as a command-line run's.

        Raises:
            ConfigError: no key is set, or the asset API cannot be used (before anything is sent).
        """
        from .pipeline import Sender, deliver

        self._check_open()
        self._asset_client()  # no key: a ConfigError now
        delivery = self._delivery("stream", self._store_for_calls())
        sender = Sender(self._asset_client, self._pools()[1])
        for item in items:
            deliver(item, delivery, sender)

    @staticmethod
    def _earlier(resume: str | os.PathLike[str] | None, settings: Settings) -> EarlierManifest | None:
        if resume is None:
            return None
        from .resume import EarlierManifest

        return EarlierManifest.load(Path(resume), settings)

    # -- lifetime ---------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the pools and connections; results not used in a block become long-lived. Calls after it raise."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close_shared()
            pools, self._normalize_pool, self._upload_pool = (self._normalize_pool, self._upload_pool), None, None
            assets, self._assets = self._assets, None
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=True)
        if assets is not None:
            assets.close()

    def __enter__(self) -> Client:
        self._check_open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def inspect_items(sources: list[SourceLike], settings: Settings) -> Iterator[Item]:
    """The one implementation of ``inspect``: a dry run that writes no output cache, one worker."""
    from dataclasses import replace

    from .pipeline import run

    quiet = replace(settings, dry_run=True, output_cache_bytes=0, jobs=1, pool="thread", keep=None)
    for items, _ in run(sources, quiet):
        yield from items


class AsyncClient(_ClientBase["httpx.AsyncClient", "AsyncAssetClient"]):
    """The asynchronous front door: the same configuration as ``Client``, on ``httpx.AsyncClient``.

    ``prepare`` returns a call that is both awaitable and an async context manager:
    ``prep = await aclient.prepare(x)`` (long-lived assets) or ``async with aclient.prepare(x)
    as prep:`` (the block's assets, deleted at its end). Uploads, creates and deletes run on
    the event loop; normalization, file and SQLite work run on worker threads (``jobs`` at a
    time), so the loop is never held by nvmedia for more than a few milliseconds. Cancelling
    a call deletes every asset it created, shielded from the cancellation, then re-raises.
    Runs on asyncio and trio (through anyio). ``pool`` must be ``thread``.

    Args:
        http_client: an ``httpx.AsyncClient`` to send through (never closed by the client).
        **others: as for ``Client``.

    Example:
        >>> async with AsyncClient(api_key="nvapi-...") as aclient:  # doctest: +SKIP
        ...     async with aclient.prepare(["clip.mov"]) as prep:
        ...         await openai.chat.completions.create(..., extra_headers=prep.headers)
    """

    _http_client: httpx.AsyncClient | None
    _limiters: tuple[anyio.CapacityLimiter, anyio.CapacityLimiter] | None = None

    def _check_pool(self, pool: PoolKind) -> None:
        if pool != "thread":
            raise ConfigError(
                f"the AsyncClient normalizes on threads, not {pool!r}", hint=f"pass {ref('pool', 'thread')}"
            )

    def _asset_client_type(self) -> Callable[..., AsyncAssetClient]:
        from .assets import AsyncAssetClient

        return AsyncAssetClient

    def _store_for_calls(self) -> AssetStore:
        import anyio.from_thread

        # The store is only used from worker threads (SQLite): the listing hops back onto the loop.
        return self._asset_store(lambda: anyio.from_thread.run(self._list_ids))

    async def _list_ids(self) -> list[str]:
        return await self._asset_client().list()

    def _capacity(self) -> tuple[anyio.CapacityLimiter, anyio.CapacityLimiter]:
        """How many normalizations and uploads run at once (made in the event loop, on first use)."""
        import anyio

        if self._limiters is None:
            self._limiters = (anyio.CapacityLimiter(self._config.jobs), anyio.CapacityLimiter(ASYNC_UPLOADS))
        return self._limiters

    async def _delete_many(self, asset_ids: Collection[str]) -> DeleteReport:
        if not self._closed:
            return await self._asset_client().delete_many(asset_ids)
        from .assets import AsyncAssetClient

        # A result outlives its client (``nvmedia.aprepare`` closes its own): delete over a connection of its own.
        async with AsyncAssetClient(
            api_key=self._need_key(), base_url=self.assets_url, allow_insecure_http=self._allow_insecure_http
        ) as assets:
            return await assets.delete_many(asset_ids)

    def prepare(self, sources: Sources, **options: Unpack[PrepareOptions]) -> PrepareCall:
        """``Client.prepare`` for async code: ``await`` it, or use it in ``async with`` (see the class docstring).

        Raises:
            TypeError: an option this method does not take (at once, before anything runs).
        """
        opts = checked(options, PREPARE_KEYS, "prepare")
        return PrepareCall(functools.partial(self._prepare, sources, opts))

    async def _prepare(self, sources: Sources, opts: dict[str, Any], owner: Owner) -> Prepared:
        import anyio

        from .async_pipeline import AsyncSender, arun

        self._check_open()
        settings = self._settings(opts)
        store = None
        if not settings.dry_run:
            # SQLite and httpx's TLS set-up (and their first imports) take tens of ms: off the loop.
            store = await anyio.to_thread.run_sync(self._store_for_calls)
            if self._api_key is not None:
                await anyio.to_thread.run_sync(self._asset_client)
        keep_assets = bool(opts.get("keep_assets", False))
        delivery = self._delivery("block" if owner == "block" and not keep_assets else "pending", store)
        normalize_limit, upload_limit = self._capacity()
        try:
            items, requests = await arun(
                source_list(sources),
                settings,
                delivery=delivery,
                sender=AsyncSender(self._asset_client, upload_limit),
                limiter=normalize_limit,
                budget=self._memory_budget(),
                progress=opts.get("progress"),
                resume=opts.get("resume"),
            )
            failed = next((it.error for it in items if it.status == "error" and it.error is not None), None)
            if opts.get("on_error", "raise") == "raise" and failed is not None:
                raise failed
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await self._adiscard(delivery, exc)
            raise
        prepared = Prepared(items, requests, delivery, adelete=self._delete_many)
        if delivery.owner == "pending":
            await anyio.to_thread.run_sync(delivery.make_long_lived)  # SQLite: off the loop
        return prepared

    async def _adiscard(self, delivery: Delivery, error: BaseException) -> None:
        created = delivery.created
        if not created:
            return
        try:
            report = await self._delete_many(created)
        except NVMediaError as exc:
            from .delivery import add_note

            add_note(error, f"nvmedia: could not delete the assets {', '.join(created)}: {exc.message}")
            return
        settle_cleanup(report, delivery, error)

    async def rewrite_messages(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        local_root: str | os.PathLike[str] | None = None,
        **options: Unpack[PrepareOptions],
    ) -> Rewritten:
        """``Client.rewrite_messages`` for async code: use the result in ``async with`` to delete what it uploaded."""
        from .integrations.openai import arewrite_messages

        return await arewrite_messages(messages, local_root=local_root, aprepare=self.prepare, **options)

    async def inspect(self, source: SourceLike, **options: Unpack[InspectOptions]) -> Item:
        """``Client.inspect``, on a worker thread."""
        import anyio

        opts = checked(options, INSPECT_KEYS, "inspect")
        self._check_open()
        settings = self._settings({**opts, "dry_run": True}, group="file")
        return await anyio.to_thread.run_sync(lambda: next(inspect_items([source], settings)))

    async def aclose(self) -> None:
        """Close the connections; results not used in a block become long-lived. Calls after it raise."""
        import anyio

        with self._lock:
            if self._closed:
                return
            self._closed = True
            assets, self._assets = self._assets, None
        await anyio.to_thread.run_sync(self._close_shared)
        if assets is not None:
            await assets.aclose()

    async def __aenter__(self) -> AsyncClient:
        self._check_open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
