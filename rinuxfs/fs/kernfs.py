"""Generated trees for procfs, sysfs and debugfs: directories, attribute files and links rendered on read.

Contract:
- A `GenFile` renders its whole content with `show()` when read at offset 0
  and serves later offsets from that snapshot, per open file (the seq_file /
  LXCFS rule); it opens with direct_io so the host never caches it. The
  snapshots of all open files share a byte budget (vfs.SnapshotCache): past
  it the least recently read are dropped and render again at their next read.
- A writable file passes the bytes written to `store()`, which raises
  KernelError(EINVAL) for a bad value. As kernfs does, each write(2) is one
  store of at most a page (MAX_WRITE bytes: a longer write is cut there and
  reports that many written), whatever the file offset; the bytes reach
  store() as they are (decoded with surrogateescape, so no value is refused
  for not being UTF-8 before its store has seen it). Opening a file without
  `store` for writing fails with EACCES, for root too, as kernfs does.
- A `GenDir` holds static children and may add dynamic ones from a function
  (the pid directories of /proc); a dynamic child keeps its inode while its
  key lives, so inode numbers stay stable.
- A `MirrorDir` shows a tree the kernel owns elsewhere (the driver core's kobjects, debugfs):
  its children are that tree's entries at the moment of each lookup or readdir, so what is
  registered later appears and what is removed disappears (ENOENT) without a rebuild. The tree
  tells the superblock of each name it removes (`entry_removed`), and the host is told to forget
  that name (asynchronously: a notification sent while the host waits on us could deadlock), so a
  device deleted and found again (a SCSI scan, a PCI rescan) is reached by the same path as soon
  as the host has read it, not after its entry_timeout; meanwhile the old name gives ENOENT.
- The tree keeps no copy of kernel state: every value comes from a callback.
"""

from __future__ import annotations

import errno
import os
import stat
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from rinuxfs.errors import KernelError
from rinuxfs.fs.superblock import SuperBlock
from rinuxfs.fs.vfs import AttrChange, Credentials, Inode, OpenFile, Vfs

Show = Callable[[], str]
Store = Callable[[str], None]
MAX_WRITE = 4096  # kernfs_fop_write_iter: a store sees at most PAGE_SIZE bytes of one write


class KernfsSuperBlock(SuperBlock):
    """A filesystem of generated files whose tree changes: the host caches names and attributes 1 s only."""

    entry_timeout = 1.0
    attr_timeout = 1.0

    def __init__(self, vfs: Vfs) -> None:
        super().__init__(vfs)
        # The directories rendered so far, by id() of the node they show (a MirrorDir holds its node,
        # so the id is not reused while the entry lives); weak, so the map costs what the host holds.
        self.mirrors: weakref.WeakValueDictionary[int, MirrorDir] = weakref.WeakValueDictionary()

    def entry_removed(self, directory: object, name: str) -> None:
        """The kernel's tree took `name` out of `directory`: the host forgets it if it was handed out."""
        mirror = self.mirrors.get(id(directory))
        if mirror is not None and mirror.node is directory:
            mirror.forget(name)

    @property  # type: ignore[override]
    def source(self) -> str:
        """What /proc/mounts shows as the device: the type's own name, as for every pseudo filesystem."""
        return self.fs_type


class GenFile(Inode):
    def __init__(self, sb: SuperBlock, show: Show, store: Store | None = None, mode: int | None = None,
                 st_size: int = 0) -> None:
        if mode is None:
            mode = 0o644 if store else 0o444
        super().__init__(sb, stat.S_IFREG | mode)
        self.show = show
        self.store = store
        self._st_size = st_size

    @property
    def size(self) -> int:
        return self._st_size

    def open(self, flags: int, cred: Credentials) -> OpenFile:
        if flags & os.O_ACCMODE != os.O_RDONLY and self.store is None:
            raise KernelError(errno.EACCES, "read-only attribute")
        return SnapshotFile(self, flags, cred)

    def store_as(self, text: str, opener: Credentials) -> None:
        """A write through a file `opener` opened (files whose store depends on the writer override it)."""
        assert self.store is not None
        self.store(text)

    def setattr(self, change: AttrChange) -> None:
        # O_TRUNC and `echo >` truncate before writing; like sysfs, ignore the size.
        change.size = None
        super().setattr(change)

    def truncate(self, size: int) -> None:
        return None


