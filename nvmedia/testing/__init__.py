"""Test support shipped with nvmedia: a local emulator of NVIDIA's asset API and chat endpoint.

Depends on the standard library only (Pillow and PyAV are used, when present, to check media),
so it stays an independent stand-in for the service.
"""

from .emulator import EmulatedAsset, NVCFEmulator, RecordedRequest, main

__all__ = ["EmulatedAsset", "NVCFEmulator", "RecordedRequest", "main"]
