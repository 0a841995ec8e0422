"""The nvmedia error family.

Every failure a user can meet is an ``NVMediaError`` carrying a stable ``code``
(the strings of CONTRACT.md, also written to the manifest), a ``message`` that
names the measured value and the limit, and a ``hint`` that says what to do::

    NVMediaError
    ├── InputError              the source itself: not_found, unreadable, empty
    │   └── FetchError          a remote URL: fetch_blocked, fetch_failed, too_large
    ├── MediaError              the media: unsupported_format, corrupt_media,
    │                           too_large, too_long, cannot_fit_inline
    ├── PlanError               the request: too_many_assets
    ├── ProcessingError         running tools: ffmpeg_failed, timeout
    ├── StorageError            writing files: no_space
    ├── ConfigError             usage and configuration (CLI exit status 2)
    ├── AssetAPIError           the asset service: asset_api_error
    │   ├── AuthError           auth_failed
    │   └── UploadError         upload_failed
    ├── ChatError               the chat endpoint: chat_failed, auth_failed, timeout
    └── CleanupError            cleanup_failed: assets that could not be deleted (``asset_ids``)
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterable
from typing import Any, Final

from .option_table import ref, render

ERROR_CODES: Final = (
    "not_found",
    "unreadable",
    "empty",
    "unsupported_format",
    "corrupt_media",
    "too_large",
    "too_long",
    "cannot_fit_inline",
    "too_many_assets",
    "ffmpeg_failed",
    "timeout",
    "auth_failed",
    "upload_failed",
    "asset_api_error",
    "cleanup_failed",
    "no_space",
    "config",
    "fetch_blocked",
    "fetch_failed",
    "chat_failed",
)


class NVMediaError(Exception):
    """Base of every nvmedia error.

    Messages and hints may name options through ``option_table.ref``; ``message`` and ``hint``
    spell them for the front door in use (``trim_s=60`` in the library, ``--trim 60`` on the
    command line).

    Args:
        code: the stable error code (one of ``ERROR_CODES``).
        message: what happened, with the measured value and the limit.
        hint: what the user can do about it.
    """

    default_code = "asset_api_error"

    def __init__(self, message: str, *, code: str | None = None, hint: str = "") -> None:
        super().__init__(message)
        self.code: str = code or self.default_code
        self._message = message
        self._hint = hint

    @property
    def message(self) -> str:
        """What happened, options named for the front door in use."""
        return render(self._message)

    @message.setter
    def message(self, message: str) -> None:
        """Restate what happened (an adapter naming things as its caller wrote them)."""
        self._message = message
        self.args = (message,)

    @property
    def hint(self) -> str:
        """What to do about it, options named for the front door in use."""
        return render(self._hint)

    @hint.setter
    def hint(self, hint: str) -> None:
        """Restate what to do (an adapter that knows its caller's way)."""
        self._hint = hint

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, str]:
        """The manifest's ``error`` object."""
        return {"code": self.code, "message": self.message, "hint": self.hint}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps errors picklable across process pools (keyword-only arguments), references unrendered.
        return (_rebuild, (type(self), self._message, self.code, self._hint))


def _rebuild(cls: type[NVMediaError], message: str, code: str, hint: str) -> NVMediaError:
    err = cls.__new__(cls)
    NVMediaError.__init__(err, message, code=code, hint=hint)
    return err


class InputError(NVMediaError):
    """The source cannot be read: ``not_found``, ``unreadable``, ``empty``."""

    default_code = "unreadable"


class MediaError(NVMediaError):
    """The media is unusable or outside the profile's limits."""

    default_code = "corrupt_media"


class PlanError(NVMediaError):
    """A request cannot satisfy the service's limits (``too_many_assets``)."""

    default_code = "too_many_assets"


class ProcessingError(NVMediaError):
    """An external tool failed (``ffmpeg_failed``) or ran too long (``timeout``)."""

    default_code = "ffmpeg_failed"


class StorageError(NVMediaError):
    """A file could not be written for want of room (``no_space``): a full device, a quota, a size limit."""

    default_code = "no_space"


