"""Request assembly: which items share a request, inline or asset, and what each request sends.

Pure bookkeeping over items (no network): ``groups`` orders sources into requests,
``plan_requests`` decides each item's delivery (``plan.plan_request``), splitting a
group that one request cannot hold into several, ``deliver_inline``
builds an inline item's data URI, ``attach_asset`` an uploaded item's reference, and
``finish_request`` gives a request's items their header and the request record once
its uploads are over. The sync pipeline, the async client and Ray all call these.
"""

from __future__ import annotations

from pathlib import Path

from .errors import NVMediaError, PlanError
from .items import Item, Request
from .normalize_stage import release
from .plan import InlineShare, plan_request
from .settings import Settings
from .sources import Source
from .wire import asset_headers, asset_uri, b64_len, b64encode, inline_uri, media_part, tag, tags


def groups(sources: list[Source]) -> list[list[int]]:
    """The indexes of the sources of each request, requests in order of their first source."""
    order: dict[str, list[int]] = {}
    for index, source in enumerate(sources):
        order.setdefault(source.group, []).append(index)
    return list(order.values())


def media_per_group(sources: list[Source]) -> dict[str, int]:
    """How many sources of each request are read (not skipped without reading)."""
    counts = {s.group: 0 for s in sources}
    for s in sources:
        if s.skip_reason is None:
            counts[s.group] += 1
    return counts


def inline_share(settings: Settings, n_media: int) -> InlineShare | None:
    """In inline mode, the request budget shared by its ``n_media`` items; None otherwise."""
    if settings.mode != "inline":
        return None
    return InlineShare(n_media, settings.effective_inline_limit, settings.effective_request_limit)


def plan_group(items: list[Item], settings: Settings) -> None:
    """Decide inline or asset for each ``ok`` item of one request (the request fails as a whole if it cannot)."""
    media = [it for it in items if it.ok]
    if not media:
        return
    sizes = [b64_len(it.output.bytes) for it in media if it.output is not None]
    try:
        plan = plan_request(
            sizes,
            mode=settings.mode,
            inline_limit=settings.effective_inline_limit,
            request_limit=settings.effective_request_limit,
            max_assets=settings.profile.max_assets,
        )
    except NVMediaError as exc:
        for it in media:
            it.fail(exc)
        return
    for it, delivery in zip(media, plan.deliveries, strict=True):
        it.delivery = delivery
    for index in plan.promoted:
        media[index].warnings.append("uploaded as an asset to keep the request under --request-limit")


def plan_requests(items: list[Item], settings: Settings) -> list[list[Item]]:
    """Plan one group's items as requests: one, or (``group`` dir or all) several when one cannot hold them.

    Items that need more assets than one request may reference become consecutive
    requests in input order, each within the limits (a request's inline items still fit
    its budget, and it takes at most ``max_assets`` assets). With ``group="file"`` a
    file's pieces always share one request (as before, ``too_many_assets`` when they cannot).
    """
    if settings.group == "file" or _fits(items, settings):
        plan_group(items, settings)
        return [items]
    requests: list[list[Item]] = []
    current: list[Item] = []
    for item in items:
        if current and item.ok and not _fits([*current, item], settings):
            requests.append(current)
            current = []
        current.append(item)
    requests.append(current)
    for request in requests:
        plan_group(request, settings)
    return requests


def _fits(items: list[Item], settings: Settings) -> bool:
    """Whether these items can be planned as one request (within its asset count)."""
    sizes = [b64_len(it.output.bytes) for it in items if it.ok and it.output is not None]
    try:
        plan_request(
            sizes,
            mode=settings.mode,
            inline_limit=settings.effective_inline_limit,
            request_limit=settings.effective_request_limit,
            max_assets=settings.profile.max_assets,
        )
    except PlanError:
        return False
    except NVMediaError:
        return True  # an item that cannot be sent at all fails in plan_group, whatever the split
    return True


def deliver_inline(item: Item, settings: Settings) -> None:
    """Give an inline item its data URI, part and tag (reading and encoding its file unless already encoded)."""
    assert item.output is not None and item.output_path is not None and item.kind is not None
    b64 = item.b64 if item.b64 is not None else b64encode(item.output_path.read_bytes())
    item.b64 = None
    url = inline_uri(item.output.mime, b64)
    item.delivery = "inline"
    item.part = media_part(item.kind, item.output.mime, url, audio_part=settings.audio_part, b64=b64)
    item.tag = tag(item.kind, url)


def deliver_inline_items(items: list[Item], settings: Settings) -> None:
    """``deliver_inline`` for each inline item of a planned request."""
    for it in items:
        if it.ok and it.delivery == "inline":
            deliver_inline(it, settings)


def to_upload(items: list[Item], settings: Settings) -> list[Item]:
    """The items of a planned request that go as assets (none on a dry run)."""
    if settings.dry_run:
        return []
    return [it for it in items if it.ok and it.delivery == "asset"]


def attach_asset(item: Item, asset_id: str) -> None:
    """Give an uploaded (or reused) item its asset reference, part and tag."""
    assert item.output is not None and item.kind is not None
    item.asset_id = asset_id
    url = asset_uri(item.output.mime, asset_id)
    item.part = media_part(item.kind, item.output.mime, url)
    item.tag = tag(item.kind, url)


def finish_request(items: list[Item], settings: Settings, workdir: Path) -> tuple[list[Item], Request | None]:
    """Once a request's uploads are over: its items' header, the request record, and their files released.

    From here on a record is all that is left of each item.
    """
    ids = [it.asset_id for it in items if it.ok and it.asset_id]
    headers = asset_headers(ids)
    for it in items:
        if it.ok and not (settings.dry_run and it.delivery == "asset"):
            it.headers = headers
    request = request_for(items) if settings.group != "file" else None
    _release_files(items, workdir)
    return items, request


def salvage(items: list[Item], settings: Settings, workdir: Path) -> tuple[list[Item], Request | None]:
    """A planned request after an interruption: its items whose delivery completed (uploads included).

    Items whose upload never ran are left out; the request record is written only when none was.
    """
    delivered = [
        it for it in items if not (it.ok and it.delivery == "asset" and not settings.dry_run and it.asset_id is None)
    ]
    complete = len(delivered) == len(items)
    ids = [it.asset_id for it in delivered if it.ok and it.asset_id]
    for it in delivered:
        if it.ok and not (settings.dry_run and it.delivery == "asset"):
            it.headers = asset_headers(ids)
    request = request_for(delivered) if settings.group != "file" and complete else None
    _release_files(items, workdir)
    return delivered, request


def _release_files(items: list[Item], workdir: Path) -> None:
    for it in items:
        release(it, workdir)
        it.b64 = None


def request_for(items: list[Item]) -> Request | None:
    """The request record of these items (their parts, tags and header), or None for no items."""
    included = [it for it in items if it.ok and it.part is not None]
    if not items:
        return None
    ids = [it.asset_id for it in included if it.asset_id]
    return Request(
        sources=[it.source for it in included],
        content=[it.part for it in included if it.part is not None],
        tags=tags(it.tag for it in included if it.tag),
        headers=asset_headers(ids),
    )
