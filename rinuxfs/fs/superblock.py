"""A mounted filesystem instance (struct super_block) and what statfs reports of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rinuxfs.fs.vfs import Inode, Vfs


@dataclass(frozen=True)
class StatFs:
    f_type: int
    f_bsize: int
    f_blocks: int
    f_bfree: int
    f_bavail: int
    f_files: int
    f_ffree: int
    f_namemax: int = 255
    f_frsize: int = 4096


class SuperBlock:
    """What every filesystem instance has: a type, a device number, a root, options."""

    fs_type = "none"
    magic = 0
    source = "none"
    entry_timeout = 300.0
    attr_timeout = 300.0

    def __init__(self, vfs: Vfs) -> None:
        self.vfs = vfs
        self.dev = vfs.new_anon_dev()
        self.root: Inode

    def options(self) -> str:
        """Superblock options as /proc/mounts shows them after the per-mount flags."""
        return "rw"

    def statfs(self) -> StatFs:
        return StatFs(self.magic, 4096, 0, 0, 0, 0, 0)
