"""Chat-completions requests with media: build them, send them, read the answer whole or streamed.

``ChatClient`` posts to ``{base_url}/chat/completions`` (OpenAI's shape, as NVIDIA's
hosted models take it) with the API key as a Bearer token, which goes only over
https or to this machine (``check_key_transport``). 429 and 5xx answers and
connection failures are retried through the asset client's tenacity policy
(``nvmedia.assets.retry_policy``: ``Retry-After`` honoured, jittered backoff,
bounded); a streamed answer is never retried once it has started. Streams are
server-sent events ending with ``data: [DONE]``; a stream that ends without it
is an error, not a short answer. Reasoning (``reasoning_content``, or
``reasoning``) is kept apart from the answer.

``prepare_media`` is the one place chat and batch call the preparation front
door, and ``ask`` is one question end to end: prepare the media, send, and
delete what was uploaded, whatever happens.

Example:
    >>> with ChatClient(api_key="nvapi-...") as client:  # doctest: +SKIP
    ...     answer = ask("Describe this.", ["cat.heic"], client=client, params=ChatParams())
    ...     print(answer.text)
"""

from __future__ import annotations

import functools
import http
import json
import logging
import math
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlsplit

import httpx
import tenacity

from ._asset_endpoint import is_loopback_host
from ._asset_retry import RetryableStatus
from ._redact import error_detail
from .assets import parse_retry_after, redact_url, retry_policy
from .errors import ChatError, ConfigError, NVMediaError, PlanError
from .option_table import ref
from .wire import MediaPart, text_part

if TYPE_CHECKING:
    from .client import Client
    from .plan import Mode
    from .prepared import Prepared

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL: Final = "https://integrate.api.nvidia.com/v1"
DEFAULT_MODEL: Final = "nvidia/nemotron-3-nano-omni-30b-a3b-reasoning"
CHAT_PATH: Final = "/chat/completions"
DEFAULT_TIMEOUT_S: Final = 300.0
"""Seconds allowed without receiving anything (a reasoning model may think for minutes before a whole answer)."""
CONNECT_TIMEOUT_S: Final = 10.0

Channel = Literal["reasoning", "content"]
DeltaFn = Callable[[Channel, str], None]
"""Called with each piece of a streamed answer as it arrives: ``("reasoning", text)`` or ``("content", text)``."""

