"""Argument types shared by the command line's parsers (``cli.py`` and ``cli_chat.py``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_at_least(minimum: int, meaning: str = "") -> Callable[[str], int]:
    """An argparse type reading a whole number (``_`` separators allowed) of at least ``minimum``.

    Args:
        minimum: the smallest value accepted.
        meaning: what the smallest value means, shown in the error (``"-1: no budget"``).
    """

    def whole_number(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            said = f" ({meaning})" if meaning else ""
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}{said}, got {value}")
        return value

    return whole_number