_NO_ROOM = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is used up"}


def no_space_error(
    exc: OSError, folder: str | os.PathLike[str] | None, what: str, needed: int | None, *, approximate: bool = False
) -> StorageError | None:
    """A ``no_space`` error for a write that failed for want of room, else None.

    Args:
        exc: the error the write raised.
        folder: where the file was being written (for the free space), when it is a folder.
        what: what was being written and where, for the message ("the manifest to m.jsonl").
        needed: the bytes that write needed, when known.
        approximate: ``needed`` is an estimate.

    Example:
        >>> err = no_space_error(OSError(errno.ENOSPC, "No space left on device"), "/tmp", "the manifest", 4096)
        >>> err.code
        'no_space'
    """
    need = f"{'about ' if approximate else ''}{needed} bytes" if needed is not None else "more room"
    if exc.errno in _NO_ROOM:
        free = "free space unknown"
        if folder is not None:
            try:
                free = f"{shutil.disk_usage(folder).free} bytes free"
            except OSError:
                pass
        return StorageError(
            f"cannot write {what}: {_NO_ROOM[exc.errno]} ({free}; it needs {need})",
            hint=f"free some space there, or point the run elsewhere: TMPDIR for temporary files, -o, {ref('keep')}",
        )
    if exc.errno == errno.EFBIG:
        return StorageError(
            f"cannot write {what}: the file size limit of this process{_size_limit()} was reached (it needs {need})",
            hint="raise the limit (ulimit -f) or write to a file system that allows larger files",
        )
    return None


def _size_limit() -> str:
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError):
        return ""
    return f" ({limit} bytes)" if limit != resource.RLIM_INFINITY else ""


class ConfigError(NVMediaError):
    """A usage or configuration error: bad option, missing key, unknown profile."""

    default_code = "config"


class ServiceError(NVMediaError):
    """An answer of one of the service's HTTP APIs: a refusal or a failure.

    Attributes:
        status_code: the HTTP status, when there was a response.
    """

    def __init__(
        self, message: str, *, code: str | None = None, hint: str = "", status_code: int | None = None
    ) -> None:
        super().__init__(message, code=code, hint=hint)
        self.status_code = status_code

    def __reduce__(self) -> tuple[Any, ...]:
        # References unrendered, as NVMediaError's own.
        return (_rebuild_service_error, (type(self), self._message, self.code, self._hint, self.status_code))


def _rebuild_service_error(
    cls: type[ServiceError], message: str, code: str, hint: str, status_code: int | None
) -> ServiceError:
    return cls(message, code=code, hint=hint, status_code=status_code)


class AssetAPIError(ServiceError):
    """The asset service refused or failed a call."""

    default_code = "asset_api_error"


class AuthError(AssetAPIError):
    """The key was missing or refused (``auth_failed``)."""

    default_code = "auth_failed"


class UploadError(AssetAPIError):
    """The presigned upload failed (``upload_failed``)."""

    default_code = "upload_failed"


class FetchError(InputError):
    """A remote URL was refused (``fetch_blocked``), failed (``fetch_failed``) or is too big (``too_large``)."""

    default_code = "fetch_failed"


class ChatError(ServiceError):
    """The chat endpoint refused or failed a request (``chat_failed``, ``auth_failed``, ``timeout``)."""

    default_code = "chat_failed"


class CleanupError(NVMediaError):
    """Assets that could not be deleted (``cleanup_failed``); the ids are in ``asset_ids``.

    Attributes:
        asset_ids: the ids still live on the service, in the order they were to be deleted.
    """

    default_code = "cleanup_failed"

    def __init__(self, message: str, *, asset_ids: Iterable[str], code: str | None = None, hint: str = "") -> None:
        super().__init__(message, code=code, hint=hint)
        self.asset_ids: tuple[str, ...] = tuple(asset_ids)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_cleanup, (self._message, self.asset_ids, self.code, self._hint))


def _rebuild_cleanup(message: str, asset_ids: tuple[str, ...], code: str, hint: str) -> CleanupError:
    return CleanupError(message, asset_ids=asset_ids, code=code, hint=hint)
