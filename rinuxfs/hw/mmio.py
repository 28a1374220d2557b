"""The path from a driver's register access to a device model (a BAR mapping).

The models are sans-IO: a register write only records work. The machine is
what makes hardware run: after each write, while the device has work, it
services it. So a doorbell write returns with the commands executed and
their interrupts delivered, which keeps the I/O path synchronous and usable
both at boot and under the FUSE event loop.
"""

from __future__ import annotations

from typing import Protocol


class MmioDevice(Protocol):
    def mmio_read(self, offset: int, size: int) -> int: ...
    def mmio_write(self, offset: int, size: int, value: int) -> None: ...
    def service(self, budget: int | None = None) -> int: ...
    @property
    def has_work(self) -> bool: ...


class Bar:
    """A device's register window as its driver sees it (readl/writel/readq/writeq)."""

    def __init__(self, device: MmioDevice) -> None:
        self.device = device
        self._running = False

    def readl(self, offset: int) -> int:
        return self.device.mmio_read(offset, 4)

    def readq(self, offset: int) -> int:
        return self.device.mmio_read(offset, 8)

    def writel(self, offset: int, value: int) -> None:
        self.device.mmio_write(offset, 4, value & 0xFFFFFFFF)
        self._run()

    def writeq_lo_hi(self, offset: int, value: int) -> None:
        """lo_hi_writeq: two 32-bit writes, low half first, as Linux does for 64-bit registers."""
        self.device.mmio_write(offset, 4, value & 0xFFFFFFFF)
        self.device.mmio_write(offset + 4, 4, value >> 32)
        self._run()

    def _run(self) -> None:
        # An interrupt handler writes doorbells from inside service(): the outer loop picks that work up.
        if self._running:
            return
        self._running = True
        try:
            device = self.device
            while device.has_work:
                if not device.service():
                    break
        finally:
            self._running = False
