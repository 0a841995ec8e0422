"""Rewrite an OpenAI-format conversation so the service accepts every media reference in it.

For clients that build their own messages (the ``openai`` SDK, LangChain, a raw ``httpx``
request) and want nvmedia only in their upload step::

    with nvmedia.rewrite_messages(messages, fetch_urls=True) as rw:
        client.chat.completions.create(model=..., messages=rw.messages, extra_headers=rw.headers)
    # leaving the block deletes the assets the call uploaded

Every reference is found (``nvmedia.messages``: parts anywhere, tags in user messages; a
tag in a model's answer is text) and resolved (``resolve.py``) before anything is prepared,
so a bad reference, a media part outside a user message, or a conversation
that needs more assets than one request may carry is refused before any upload. The
sources left to prepare (each file, URL or piece of data once) go through one ``prepare``
call as one request: the preparation step is a parameter (``prepare=``/``aprepare=``, by
default ``nvmedia.prepare``/``nvmedia.aprepare``), so a client object can hand in its own.

The sync and async functions drive one generator (``_rewrite_flow``), which yields the
``prepare`` calls it needs and receives their results, the way httpx's ``Auth.auth_flow``
serves both.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol

from ..errors import ConfigError, InputError, NVMediaError, PlanError
from ..messages import Media, Reference, apply_replacements, find_references, parse_data_uri
from ..profiles import get_profile
from ..wire import asset_headers, inline_uri
from .resolve import Context, Keep, Prepare, Target, keep_to_prepare, resolve

if TYPE_CHECKING:
    from ..items import Item
    from ..prepared import Prepared

__all__ = ["PrepareFn", "APrepareFn", "Rewritten", "arewrite_messages", "rewrite_messages"]

_UNCAPPED_ASSETS: Final = 1 << 30
"""The asset cap of a counting pass: the plan is made in full, and counted against the real cap."""
_REFUSED_OPTIONS: Final = {
    "dry_run": "rewritten messages must name delivered media; use nvmedia.prepare(..., dry_run=True) to plan",
    "on_error": "every reference must be delivered, so a failed one always raises",
    "resume": "a conversation is prepared afresh (converted files still come from the output cache)",
}


class PreparedLike(Protocol):
    """What ``rewrite_messages`` needs from a preparation: ``nvmedia.Prepared`` and the clients' results."""

    @property
    def items(self) -> list[Item]: ...

    def delete_assets(self) -> None: ...

    def close(self) -> None: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> object: ...


PrepareFn = Callable[..., "Prepared"]
"""A callable with ``nvmedia.prepare``'s signature: ``(sources, **options) -> Prepared``."""
APrepareFn = Callable[..., Awaitable["Prepared"]]
"""A callable with ``nvmedia.aprepare``'s signature: ``await (sources, **options) -> Prepared``."""


