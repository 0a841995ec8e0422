"""nvmedia: make real-world media acceptable to NVIDIA's hosted multimodal models.

The public names, nothing else. Heavy modules load on first use so that
``import nvmedia`` and ``nvmedia --help`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    AssetAPIError,
    AuthError,
    ChatError,
    CleanupError,
    ConfigError,
    FetchError,
    InputError,
    MediaError,
    NVMediaError,
    PlanError,
    ProcessingError,
    UploadError,
)
from .profiles import GENERIC, NEMOTRON_3_NANO_OMNI, Profile, get_profile

__version__ = "0.1.0"

__all__ = [
    "AssetAPIError",
    "AssetClient",
    "AsyncAssetClient",
    "AsyncClient",
    "AuthError",
    "ChatError",
    "CleanupError",
    "Client",
    "ConfigError",
    "FetchError",
    "GENERIC",
    "InputError",
    "Item",
    "MediaError",
    "NEMOTRON_3_NANO_OMNI",
    "NVMediaError",
    "PlanError",
    "PrepareCall",
    "PrepareOptions",
    "Prepared",
    "ProcessingError",
    "Profile",
    "Rewritten",
    "UploadError",
    "__version__",
    "aprepare",
    "arewrite_messages",
    "get_profile",
    "inspect",
    "prepare",
    "rewrite_messages",
]

_LAZY = {
    "AssetClient": "assets",
    "AsyncAssetClient": "assets",
    "AsyncClient": "client",
    "Client": "client",
    "Item": "items",
    "PrepareCall": "prepared",
    "PrepareOptions": "options",
    "Prepared": "prepared",
    "aprepare": "api",
    "inspect": "api",
    "prepare": "api",
    "Rewritten": "integrations.openai",
    "arewrite_messages": "integrations.openai",
    "rewrite_messages": "integrations.openai",
}

if TYPE_CHECKING:
    from .api import aprepare, inspect, prepare
    from .assets import AssetClient, AsyncAssetClient
    from .client import AsyncClient, Client
    from .integrations.openai import Rewritten, arewrite_messages, rewrite_messages
    from .items import Item
    from .options import PrepareOptions
    from .prepared import PrepareCall, Prepared


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nvmedia' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
