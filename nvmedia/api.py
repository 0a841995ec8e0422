"""The library's front door: ``prepare``, ``aprepare``, ``inspect``.

``rewrite_messages`` (for other clients' upload step) lives in ``nvmedia.integrations.openai``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from .items import Item, Request
from .memory import parse_size
from .outputs_cache import configured_max_bytes
from .pipeline import Delivery, ProgressFn, Settings, run
from .plan import Mode
from .profiles import Profile, get_profile
from .resume import EarlierManifest
from .sources import Group, SourceLike
from .wire import AudioPartStyle, MediaPart, asset_headers, tags, text_part

OnError = Literal["raise", "keep"]


class Prepared:
    """The result of ``prepare``: ready-to-send content for one request.

    As a context manager, leaving the block deletes the assets this call uploaded.

    Attributes:
        items: per-input results (the manifest's item records as objects).
        requests: per-request results (one for the library's default ``group="all"``).
    """

    def __init__(self, items: list[Item], requests: list[Request], delivery: Delivery) -> None:
        self.items = items
        self.requests = requests
        self._delivery = delivery

    @property
    def content(self) -> list[MediaPart]:
        """OpenAI-style content parts of every delivered item, in input order."""
        return [it.part for it in self.items if it.ok and it.part is not None]

    @property
    def tags(self) -> str:
        """The string form: ``<img src="..." /> <audio src="..." />``."""
        return tags(it.tag for it in self.items if it.ok and it.tag)

    @property
    def asset_ids(self) -> list[str]:
        return [it.asset_id for it in self.items if it.ok and it.asset_id]

    @property
    def headers(self) -> dict[str, str]:
        """``{"NVCF-INPUT-ASSET-REFERENCES": "id1,id2"}``, or ``{}`` when nothing was uploaded."""
        return asset_headers(self.asset_ids)

    def message(self, text: str | None = None, *, role: str = "user") -> dict[str, Any]:
        """A chat message: ``{"role": "user", "content": [text part, *content]}``."""
        content: list[Any] = [text_part(text)] if text else []
        content.extend(self.content)
        return {"role": role, "content": content}

    def delete_assets(self) -> None:
        """Delete the assets this call uploaded (assets reused from the cache are left alone)."""
        uploaded = [it.asset_id for it in self.items if it.uploaded and it.asset_id]
        self._delivery.delete(uploaded)

    def close(self) -> None:
        self._delivery.close()

    def __enter__(self) -> Prepared:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.delete_assets()
        finally:
            self.close()

    def __repr__(self) -> str:
        ok = sum(1 for it in self.items if it.ok)
        return f"<Prepared items={len(self.items)} ok={ok} assets={len(self.asset_ids)}>"


def _settings(
    *,
    mode: Mode,
    profile: str | Path | Profile | None,
    group: Group,
    inline_limit: int | None,
    request_limit: int | None,
    assets_url: str | None,
    api_key: str | None,
    dry_run: bool,
    emulate: bool,
    keep: str | os.PathLike[str] | None,
    jobs: int | None,
    cache: bool,
    cache_dir: str | os.PathLike[str] | None,
    audio_part: AudioPartStyle,
    keep_metadata: bool,
    trim_s: float | None,
    split_long_audio: bool,
    max_memory: int | str | None = None,
    output_cache: bool | int,
    fetch_urls: bool = False,
    url_allow: Sequence[str] = (),
) -> Settings:
    from .fetch import FetchPolicy

    settings = Settings(
        mode=mode,
        profile=get_profile(profile),
        group=group,
        inline_limit=inline_limit,
        request_limit=request_limit,
        assets_url=assets_url,
        api_key=api_key,
        dry_run=dry_run,
        emulate=emulate,
        keep=Path(keep) if keep is not None else None,
        use_cache=cache,
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        audio_part=audio_part,
        keep_metadata=keep_metadata,
        trim_s=trim_s,
        split_long_audio=split_long_audio,
        max_memory=parse_size(max_memory) if max_memory is not None else None,
        output_cache_bytes=_output_cache_bytes(output_cache),
        fetch=FetchPolicy(allow=tuple(url_allow)) if fetch_urls else None,
    )
    if jobs is not None:
        settings.jobs = jobs
    return settings


def _output_cache_bytes(output_cache: bool | int) -> int:
    if isinstance(output_cache, bool):
        return configured_max_bytes() if output_cache else 0
    if output_cache < 0:
        raise ValueError(f"output_cache must be True, False or a number of bytes >= 0, got {output_cache}")
    return output_cache


def prepare(
    sources: SourceLike | Sequence[SourceLike],
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
    output_cache: bool | int = True,
    resume: str | os.PathLike[str] | None = None,
    fetch_urls: bool = False,
    url_allow: Sequence[str] = (),
    on_error: OnError = "raise",
    progress: ProgressFn | None = None,
) -> Prepared:
    """Make media ready to send: normalize, plan inline-or-asset, upload, and build content parts.

    Args:
        sources: paths, folders, ``bytes`` or binary file objects (one or a list).
        mode: ``auto`` (inline when it fits, else upload), ``inline`` (shrink to fit or fail), ``asset``.
        profile: a built-in profile name, a profile file, or a ``Profile``.
        group: ``all`` (default: everything in one request), ``dir`` or ``file``.
        fetch_urls: fetch ``http(s)://`` sources (off by default: they are refused with ``fetch_blocked``);
            only public addresses are reached, see ``nvmedia.fetch``.
        url_allow: host names or CIDRs that fetching may reach although they are not public.
        cache: reuse earlier uploads of the same bytes (``cache_dir`` default: ``$NVMEDIA_CACHE_DIR``
            or the platform's user cache folder).
        max_memory: bytes (or ``"1G"``, ``"512M"``) that image decodes may hold at once across the
            worker threads (default: a quarter of RAM); an image whose decode alone needs more is
            ``too_large``.
        output_cache: reuse and keep converted files in ``cache_dir``'s output cache: ``True`` (its cap
            from ``$NVMEDIA_OUTPUT_CACHE_SIZE``, else 2 GiB), ``False``, or the cap in bytes.
        resume: an earlier manifest (``nvmedia prepare -o FILE``, or item records you wrote from
            ``items``): inputs whose records there still hold are taken from it instead of being
            processed again. Its records must come from the same options (raises ``ConfigError``
            otherwise), ``group`` included: the command line's default is ``file``, this function's ``all``.
        on_error: ``raise`` the first item's error (after deleting what was uploaded), or ``keep``
            failed items in ``items`` with ``status == "error"``.

    Returns:
        A ``Prepared``; use it as a context manager to delete the uploaded assets afterwards.

    Raises:
        NVMediaError: an input failed (with ``on_error="raise"``), or the configuration is unusable.

    Example:
        >>> with nvmedia.prepare(["cat.heic", "talk.flac"], emulate=True) as prep:  # doctest: +SKIP
        ...     client.chat.completions.create(messages=[prep.message("Describe")], extra_headers=prep.headers)
    """
    if isinstance(sources, (str, os.PathLike, bytes, bytearray, memoryview)) or hasattr(sources, "read"):
        source_list: Sequence[SourceLike] = [sources]  # type: ignore[list-item]
    else:
        source_list = list(sources)
    settings = _settings(
        mode=mode,
        profile=profile,
        group=group,
        inline_limit=inline_limit,
        request_limit=request_limit,
        assets_url=assets_url,
        api_key=api_key,
        dry_run=dry_run,
        emulate=emulate,
        keep=keep,
        jobs=jobs,
        cache=cache,
        cache_dir=cache_dir,
        audio_part=audio_part,
        keep_metadata=keep_metadata,
        trim_s=trim_s,
        split_long_audio=split_long_audio,
        max_memory=max_memory,
        output_cache=output_cache,
        fetch_urls=fetch_urls,
        url_allow=url_allow,
    )
    earlier = EarlierManifest.load(Path(resume), settings) if resume is not None else None
    delivery = Delivery(settings)
    items: list[Item] = []
    requests: list[Request] = []
    try:
        for group_items, request in run(source_list, settings, delivery=delivery, progress=progress, resume=earlier):
            items.extend(group_items)
            if request is not None:
                requests.append(request)
    except BaseException:
        prepared = Prepared(items, requests, delivery)
        prepared.__exit__(None, None, None)
        raise
    finally:
        if earlier is not None:
            earlier.close()
    prepared = Prepared(items, requests, delivery)
    if on_error == "raise":
        failed = next((it for it in items if it.status == "error"), None)
        if failed is not None and failed.error is not None:
            prepared.__exit__(None, None, None)
            raise failed.error
    return prepared


async def aprepare(sources: SourceLike | Sequence[SourceLike], **options: Any) -> Prepared:
    """``prepare`` for async code: the work runs in a worker thread, the event loop stays free."""
    return await asyncio.to_thread(prepare, sources, **options)


def inspect(path: str | os.PathLike[str], *, profile: str | Path | Profile | None = None, mode: Mode = "auto") -> Item:
    """What ``path`` is and what ``prepare`` would do with it; nothing is written or sent."""
    prep = prepare(
        [path], profile=profile, mode=mode, dry_run=True, on_error="keep", jobs=1, group="file", output_cache=False
    )
    prep.close()
    return prep.items[0]