class Rewritten:
    """The result of ``rewrite_messages``: the conversation ready to send, and what it took.

    As a context manager (``with`` or ``async with``), leaving the block deletes the assets this
    call uploaded, and only those: assets the messages already named, or that were reused from
    the cache, stay. Unpacking gives the older ``(messages, headers)`` pair.

    Attributes:
        messages: a new list of messages; the one given is never modified.
        asset_ids: every asset the messages reference, in order of first appearance, once each
            (the ones they already named and the ones uploaded now).
        items: the per-input results of the preparation (one per piece of a split recording).
    """

    def __init__(
        self, messages: list[Any], asset_ids: list[str], items: list[Item], prepared: PreparedLike | None
    ) -> None:
        self.messages = messages
        self.asset_ids = asset_ids
        self.items = items
        self._prepared = prepared
        self._exit_block: Callable[..., Awaitable[Any]] | None = None
        """An ``AsyncClient`` call's ``__aexit__``: ends the block its uploads belong to."""

    @property
    def headers(self) -> dict[str, str]:
        """``{"NVCF-INPUT-ASSET-REFERENCES": "id1,id2"}`` for every asset referenced, or ``{}``."""
        return asset_headers(self.asset_ids)

    @property
    def uploaded_ids(self) -> list[str]:
        """The assets this call uploaded (what leaving the block deletes)."""
        return list(dict.fromkeys(it.asset_id for it in self.items if it.uploaded and it.asset_id))

    def delete_assets(self) -> None:
        """Delete the assets this call uploaded (by hand, without a ``with`` block)."""
        if self._prepared is not None:
            self._prepared.delete_assets()

    def close(self) -> None:
        """Release the preparation's connections without deleting anything."""
        if self._prepared is not None:
            self._prepared.close()

    def __iter__(self) -> Iterator[Any]:
        """``messages, headers = rewrite_messages(...)``, as before ``Rewritten`` existed."""
        return iter((self.messages, self.headers))

    def __enter__(self) -> Rewritten:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._prepared is not None:
            self._prepared.__exit__(exc_type, exc, tb)

    async def __aenter__(self) -> Rewritten:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        prepared = self._prepared
        if prepared is None:
            return
        if self._exit_block is not None:
            await self._exit_block(exc_type, exc, tb)
            return
        import anyio

        # Deleting is network I/O: off the event loop, and finished even if the caller is cancelled.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(prepared.__exit__, exc_type, exc, tb)

    def __repr__(self) -> str:
        return f"<Rewritten messages={len(self.messages)} assets={len(self.asset_ids)} items={len(self.items)}>"


def rewrite_messages(
    messages: Sequence[Mapping[str, Any]],
    *,
    local_root: str | os.PathLike[str] | None = None,
    prepare: PrepareFn | None = None,
    **options: Any,
) -> Rewritten:
    """Make every media reference in a chat conversation one the service accepts.

    References are list parts (``image_url``, ``video_url``, ``audio_url``, ``input_audio``) and
    ``<img|audio|video src=...>`` tags in a user message's string content or text parts (in other
    messages, such as a model's answer holding HTML, a tag is text and left as it is). Each may name a local path
    (``~`` expanded), a ``file://`` URL, an ``http(s)`` URL (fetched with ``fetch_urls=True``),
    a ``data:`` URI, or an asset already uploaded (``data:<mime>;asset_id,<uuid>``). Local files,
    URLs, and data the service would refuse (a format it does not take, over the inline limit)
    are normalized, inlined or uploaded in one request; a split recording's pieces all take the
    reference's place, in order. Inline data the service accepts stays as it is, and counts
    against the request's inline budget.

    Args:
        messages: OpenAI-format messages; never modified.
        local_root: read local paths only under this folder (links and ``..`` resolved; relative paths
            start there). For servers that pass on messages written by others: a path outside gets the
            same error whether it exists or not.
        prepare: the preparation step (``nvmedia.prepare`` by default; a client's ``prepare`` works too).
        **options: ``prepare``'s options (``fetch_urls``, ``url_allow``, ``mode``, ``profile``,
            ``assets_url``, ``api_key``, ``cache``, ``split_long_audio``...). ``group`` is always ``all``:
            a conversation is one request.

    Returns:
        A ``Rewritten``: ``.messages``, ``.headers``, ``.asset_ids``, ``.items``. Use it as a context
        manager to delete what it uploaded; ``messages, headers = rewrite_messages(...)`` also works.

    Raises:
        InputError: a media part in a ``system``, ``assistant`` or ``tool`` message; a missing, unreadable or
            outside-``local_root`` file; a tag whose quote never closes. Nothing is uploaded. The error of a
            tag says how to send markup as text (``&lt;img ...>``), in case the user only meant to show it.
        FetchError: an ``http(s)`` URL without ``fetch_urls=True``, a blocked address, another scheme.
        PlanError: ``too_many_assets`` when the conversation needs more assets than one request may
            reference, counted before anything is uploaded.
        NVMediaError: a file that cannot be made acceptable (with its location in the messages).

    Example:
        >>> messages = [{"role": "user", "content": "What is this? <img src='cat.heic'>"}]
        >>> with nvmedia.rewrite_messages(messages) as rw:  # doctest: +SKIP
        ...     client.chat.completions.create(model=m, messages=rw.messages, extra_headers=rw.headers)
    """
    if prepare is None:
        from ..api import prepare as default_prepare

        prepare = default_prepare
    flow = _rewrite_flow(messages, local_root, options)
    try:
        call = next(flow)
        while True:
            try:
                result = _entered(prepare(call.sources, **call.options))
            except NVMediaError as exc:
                call = flow.throw(exc)
                continue
            try:
                call = flow.send(result)
            except StopIteration:
                raise
            except BaseException as exc:
                result.__exit__(type(exc), exc, exc.__traceback__)  # delete what was uploaded for nothing
                raise
    except StopIteration as done:
        rewritten: Rewritten = done.value
        return rewritten


