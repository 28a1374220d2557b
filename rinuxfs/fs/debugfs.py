"""debugfs: the driver core's debugfs tree, mounted at /sys/kernel/debug.

Like sysfs it renders a tree it does not own (`DriverCore.debugfs`, filled through
debugfs_create_dir/debugfs_create_file) and knows nothing of who added what. The root is
mode 0700, owned by root, as Linux mounts debugfs by default, so only root looks inside.
Directories are 0755; files have the mode they were created with, st_size 0, and render
show() at offset 0 like every generated file here. After debugfs_remove, lookups give ENOENT
and a file still open gives EIO (debugfs_file_get fails).
"""

from __future__ import annotations

import errno

from rinuxfs.drivers.base.debugfs import DebugfsDir, DebugfsFile
from rinuxfs.fs.kernfs import KernfsSuperBlock, LiveFile, MirrorDir
from rinuxfs.fs.vfs import Inode, Vfs


class DebugfsSuperBlock(KernfsSuperBlock):
    """The debugfs mount: its root is the driver core's debugfs tree, entered by root only."""

    fs_type = "debugfs"
    magic = 0x64626720  # DEBUGFS_MAGIC, what statfs reports

    def __init__(self, vfs: Vfs, tree: DebugfsDir) -> None:
        super().__init__(vfs)
        self.root = DebugDir(self, None, tree, mode=0o700)
        tree.removal_listeners.append(self.entry_removed)


class DebugDir(MirrorDir):
    node: DebugfsDir
    dir_type = DebugfsDir

    def render_leaf(self, node: object) -> Inode:
        if isinstance(node, DebugfsFile):
            return LiveFile(self.sb, node.show, node.store, node.mode, 0, node.is_live, errno.EIO)
        raise TypeError(f"a debugfs directory holds directories and files, not {node!r}")