class SnapshotFile(OpenFile):
    inode: GenFile
    direct_io = True

    def __init__(self, inode: GenFile, flags: int, cred: Credentials) -> None:
        super().__init__(inode, flags)
        self.cred = cred
        self.snapshot: bytes | None = None
        self.cache = inode.sb.vfs.snapshots

    def read(self, offset: int, size: int) -> bytes:
        if offset == 0 or self.snapshot is None:
            self.snapshot = self.inode.show().encode(errors="surrogateescape")
            self.cache.hold(self, len(self.snapshot))
        else:
            self.cache.touch(self)
        return self.snapshot[offset : offset + size]

    def forget_snapshot(self) -> None:
        self.snapshot = None

    def release(self) -> None:
        self.cache.release(self)

    def write(self, offset: int, data: bytes) -> int:
        if self.inode.store is None:
            raise KernelError(errno.EACCES)
        data = data[:MAX_WRITE]
        self.inode.store_as(data.decode(errors="surrogateescape"), self.cred)
        self.inode.touch(m=True, c=True)
        return len(data)


class GenSymlink(Inode):
    def __init__(self, sb: SuperBlock, target: Callable[[], str] | str) -> None:
        super().__init__(sb, stat.S_IFLNK | 0o777)
        self._target = target

    def readlink(self) -> bytes:
        target = self._target() if callable(self._target) else self._target
        return target.encode()

    @property
    def size(self) -> int:
        return len(self.readlink())


Dynamic = Callable[[], Iterable[tuple[str, Callable[[], Inode]]]]


class GenDir(Inode):
    def __init__(self, sb: SuperBlock, parent: GenDir | None = None, mode: int = 0o755) -> None:
        super().__init__(sb, stat.S_IFDIR | mode, nlink=2)
        self._parent = parent
        self.static: dict[bytes, Inode] = {}
        self._dynamic_keys: Callable[[], Iterable[str]] | None = None
        self._dynamic_lookup: Callable[[str], bool] | None = None
        self._dynamic_make: Callable[[str], Inode] | None = None
        self._dynamic_cache: dict[str, Inode] = {}
        self._sweep_at = 64  # sweep the cache of what went away when it grows past this

    @property
    def parent(self) -> Inode:
        return self._parent if self._parent is not None else self

    # --- building the tree (at mount time) ---------------------------------------------

    def dir(self, name: str, mode: int = 0o755) -> GenDir:
        existing = self.static.get(name.encode())
        if isinstance(existing, GenDir):
            return existing
        child = GenDir(self.sb, self, mode)
        self.static[name.encode()] = child
        self.nlink += 1
        return child

    def path(self, path: str, mode: int = 0o755) -> GenDir:
        """The directory at `path` below this one, made (with `mode`) where missing."""
        node = self
        for part in path.strip("/").split("/"):
            if part:
                node = node.dir(part, mode)
        return node

    def file(self, name: str, show: Show, store: Store | None = None, mode: int | None = None,
             st_size: int = 0) -> GenFile:
        child = GenFile(self.sb, show, store, mode, st_size)
        self.static[name.encode()] = child
        return child

    def add_symlink(self, name: str, target: Callable[[], str] | str) -> GenSymlink:
        child = GenSymlink(self.sb, target)
        self.static[name.encode()] = child
        return child

    def dynamic(self, keys: Callable[[], Iterable[str]], exists: Callable[[str], bool],
                make: Callable[[str], Inode]) -> None:
        """Children named by `keys()`, built by `make(key)` and kept while `exists(key)`."""
        self._dynamic_keys, self._dynamic_lookup, self._dynamic_make = keys, exists, make

    # --- the directory operations -------------------------------------------------------

    def lookup(self, name: bytes, cred: Credentials) -> Inode | None:
        child = self.static.get(name)
        if child is not None or self._dynamic_lookup is None:
            return child
        key = name.decode(errors="replace")
        if not self._dynamic_lookup(key):
            self._dynamic_cache.pop(key, None)
            return None
        return self._dynamic_child(key)

    def _dynamic_child(self, key: str) -> Inode:
        child = self._dynamic_cache.get(key)
        if child is None:
            assert self._dynamic_make is not None
            child = self._dynamic_cache[key] = self._dynamic_make(key)
            if len(self._dynamic_cache) > self._sweep_at:
                # Children that went away without anyone listing the directory (a stream of short-lived
                # processes each reading /proc/self) must not pile up: sweep as the cache doubles.
                assert self._dynamic_lookup is not None
                self._forget_gone({k for k in self._dynamic_cache if k == key or self._dynamic_lookup(k)})
        return child

    def _forget_gone(self, live: set[str]) -> None:
        """Drop the children whose key is not live, and have the host drop their names (proc_flush_pid)."""
        for gone in [k for k in self._dynamic_cache if k not in live]:
            del self._dynamic_cache[gone]
            self.sb.vfs.entry_gone(self.ino, gone.encode())
        self._sweep_at = 2 * len(self._dynamic_cache) + 64

    def entries(self, cred: Credentials) -> Iterable[tuple[bytes, Inode]]:
        rows = list(self.static.items())
        if self._dynamic_keys is not None:
            keys = list(self._dynamic_keys())
            self._forget_gone(set(keys))
            rows += [(k.encode(), self._dynamic_child(k)) for k in keys]
        return rows


