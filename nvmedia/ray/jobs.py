"""Job ownership of assets: a run's uploads are described ``nvmedia job <id>``, so they can be found and deleted.

A Ray job runs on many workers and may be interrupted anywhere; its assets are
not tracked in any one process. Each upload's description (which the asset API
stores and returns) names the job instead, and ``nvmedia assets delete --job ID``
lists the key's assets, reads each description, and deletes the job's ones. No
Ray is needed for that: this module imports only the asset client.
"""

from __future__ import annotations

import re
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import IO, TYPE_CHECKING, Final

from .._asset_results import AssetInfo, DeleteOutcome, DeleteReport
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..assets import AssetClient

DESCRIPTION_PREFIX: Final = "nvmedia job "
LOOKUPS_IN_FLIGHT: Final = 8
"""Concurrent calls reading assets' descriptions (each waits on the network)."""
_JOB_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)


def new_job_id() -> str:
    """A fresh job id: 16 random hex digits.

    Example:
        >>> len(new_job_id())
        16
    """
    return uuid.uuid4().hex[:16]


def check_job_id(job: str) -> str:
    """``job`` when it is a usable id (it travels in an HTTP header), else a ``ConfigError``.

    Raises:
        ConfigError: not 1 to 64 of letters, digits, ``.``, ``_``, ``-`` (starting with a letter or digit).
    """
    if not isinstance(job, str) or not _JOB_ID_RE.fullmatch(job):
        raise ConfigError(
            f"job id {str(job)[:80]!r} is not usable: it must be 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            hint="pass an id such as 'run-2026-12-01' (or none, for a random one)",
        )
    return job


def job_description(job: str) -> str:
    """The description every asset of ``job`` carries.

    Example:
        >>> job_description("run-42")
        'nvmedia job run-42'
    """
    return DESCRIPTION_PREFIX + check_job_id(job)


def job_asset_ids(client: AssetClient, job: str) -> tuple[list[str], list[DeleteOutcome]]:
    """The ids of the key's assets whose description names ``job``, in the service's list order.

    Returns:
        The job's ids, and a ``failed`` outcome for each asset whose description could not be read
        (after retries): it may be the job's, so it is neither deleted nor passed over in silence.

    Raises:
        AssetAPIError: listing failed.
    """
    from ..errors import AssetAPIError

    wanted = job_description(job)

    def read(asset_id: str) -> AssetInfo | AssetAPIError | None:
        try:
            return client.get(asset_id)
        except AssetAPIError as exc:
            return exc

    ids = client.list()
    with ThreadPoolExecutor(max_workers=LOOKUPS_IN_FLIGHT, thread_name_prefix="nvmedia-job") as pool:
        infos = list(pool.map(read, ids))
    unreadable = [
        DeleteOutcome(asset_id, "failed", f"its description could not be read ({info.message})")
        for asset_id, info in zip(ids, infos, strict=True)
        if isinstance(info, AssetAPIError)
    ]
    found = [
        asset_id
        for asset_id, info in zip(ids, infos, strict=True)
        if not isinstance(info, AssetAPIError) and info is not None and info.description == wanted
    ]
    return found, unreadable


def delete_job_assets(client: AssetClient, job: str) -> DeleteReport:
    """Delete every asset of ``job`` (``AssetClient.delete_many``: past failures, a 404 counts as deleted).

    An asset whose description cannot be read is reported ``failed`` after the others.

    Raises:
        AssetAPIError: the job's assets could not be listed.
    """
    ids, unreadable = job_asset_ids(client, job)
    report = client.delete_many(ids, deadline_s=None)  # the user is watching
    return DeleteReport(report.outcomes + tuple(unreadable))


def delete_job_command(client: AssetClient, job: str, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """``nvmedia assets delete --job ID``: one line per asset, as ``assets delete ID...`` prints them.

    Returns:
        The exit status: 1 when any asset could not be deleted or was gone meanwhile, else 0.
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    report = delete_job_assets(client, job)
    for outcome in report.outcomes:
        if outcome.status == "failed":
            print(f"failed {outcome.asset_id}: {outcome.reason}", file=out)
        else:
            print(f"{outcome.status.replace('_', ' ')} {outcome.asset_id}", file=out)
    if not report.outcomes:
        print(f"nvmedia: no assets described '{job_description(job)}'", file=err)
    return 1 if report.failed or report.not_found else 0
