"""LangChain: ``with_media(llm)`` wraps a ``ChatNVIDIA`` so its messages may name local files and URLs.

``ChatNVIDIA`` (``langchain-nvidia-ai-endpoints``) sends what it is given, with three gaps
for media that this wrapper closes on every call:

* it sends the ``NVCF-INPUT-ASSET-REFERENCES`` header only from ``default_headers`` (per-call
  keyword arguments go into the request body), so the wrapper calls a copy of the model whose
  ``default_headers`` carry this call's assets;
* for models it types as ``vlm`` it replaces that header with one listing only the image
  assets it finds in the messages, which loses audio and video assets: for those models the
  copy's HTTP sessions set the full header on the wire instead;
* it drops ``audio_url`` and ``input_audio`` parts from a message holding no image or video
  part: such a message is sent as text with ``<audio src="..." />`` tags, which the service
  reads the same way.

The messages are rewritten by ``nvmedia.rewrite_messages`` (local paths, ``file://``,
``http(s)`` URLs with ``fetch_urls=True``, data the service would refuse; LangChain's
standard ``image``/``audio``/``video`` blocks with a ``url`` or ``base64`` are read too), and
the assets uploaded for a call are deleted once its answer is complete (or has failed).

Example:
    >>> from langchain_nvidia_ai_endpoints import ChatNVIDIA  # doctest: +SKIP
    >>> chat = with_media(ChatNVIDIA(model="nvidia/nemotron-3-nano-omni-30b-a3b-reasoning"))  # doctest: +SKIP
    >>> chat.invoke([HumanMessage(content=[{"type": "text", "text": "Describe."},
    ...     {"type": "image_url", "image_url": {"url": "photos/cat.heic"}}])]).content  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, Final

try:
    from langchain_core.language_models import LanguageModelInput
    from langchain_core.messages import (
        AIMessage,
        BaseMessage,
        BaseMessageChunk,
        ChatMessage,
        FunctionMessage,
        HumanMessage,
        SystemMessage,
        ToolMessage,
        convert_to_messages,
    )
    from langchain_core.prompt_values import PromptValue
    from langchain_core.runnables import Runnable, RunnableConfig
    from langchain_nvidia_ai_endpoints import ChatNVIDIA
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        f"nvmedia.integrations.langchain needs langchain-core and langchain-nvidia-ai-endpoints ({exc}): "
        "pip install 'nvmedia[langchain]'"
    ) from exc

from ..wire import ASSET_HEADER, tag
from .openai import APrepareFn, PrepareFn, arewrite_messages, rewrite_messages

__all__ = ["MediaChat", "with_media"]

_BLOCK_KINDS: Final = {"image": "image_url", "audio": "audio_url", "video": "video_url"}
_SEEN_AS_MEDIA: Final = frozenset({"image_url", "image", "video_url", "video"})
"""Part types that make ChatNVIDIA keep a list content (and with it, audio parts)."""
_AUDIO_MIMES: Final = {"wav": "audio/wav", "mp3": "audio/mpeg"}


def with_media(
    llm: ChatNVIDIA, *, prepare: PrepareFn | None = None, aprepare: APrepareFn | None = None, **options: Any
) -> MediaChat:
    """A Runnable around ``llm`` whose ``invoke``/``ainvoke``/``stream``/``astream`` accept media anywhere.

    Args:
        llm: a ``ChatNVIDIA`` chat model.
        prepare: the preparation step of sync calls (``nvmedia.prepare`` by default).
        aprepare: the preparation step of async calls (``nvmedia.aprepare`` by default).
        **options: ``rewrite_messages``' options: ``local_root``, ``fetch_urls``, ``url_allow``, ``mode``,
            ``assets_url``, ``api_key``...

    Raises:
        TypeError: ``llm`` is not a ``ChatNVIDIA``.
    """
    if not isinstance(llm, ChatNVIDIA):
        raise TypeError(
            f"with_media wraps a langchain_nvidia_ai_endpoints.ChatNVIDIA, not {type(llm).__name__}; for other "
            "clients, call nvmedia.rewrite_messages and send its headers yourself"
        )
    return MediaChat(llm, prepare=prepare, aprepare=aprepare, options=options)


class MediaChat(Runnable[LanguageModelInput, BaseMessage]):
    """``ChatNVIDIA`` with nvmedia in its upload step (see ``with_media``)."""

    def __init__(
        self,
        llm: ChatNVIDIA,
        *,
        prepare: PrepareFn | None = None,
        aprepare: APrepareFn | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.llm = llm
        self._prepare = prepare
        self._aprepare = aprepare
        self._options = dict(options or {})

    def invoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any) -> BaseMessage:
        messages = _to_messages(input)
        with rewrite_messages(_as_dicts(messages), prepare=self._prepare, **self._options) as rw:
            return self._for_call(rw.headers).invoke(_rewritten(messages, rw.messages), config, **kwargs)

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> BaseMessage:
        messages = _to_messages(input)
        async with await arewrite_messages(_as_dicts(messages), aprepare=self._aprepare, **self._options) as rw:
            return await self._for_call(rw.headers).ainvoke(_rewritten(messages, rw.messages), config, **kwargs)

    def stream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any | None
    ) -> Iterator[BaseMessageChunk]:
        messages = _to_messages(input)
        with rewrite_messages(_as_dicts(messages), prepare=self._prepare, **self._options) as rw:
            yield from self._for_call(rw.headers).stream(_rewritten(messages, rw.messages), config, **kwargs)

    async def astream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any | None
    ) -> AsyncIterator[BaseMessageChunk]:
        messages = _to_messages(input)
        async with await arewrite_messages(_as_dicts(messages), aprepare=self._aprepare, **self._options) as rw:
            async for chunk in self._for_call(rw.headers).astream(_rewritten(messages, rw.messages), config, **kwargs):
                yield chunk

    def _for_call(self, headers: Mapping[str, str]) -> ChatNVIDIA:
        """The model to call with ``headers``: a copy, so that concurrent calls never share them."""
        if not headers:
            return self.llm
        if _typed_vlm(self.llm):
            return _with_wire_headers(self.llm.model_copy(), headers)
        return self.llm.model_copy(update={"default_headers": {**self.llm.default_headers, **headers}})

    def __repr__(self) -> str:
        return f"with_media({self.llm.model!r})"


def _to_messages(input: LanguageModelInput) -> list[BaseMessage]:
    if isinstance(input, PromptValue):
        return input.to_messages()
    if isinstance(input, str):
        return [HumanMessage(content=input)]
    return convert_to_messages(input)


def _role(message: BaseMessage) -> str:
    if isinstance(message, ChatMessage):
        return message.role
    for kind, role in (
        (HumanMessage, "user"),
        (AIMessage, "assistant"),
        (SystemMessage, "system"),
        (ToolMessage, "tool"),
        (FunctionMessage, "function"),
    ):
        if isinstance(message, kind):
            return role
    return message.type


def _as_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """OpenAI-format views of the messages, for ``rewrite_messages`` to search."""
    return [{"role": _role(m), "content": _openai_content(m.content)} for m in messages]


def _openai_content(content: str | list[str | dict[Any, Any]]) -> str | list[Any]:
    if isinstance(content, str):
        return content
    return [_openai_part(block) for block in content]


def _openai_part(block: str | dict[Any, Any]) -> Any:
    """A LangChain content block as an OpenAI-format part (standard media blocks with a URL or base64 data)."""
    if isinstance(block, str):
        return {"type": "text", "text": block}
    part_type = _BLOCK_KINDS.get(str(block.get("type")))
    if part_type is None:
        return block
    url = block.get("url")
    data = block.get("base64", block.get("data"))
    if not isinstance(url, str) and isinstance(data, str):
        url = f"data:{block.get('mime_type', '')};base64,{data}"
    if not isinstance(url, str):
        return block  # a file id or another source the service cannot take: left to the model
    return {"type": part_type, part_type: {"url": url}}


def _rewritten(messages: Sequence[BaseMessage], rewritten: Sequence[Mapping[str, Any]]) -> list[BaseMessage]:
    """The messages with their rewritten content (other fields, tool calls included, as they were)."""
    out: list[BaseMessage] = []
    for message, new in zip(messages, rewritten, strict=True):
        content = _for_chat_nvidia(new["content"])
        out.append(message if content == message.content else message.model_copy(update={"content": content}))
    return out


def _for_chat_nvidia(content: Any) -> Any:
    """Audio parts in a content ChatNVIDIA would flatten to its text: the same as text with audio tags."""
    if not isinstance(content, list):
        return content
    types = {part.get("type") for part in content if isinstance(part, dict)}
    if not types & {"audio_url", "input_audio"} or types & _SEEN_AS_MEDIA:
        return content
    pieces: list[str] = []
    for part in content:
        if isinstance(part, str):
            pieces.append(part)
        elif part.get("type") == "text":
            pieces.append(str(part.get("text", "")))
        elif part.get("type") == "audio_url":
            value = part["audio_url"]
            pieces.append(tag("audio", value if isinstance(value, str) else value["url"]))
        elif part.get("type") == "input_audio":
            audio = part["input_audio"]
            mime = _AUDIO_MIMES.get(str(audio.get("format")), "audio/wav")
            pieces.append(tag("audio", f"data:{mime};base64,{audio['data']}"))
    return " ".join(p for p in pieces if p)


def _typed_vlm(llm: ChatNVIDIA) -> bool:
    """True when ChatNVIDIA's model table types the model ``vlm`` (or ``nv-vlm``): it then rewrites the header."""
    model = getattr(getattr(llm, "_client", None), "model", None)
    model_type = getattr(model, "model_type", None)
    return isinstance(model_type, str) and "vlm" in model_type


