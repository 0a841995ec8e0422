"""Where the asset API is, and where the key may be sent.

The key travels on every asset API call, so it goes only over https, or over
plain http to a loopback address (127.0.0.0/8, ``::1``, ``localhost``), unless
the caller allows otherwise. Presigned upload URLs carry no key and are not
checked here.
"""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass, field
from typing import Final

import httpx

from ._redact import redact_text, redact_url
from .config import env_api_key, env_assets_url
from .errors import AssetAPIError, AuthError, ConfigError
from .option_table import ref

_URL_HINT: Final = (
    f"pass {ref('assets_url')} or set NVMEDIA_ASSETS_URL to e.g. https://api.nvcf.nvidia.com/v2/nvcf/assets"
)
_NO_KEY_HINT: Final = f"set NVIDIA_API_KEY or pass {ref('api_key')}"
_INSECURE_HINT: Final = (
    "use an https:// asset API URL; plain http is allowed only to a loopback address (127.0.0.0/8, ::1, localhost), "
    f"or pass {ref('allow_insecure_http', True)} if you accept sending the key in clear text"
)


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1``: addresses that never leave the machine.

    Example:
        >>> is_loopback_host("127.0.0.2"), is_loopback_host("[::1]"), is_loopback_host("example.com")
        (True, True, False)
    """
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_assets_url(url: str, *, allow_insecure_http: bool = False) -> str:
    """The asset API base URL, checked and tidied (no trailing slash, no credentials).

    The key travels on every asset API call, so the URL must be https, or plain http
    to a loopback address, unless ``allow_insecure_http`` says otherwise. Credentials
    written into the URL (``http://KEY@host``) are dropped: the key goes in ``api_key``.

    Raises:
        ConfigError: the URL is not a valid http(s) URL, or is plain http to another host.

    Example:
        >>> check_assets_url("http://127.0.0.1:8080/v2/nvcf/assets/")
        'http://127.0.0.1:8080/v2/nvcf/assets'
    """
    text = url.strip().rstrip("/")
    shown = redact_url(text)
    try:
        parsed = httpx.URL(text)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise ConfigError(
            f"the asset API URL {shown!r} is not a valid URL ({redact_text(str(exc))})",
            hint=_URL_HINT,
        ) from None
    if parsed.port is not None and not 0 <= parsed.port < 65536:
        raise ConfigError(
            f"the asset API URL {shown!r} is not a valid URL (port {parsed.port} is outside 0-65535)",
            hint=_URL_HINT,
        )
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(
            f"the asset API URL {shown!r} is not an http(s) URL",
            hint=_URL_HINT,
        )
    if parsed.scheme == "http" and not allow_insecure_http and not is_loopback_host(parsed.host):
        raise ConfigError(
            f"the asset API URL {shown!r} is plain http to {parsed.host}, which would send the API key unencrypted",
            hint=_INSECURE_HINT,
        )
    return str(parsed.copy_with(username=None, password=None, fragment=None)).rstrip("/")


@dataclass(frozen=True)
class AssetEndpoint:
    """Where the asset API is and the key to use there (the key never shows in a repr).

    Attributes:
        base_url: the checked asset API base (``.../v2/nvcf/assets``).
        api_key: the bearer key, or None when none is configured.
    """

    base_url: str
    api_key: str | None = field(repr=False)

    @classmethod
    def configure(
        cls, api_key: str | None = None, base_url: str | None = None, *, allow_insecure_http: bool = False
    ) -> AssetEndpoint:
        """An endpoint from explicit values, else ``$NVIDIA_API_KEY`` / ``$NVMEDIA_ASSETS_URL``, else NVCF's URL.

        Raises:
            ConfigError: the URL is invalid, or plain http to a host that is not loopback.
        """
        key = api_key if api_key is not None else env_api_key()
        url = base_url or env_assets_url()
        return cls(check_assets_url(url, allow_insecure_http=allow_insecure_http), (key or "").strip() or None)

    def auth(self, op: str) -> dict[str, str]:
        """The Authorization header of an asset API call.

        Raises:
            AuthError: no key is configured.
        """
        if self.api_key is None:
            raise AuthError(f"{op}: no API key is set, and the asset API needs one", hint=_NO_KEY_HINT)
        return {"Authorization": f"Bearer {self.api_key}"}

    def asset_url(self, asset_id: str) -> str:
        """The URL of one asset.

        Raises:
            AssetAPIError: ``asset_id`` is not a UUID (nothing is sent for it).
        """
        return f"{self.base_url}/{canonical_asset_id(asset_id)}"


def canonical_asset_id(asset_id: str) -> str:
    """``asset_id`` as a lower-case UUID.

    Raises:
        AssetAPIError: it is not a UUID.
    """
    try:
        return str(uuid.UUID(asset_id))
    except (ValueError, TypeError, AttributeError):
        raise AssetAPIError(
            f"{str(asset_id)[:60]!r} is not an asset id (a UUID such as b5b841c3-11c2-4c34-b057-9475e82c5369)",
            hint="pass an id returned by create/upload_file or listed by `nvmedia assets list`",
        ) from None
