"""When an asset call is tried again: one tenacity policy for both clients.

Retried: connection errors, timeouts, 429 (waiting what ``Retry-After`` says) and
5xx, with jittered exponential backoff, bounded in attempts, in waiting time and,
for a bulk delete, by a deadline. Never another 4xx. The policy is driven step by
step by the protocol (``tenacity.Retrying.iter``) so that it never sleeps itself.
"""

from __future__ import annotations

import email.utils
import http
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

import httpx
import tenacity

from ._redact import redact_text
from .errors import ConfigError

logger = logging.getLogger("nvmedia.assets")

BACKOFF_INITIAL_S: Final = 0.5
BACKOFF_MAX_S: Final = 10.0


def phrase(status: int) -> str:
    """The reason phrase of an HTTP status (``Unknown`` for one outside the standard)."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class RetryableStatus(Exception):
    """A 429 or 5xx answer: retried by the policy, turned into an ``AssetAPIError`` when attempts run out."""

    def __init__(self, status: int, retry_after: float | None, detail: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after
        self.detail = detail


_TRANSIENT: Final = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, (RetryableStatus, *_TRANSIENT))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta seconds or an HTTP date), or None.

    Example:
        >>> parse_retry_after("2")
        2.0
    """
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class _WaitRetryAfterOrBackoff(tenacity.wait.wait_base):
    """``Retry-After`` when the service gave one, else jittered exponential backoff; capped either way."""

    def __init__(self, cap_s: float) -> None:
        self._backoff = tenacity.wait_random_exponential(multiplier=BACKOFF_INITIAL_S, max=BACKOFF_MAX_S)
        self._cap_s = cap_s

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome is not None else None
        if isinstance(exc, RetryableStatus) and exc.retry_after is not None:
            return min(exc.retry_after, self._cap_s)
        return min(self._backoff(retry_state), self._cap_s)


class _StopWhenWaitBudgetSpent(tenacity.stop.stop_base):
    """Stops once the time spent waiting between attempts would exceed the budget."""

    def __init__(self, budget_s: float) -> None:
        self._budget_s = budget_s

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return retry_state.idle_for + retry_state.upcoming_sleep > self._budget_s


class _StopAtDeadline(tenacity.stop.stop_base):
    """Stops when the next attempt would start after ``deadline`` (``time.monotonic()``)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return time.monotonic() + retry_state.upcoming_sleep >= self.deadline


def retry_policy(max_attempts: int = 5, max_retry_wait_s: float = 60.0) -> dict[str, Any]:
    """The tenacity arguments of every asset call (``tenacity.Retrying(**p)``).

    Retries connection errors, timeouts, 429 (waiting what ``Retry-After`` says, at most
    ``max_retry_wait_s``) and 5xx, with jittered exponential backoff otherwise; stops after
    ``max_attempts`` attempts or when the waits would add up to more than ``max_retry_wait_s``.
    Never retries another 4xx.

    Raises:
        ConfigError: ``max_attempts`` is below 1.
    """
    if max_attempts < 1:
        raise ConfigError(f"max_attempts must be at least 1, got {max_attempts}", hint="pass max_attempts >= 1")
    return {
        "stop": tenacity.stop_after_attempt(max_attempts) | _StopWhenWaitBudgetSpent(max_retry_wait_s),
        "wait": _WaitRetryAfterOrBackoff(max_retry_wait_s),
        "retry": tenacity.retry_if_exception(_is_retryable),
        "reraise": True,
    }


@dataclass(frozen=True)
class CallPolicy:
    """How one client calls the service: attempts, waiting, timeouts, and an optional deadline.

    Attributes:
        max_attempts: attempts per call, the first included.
        max_retry_wait_s: most seconds spent waiting between attempts of one call.
        timeout: seconds for connecting and each read or write; None leaves the HTTP client's own.
        deadline: a ``time.monotonic()`` instant no attempt may start after and no attempt's
            timeout may reach past; None for no deadline.
    """

    max_attempts: int = 5
    max_retry_wait_s: float = 60.0
    timeout: float | None = None
    deadline: float | None = None

    def __post_init__(self) -> None:
        retry_policy(self.max_attempts, self.max_retry_wait_s)  # validates

    def until(self, deadline: float | None) -> CallPolicy:
        """This policy with a deadline (the earlier one wins)."""
        if deadline is None or (self.deadline is not None and self.deadline <= deadline):
            return self
        return replace(self, deadline=deadline)

    def retrying(self, op: str, shown_url: str) -> tenacity.Retrying:
        """A tenacity policy for one call (driven step by step; it never sleeps itself)."""
        args = retry_policy(self.max_attempts, self.max_retry_wait_s)
        if self.deadline is not None:
            args["stop"] = args["stop"] | _StopAtDeadline(self.deadline)
        return tenacity.Retrying(**args, before_sleep=_before_sleep(op, shown_url, self.max_attempts))

    def attempt_timeout(self) -> float | None:
        """The timeout of the next attempt: the configured one, cut to what is left before the deadline."""
        if self.deadline is None:
            return self.timeout
        left = max(0.001, self.deadline - time.monotonic())
        return left if self.timeout is None else min(self.timeout, left)


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, RetryableStatus):
        return f"{exc.status} {phrase(exc.status)}"
    return f"{type(exc).__name__}: {redact_text(str(exc)) or 'no detail'}"


def _before_sleep(op: str, shown_url: str, max_attempts: int) -> Callable[[tenacity.RetryCallState], None]:
    def log(retry_state: tenacity.RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome is not None else None
        logger.info(
            "%s (%s) failed with %s; attempt %d of %d, retrying in %.2f s",
            op,
            shown_url,
            describe_failure(exc) if exc is not None else "no result",
            retry_state.attempt_number,
            max_attempts,
            retry_state.upcoming_sleep,
        )

    return log