_AUTH_HINT: Final = "check NVIDIA_API_KEY (or --api-key): it must be a valid key for this endpoint"


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def check_key_transport(url: str, *, allow_insecure_http: bool = False, what: str = "the chat endpoint") -> None:
    """Refuse to send the API key in clear text: https, or http to this machine only.

    Raises:
        ConfigError: ``url`` is not http(s), or is plain http to another machine and
            ``allow_insecure_http`` is false.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        parts, host = None, ""
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise ConfigError(
            f"{what} URL {redact_url(url)!r} is not an http(s) URL",
            hint="pass --base-url like https://integrate.api.nvidia.com/v1",
        )
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback_host(host):
        raise ConfigError(
            f"{what} {redact_url(url)} is plain http on another machine: the API key would travel unencrypted",
            hint=f"use an https:// URL, or on a trusted network pass {ref('allow_insecure_http', True)}",
        )


@dataclass(frozen=True)
class ChatParams:
    """The model and its sampling parameters; None leaves a parameter to the service's default.

    Attributes:
        model: the model id.
        max_tokens: the most tokens the answer may have (reasoning included).
        reasoning_budget: the most tokens the model may spend reasoning.
        seed: makes sampling repeatable.
        temperature: sampling temperature.
        top_p: nucleus sampling mass.
        think: True sends a ``/think`` system message, False ``/no_think``; None sends
            ``/no_think`` when audio or video is attached (the model card asks for it) and
            nothing otherwise.
    """

    model: str = DEFAULT_MODEL
    max_tokens: int | None = None
    reasoning_budget: int | None = None
    seed: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    think: bool | None = None

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ConfigError(
                    f"{name} must be a finite number, not {value}", hint="NaN and infinities cannot be sent as JSON"
                )

    def system_prompt(self, kinds: Collection[str]) -> str | None:
        """The reasoning switch for a request carrying media of these kinds, or None."""
        if self.think is True:
            return "/think"
        if self.think is False or {"audio", "video"} & set(kinds):
            return "/no_think"
        return None


def build_body(
    prompt: str, content: Sequence[MediaPart], kinds: Collection[str], params: ChatParams, *, stream: bool
) -> dict[str, Any]:
    """The JSON body of a chat-completions request: an optional system switch, then the user's text and media."""
    messages: list[dict[str, Any]] = []
    system = params.system_prompt(kinds)
    if system is not None:
        messages.append({"role": "system", "content": system})
    user_content: list[Any] = [text_part(prompt), *content]
    messages.append({"role": "user", "content": user_content})
    body: dict[str, Any] = {"model": params.model, "messages": messages}
    optional = {
        "max_tokens": params.max_tokens,
        "reasoning_budget": params.reasoning_budget,
        "seed": params.seed,
        "temperature": params.temperature,
        "top_p": params.top_p,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


@dataclass
class Answer:
    """A model's answer.

    Attributes:
        text: the answer.
        reasoning: the reasoning the model returned apart from the answer, or None.
        usage: the token counts the service reported, or None.
        model: the model that answered.
        finish_reason: why the answer ended (``stop``, ``length``...).
        latency_s: seconds from sending the request to the end of the answer, retries included.
        response: the whole response (for a stream, assembled in ``chat.completion`` shape).
    """

    text: str
    reasoning: str | None = None
    usage: dict[str, Any] | None = None
    model: str | None = None
    finish_reason: str | None = None
    latency_s: float = 0.0
    response: dict[str, Any] = field(default_factory=dict, repr=False)


def sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The ``data`` of each server-sent event (``data:`` lines joined), comments and other fields ignored."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def _reasoning_of(obj: dict[str, Any]) -> str | None:
    value = obj.get("reasoning_content")
    if value is None:
        value = obj.get("reasoning")
    return value if isinstance(value, str) else None


def _answer_from_completion(data: object, latency_s: float) -> Answer:
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ChatError(
            "the chat endpoint's answer is not a chat completion (no choices)",
            hint="check --base-url: it must be an OpenAI-compatible /v1 base",
        )
    message = choices[0].get("message")
    message = message if isinstance(message, dict) else {}
    content = message.get("content")
    usage = data.get("usage")
    return Answer(
        text=content if isinstance(content, str) else "",
        reasoning=_reasoning_of(message),
        usage=usage if isinstance(usage, dict) else None,
        model=data.get("model") if isinstance(data.get("model"), str) else None,
        finish_reason=choices[0].get("finish_reason"),
        latency_s=latency_s,
        response=data,
    )


class ChatClient:
    """Sends chat-completions requests (safe to share between threads).

    Args:
        base_url: the OpenAI-compatible base, ``.../v1`` (default NVIDIA's hosted endpoint).
        api_key: the bearer key.
        timeout_s: seconds allowed without receiving anything.
        max_attempts: attempts per request, the first included (429, 5xx and connection failures).
        max_retry_wait_s: most seconds spent waiting between attempts (also caps ``Retry-After``).
        allow_insecure_http: send the key over plain http to another machine.
        transport: an httpx transport to use instead of the network.

    Raises:
        ConfigError: no key, or a URL the key may not be sent to.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_attempts: int = 5,
        max_retry_wait_s: float = 60.0,
        allow_insecure_http: bool = False,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        base = (base_url or DEFAULT_BASE_URL).strip().rstrip("/")
        check_key_transport(base, allow_insecure_http=allow_insecure_http)
        key = (api_key or "").strip()
        if not key:
            raise ConfigError("no API key for the chat endpoint", hint="set NVIDIA_API_KEY or pass --api-key")
        self.base_url = base
        self.url = base + CHAT_PATH
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self._max_retry_wait_s = max_retry_wait_s
        self._allow_insecure_http = allow_insecure_http
        self._own_transport = transport is not None
        self._policy = retry_policy(max_attempts, max_retry_wait_s)
        self._key = key
        self._http = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )

    def __repr__(self) -> str:
        return f"ChatClient(base_url={redact_url(self.base_url)!r}, api_key='***')"

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        """Pickled as its configuration (a worker process opens its own connections: Ray's batch engine).

        Raises:
            TypeError: the client sends through a transport of its own, which cannot leave this process.
        """
        if self._own_transport:
            raise TypeError("a ChatClient with its own transport cannot be sent to another process")
        rebuilt = functools.partial(
            ChatClient,
            self.base_url,
            self._key,
            timeout_s=self.timeout_s,
            max_attempts=self.max_attempts,
            max_retry_wait_s=self._max_retry_wait_s,
            allow_insecure_http=self._allow_insecure_http,
        )
        return rebuilt, ()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def send(
        self, body: dict[str, Any], headers: dict[str, str] | None = None, *, on_delta: DeltaFn | None = None
    ) -> Answer:
        """Send one request and return the answer; with ``body["stream"]`` the answer is read as events.

        Args:
            body: the request body (``build_body``).
            headers: extra headers, such as ``NVCF-INPUT-ASSET-REFERENCES``.
            on_delta: for a stream, called with each piece as it arrives.

        Raises:
            ChatError: ``auth_failed`` (401/403), ``timeout``, or ``chat_failed`` (another refusal,
                retries used up, a connection lost, a stream that ended without ``[DONE]``).
        """
        stream = bool(body.get("stream"))
        try:  # NaN and Infinity are not JSON (RFC 8259): the service would refuse them
            payload = json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except ValueError:
            raise ConfigError(
                "the request body holds a number that is not finite (NaN or an infinity)",
                hint="pass finite sampling parameters",
            ) from None
        request_headers = {
            **(headers or {}),
            "Authorization": f"Bearer {self._key}",
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
        }
        started = time.monotonic()
        resp = self._open(payload, request_headers, stream)
        try:
            if resp.status_code != 200:
                raise self._refused(resp)
            if stream and resp.headers.get("Content-Type", "").startswith("text/event-stream"):
                return self._read_stream(resp, started, on_delta)
            if stream:  # a server that ignored "stream": the whole answer at once
                resp.read()
            answer = _answer_from_completion(self._json(resp), time.monotonic() - started)
            if on_delta is not None:
                if answer.reasoning:
                    on_delta("reasoning", answer.reasoning)
                on_delta("content", answer.text)
            return answer
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        finally:
            resp.close()

    def _open(self, payload: bytes, headers: dict[str, str], stream: bool) -> httpx.Response:
        """Send until the answer is neither 429 nor 5xx (a non-streamed one is read whole: a lost one is retried)."""

        def attempt() -> httpx.Response:
            resp = self._http.send(
                self._http.build_request("POST", self.url, content=payload, headers=headers), stream=True
            )
            try:
                if resp.status_code == 429 or resp.status_code >= 500:
                    resp.read()
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                    raise RetryableStatus(resp.status_code, retry_after, error_detail(resp))
                if not stream or resp.status_code != 200:
                    resp.read()
            except BaseException:
                resp.close()
                raise
            return resp

        retrying = tenacity.Retrying(**self._policy, before_sleep=self._log_retry)
        try:
            return retrying(attempt)
        except RetryableStatus as exc:
            attempts = int(retrying.statistics.get("attempt_number", 1))
            said = f" ({exc.detail})" if exc.detail else ""
            raise ChatError(
                f"the chat endpoint at {redact_url(self.url)} answered {exc.status} {_phrase(exc.status)}{said} "
                f"on {attempts} attempt{'s' if attempts != 1 else ''}",
                hint="the service is overloaded or failing; try again later, or with fewer requests in flight (-j)",
                status_code=exc.status,
            ) from None
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        what = f"{exc.status} {_phrase(exc.status)}" if isinstance(exc, RetryableStatus) else type(exc).__name__
        logger.info(
            "chat request failed with %s; attempt %d of %d, retrying in %.2f s",
            what,
            state.attempt_number,
            self.max_attempts,
            state.upcoming_sleep,
        )

    def _refused(self, resp: httpx.Response) -> ChatError:
        status = resp.status_code
        detail = error_detail(resp)
        said = f": {detail}" if detail else ""
        if status in (401, 403):
            return ChatError(
                f"the chat endpoint at {redact_url(self.url)} refused the key ({status} {_phrase(status)}){said}",
                code="auth_failed",
                hint=_AUTH_HINT,
                status_code=status,
            )
        hint = {
            404: "check --base-url and the model name (-m); an unknown asset id is also a 404",
            413: f"the request is too big; send large media as assets ({ref('mode', 'asset')})",
        }.get(status, "this answer is not retried; check the request (model, parameters, media)")
        return ChatError(
            f"the chat endpoint at {redact_url(self.url)} answered {status} {_phrase(status)}{said}",
            hint=hint,
            status_code=status,
        )

    def _transport_error(self, exc: httpx.HTTPError) -> ChatError:
        shown = redact_url(self.url)
        if isinstance(exc, httpx.TimeoutException):
            return ChatError(
                f"the chat endpoint at {shown} sent nothing for {self.timeout_s:g} s ({type(exc).__name__})",
                code="timeout",
                hint="the model may still be thinking: pass a larger --timeout, or a smaller --max-tokens",
            )
        if isinstance(exc, httpx.ConnectError):
            return ChatError(
                f"could not connect to the chat endpoint at {shown} ({exc})", hint="check --base-url and the network"
            )
        return ChatError(
            f"the connection to the chat endpoint at {shown} was lost before the answer was complete "
            f"({type(exc).__name__}: {exc})",
            hint="try again; the answer was cut off",
        )

    @staticmethod
    def _json(resp: httpx.Response) -> object:
        try:
            return resp.json()
        except ValueError:
            raise ChatError(
                f"the chat endpoint's answer is not JSON ({resp.headers.get('Content-Type', 'no content type')})",
                hint="check --base-url: it must be an OpenAI-compatible /v1 base",
            ) from None

    def _read_stream(self, resp: httpx.Response, started: float, on_delta: DeltaFn | None) -> Answer:
        text: list[str] = []
        reasoning: list[str] = []
        usage: dict[str, Any] | None = None
        model: str | None = None
        finish: str | None = None
        chunk_id = ""
        done = False
        for data in sse_data(resp.iter_lines()):
            if data.strip() == "[DONE]":
                done = True
                break
            try:
                chunk = json.loads(data)
            except ValueError:
                raise ChatError(
                    f"the chat endpoint sent an event that is not JSON: {data[:80]!r}",
                    hint="check --base-url: it must be an OpenAI-compatible /v1 base",
                ) from None
            if not isinstance(chunk, dict):
                continue
            if "error" in chunk:
                error = chunk["error"]
                message = error.get("message") if isinstance(error, dict) else error
                raise ChatError(f"the chat endpoint failed in the middle of the answer: {message}", hint="try again")
            chunk_id = str(chunk.get("id") or chunk_id)
            model = chunk.get("model") if isinstance(chunk.get("model"), str) else model
            if isinstance(chunk.get("usage"), dict):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                if not isinstance(choice, dict):
                    continue
                delta: dict[str, Any] = choice["delta"] if isinstance(choice.get("delta"), dict) else {}
                for channel, piece in (("reasoning", _reasoning_of(delta)), ("content", delta.get("content"))):
                    if isinstance(piece, str) and piece:
                        (reasoning if channel == "reasoning" else text).append(piece)
                        if on_delta is not None:
                            on_delta(channel, piece)  # type: ignore[arg-type]
                finish = choice.get("finish_reason") or finish
        if not done:
            received = sum(len(t) for t in text)
            raise ChatError(
                f"the chat endpoint at {redact_url(self.url)} closed the stream before the answer was complete "
                f"({received} characters received, no 'data: [DONE]')",
                hint="try again; the answer was cut off",
            )
        answer_text, reasoning_text = "".join(text), "".join(reasoning) or None
        assembled: dict[str, Any] = {"role": "assistant", "content": answer_text}
        if reasoning_text is not None:
            assembled["reasoning_content"] = reasoning_text
        response = {
            "id": chunk_id,
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": assembled, "finish_reason": finish}],
            "usage": usage,
        }
        return Answer(answer_text, reasoning_text, usage, model, finish, time.monotonic() - started, response)


# -- media: the one call into the preparation front door, and one question end to end -------------


@dataclass(frozen=True)
class MediaOptions:
    """How chat and batch prepare media (the options they hand to the preparation front door).

    Attributes:
        mode: ``auto``, ``inline`` or ``asset``.
        profile: a profile name or file; None is the default profile.
        inline_limit: base64 characters above which an item is uploaded.
        assets_url: the asset API base.
        api_key: the asset API key.
        fetch_urls: fetch ``http(s)`` sources.
        url_allow: hosts or CIDRs fetching may reach although they are not public.
        cache: reuse and remember uploads in the shared cache (only for assets that are kept:
            an asset deleted after its answer must not be handed to anyone else).
        allow_insecure_http: send the key over plain http to an asset API that is not loopback
            (as the chat endpoint's flag of the same name).
    """

    mode: Mode = "auto"
    profile: str | None = None
    inline_limit: int | None = None
    assets_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    fetch_urls: bool = False
    url_allow: tuple[str, ...] = ()
    cache: bool = False
    allow_insecure_http: bool = False

    def client(self, *, jobs: int = 1) -> Client:
        """The ``Client`` these options describe (one per question, or per batch run, reused by every request).

        Args:
            jobs: its normalization workers (the requests a batch prepares at once).
        """
        from .client import Client

        return Client(
            api_key=self.api_key,
            assets_url=self.assets_url,
            jobs=jobs,
            cache=self.cache,
            allow_insecure_http=self.allow_insecure_http,
        )


def prepare_media(sources: Sequence[str], options: MediaOptions, client: Client) -> Prepared:
    """Prepare ``sources`` for one request through ``client``, keeping failed inputs as error items.

    The one place chat and batch call the preparation front door (``Client.prepare``).

    Raises:
        PlanError: ``too_many_assets``: the inputs need more assets than one request may reference
            (``prepare`` splits them into several requests; a chat question is one). What was
            uploaded is deleted first.
    """
    prepared = client.prepare(
        list(sources),
        mode=options.mode,
        profile=options.profile,
        group="all",
        inline_limit=options.inline_limit,
        fetch_urls=options.fetch_urls,
        url_allow=options.url_allow,
        on_error="keep",
    )
    if len(prepared.requests) > 1:
        assets = sum(1 for it in prepared.items if it.ok and it.delivery == "asset")
        release(prepared)
        raise PlanError(
            f"the request needs {assets} assets; one request may reference at most "
            f"{client.settings(profile=options.profile).profile.max_assets}",
            code="too_many_assets",
            hint="send fewer files per question, or let more go inline (--mode auto, a higher --inline-limit)",
        )
    return prepared


def release(prepared: Prepared, *, keep_assets: bool = False) -> list[str]:
    """Delete what ``prepared`` uploaded (unless ``keep_assets``) and close it; returns warnings, never raises."""
    warnings: list[str] = []
    try:
        if not keep_assets:
            prepared.delete_assets()
    except NVMediaError as exc:
        left = [it.asset_id for it in prepared.items if it.uploaded and it.asset_id]
        warnings.append(
            f"could not delete the uploaded assets {', '.join(left)}: {exc.message} "
            "(they expire after 24 h; `nvmedia assets delete ID` removes them)"
        )
    finally:
        prepared.close()
    return warnings


def media_kinds(prepared: Prepared | None) -> set[str]:
    """The kinds of media a preparation carries (``image``, ``audio``, ``video``)."""
    if prepared is None:
        return set()
    return {str(it.kind) for it in prepared.items if it.ok and it.part is not None and it.kind}


def ask(
    prompt: str,
    sources: Sequence[str],
    *,
    client: ChatClient,
    params: ChatParams,
    media: MediaOptions | None = None,
    stream: bool = False,
    on_delta: DeltaFn | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> Answer:
    """Prepare ``sources``, send ``prompt`` with them in one request, and delete the uploaded assets.

    The assets are deleted after the answer, and also when preparing, sending or
    reading fails or is interrupted (Ctrl-C).

    Raises:
        NVMediaError: the first input that failed (nothing is sent then), or the ``ChatError`` of the request.
    """
    if not sources:
        return client.send(build_body(prompt, [], set(), params, stream=stream), {}, on_delta=on_delta)
    media = media or MediaOptions()
    with media.client() as media_client:
        prepared = prepare_media(sources, media, media_client)
        try:
            failed = next((it for it in prepared.items if it.status == "error" and it.error is not None), None)
            if failed is not None and failed.error is not None:
                raise failed.error
            body = build_body(prompt, prepared.content, media_kinds(prepared), params, stream=stream)
            return client.send(body, prepared.headers, on_delta=on_delta)
        finally:
            for warning in release(prepared):
                if on_warning is not None:
                    on_warning(warning)
                else:
                    logger.warning("%s", warning)