def _with_wire_headers(llm: ChatNVIDIA, headers: Mapping[str, str]) -> ChatNVIDIA:
    """``llm`` (a copy) whose HTTP sessions send ``headers`` on every POST, over what ChatNVIDIA computed."""
    try:
        sync_client = llm._client.model_copy()
        async_client = llm._async_client.model_copy()
        make_session = sync_client.get_session_fn
        make_async_session = async_client.get_async_session_fn
    except AttributeError as exc:
        raise TypeError(
            f"this version of langchain-nvidia-ai-endpoints is not one nvmedia knows how to send the "
            f"{ASSET_HEADER} header through for models it types 'vlm' ({exc})"
        ) from None
    sync_client.get_session_fn = lambda: _HeaderSession(make_session(), headers)
    async_client.get_async_session_fn = lambda: _HeaderSession(make_async_session(), headers)
    llm._client = sync_client
    llm._async_client = async_client
    return llm


class _HeaderSession:
    """A ``requests.Session`` or ``aiohttp.ClientSession`` whose POSTs carry ``headers`` (case-insensitively set)."""

    def __init__(self, session: Any, headers: Mapping[str, str]) -> None:
        self._session = session
        self._headers = dict(headers)

    def post(self, *args: Any, **kwargs: Any) -> Any:
        names = {name.lower() for name in self._headers}
        sent = {k: v for k, v in dict(kwargs.get("headers") or {}).items() if k.lower() not in names}
        kwargs["headers"] = {**sent, **self._headers}
        return self._session.post(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)
