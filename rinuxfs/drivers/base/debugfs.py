"""The debugfs tree (fs/debugfs's API): directories and files any subsystem adds for debugging.

Contract:
- The root is `DriverCore.debugfs`; fs/debugfs.py mounts it at /sys/kernel/debug, where only
  root may enter (mode 0700, as Linux's default debugfs mount).
- `debugfs_create_dir(name, parent)` makes a directory (mode 0755) and returns it;
  `debugfs_create_file(name, mode, parent, show, store=None)` makes a file whose content is
  `show()` and whose writes go to `store(text)` (KernelError(EINVAL, ERANGE, …) for a bad value),
  as a kobject attribute's. A name taken in the directory is EEXIST.
- `debugfs_remove(entry)` removes a file, or a directory with all it holds (debugfs_remove is
  recursive in Linux 6.x); afterwards lookups give ENOENT and files still open give EIO. The
  root's `removal_listeners` hear of it (the directory, the name), as sysfs's do of kobjects.
- `fault_create_debugfs_attr(name, parent, attr)` makes the directory of one fault-injection
  capability with the generic files of lib/fault_inject.py (mode 0600), and returns it so the
  caller can add the capability's own files (min-order, status, …).
- Nothing is there today but what subsystems add; the tree holds only that.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field

from rinuxfs.drivers.base.kobject import Show, Store
from rinuxfs.errors import KernelError
from rinuxfs.lib.fault_inject import FaultAttr, fault_attr_files


@dataclass(eq=False)
class DebugfsFile:
    name: str
    mode: int
    show: Show
    store: Store | None = None
    parent: DebugfsDir | None = None

    def is_live(self) -> bool:
        parent = self.parent
        return parent is not None and parent.entries.get(self.name) is self and parent.is_live()


@dataclass(eq=False)
class DebugfsDir:
    name: str
    parent: DebugfsDir | None = None
    entries: dict[str, DebugfsDir | DebugfsFile] = field(default_factory=dict)
    removed: bool = False
    removal_listeners: list[Callable[[DebugfsDir, str], None]] = field(default_factory=list)  # the root's count

    def is_live(self) -> bool:
        node: DebugfsDir | None = self
        while node is not None:
            if node.removed:
                return False
            node = node.parent
        return True

    def _add(self, entry: DebugfsDir | DebugfsFile) -> None:
        if entry.name in self.entries:
            raise KernelError(errno.EEXIST, f"debugfs: {entry.name} exists already")
        if not entry.name or "/" in entry.name or entry.name in (".", ".."):
            raise KernelError(errno.EINVAL, f"debugfs: bad name {entry.name!r}")
        self.entries[entry.name] = entry


def debugfs_create_dir(name: str, parent: DebugfsDir) -> DebugfsDir:
    directory = DebugfsDir(name, parent)
    parent._add(directory)
    return directory


def debugfs_create_file(name: str, mode: int, parent: DebugfsDir, show: Show,
                        store: Store | None = None) -> DebugfsFile:
    file = DebugfsFile(name, mode, show, store, parent)
    parent._add(file)
    return file


def debugfs_remove(entry: DebugfsDir | DebugfsFile) -> None:
    parent = entry.parent
    if parent is not None and parent.entries.get(entry.name) is entry:
        del parent.entries[entry.name]
        root = parent
        while root.parent is not None:
            root = root.parent
        for listener in list(root.removal_listeners):
            listener(parent, entry.name)
    if isinstance(entry, DebugfsDir):
        entry.removed = True
    else:
        entry.parent = None


def fault_create_debugfs_attr(name: str, parent: DebugfsDir, attr: FaultAttr) -> DebugfsDir:
    """lib/fault-inject.c's fault_create_debugfs_attr: a directory of the generic fault files."""
    directory = debugfs_create_dir(name, parent)
    for file, show, store in fault_attr_files(attr):
        debugfs_create_file(file, 0o600, directory, show, store)
    return directory
