"""The module-level shortcuts: ``nvmedia.prepare``, ``nvmedia.aprepare``, ``nvmedia.inspect``.

Each runs through a ``Client`` (``client.py``): the process's default client when only
per-call options are given, so its pools, connections and caches are reused from call to
call; or a client of its own when client options are given (``api_key``, ``assets_url``,
``cache``, ``jobs``..., ``emulate``), which closes with its result. ``emulate=True`` runs an
``NVCFEmulator`` in-process (through its transport) for that one call: offline, no key.

The ownership rules are the client's: in a ``with`` block the uploads are the block's and
are deleted at its end; without one they are long-lived.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .client import AsyncClient, Client, Sources
from .config import CLIENT_ENV
from .items import Item
from .options import OnError
from .plan import Mode
from .prepared import PrepareCall, Prepared
from .profiles import Profile
from .settings import ProgressFn
from .sources import Group
from .wire import AudioPartStyle

if TYPE_CHECKING:
    import httpx

__all__ = ["Prepared", "aprepare", "default_client", "inspect", "prepare"]

EMULATOR_KEY = "nvapi-emulator-local-key"
"""The key an in-process emulator (``emulate=True``, ``--emulate``) is used with."""

_default: Client | None = None
_default_env: tuple[str | None, ...] = ()
_default_lock = threading.Lock()


def _close_default() -> None:
    if _default is not None:
        _default.close()


atexit.register(_close_default)


def default_client() -> Client:
    """The process's default ``Client``, configured from the environment, made on first use, closed at exit.

    When the environment it was made from changes (``NVIDIA_API_KEY``, ``NVMEDIA_ASSETS_URL``,
    ``NVMEDIA_CACHE_DIR``, ``NVMEDIA_OUTPUT_CACHE_SIZE``), the next call gets a new one.
    """
    global _default, _default_env
    environment = tuple(os.environ.get(name) for name in CLIENT_ENV)
    with _default_lock:
        if _default is None or _default._closed or environment != _default_env:
            if _default is not None:
                _default.close()
            _default, _default_env = Client(), environment
        return _default


def _client_options(
    *,
    assets_url: str | None,
    api_key: str | None,
    jobs: int | None,
    cache: bool,
    cache_dir: str | os.PathLike[str] | None,
    max_memory: int | str | None,
    output_cache: bool | int | str,
    allow_insecure_http: bool,
) -> dict[str, Any]:
    """The client options that differ from a default client's (empty: the default client serves)."""
    given = {
        "assets_url": assets_url,
        "api_key": api_key,
        "jobs": jobs,
        "cache_dir": cache_dir,
        "max_memory": max_memory,
    }
    options: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if not cache:
        options["cache"] = False
    if output_cache is not True:
        options["output_cache"] = output_cache
    if allow_insecure_http:
        options["allow_insecure_http"] = True
    return options


def _emulator_options() -> tuple[Any, dict[str, Any]]:
    """``emulate=True``: an in-process emulator for one call, and the client options that reach it."""
    from .testing import NVCFEmulator

    emulator = NVCFEmulator()
    return emulator, {"assets_url": emulator.assets_url, "api_key": EMULATOR_KEY, "cache": False}