def _entered(result: PreparedLike) -> PreparedLike:
    """The preparation, its uploads claimed for the ``Rewritten``'s block (deleted when it ends, never cached).

    A ``Prepared`` used outside any block would be long-lived: in the shared cache, deleted by nobody.
    """
    enter = getattr(result, "__enter__", None)
    if enter is not None:
        enter()
    return result


async def arewrite_messages(
    messages: Sequence[Mapping[str, Any]],
    *,
    local_root: str | os.PathLike[str] | None = None,
    aprepare: APrepareFn | None = None,
    **options: Any,
) -> Rewritten:
    """``rewrite_messages`` for async code, over ``nvmedia.aprepare`` (or the ``aprepare`` given).

    Use the result with ``async with`` to delete what it uploaded without blocking the event loop.
    """
    if aprepare is None:
        from ..api import aprepare as default_aprepare

        aprepare = default_aprepare
    flow = _rewrite_flow(messages, local_root, options)
    try:
        call = next(flow)
        while True:
            pending: Any = aprepare(call.sources, **call.options)
            exit_block: Callable[..., Awaitable[Any]] | None = None
            try:
                if hasattr(pending, "__aenter__"):  # an AsyncClient's call: its uploads belong to the block
                    result = await pending.__aenter__()
                    exit_block = pending.__aexit__
                else:
                    result = _entered(await pending)
            except NVMediaError as exc:
                call = flow.throw(exc)
                continue
            try:
                call = flow.send(result)
            except StopIteration as done:
                done.value._exit_block = exit_block
                raise
            except BaseException as exc:
                import anyio

                with anyio.CancelScope(shield=True):  # delete what was uploaded for nothing
                    if exit_block is not None:
                        await exit_block(type(exc), exc, exc.__traceback__)
                    else:
                        await anyio.to_thread.run_sync(result.__exit__, type(exc), exc, exc.__traceback__)
                raise
            if exit_block is not None:
                await exit_block(None, None, None)  # a counting pass, over: it uploaded nothing
    except StopIteration as done:
        rewritten: Rewritten = done.value
        return rewritten


@dataclass
class _Call:
    """One ``prepare`` call the flow needs."""

    sources: list[str | bytes]
    options: dict[str, Any] = field(default_factory=dict)


