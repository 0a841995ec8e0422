"""What the asset calls return: created assets, asset facts, bulk-delete reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ._redact import redact_url
from .errors import CleanupError, UploadError


@dataclass(frozen=True)
class CreatedAsset:
    """A freshly created asset and where to upload its bytes.

    Attributes:
        asset_id: the asset's UUID.
        upload_url: the presigned PUT URL (secret: never shown in full).
        content_type: the content type the URL was signed for.
        description: the description the URL was signed for.
    """

    asset_id: str
    upload_url: str = field(repr=False)
    content_type: str
    description: str

    def __repr__(self) -> str:
        return (
            f"CreatedAsset(asset_id={self.asset_id!r}, upload_url={redact_url(self.upload_url)!r}, "
            f"content_type={self.content_type!r}, description={self.description!r})"
        )


@dataclass(frozen=True)
class AssetInfo:
    """What the asset API says about one asset.

    Attributes:
        asset_id: the asset's UUID.
        content_type: its content type.
        description: its description.
    """

    asset_id: str
    content_type: str
    description: str


@dataclass(frozen=True)
class DeleteOutcome:
    """What became of one asset in a bulk delete.

    Attributes:
        asset_id: the id as given.
        status: ``deleted``, ``not_found`` (already gone: counts as deleted) or ``failed``.
        reason: why it failed (empty otherwise).
    """

    asset_id: str
    status: Literal["deleted", "not_found", "failed"]
    reason: str = ""


@dataclass(frozen=True)
class DeleteReport:
    """The outcome of a bulk delete, one entry per distinct id, in the order given.

    Example:
        >>> report = client.delete_many(ids)  # doctest: +SKIP
        >>> report.failed                      # doctest: +SKIP
        ('b5b841c3-11c2-4c34-b057-9475e82c5369',)
        >>> report.raise_for_failures()        # doctest: +SKIP
        Traceback (most recent call last):
        nvmedia.errors.CleanupError: could not delete 1 of 190 assets: ...
    """

    outcomes: tuple[DeleteOutcome, ...]

    def _ids(self, status: str) -> tuple[str, ...]:
        return tuple(o.asset_id for o in self.outcomes if o.status == status)

    @property
    def deleted(self) -> tuple[str, ...]:
        """Ids deleted now."""
        return self._ids("deleted")

    @property
    def not_found(self) -> tuple[str, ...]:
        """Ids the service did not know (already deleted or expired): they count as deleted."""
        return self._ids("not_found")

    @property
    def failed(self) -> tuple[str, ...]:
        """Ids that could not be deleted."""
        return self._ids("failed")

    def raise_for_failures(self) -> None:
        """Raise ``CleanupError`` listing the ids that could not be deleted, if any.

        Raises:
            CleanupError: at least one id failed.
        """
        failures = [o for o in self.outcomes if o.status == "failed"]
        if not failures:
            return
        listed = "; ".join(f"{o.asset_id} ({o.reason})" for o in failures)
        raise CleanupError(
            f"could not delete {len(failures)} of {len(self.outcomes)} assets: {listed}",
            asset_ids=[o.asset_id for o in failures],
            hint="delete them later with `nvmedia assets delete ID...` (the service removes assets after 24 h)",
        )


class UploadURLExpired(UploadError):
    """The presigned URL expired before the upload (403 ``Request has expired``); a fresh asset is needed."""
