"""devtmpfs-like /dev: nodes for the devices the kernel registered.

The storage work registers the disk and its partitions here; until a driver
registers something, /dev is empty.
"""

from __future__ import annotations

from rinuxfs.fs.kernfs import GenDir
from rinuxfs.fs.superblock import StatFs, SuperBlock
from rinuxfs.fs.vfs import Vfs

TMPFS_MAGIC = 0x01021994  # devtmpfs is a tmpfs instance


class DevSuperBlock(SuperBlock):
    fs_type = "devtmpfs"
    magic = TMPFS_MAGIC
    source = "devtmpfs"

    def __init__(self, vfs: Vfs) -> None:
        super().__init__(vfs)
        self.root = GenDir(self, mode=0o755)

    def options(self) -> str:
        return "rw,mode=755"

    def statfs(self) -> StatFs:
        return StatFs(TMPFS_MAGIC, 4096, 0, 0, 0, 0, 0)