def _rewrite_flow(
    messages: Sequence[Mapping[str, Any]], local_root: str | os.PathLike[str] | None, options: dict[str, Any]
) -> Generator[_Call, PreparedLike, Rewritten]:
    """Find, check and resolve every reference, then ask for the ``prepare`` calls it takes."""
    messages = list(messages)
    for name, why in _REFUSED_OPTIONS.items():
        if name in options:
            raise ConfigError(f"rewrite_messages does not take {name}=: {why}", hint=f"drop {name}=")
    if options.get("group", "all") != "all":
        raise ConfigError(
            f"rewrite_messages sends a conversation as one request; group={options['group']!r} cannot apply",
            hint="drop group=, or call nvmedia.prepare for other groupings",
        )
    refs = find_references(messages)
    _refuse_media_outside_user_messages(refs)
    profile = get_profile(options.get("profile"))
    inline_limit = options.get("inline_limit") or profile.inline_limit
    ctx = Context(
        local_root=os.path.realpath(local_root) if local_root is not None else None,
        fetch_urls=bool(options.get("fetch_urls", False)),
        profile=profile,
        inline_limit=inline_limit,
        mode=options.get("mode", "auto"),
    )
    targets: dict[Reference, Target] = {ref: _resolve(ref, ctx) for ref in refs}
    request_limit = options.get("request_limit") or profile.request_limit or inline_limit
    kept_chars = sum(t.inline_chars for t in targets.values() if isinstance(t, Keep))
    if kept_chars >= request_limit:
        # Inline data already in the conversation fills the request: plan it with the rest (the largest go up).
        targets = {
            ref: keep_to_prepare(t, f"the inline data at {ref.where}") if isinstance(t, Keep) and t.data else t
            for ref, t in targets.items()
        }
        kept_chars = 0
    known_ids = list(dict.fromkeys(t.asset_id for t in targets.values() if isinstance(t, Keep) and t.asset_id))
    sources: dict[object, Prepare] = {}
    for target in targets.values():
        if isinstance(target, Prepare):
            sources.setdefault(target.key, target)
    if not sources:
        _check_asset_count(len(known_ids), 0, profile.max_assets)
        return Rewritten(apply_replacements(messages, {}), known_ids, [], None)

    order = list(sources)
    where: dict[object, str] = {}
    for ref, target in targets.items():
        if isinstance(target, Prepare):
            where.setdefault(target.key, ref.where)
    names = {_pipeline_name(sources[key].source, i): sources[key].shown for i, key in enumerate(order)}
    # Failed items are kept (not raised by prepare) so that each error can name its place in the messages.
    call = _Call([sources[key].source for key in order], {**options, "group": "all", "on_error": "keep"})
    if kept_chars:
        call.options["request_limit"] = request_limit - kept_chars
    room = profile.max_assets - len(known_ids)
    if len(order) > room or options.get("split_long_audio"):
        # More sources than the request has room for: count the assets a full plan needs, uploading nothing.
        call.options["profile"] = profile.replace(max_assets=_UNCAPPED_ASSETS)
        try:
            planned = yield _Call(call.sources, {**call.options, "dry_run": True})
        except NVMediaError as exc:
            raise _restated(exc, names) from None
        try:
            _raise_first_failure(order, _items_per_source(planned.items, len(order)), sources, where, names)
            needed = sum(1 for it in planned.items if it.ok and it.delivery == "asset")
        finally:
            planned.close()
        _check_asset_count(len(known_ids), needed, profile.max_assets)
    try:
        prepared = yield call
    except NVMediaError as exc:
        raise _restated(exc, names) from None
    # Raising from here on, the caller (rewrite_messages) deletes what was uploaded for nothing.
    groups = _items_per_source(prepared.items, len(order))
    _raise_first_failure(order, groups, sources, where, names)
    media = {key: [_media(it, sources[key].shown) for it in items] for key, items in zip(order, groups, strict=True)}
    replacements = {ref: media[t.key] for ref, t in targets.items() if isinstance(t, Prepare)}
    asset_ids = _asset_ids(refs, targets, replacements)
    _check_asset_count(len(known_ids), len(asset_ids) - len(known_ids), profile.max_assets)
    return Rewritten(apply_replacements(messages, replacements), asset_ids, list(prepared.items), prepared)


def _resolve(ref: Reference, ctx: Context) -> Target:
    """``resolve``, whose error for a tag also says how to send it as text (a user may only be showing markup)."""
    try:
        return resolve(ref, ctx)
    except NVMediaError as exc:
        if ref.tag is not None:
            name = ref.tag.name.lower()
            as_text = f"to send the <{name}> tag as text, not media, write it as &lt;{name} ...&gt;"
            exc.hint = f"{exc.hint}; {as_text}" if exc.hint else as_text
        raise


