"""``Prepared``: what a ``prepare`` call gives back, and the rules for the assets it uploaded.

**Ownership** (see ``delivery.py`` for the whole picture):

* ``with client.prepare(x) as prep:`` — the assets this call uploaded belong to the block.
  They are deleted when the block ends (concurrently, within ``DELETE_DEADLINE_S``
  seconds in all, 404 counted as deleted), and never handed to anyone else in the
  meantime: they enter no shared cache. Assets reused from the cache are not the
  block's and are never deleted by it.
* ``prep = client.prepare(x)`` then used without a block — long-lived: the uploads enter
  the shared cache (when the result is first used, closed, or collected, or when the
  client closes), and nobody's exit deletes them. ``keep_assets=True`` makes them
  long-lived in a block too. ``prep.delete_assets()`` deletes them by hand.
* After the block, ``content``, ``tags``, ``headers``, ``asset_ids`` and ``message()``
  raise ``ConfigError``: the assets they would name are gone. ``items`` stays readable
  as the record of what happened.

If the with-body raised, its exception propagates unchanged, with a note listing the
ids that could not be deleted; otherwise those ids raise ``CleanupError``.

The async client's calls give the same object (``await aclient.prepare(x)`` is long-lived,
``async with aclient.prepare(x) as prep`` is a block): see ``PrepareCall``.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Collection, Generator
from types import TracebackType
from typing import Any

import anyio

from ._asset_results import DeleteReport
from .delivery import Delivery, Owner, settle_cleanup
from .errors import ConfigError
from .items import Item, Request
from .wire import MediaPart, asset_headers, tags, text_part

DeleteFn = Callable[[Collection[str]], DeleteReport]
AsyncDeleteFn = Callable[[Collection[str]], Awaitable[DeleteReport]]


def _release(delivery: Delivery, on_release: Callable[[], None] | None) -> None:
    """A result nobody holds any more (collected, or closed): its pending uploads are long-lived."""
    delivery.make_long_lived()
    if on_release is not None:
        on_release()


class Prepared:
    """Ready-to-send content for one request (``group="all"``) or several.

    Attributes:
        items: per-input results (the manifest's item records as objects), in input order.
        requests: per-request results: one for the library's default ``group="all"``, or several
            when the inputs need more assets than one request may reference (split in input order;
            ``message()`` then refuses, and ``content``/``headers`` span all of them).

    Example:
        >>> with client.prepare(["cat.heic", "talk.flac"]) as prep:  # doctest: +SKIP
        ...     reply = openai.chat.completions.create(..., messages=[prep.message("Describe.")],
        ...                                            extra_headers=prep.headers)
    """

    def __init__(
        self,
        items: list[Item],
        requests: list[Request],
        delivery: Delivery,
        *,
        delete: DeleteFn | None = None,
        adelete: AsyncDeleteFn | None = None,
        on_release: Callable[[], None] | None = None,
    ) -> None:
        self._items = items
        self.requests = requests
        self._delivery = delivery
        self._delete = delete
        self._adelete = adelete
        self._in_block = False
        self._ended = False
        self._on_release = on_release
        self._finalizer = weakref.finalize(self, _release, delivery, on_release)

    # -- the content ------------------------------------------------------------------------------------------

    def _use(self) -> None:
        """The result is used: after its block it is stale; outside any block it is long-lived from now on."""
        if self._ended:
            raise ConfigError(
                "this Prepared was used after its block ended: the assets it named were deleted",
                hint="use prep.content / prep.headers inside the with block, or prepare with keep_assets=True "
                "(or without a with block) for assets that outlive it",
            )
        if not self._in_block:
            self._delivery.make_long_lived()

    @property
    def items(self) -> list[Item]:
        """Per-input results, in input order (readable after the block too, as the record of what happened)."""
        if not self._ended and not self._in_block:
            self._delivery.make_long_lived()
        return self._items

    @property
    def content(self) -> list[MediaPart]:
        """OpenAI-style content parts of every delivered item, in input order."""
        self._use()
        return [it.part for it in self._items if it.ok and it.part is not None]

    @property
    def tags(self) -> str:
        """The string form: ``<img src="..." /> <audio src="..." />``."""
        self._use()
        return tags(it.tag for it in self._items if it.ok and it.tag)

    @property
    def asset_ids(self) -> list[str]:
        """The asset ids the content references (uploaded by this call, or reused), in input order."""
        self._use()
        return [it.asset_id for it in self._items if it.ok and it.asset_id]

    @property
    def headers(self) -> dict[str, str]:
        """``{"NVCF-INPUT-ASSET-REFERENCES": "id1,id2"}``, or ``{}`` when nothing is an asset."""
        return asset_headers(self.asset_ids)

    @property
    def owner(self) -> Owner:
        """Who owns the uploads now: ``block``, ``long_lived``, or ``pending`` (not decided yet)."""
        return self._delivery.owner

    def message(self, text: str | None = None, *, role: str = "user") -> dict[str, Any]:
        """A chat message: ``{"role": "user", "content": [text part, *content]}``.

        Raises:
            ConfigError: the inputs were split into several requests (more assets than one request
                may reference): build one message per entry of ``Prepared.requests`` instead.
        """
        if len(self.requests) > 1:
            raise ConfigError(
                f"these inputs were split into {len(self.requests)} requests (one request may reference at most "
                "10 assets), so they do not fit one message: see Prepared.requests",
                hint="send one message per request: each of Prepared.requests has its content and headers",
            )
        content: list[Any] = [text_part(text)] if text else []
        content.extend(self.content)
        return {"role": role, "content": content}

    # -- the assets -------------------------------------------------------------------------------------------

    def delete_assets(self) -> None:
        """Delete the assets this call uploaded now (reused ones are left alone); the content is gone after.

        Raises:
            CleanupError: some could not be deleted (their ids are listed).
        """
        if self._delete is None:
            raise ConfigError("this Prepared came from an AsyncClient", hint="await prep.adelete_assets()")
        try:
            report = self._delete(self._delivery.created)
        finally:
            self._end()
        error = settle_cleanup(report, self._delivery, None)
        if error is not None:
            raise error

    async def adelete_assets(self) -> None:
        """``delete_assets`` for a result of the ``AsyncClient`` (shielded from cancellation)."""
        if self._adelete is None:
            raise ConfigError("this Prepared came from a Client", hint="call prep.delete_assets()")
        try:
            with anyio.CancelScope(shield=True):
                report = await self._adelete(self._delivery.created)
        finally:
            self._end()
        error = settle_cleanup(report, self._delivery, None)
        if error is not None:
            raise error

    def close(self) -> None:
        """Done with it, assets kept: uploads not in a block become long-lived (enter the shared cache)."""
        if not self._in_block and not self._ended:
            self._finalizer()

    def _release_with(self, on_release: Callable[[], None]) -> None:
        """Call ``on_release`` once the result is done with (ended, closed or collected): a client of its own."""
        self._finalizer.detach()
        self._on_release = on_release
        self._finalizer = weakref.finalize(self, _release, self._delivery, on_release)

    def _end(self) -> None:
        """The assets are deleted (or being deleted): the content is stale from now on."""
        self._ended = True
        self._in_block = False
        if self._finalizer.detach() is not None and self._on_release is not None:
            self._on_release()

    # -- blocks -----------------------------------------------------------------------------------------------

    def _enter_block(self) -> None:
        if self._ended:
            raise ConfigError("this Prepared's block has ended", hint="prepare again for a new block")
        if self._in_block:
            raise ConfigError("this Prepared is in a block already", hint="enter each result once")
        self._in_block = self._delivery.claim_for_block()

    def __enter__(self) -> Prepared:
        self._enter_block()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._in_block:
            return  # long-lived before the block began: it owns nothing
        if self._delete is None:
            raise ConfigError("use `async with` with an AsyncClient's result", hint="async with aclient.prepare(...)")
        created = self._delivery.created
        try:
            report = self._delete(created) if created else DeleteReport(())
        finally:
            self._end()
        error = settle_cleanup(report, self._delivery, exc)
        if error is not None:
            raise error

    async def _aexit(self, exc: BaseException | None) -> None:
        if not self._in_block:
            return
        assert self._adelete is not None
        created = self._delivery.created
        try:
            with anyio.CancelScope(shield=True):
                report = await self._adelete(created) if created else DeleteReport(())
        finally:
            self._end()
        error = settle_cleanup(report, self._delivery, exc)
        if error is not None:
            raise error

    def __repr__(self) -> str:
        ok = sum(1 for it in self._items if it.ok)
        assets = sum(1 for it in self._items if it.ok and it.asset_id)
        state = "ended" if self._ended else "block" if self._in_block else self._delivery.owner
        return f"<Prepared items={len(self._items)} ok={ok} assets={assets} {state}>"


class PrepareCall:
    """An ``AsyncClient.prepare`` call: awaitable, and an async context manager (as aiohttp's requests are).

    ``await call`` runs it and gives a long-lived ``Prepared``; ``async with call as prep``
    runs it in ``__aenter__`` and gives a ``Prepared`` whose uploads belong to the block
    (deleted, shielded from cancellation, in ``__aexit__``).
    """

    def __init__(
        self,
        run: Callable[[Owner], Awaitable[Prepared]],
        *,
        finish: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._run = run
        self._finish = finish
        self._prepared: Prepared | None = None

    def __await__(self) -> Generator[Any, None, Prepared]:
        return self._awaited().__await__()

    async def _awaited(self) -> Prepared:
        try:
            return await self._run("long_lived")
        finally:
            await self._finished()

    async def _finished(self) -> None:
        if self._finish is not None:
            with anyio.CancelScope(shield=True):
                await self._finish()

    async def __aenter__(self) -> Prepared:
        try:
            self._prepared = await self._run("block")
            self._prepared._enter_block()
        except BaseException:
            await self._finished()
            raise
        return self._prepared

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._prepared is not None:
                await self._prepared._aexit(exc)
        finally:
            await self._finished()
