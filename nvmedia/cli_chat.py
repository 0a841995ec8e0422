"""Options of the ``chat`` and ``batch`` commands that ``prepare`` shares: ``--fetch-urls``, ``--url-allow``.

Only argparse loads when the parsers are built; the fetching code loads when a command runs.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .fetch import FetchPolicy


# -- options shared with `prepare` ------------------------------------------------------------------------


def add_fetch_arguments(parser: argparse.ArgumentParser | Any) -> None:
    """``--fetch-urls`` and ``--url-allow`` (for ``prepare``, ``chat`` and ``batch``)."""
    parser.add_argument(
        "--fetch-urls",
        action="store_true",
        help="fetch http(s) URLs given as inputs (public addresses only; default: URLs are refused)",
    )
    parser.add_argument(
        "--url-allow",
        action="append",
        default=[],
        metavar="HOST|CIDR",
        help="let --fetch-urls reach this host name or network although it is not public (repeatable)",
    )


def fetch_policy(args: argparse.Namespace) -> FetchPolicy | None:
    """The fetch rules the flags ask for, or None when URLs are not to be fetched.

    Raises:
        ConfigError: ``--url-allow`` without ``--fetch-urls``, or an entry that is not a host or network.
    """
    if args.url_allow and not args.fetch_urls:
        raise ConfigError("--url-allow only applies to fetched URLs", hint="add --fetch-urls")
    if not args.fetch_urls:
        return None
    from .fetch import FetchPolicy

    return FetchPolicy(allow=tuple(args.url_allow))