def prepare(
    sources: Sources,
    *,
    mode: Mode = "auto",
    profile: str | Path | Profile | None = None,
    group: Group = "all",
    inline_limit: int | None = None,
    request_limit: int | None = None,
    assets_url: str | None = None,
    api_key: str | None = None,
    dry_run: bool = False,
    emulate: bool = False,
    keep: str | os.PathLike[str] | None = None,
    jobs: int | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    audio_part: AudioPartStyle = "audio_url",
    keep_metadata: bool = False,
    trim_s: float | None = None,
    split_long_audio: bool = False,
    max_memory: int | str | None = None,
    output_cache: bool | int | str = True,
    resume: str | os.PathLike[str] | None = None,
    fetch_urls: bool = False,
    url_allow: Sequence[str] = (),
    on_error: OnError = "raise",
    keep_assets: bool = False,
    allow_insecure_http: bool = False,
    http_client: httpx.Client | None = None,
    progress: ProgressFn | None = None,
) -> Prepared:
    """``Client.prepare`` as a function: on the default client, or one of its own when client options are given.

    The options are ``Client``'s (``assets_url``, ``api_key``, ``cache``, ``cache_dir``, ``jobs``,
    ``max_memory``, ``output_cache``, ``allow_insecure_http``, ``http_client``; ``emulate=True``
    for an in-process emulator) and ``Client.prepare``'s (the rest). See ``Client.prepare``.

    Example:
        >>> with nvmedia.prepare(["cat.heic", "talk.flac"], emulate=True) as prep:  # doctest: +SKIP
        ...     client.chat.completions.create(messages=[prep.message("Describe")], extra_headers=prep.headers)
    """
    call = {
        "mode": mode,
        "profile": profile,
        "group": group,
        "inline_limit": inline_limit,
        "request_limit": request_limit,
        "dry_run": dry_run,
        "keep": keep,
        "audio_part": audio_part,
        "keep_metadata": keep_metadata,
        "trim_s": trim_s,
        "split_long_audio": split_long_audio,
        "resume": resume,
        "fetch_urls": fetch_urls,
        "url_allow": url_allow,
        "on_error": on_error,
        "keep_assets": keep_assets,
        "progress": progress,
    }
    own = _client_options(
        assets_url=assets_url,
        api_key=api_key,
        jobs=jobs,
        cache=cache,
        cache_dir=cache_dir,
        max_memory=max_memory,
        output_cache=output_cache,
        allow_insecure_http=allow_insecure_http,
    )
    if not own and not emulate and http_client is None:
        return default_client().prepare(sources, **call)  # type: ignore[arg-type]
    emulator = None
    if emulate:
        import httpx

        emulator, reach = _emulator_options()
        own.update(reach)
        http_client = httpx.Client(transport=emulator.transport)
    client = Client(http_client=http_client, **own)

    def release() -> None:
        client.close()
        if emulator is not None:
            assert http_client is not None
            http_client.close()
            emulator.stop()

    try:
        prepared = client.prepare(sources, **call)  # type: ignore[arg-type]
    except BaseException:
        release()
        raise
    prepared._release_with(release)
    return prepared


def aprepare(sources: Sources, **options: Any) -> PrepareCall:
    """``prepare`` for async code, through an ``AsyncClient``: ``await`` it, or use it in ``async with``.

    Takes the options of ``prepare`` (``http_client`` an ``httpx.AsyncClient``). A client is made
    for the call and closed once it is over (after the ``async with`` block).
    """
    emulate = bool(options.pop("emulate", False))
    client_keys = ("assets_url", "api_key", "jobs", "cache", "cache_dir", "max_memory", "output_cache")
    own = {k: options.pop(k) for k in client_keys + ("allow_insecure_http", "http_client") if k in options}
    emulator = None
    if emulate:
        import httpx

        emulator, reach = _emulator_options()
        own.update(reach, http_client=httpx.AsyncClient(transport=emulator.transport))
    holder: list[AsyncClient] = []

    async def finish() -> None:
        if holder:
            await holder[0].aclose()
        if emulator is not None:
            await own["http_client"].aclose()
            emulator.stop()

    def start(owner: Any) -> Awaitable[Prepared]:
        if not holder:
            holder.append(AsyncClient(**own))
        call = holder[0].prepare(sources, **options)
        return call._run(owner)

    return PrepareCall(start, finish=finish)


def inspect(
    path: str | os.PathLike[str],
    *,
    profile: str | Path | Profile | None = None,
    mode: Mode = "auto",
    **options: Any,
) -> Item:
    """What ``path`` is and what ``prepare`` would do with it; nothing is written, cached or sent.

    ``Client.inspect`` on the default client (its other options: ``inline_limit``, ``request_limit``,
    ``keep_metadata``, ``trim_s``, ``split_long_audio``, ``fetch_urls``, ``url_allow``).
    """
    return default_client().inspect(path, profile=profile, mode=mode, **options)
