"""Starting or joining a Ray cluster for the CLI, and the error when Ray is not installed.

A cluster nvmedia starts itself is a one-node cluster on loopback: every Ray
process binds 127.0.0.1, no dashboard runs, and no usage statistics are sent, so
nothing listens on or talks to another address. ``--address`` joins an existing
cluster instead (``auto`` for the one this machine belongs to, ``ray://host:10001``
for Ray Client); nvmedia then leaves it running when it is done.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Final

from ..errors import ConfigError
from ..reach import check_reachable

LOOPBACK: Final = "127.0.0.1"
INSTALL_HINT: Final = 'pip install "nvmedia[ray]"'


def missing_ray(exc: ImportError) -> ConfigError:
    """The error for a missing Ray (or pyarrow), naming the extra that installs it."""
    missing = exc.name or "ray"
    return ConfigError(
        f"Ray is not installed ({missing} cannot be imported): nvmedia's Ray engine needs the 'ray' extra",
        hint=f"{INSTALL_HINT}, or run without --engine ray",
    )


def check_address(address: str) -> str:
    """``address`` when it can name a cluster: ``auto``, ``host:port`` or ``ray://host:port``.

    Raises:
        ConfigError: anything else.
    """
    text = address.strip()
    if text == "auto" or text.startswith("ray://") or (":" in text and "://" not in text):
        return text
    raise ConfigError(
        f"--address {address!r} does not name a Ray cluster",
        hint="pass auto, HOST:PORT of the head node, or ray://HOST:10001 (Ray Client)",
    )


CONNECT_CHECK_S: Final = 5.0
"""Seconds allowed to open a TCP connection to ``--address`` before Ray is asked to join it."""


def check_cluster_reachable(address: str) -> None:
    """Refuse, in seconds, a ``host:port`` or ``ray://host:port`` where nothing listens.

    Ray itself retries a missing head node for minutes, printing only its own warnings.
    ``auto`` is left to Ray (it looks for a cluster on this machine and fails at once).

    Raises:
        ConfigError: the address's port cannot be connected to.
    """
    if address == "auto":
        return
    check_reachable(
        address if address.startswith("ray://") else f"ray://{address}",
        what="a Ray cluster at --address",
        flag="--address",
        timeout_s=CONNECT_CHECK_S,
        use_proxy=False,  # Ray connects directly
        hint="start the cluster (ray start --head) or check the host and port; "
        "auto joins the cluster this machine belongs to",
    )


def import_ray(*, local: bool) -> ModuleType:
    """Import Ray; for a ``local`` cluster, first switch Ray to loopback and off usage statistics.

    Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` when it is imported: with ``0`` it takes
    127.0.0.1 as the node's address and its processes bind loopback only (otherwise it finds
    the address routing towards a public IP, and binds every interface). A variable already
    set by the user wins, and so does a Ray imported earlier in this process.

    Raises:
        ConfigError: Ray is not installed.
    """
    if local and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise missing_ray(exc) from None
    return ray


@contextmanager
def ray_session(address: str | None, *, num_cpus: int) -> Iterator[None]:
    """Ray, ready to use inside the block: the session already running, a joined cluster, or a local one.

    Args:
        address: a cluster to join, or None to start a one-node cluster on loopback.
        num_cpus: CPUs the local cluster offers (``-j``); ignored when joining.

    Raises:
        ConfigError: Ray is not installed, or the cluster cannot be reached.
    """
    if address is not None:
        address = check_address(address)
    ray = import_ray(local=address is None)
    if ray.is_initialized():  # a notebook, a test session or a Ray job script already holds one
        yield
        return
    try:
        if address is None:
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                _node_ip_address=LOOPBACK,
                log_to_driver=False,
                logging_level=logging.ERROR,
            )
        else:
            check_cluster_reachable(address)
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
        where = "start a local Ray cluster" if address is None else f"join the Ray cluster at {address}"
        raise ConfigError(
            f"could not {where}: {type(exc).__name__}: {exc}",
            hint="check --address and that the cluster runs the same Ray and Python versions",
        ) from None
    try:
        yield
    finally:
        ray.shutdown()


@contextmanager
def quiet_ray_data() -> Iterator[None]:
    """Ray Data's own log lines (execution plans, progress, "finished in") kept off the CLI's stderr.

    Its log file in the Ray session folder is unaffected; errors still show.
    """
    data_logger = logging.getLogger("ray.data")
    saved = data_logger.level
    data_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        data_logger.setLevel(saved)