def _refuse_media_outside_user_messages(refs: Sequence[Reference]) -> None:
    """Media parts only in user messages: the service refuses the request otherwise, so nothing is uploaded for it."""
    for ref in refs:
        if ref.role != "user":
            role = ref.role or "role-less"
            article = "an" if role[0].lower() in "aeiou" else "a"
            raise InputError(
                f"{ref.where}: {article} {role} message references media ({ref.shown}); the service "
                "accepts media only in user messages",
                code="unreadable",
                hint='move the media into a message with "role": "user"',
            )


def _check_asset_count(known: int, new: int, cap: int) -> None:
    if known + new <= cap:
        return
    already = f"{known} already referenced, {new} to upload" if known else f"{new} to upload"
    raise PlanError(
        f"the conversation needs {known + new} assets ({already}) after what fits inline; one request may "
        f"reference at most {cap} (the NVCF-INPUT-ASSET-REFERENCES header)",
        code="too_many_assets",
        hint="send fewer or smaller media in one conversation, or mode='inline' to shrink them all to fit inline",
    )


def _pipeline_name(source: str | bytes, index: int) -> str:
    """The name ``prepare`` gives a source in its messages."""
    return source if isinstance(source, str) else f"<bytes #{index}>"


def _restated(exc: NVMediaError, names: Mapping[str, str]) -> NVMediaError:
    """``exc`` naming references as the messages wrote them, not as they were handed to ``prepare``."""
    message = exc.message
    for name, written in sorted(names.items(), key=lambda kv: -len(kv[0])):
        message = message.replace(name, written)
    exc.message = message
    exc.args = (message,)
    return exc


def _raise_first_failure(
    order: Sequence[object],
    groups: Sequence[Sequence[Item]],
    sources: Mapping[object, Prepare],
    where: Mapping[object, str],
    names: Mapping[str, str],
) -> None:
    """Raise the first failed item's error, saying where its reference is and how it was written."""
    for key, items in zip(order, groups, strict=True):
        for item in items:
            if item.status == "error" and item.error is not None:
                exc = _restated(item.error, names)
                shown = sources[key].shown
                prefix = f"{where[key]}: " + ("" if exc.message.startswith(shown) else f"{shown}: ")
                exc.message = prefix + exc.message
                exc.args = (exc.message,)
                raise exc


def _items_per_source(items: Sequence[Item], count: int) -> list[list[Item]]:
    """``prepare``'s items grouped by source, in order: one each, or all the pieces of a split recording."""
    groups: list[list[Item]] = []
    at = 0
    while at < len(items):
        piece = items[at].piece
        pieces = piece[1] if piece is not None else 1
        groups.append(list(items[at : at + pieces]))
        at += pieces
    if len(groups) != count:
        raise NVMediaError(
            f"prepare returned {len(groups)} results for {count} sources",
            code="asset_api_error",
            hint="the preparation step passed as prepare= must return one item per source, in order",
        )
    return groups


def _media(item: Item, shown: str) -> Media:
    part = item.part
    if not item.ok or part is None or item.kind is None or item.output is None:
        raise NVMediaError(
            f"{shown} was not delivered (status {item.status}{': ' + item.reason if item.reason else ''})",
            code="asset_api_error",
            hint="check the preparation options: the media must be inlined or uploaded",
        )
    if part["type"] == "input_audio":
        return Media(item.kind, inline_uri(item.output.mime, part["input_audio"]["data"]))
    if part["type"] == "image_url":
        return Media(item.kind, part["image_url"]["url"])
    if part["type"] == "video_url":
        return Media(item.kind, part["video_url"]["url"])
    return Media(item.kind, part["audio_url"]["url"])


def _asset_ids(
    refs: Sequence[Reference], targets: Mapping[Reference, Target], replacements: Mapping[Reference, Sequence[Media]]
) -> list[str]:
    """Every asset id the rewritten messages name, in order of first appearance, once each."""
    ids: list[str] = []
    for ref in refs:
        target = targets[ref]
        if isinstance(target, Keep):
            if target.asset_id is not None:
                ids.append(target.asset_id)
            continue
        for piece in replacements[ref]:
            data = parse_data_uri(piece.url)
            if data is not None and data.encoding == "asset_id":
                ids.append(data.payload)
    return list(dict.fromkeys(ids))
