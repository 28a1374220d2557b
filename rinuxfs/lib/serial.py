"""The serial number of a simulated drive: stable for one image path, as a disk keeps its own."""

from __future__ import annotations

import zlib
from pathlib import Path


def drive_serial(image: Path | None) -> str:
    """"RNX" and the CRC-32 of the image path in hex: 11 characters, fits NVMe's SN and ATA's serial."""
    return f"RNX{zlib.crc32(str(image).encode()):08X}"
