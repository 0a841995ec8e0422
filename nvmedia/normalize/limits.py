"""The duration limit shared by audio and video: refuse, or cut with ``--trim``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ..errors import MediaError
from ..option_table import ref

LIMIT_TOLERANCE_S = 0.25
"""Slack on duration limits: encoder priming and container rounding make a 60.00 s recording read 60.02 s."""


def exceeds(duration: float, max_s: float | None) -> bool:
    """Whether ``duration`` is over the limit ``max_s`` (None: no limit), allowing ``LIMIT_TOLERANCE_S``."""
    return max_s is not None and duration > max_s + LIMIT_TOLERANCE_S


_BASIS = {
    "decoded": "",
    "at-least": " (reading stopped there: the rest was not decoded)",
    "header": " (by its header's exact count, before any decoding)",
}


def check_duration(
    source: Path,
    kind: str,
    duration: float,
    max_s: float | None,
    trim_s: float | None,
    *,
    basis: Literal["decoded", "at-least", "header"] = "decoded",
) -> float | None:
    """The length to cut ``source`` to, or None when it is kept whole.

    Args:
        source: the file (for messages).
        kind: ``audio`` or ``video`` (for messages).
        duration: its duration in seconds.
        max_s: the profile's limit (None: no limit).
        trim_s: the user's ``--trim`` (None: refuse what is too long).
        basis: how ``duration`` is known: ``decoded`` (all of it), ``at-least`` (a lower bound: decoding stopped
            once past the limit) or ``header`` (the container's exact sample or frame count, before any decoding).

    Raises:
        MediaError: ``too_long`` when over the limit without a usable ``trim_s``.
    """
    if not exceeds(duration, max_s):
        return None
    assert max_s is not None
    length = f"at least {duration:.1f} s" if basis == "at-least" else f"{duration:.1f} s"
    if trim_s is None:
        raise MediaError(
            f"{source.name}: the {kind} is {length} long{_BASIS[basis]}; the profile accepts at most {max_s:.0f} s",
            code="too_long",
            hint=f"pass {ref('trim_s', round(max_s))} to keep the first {max_s:.0f} s"
            + (f", or {ref('split_long_audio')} to send it in pieces cut at its pauses" if kind == "audio" else ""),
        )
    if trim_s <= 0 or trim_s > max_s:
        raise MediaError(
            f"{source.name}: the {kind} is {length} long and {ref('trim_s', trim_s)} is outside 0..{max_s:.0f} s",
            code="too_long",
            hint=f"pass a {ref('trim_s')} between 1 and {max_s:.0f} seconds",
        )
    return float(trim_s)


def decode_limit(max_s: float | None) -> float | None:
    """How far validation must decode to tell whether media is over ``max_s``: just past the tolerance."""
    return None if max_s is None else max_s + LIMIT_TOLERANCE_S
