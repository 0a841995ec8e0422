"""Inline or asset: the delivery plan for one request. Pure, no I/O.

Rules, in order:

1. ``mode="asset"``: every item is uploaded.
2. ``mode="inline"``: every item is inline; an item whose base64 is not under the
   inline limit, or a request whose inline total is not under the request limit,
   is ``cannot_fit_inline`` (the normalizer was already asked to shrink each item
   to ``inline_budget()``).
3. ``mode="auto"``: an item is inline when its base64 length is under the inline
   limit; then, while the inline total is not under the request limit, the largest
   inline item is promoted to an asset.
4. A request may reference at most ``max_assets`` assets (10 UUIDs fill the
   370-character header): more is ``too_many_assets``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .errors import MediaError, PlanError
from .option_table import ref

Mode = Literal["auto", "inline", "asset"]
Delivery = Literal["inline", "asset"]
MODES: tuple[Mode, ...] = ("auto", "inline", "asset")


@dataclass(frozen=True)
class Plan:
    """The decision for one request.

    Attributes:
        deliveries: ``inline`` or ``asset`` per item, in the items' order.
        promoted: indexes of items that fit inline alone but were uploaded to keep the request under its limit.
        inline_chars: base64 characters the request carries inline.
    """

    deliveries: tuple[Delivery, ...]
    promoted: tuple[int, ...] = ()
    inline_chars: int = 0

    @property
    def asset_count(self) -> int:
        return sum(1 for d in self.deliveries if d == "asset")


@dataclass(frozen=True)
class InlineShare:
    """What one item of an inline request may use: the request's budget shared by its items.

    Attributes:
        items: how many media items the request carries.
        inline_limit: an item's own limit (base64 characters).
        request_limit: the limit of the request's inline items together.
    """

    items: int
    inline_limit: int
    request_limit: int

    def each(self, pieces: int = 1) -> int:
        """The budget of each item when one of them is sent as ``pieces`` pieces (split audio)."""
        return inline_budget(self.items - 1 + pieces, inline_limit=self.inline_limit, request_limit=self.request_limit)


def inline_budget(n_items: int, *, inline_limit: int, request_limit: int) -> int:
    """The base64 length each of ``n_items`` must stay under for the request to go inline.

    The request budget is shared equally: simple to explain, and it never asks one
    item to shrink because another happens to be large.
    """
    if n_items <= 0:
        return inline_limit
    share = request_limit // n_items
    if n_items > 1:
        share -= 1  # the items' sum must stay strictly under the request limit
    return max(0, min(inline_limit, share))


def plan_request(
    b64_sizes: Sequence[int],
    *,
    mode: Mode = "auto",
    inline_limit: int,
    request_limit: int,
    max_assets: int = 10,
) -> Plan:
    """Decide the delivery of each item of one request.

    Args:
        b64_sizes: the base64 length of each item's normalized bytes.
        mode: ``auto``, ``inline`` or ``asset``.
        inline_limit: an item is inline only when its base64 length is under this.
        request_limit: the inline items' total must stay under this.
        max_assets: how many assets the request may reference.

    Raises:
        MediaError: ``cannot_fit_inline`` in inline mode.
        PlanError: ``too_many_assets``.

    Example:
        >>> plan_request([100, 250_000], inline_limit=180_000, request_limit=180_000).deliveries
        ('inline', 'asset')
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    n = len(b64_sizes)
    if mode == "asset":
        deliveries: list[Delivery] = ["asset"] * n
        _check_asset_count(n, max_assets)
        return Plan(tuple(deliveries))
    if mode == "inline":
        too_big = [s for s in b64_sizes if s >= inline_limit]
        if too_big:
            raise MediaError(
                f"an item needs {max(too_big):,} base64 characters inline; the inline limit is {inline_limit:,}",
                code="cannot_fit_inline",
                hint=f"use {ref('mode', 'auto')} to upload what does not fit, or raise {ref('inline_limit')}",
            )
        total = sum(b64_sizes)
        if n and total >= request_limit:
            raise MediaError(
                f"the request carries {total:,} base64 characters inline; the request limit is {request_limit:,}",
                code="cannot_fit_inline",
                hint=f"use {ref('group', 'file')} to send items in separate requests, "
                f"or {ref('mode', 'auto')} to upload some",
            )
        return Plan(tuple("inline" for _ in range(n)), inline_chars=total)

    deliveries = ["inline" if s < inline_limit else "asset" for s in b64_sizes]
    total = sum(s for s, d in zip(b64_sizes, deliveries, strict=True) if d == "inline")
    promoted: list[int] = []
    # Largest first; ties broken by position so the plan is deterministic.
    candidates = sorted((i for i in range(n) if deliveries[i] == "inline"), key=lambda i: (-b64_sizes[i], i))
    for i in candidates:
        if total < request_limit:
            break
        deliveries[i] = "asset"
        total -= b64_sizes[i]
        promoted.append(i)
    _check_asset_count(sum(1 for d in deliveries if d == "asset"), max_assets)
    return Plan(tuple(deliveries), tuple(promoted), total)


def _check_asset_count(count: int, max_assets: int) -> None:
    if count > max_assets:
        raise PlanError(
            f"the request needs {count} assets; one request may reference at most {max_assets}"
            f" (the {max_assets}-UUID NVCF-INPUT-ASSET-REFERENCES header)",
            code="too_many_assets",
            hint=f"use {ref('group', 'file')} (or {ref('group', 'dir')}) to split the inputs into several requests",
        )
