"""Driving a sans-I/O flow: a generator that yields steps and receives each step's outcome.

The asset protocol (``_asset_protocol``) and the delivery of an item (``delivery``) are
written once as such flows; the sync and async shells only perform their steps. This is
the shape of httpx's ``Auth.auth_flow``.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

S = TypeVar("S")
T = TypeVar("T")


class FlowRunner(Iterator[S], Generic[S, T]):
    """Feeds a flow the outcome of each step until it returns: the loop every shell runs.

    Example:
        >>> runner = FlowRunner(list_flow(endpoint, policy))  # doctest: +SKIP
        >>> for step in runner:                                # doctest: +SKIP
        ...     with runner.capture():
        ...         runner.outcome = perform(step)
        >>> runner.result                                      # doctest: +SKIP
    """

    def __init__(self, flow: Generator[S, Any, T]) -> None:
        self._flow = flow
        self._started = False
        self._done = False
        self._result: T | None = None
        self.outcome: Any = None
        """The result of the step just performed (an exception is thrown into the flow)."""

    @property
    def result(self) -> T:
        """What the flow returned (once iteration has ended)."""
        if not self._done:
            raise RuntimeError("the flow has not finished")
        return self._result  # type: ignore[return-value]

    def __next__(self) -> S:
        outcome, self.outcome = self.outcome, None
        try:
            if not self._started:
                self._started = True
                return next(self._flow)
            if isinstance(outcome, BaseException):
                return self._flow.throw(outcome)
            return self._flow.send(outcome)
        except StopIteration as done:
            self._done, self._result = True, done.value
            raise StopIteration from None

    def close(self) -> None:
        """Abandon the flow (its ``finally`` blocks run)."""
        self._flow.close()

    @contextmanager
    def capture(self) -> Iterator[None]:
        """Hand an ordinary exception of the step to the flow instead of raising it (cancellation still raises)."""
        try:
            yield
        except Exception as exc:
            self.outcome = exc
        except BaseException:
            self._flow.close()
            raise
