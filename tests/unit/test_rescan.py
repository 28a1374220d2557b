"""An image file that grows or shrinks under a booted kernel: nothing changes until the driver rescans.

The rescan goes through the sysfs attributes Linux offers (`sys/class/nvme/nvme0/rescan_controller`,
`sys/block/sda/device/rescan`), written through the kernel's VFS on a whole kernel booted over a real
image file.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rinuxfs.errors import KernelError
from rinuxfs.fs.vfs import ROOT_CRED
from rinuxfs.kernel import Kernel, KernelConfig
from tests.unit.test_sysfs_render import node

MIB = 1 << 20


@pytest.fixture(params=["nvme", "ahci"])
def kernel(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Kernel]:
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(64 * MIB)
    k = Kernel(KernelConfig(image=image, controller=request.param, mem=32 * MIB))
    try:
        yield k
    finally:
        k.close()


def rescan(k: Kernel) -> None:
    path = "/sys/class/nvme/nvme0/rescan_controller" if k.config.controller == "nvme" else \
        "/sys/block/sda/device/rescan"
    attr = node(k, path).open(os.O_WRONLY, ROOT_CRED)
    attr.write(0, b"1\n")
    k.workqueue.flush()  # the scan work runs between requests; here, now


def log_lines(k: Kernel) -> list[str]:
    return [r.text for r in k.log.records()]


def test_a_grown_image_shows_after_a_rescan_only(kernel: Kernel) -> None:
    disk = kernel.block.disks[0]
    mapping = kernel.bdev_mappings[disk.name]
    assert disk.nr_sects == 64 * MIB // 512
    os.truncate(kernel.config.image, 96 * MIB)  # type: ignore[arg-type]
    assert mapping.read(64 * MIB, 4096) == b"", "the disk still ends where it did"
    assert disk.nr_sects == 64 * MIB // 512

    rescan(kernel)
    assert disk.nr_sects == disk.whole.nr_sects == 96 * MIB // 512
    assert mapping.read(64 * MIB, 4096) == bytes(4096)
    change = f"{disk.name}: detected capacity change from {64 * MIB // 512} to {96 * MIB // 512}"
    assert change in log_lines(kernel)
    if kernel.config.controller == "ahci":  # sd_print_capacity speaks again for a new capacity
        assert "sd 0:0:0:0: [sda] 196608 512-byte logical blocks: (101 MB/96.0 MiB)" in log_lines(kernel)

    before = len(log_lines(kernel))
    rescan(kernel)
    assert len(log_lines(kernel)) == before, "a rescan that finds the same size prints nothing"


def test_a_shrunk_image_fails_reads_past_its_end_until_a_rescan(kernel: Kernel) -> None:
    disk = kernel.block.disks[0]
    mapping = kernel.bdev_mappings[disk.name]
    os.truncate(kernel.config.image, 32 * MIB)  # type: ignore[arg-type]
    assert mapping.read(16 * MIB, 4096) == bytes(4096)
    with pytest.raises(KernelError) as e:
        mapping.read(48 * MIB, 4096)
    assert e.value.errno in (errno.EIO, errno.ENODATA)
    assert any(f"error, dev {disk.name}, sector {48 * MIB // 512}" in line for line in log_lines(kernel))

    rescan(kernel)
    assert disk.nr_sects == 32 * MIB // 512
    assert mapping.read(48 * MIB, 4096) == b"", "past the new end is past the disk: nothing to read"
