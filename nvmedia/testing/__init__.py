"""Test support shipped with nvmedia: a local emulator of NVIDIA's asset API and chat endpoint.

``NVCFEmulator`` serves the emulated service over loopback HTTP (``start``) or in-process
through an httpx transport (``NVCFEmulator().transport``). The service and the server depend
on the standard library only (Pillow and PyAV are used, when present, to check media), so
they stay an independent stand-in for the service; the transport needs httpx.
"""

from .emulator import EmulatedAsset, EmulatorStartError, NVCFEmulator, RecordedRequest, main
from .service import NVCFService

__all__ = ["EmulatedAsset", "EmulatorStartError", "NVCFEmulator", "NVCFService", "RecordedRequest", "main"]