class LiveFile(GenFile):
    """A file of a tree that can lose it: once `alive()` is false, read and write fail with `gone`.

    Opening it then is ENOENT: in Linux the path no longer leads anywhere (the dentry fails
    revalidation). The host may still hold the name for a moment, until the invalidation sent
    when the tree removed it arrives: it then gets what a fresh lookup gives, not `gone`.
    """

    def __init__(self, sb: SuperBlock, show: Show, store: Store | None, mode: int, st_size: int,
                 alive: Callable[[], bool], gone: int) -> None:
        super().__init__(sb, self._live_show, self._live_store if store is not None else None, mode, st_size)
        self._show, self._store = show, store
        self._alive, self._gone = alive, gone

    def _check(self) -> None:
        if not self._alive():
            raise KernelError(self._gone, "the file was removed")

    def _live_show(self) -> str:
        self._check()
        return self._show()

    def _live_store(self, text: str) -> None:
        self._check()
        assert self._store is not None  # installed only with a store
        self._store(text)

    def open(self, flags: int, cred: Credentials) -> OpenFile:
        if not self._alive():
            raise KernelError(errno.ENOENT, "the file was removed")
        return super().open(flags, cred)


class TreeNode(Protocol):
    """A directory of a kernel-owned tree: a kobject, a debugfs directory."""

    @property
    def entries(self) -> Mapping[str, object]: ...

    def is_live(self) -> bool: ...


class MirrorDir(GenDir):
    """A directory whose children are a node's entries in a kernel-owned tree, rendered on demand.

    Its children are `node.entries` while `node.is_live()`, none after. An entry of `dir_type` is
    a directory of the same kind; a subclass renders the others (`render_leaf`). An inode made for
    an entry is kept while that entry stays under that name, so inode numbers are stable (the host
    kernel and a mount point on top rely on it); a name whose entry went away is forgotten at the
    next lookup or readdir. So the cache holds at most what is registered plus what vanished since
    this directory was last looked at.
    """

    dir_type: type = object

    def __init__(self, sb: KernfsSuperBlock, parent: GenDir | None, node: TreeNode, mode: int = 0o755) -> None:
        super().__init__(sb, parent, mode)
        self.node = node
        self._made: dict[str, tuple[object, Inode]] = {}
        sb.mirrors[id(node)] = self

    def forget(self, name: str) -> None:
        """`name` left the node: drop its inode, and the host's entry (kernfs_dop_revalidate fails it)."""
        if self._made.pop(name, None) is not None:
            self.sb.vfs.entry_gone(self.ino, name.encode(errors="surrogateescape"))

    def children(self) -> Mapping[str, object]:
        return self.node.entries if self.node.is_live() else {}

    def is_dir_node(self, node: object) -> bool:
        return isinstance(node, self.dir_type)

    def render(self, node: object) -> Inode:
        if isinstance(node, self.dir_type):
            return type(self)(self.sb, self, node)
        return self.render_leaf(node)

    def render_leaf(self, node: object) -> Inode:
        raise NotImplementedError

    @property  # type: ignore[override]
    def nlink(self) -> int:
        """2 and one per subdirectory, as kernfs counts: find(1) may rely on it."""
        return 2 + sum(1 for node in self.children().values() if self.is_dir_node(node))

    @nlink.setter
    def nlink(self, value: int) -> None:
        return None  # computed from the tree, not stored

    def lookup(self, name: bytes, cred: Credentials) -> Inode | None:
        key = name.decode(errors="surrogateescape")
        node = self.children().get(key)
        if node is None:
            self._made.pop(key, None)
            return None
        return self._inode(key, node)

    def entries(self, cred: Credentials) -> Iterable[tuple[bytes, Inode]]:
        children = dict(self.children())
        for gone in [key for key in self._made if key not in children]:
            del self._made[gone]
        return [(key.encode(errors="surrogateescape"), self._inode(key, node)) for key, node in children.items()]

    def _inode(self, key: str, node: object) -> Inode:
        made = self._made.get(key)
        if made is not None and made[0] is node:
            return made[1]
        inode = self.render(node)
        self._made[key] = (node, inode)
        return inode
