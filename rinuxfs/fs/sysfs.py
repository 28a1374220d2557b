"""sysfs: the driver core's tree of kobjects, rendered as directories, files and symlinks.

sysfs knows no driver. It shows `DriverCore.root` as it is at each lookup, readdir and read;
whatever a driver, the block layer or mm registered (at boot or later) is there, and whatever
they unregistered is gone:
- a Kobject (an attribute group too) is a directory, mode 0755 (the root 0555);
- an Attribute is a file of st_size 4096 (as sysfs reports) with the attribute's mode. Reading
  renders show() at offset 0 (one snapshot per open file); a write passes its text to store(),
  which rejects a bad value with Linux's errno. Opening a file without store for writing is
  EACCES, for root too (kernfs_fop_open);
- a Link is a symlink whose text is computed from where its directory and its target sit at
  the time of reading, relative as kernfs writes it (kernfs_get_target_path);
- after removal, lookups give ENOENT and a file still open gives ENODEV (kernfs_get_active);
  the host is told to forget the name at once, so what comes back is found by the same path.
"""

from __future__ import annotations

import errno

from rinuxfs.drivers.base.core import DriverCore
from rinuxfs.drivers.base.kobject import Attribute, Kobject, Link
from rinuxfs.fs.kernfs import GenSymlink, KernfsSuperBlock, LiveFile, MirrorDir
from rinuxfs.fs.superblock import SuperBlock
from rinuxfs.fs.vfs import Inode, Vfs

SYSFS_MAGIC = 0x62656572
SYSFS_ATTR_SIZE = 4096


class SysSuperBlock(KernfsSuperBlock):
    fs_type = "sysfs"
    magic = SYSFS_MAGIC

    def __init__(self, vfs: Vfs, core: DriverCore) -> None:
        super().__init__(vfs)
        self.root = SysDir(self, None, core.root, mode=0o555)
        core.root.removal_listeners.append(self.entry_removed)


class SysDir(MirrorDir):
    """A kobject's directory (an attribute group's too)."""

    node: Kobject
    dir_type = Kobject

    def render_leaf(self, node: object) -> Inode:
        if isinstance(node, Link):
            return SysLink(self.sb, self.node, node)
        if isinstance(node, Attribute):
            return sys_attr(self.sb, self.node, node)
        raise TypeError(f"a kobject holds kobjects, attributes and links, not {node!r}")


def sys_attr(sb: SuperBlock, owner: Kobject, attribute: Attribute) -> LiveFile:
    """An attribute file; ENODEV once its kobject or the attribute itself left the tree."""

    def active() -> bool:
        return owner.is_live() and owner.entries.get(attribute.name) is attribute

    return LiveFile(sb, attribute.show, attribute.store, attribute.mode, SYSFS_ATTR_SIZE, active, errno.ENODEV)


class SysLink(GenSymlink):
    def __init__(self, sb: SuperBlock, owner: Kobject, link: Link) -> None:
        super().__init__(sb, lambda: kernfs_target_path(owner.path, link.target.path))


def kernfs_target_path(directory: str, target: str) -> str:
    """kernfs_get_target_path: the text of a symlink in /sys/`directory` that points to /sys/`target`.

    It climbs from the link's directory to the first ancestor of the target's parent, then
    names the way down, so a link to an ancestor still ends in that ancestor's name:
    /sys/block/sda/device is "../../../0:0:0:0", never "../.." (lsblk takes HCTL and the
    SCSI host, hence TRAN, from that last component).
    """
    base = [c for c in directory.split("/") if c]
    dest = [c for c in target.split("/") if c]
    ups = 0
    while base and dest[:-1][:len(base)] != base:
        base.pop()
        ups += 1
    return "../" * ups + "/".join(dest[len(base):])
