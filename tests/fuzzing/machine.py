"""What the controller fuzzers share: a machine (RAM, an image file, a device model) seen from the host.

`Machine` owns the RAM and the image of one case, gives the host its
register accessors and RAM pokes, and checks the device after each step:
its `consistency_errors()` must be empty and it may raise only the
interrupt vectors it has.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from hypothesis import strategies as st

from rinuxfs.hw.image import DiskImage
from rinuxfs.hw.ram import PhysicalMemory

PAGE = 4096
U64 = (1 << 64) - 1


@st.composite
def addresses(draw: st.DrawFn, ram_size: int) -> int:
    """Where a guest pointer may point: pages, odd offsets, the last bytes of RAM, past its end, anywhere."""
    return draw(st.one_of(
        st.integers(0, ram_size // PAGE - 1).map(lambda p: p * PAGE),
        st.integers(0, ram_size - 1),
        st.integers(ram_size - 256, ram_size + PAGE),
        st.sampled_from([0, 1, 2, 4, 8, ram_size - 8, ram_size, 1 << 32, U64 - 7, U64]),
        st.integers(0, U64),
    ))


seeds = st.integers(0, 2**32 - 1)


class Device(Protocol):
    def mmio_read(self, offset: int, size: int) -> int: ...
    def mmio_write(self, offset: int, size: int, value: int) -> None: ...
    def consistency_errors(self) -> list[str]: ...


class Machine:
    def __init__(self, workdir: Path, name: str, *, ram_size: int, image_size: int, read_only: bool,
                 random_bytes: int, data_seed: int) -> None:
        # Every byte a case writes comes from its own seed: data read into RAM can become commands,
        # so a case replays the same only if its data is the same too.
        self.rng = random.Random(data_seed)
        self.path = workdir / name
        with open(self.path, "wb") as f:
            f.truncate(image_size)
            if image_size:  # something to read besides zeros, at both ends
                os.pwrite(f.fileno(), self.rng.randbytes(min(image_size, random_bytes)), 0)
                os.pwrite(f.fileno(), self.rng.randbytes(min(image_size, 4096)), max(0, image_size - 4096))
        self.ram = PhysicalMemory(ram_size)
        self.medium = DiskImage(self.path, read_only=read_only)
        self.irqs: list[int] = []
        self.step = 0
        self.device: Device  # set by the subclass once it built the model
        self.vectors = 1

    def close(self) -> None:
        self.medium.close()
        self.ram.close()

    # registers: a read returns a value of the access's width
    def r(self, offset: int, size: int = 4) -> int:
        value = self.device.mmio_read(offset, size)
        assert 0 <= value < 1 << (8 * size if size in (1, 2, 4, 8) else 64), f"MMIO read of {offset:#x}: {value:#x}"
        return value

    def w(self, offset: int, value: int, size: int = 4) -> None:
        self.device.mmio_write(offset, size, value)

    # RAM, as the host's CPU sees it
    def poke(self, addr: int, data: bytes) -> None:
        end = min(addr + len(data), self.ram.size)
        if addr < end:
            self.ram.view[addr:end] = data[:end - addr]

    def peek(self, addr: int, n: int) -> bytes:
        return bytes(self.ram.view[addr:addr + n])

    def image(self, offset: int, length: int) -> bytes:
        """The image file's bytes, zeros past its end (what the medium reads there)."""
        return os.pread(self.medium.fd, length, offset).ljust(length, b"\0")

    def check(self) -> None:
        errors = self.device.consistency_errors()
        assert not errors, f"step {self.step}: the model's state broke its rules: {errors}"
        assert all(0 <= v < self.vectors for v in self.irqs), f"interrupts on vectors {sorted(set(self.irqs))}"


def run_case(host: Machine, mode: str, bring_up: Callable[[], object], run: Callable[[], str],
             recover: Callable[[], object]) -> str:
    """Bring the device up, run the case's steps, then prove it still works; always free the machine."""
    try:
        host.check()
        bring_up()
        label = run()
        recover()
        host.check()
        return f"{mode}:{label}"
    finally:
        host.close()
