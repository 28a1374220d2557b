"""The VFS: inodes, open files, mounts, and the system calls the FUSE adapter forwards.

Contract:
- Every inode has a number unique for the life of the kernel (never reused),
  so FUSE inode numbers need no generation counter.
- An inode the host kernel knows about (returned by lookup, create, mkdir,
  symlink, link, mknod or a readdirplus entry) sits in `inodes` with a lookup
  count; `forget` lowers it and drops the inode when it reaches zero. A
  filesystem keeps its own references to the inodes it still holds (a tmpfs
  directory holds its children).
- An inode's data is released when it has no name left (nlink 0) and no open
  file: `Inode.maybe_evict` is called whenever either drops.
- Mounts cover a directory inode: looking up that directory anywhere yields the
  root of the mounted filesystem instead. Renaming or removing a mount point
  fails with EBUSY; renaming or linking across mounts fails with EXDEV.
- Permission checks on paths and modes are the host kernel's: the mount uses
  default_permissions, so the VFS only enforces what a filesystem decides
  (read-only attributes, name limits, sizes).

Errors are KernelError(errno); the caller (fuse.py) maps them once.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import takewhile
from typing import TYPE_CHECKING, Protocol

from rinuxfs.errors import KernelError

if TYPE_CHECKING:
    from rinuxfs.fs.superblock import SuperBlock

NAME_MAX = 255
SNAPSHOT_BUDGET = 16 << 20  # bytes of rendered views all open files keep together
MAX_LFS_FILESIZE = (1 << 63) - 1


@dataclass(frozen=True)
class Credentials:
    """Who makes a request: the caller's ids as FUSE reports them."""

    uid: int
    gid: int
    pid: int
    umask: int = 0o022


ROOT_CRED = Credentials(0, 0, 0)


@dataclass
class AttrChange:
    """The fields a setattr changes (None: unchanged)."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None
    ctime_ns: int | None = None


def now_ns() -> int:
    return time.time_ns()


class Inode:
    """An inode of any filesystem; subclasses implement the operations they support.

    The default of every operation is the errno Linux returns when the inode
    lacks it: ENOTDIR for directory operations on a non-directory, EINVAL for
    readlink on a non-symlink, EACCES to create in a directory that can't.
    """

    def __init__(self, sb: SuperBlock, mode: int, uid: int = 0, gid: int = 0, nlink: int = 1, rdev: int = 0) -> None:
        self.sb = sb
        self.ino = sb.vfs.new_ino()
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.nlink = nlink
        self.rdev = rdev
        t = now_ns()
        self.atime_ns = self.mtime_ns = self.ctime_ns = t
        self.lookups = 0
        self.opens = 0

    # --- attributes --------------------------------------------------------------------

    @property
    def size(self) -> int:
        return 0

    @property
    def blocks(self) -> int:
        """st_blocks, in 512-byte units."""
        return 0

    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    def touch(self, *, a: bool = False, m: bool = False, c: bool = False) -> None:
        t = now_ns()
        if a:
            self.atime_ns = t
        if m:
            self.mtime_ns = t
        if c:
            self.ctime_ns = t

    def setattr(self, change: AttrChange) -> None:
        if change.size is not None:
            self.truncate(change.size)
        if change.mode is not None:
            self.mode = stat.S_IFMT(self.mode) | stat.S_IMODE(change.mode)
        if change.uid is not None:
            self.uid = change.uid
        if change.gid is not None:
            self.gid = change.gid
        if change.atime_ns is not None:
            self.atime_ns = change.atime_ns
        if change.mtime_ns is not None:
            self.mtime_ns = change.mtime_ns
        self.ctime_ns = change.ctime_ns if change.ctime_ns is not None else now_ns()

    def truncate_on_open(self) -> None:
        """What open(O_TRUNC) does: empty the file and mark its times (POSIX), whatever its size was."""
        t = now_ns()
        self.setattr(AttrChange(size=0, mtime_ns=t, ctime_ns=t))

    def truncate(self, size: int) -> None:
        if self.is_dir():
            raise KernelError(errno.EISDIR, "cannot truncate a directory")
        raise KernelError(errno.EINVAL, "this file has no size to change")

    # --- files -------------------------------------------------------------------------

    def open(self, flags: int, cred: Credentials) -> OpenFile:
        raise KernelError(errno.ENXIO, "no device behind this node")

    def readlink(self) -> bytes:
        raise KernelError(errno.EINVAL, "not a symbolic link")

    # --- directories -------------------------------------------------------------------

    def lookup(self, name: bytes, cred: Credentials) -> Inode | None:
        raise KernelError(errno.ENOTDIR)

    def entries(self, cred: Credentials) -> Iterable[tuple[bytes, Inode]]:
        raise KernelError(errno.ENOTDIR)

    def iterate(self, start: int, cred: Credentials) -> Iterator[tuple[int, bytes, Inode]] | None:
        """(cookie, name, inode) past cookie `start` for a directory with stable positions (cookies from 3 on).

        None: the directory has none, and the VFS lists a snapshot of `entries()` per open directory.
        """
        return None

    def next_cookie(self) -> int:
        """The cookie the next name added will get (directories with stable positions)."""
        return 0

    @property
    def parent(self) -> Inode:
        return self

    def create(self, name: bytes, mode: int, rdev: int, cred: Credentials) -> Inode:
        raise KernelError(errno.ENOTDIR) if not self.is_dir() else KernelError(errno.EACCES)

    def mkdir(self, name: bytes, mode: int, cred: Credentials) -> Inode:
        raise KernelError(errno.ENOTDIR) if not self.is_dir() else KernelError(errno.EPERM)

    def symlink(self, name: bytes, target: bytes, cred: Credentials) -> Inode:
        raise KernelError(errno.ENOTDIR) if not self.is_dir() else KernelError(errno.EACCES)

    def link(self, name: bytes, inode: Inode) -> None:
        raise KernelError(errno.ENOTDIR) if not self.is_dir() else KernelError(errno.EPERM)

    def unlink(self, name: bytes) -> None:
        raise KernelError(errno.ENOTDIR) if not self.is_dir() else KernelError(errno.EPERM)

    def rmdir(self, name: bytes) -> None:
        raise KernelError(errno.ENOTDIR) if not self.is_dir() else KernelError(errno.EPERM)

    def rename(self, name: bytes, new_dir: Inode, new_name: bytes, flags: int) -> None:
        raise KernelError(errno.ENOTDIR) if not self.is_dir() else KernelError(errno.EPERM)

    # --- life --------------------------------------------------------------------------

    def maybe_evict(self) -> None:
        """Release data once the inode has no name and no open file (filesystems override)."""


class OpenFile:
    """An open file description (struct file). Subclasses implement I/O."""

    direct_io = False
    keep_cache = False
    nonseekable = False

    def __init__(self, inode: Inode, flags: int) -> None:
        self.inode = inode
        self.flags = flags

    def read(self, offset: int, size: int) -> bytes | memoryview:
        raise KernelError(errno.EBADF)

    def write(self, offset: int, data: bytes) -> int:
        raise KernelError(errno.EBADF)

    def fsync(self, datasync: bool) -> None:
        return None

    def release(self) -> None:
        return None


class Snapshot(Protocol):
    def forget_snapshot(self) -> None: ...


class SnapshotCache:
    """What open files of generated filesystems keep between reads, within a byte budget.

    A file renders its view at a read from offset 0 and serves later offsets from that copy
    (kernfs.SnapshotFile); an open generated directory keeps its listing (DirHandle). A client
    holding many of them open must not make the daemon hold a copy each without bound (10,000
    open /proc/interrupts of a 64-CPU machine are 500 MB), so copies past the budget are
    dropped, least recently read first; a file whose copy was dropped renders again at its next
    read, as Linux's seq_file renders again at each read(2).
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._held: OrderedDict[Snapshot, int] = OrderedDict()  # least recently read first

    def hold(self, holder: Snapshot, size: int) -> None:
        self.release(holder)
        self._held[holder] = size
        self.used += size
        while self.used > self.budget and len(self._held) > 1:
            victim, victim_size = self._held.popitem(last=False)
            self.used -= victim_size
            victim.forget_snapshot()

    def touch(self, holder: Snapshot) -> None:
        if holder in self._held:
            self._held.move_to_end(holder)

    def release(self, holder: Snapshot) -> None:
        self.used -= self._held.pop(holder, 0)


DIR_ROW_BYTES = 100  # what a snapshot row (a name and an inode reference in a list) costs, roughly


class DirHandle:
    """An open directory; for one without stable positions, a snapshot of its entries taken when read from 0.

    The snapshots count against the same budget as the views' (SnapshotCache): one dropped
    past it is taken again at the next read, where the positions may have moved.
    """

    def __init__(self, inode: Inode) -> None:
        self.inode = inode
        self.rows: list[tuple[bytes, Inode]] | None = None
        self.end = inode.next_cookie()  # names added after this do not show until a rewind

    def forget_snapshot(self) -> None:
        self.rows = None


@dataclass(eq=False)
class Mount:
    mount_id: int
    parent_id: int
    sb: SuperBlock
    root: Inode
    covered: Inode | None
    path: str  # absolute path inside the simulated machine
    flags: str  # per-mount options: rw,nosuid,nodev,noexec,relatime


def check_name(name: bytes) -> None:
    if len(name) > NAME_MAX:
        raise KernelError(errno.ENAMETOOLONG, f"name longer than {NAME_MAX} bytes")
    if not name or b"/" in name or name in (b".", b".."):
        raise KernelError(errno.EINVAL, "invalid file name")


class Vfs:
    """The kernel's file-system switch: inode table, open files, mounts."""

    def __init__(self) -> None:
        self._next_ino = 1  # the first inode made (the rootfs root) is FUSE's ROOT_INODE
        self.inodes: dict[int, Inode] = {}
        self.files: dict[int, OpenFile] = {}
        self.dirs: dict[int, DirHandle] = {}
        self.snapshots = SnapshotCache(SNAPSHOT_BUDGET)
        # Set by the FUSE adapter: tells the host to drop a name it may have cached (d_invalidate), such
        # as the /proc entry of a process that exited or a disk removed under /dev, so the inodes behind it
        # are forgotten. A no-op without a host.
        self.entry_gone: Callable[[int, bytes], None] = lambda parent_ino, name: None
        self._next_fh = 1
        self.mounts: list[Mount] = []
        self._mount_on: dict[int, Mount] = {}  # covered inode number -> mount
        self._next_mount_id = 20
        self._next_anon_minor = 20

    # --- inode numbers and the kernel's references ---------------------------------------

    def new_ino(self) -> int:
        ino = self._next_ino
        self._next_ino += 1
        return ino

    def new_anon_dev(self) -> tuple[int, int]:
        """A 0:N device number for a filesystem without a disk (get_anon_bdev)."""
        minor = self._next_anon_minor
        self._next_anon_minor += 1
        return 0, minor

    def remember(self, inode: Inode) -> Inode:
        """The host kernel now holds one more reference to `inode`."""
        inode.lookups += 1
        self.inodes[inode.ino] = inode
        return inode

    def forget(self, ino: int, nlookup: int) -> None:
        inode = self.inodes.get(ino)
        if inode is None:
            return
        inode.lookups -= nlookup
        if inode.lookups <= 0 and ino != 1:
            del self.inodes[ino]
            inode.lookups = 0
            inode.maybe_evict()

    def inode(self, ino: int) -> Inode:
        try:
            return self.inodes[ino]
        except KeyError:
            raise KernelError(errno.ESTALE, f"inode {ino} is not known") from None

    # --- mounts ------------------------------------------------------------------------

    def mount_root(self, sb: SuperBlock, flags: str) -> Mount:
        root = sb.root
        self.inodes[root.ino] = root
        root.lookups += 1  # the FUSE root is never forgotten
        # Like Linux, the root mount's parent id names no mount in the table.
        mnt = Mount(self._new_mount_id(), 1, sb, root, None, "/", flags)
        self.mounts.append(mnt)
        return mnt

    def mount(self, sb: SuperBlock, path: str, flags: str) -> Mount:
        covered = self.resolve(path)
        if not covered.is_dir():
            raise KernelError(errno.ENOTDIR, f"{path} is not a directory")
        parent = self._mount_of_path(path)
        mnt = Mount(self._new_mount_id(), parent.mount_id, sb, sb.root, covered, path, flags)
        self.mounts.append(mnt)
        self._mount_on[covered.ino] = mnt
        return mnt

    def _new_mount_id(self) -> int:
        self._next_mount_id += 1
        return self._next_mount_id

    def _mount_of_path(self, path: str) -> Mount:
        best = self.mounts[0]
        for mnt in self.mounts:
            prefix = mnt.path.rstrip("/") + "/"
            if path == mnt.path or path.startswith(prefix):
                if len(mnt.path) >= len(best.path):
                    best = mnt
        return best

    def cross(self, inode: Inode) -> Inode:
        """The inode a path walk lands on: a mounted root if `inode` is covered."""
        mnt = self._mount_on.get(inode.ino)
        return mnt.root if mnt is not None else inode

    def resolve(self, path: str, cred: Credentials = ROOT_CRED) -> Inode:
        """Walk an absolute path from the root (for the kernel's own use: mounting, tests)."""
        inode = self.mounts[0].root
        for part in path.strip("/").split("/"):
            if not part:
                continue
            child = inode.lookup(part.encode(), cred)
            if child is None:
                raise KernelError(errno.ENOENT, f"{path}: no such file or directory")
            inode = self.cross(child)
        return inode

    # --- namespace operations ----------------------------------------------------------

    def lookup(self, parent_ino: int, name: bytes, cred: Credentials) -> Inode:
        parent = self.inode(parent_ino)
        if len(name) > NAME_MAX:
            raise KernelError(errno.ENAMETOOLONG)
        if name == b".":
            return self.remember(parent)
        if name == b"..":
            return self.remember(self._parent_of(parent))
        child = parent.lookup(name, cred)
        if child is None:
            raise KernelError(errno.ENOENT)
        return self.remember(self.cross(child))

    def _parent_of(self, inode: Inode) -> Inode:
        for mnt in self.mounts:
            if mnt.root is inode and mnt.covered is not None:
                return mnt.covered.parent
        return self.cross(inode.parent)

    def create(self, parent_ino: int, name: bytes, mode: int, rdev: int, cred: Credentials) -> Inode:
        check_name(name)
        parent = self.inode(parent_ino)
        return self.remember(parent.create(name, mode, rdev, cred))

    def mkdir(self, parent_ino: int, name: bytes, mode: int, cred: Credentials) -> Inode:
        check_name(name)
        return self.remember(self.inode(parent_ino).mkdir(name, mode, cred))

    def symlink(self, parent_ino: int, name: bytes, target: bytes, cred: Credentials) -> Inode:
        check_name(name)
        return self.remember(self.inode(parent_ino).symlink(name, target, cred))

    def link(self, ino: int, new_parent_ino: int, new_name: bytes) -> Inode:
        check_name(new_name)
        inode, parent = self.inode(ino), self.inode(new_parent_ino)
        if inode.sb is not parent.sb:
            raise KernelError(errno.EXDEV, "hard link across mounts")
        parent.link(new_name, inode)
        return self.remember(inode)

    def unlink(self, parent_ino: int, name: bytes) -> None:
        parent = self.inode(parent_ino)
        self._refuse_mountpoint(parent, name)
        parent.unlink(name)

    def rmdir(self, parent_ino: int, name: bytes) -> None:
        parent = self.inode(parent_ino)
        self._refuse_mountpoint(parent, name)
        parent.rmdir(name)

    def rename(self, old_parent_ino: int, old: bytes, new_parent_ino: int, new: bytes, flags: int) -> None:
        check_name(new)
        src, dst = self.inode(old_parent_ino), self.inode(new_parent_ino)
        if src.sb is not dst.sb:
            raise KernelError(errno.EXDEV, "rename across mounts")
        self._refuse_mountpoint(src, old)
        self._refuse_mountpoint(dst, new)
        src.rename(old, dst, new, flags)

    def _refuse_mountpoint(self, parent: Inode, name: bytes) -> None:
        if not parent.is_dir() or len(name) > NAME_MAX:
            return
        child = parent.lookup(name, ROOT_CRED)
        if child is not None and child.ino in self._mount_on:
            raise KernelError(errno.EBUSY, "a filesystem is mounted there")

    def setattr(self, ino: int, change: AttrChange) -> Inode:
        inode = self.inode(ino)
        if change.size is not None and change.size > MAX_LFS_FILESIZE:
            raise KernelError(errno.EFBIG)
        inode.setattr(change)
        return inode

    # --- open files --------------------------------------------------------------------

    def open(self, ino: int, flags: int, cred: Credentials) -> tuple[int, OpenFile]:
        inode = self.inode(ino)
        file = inode.open(flags, cred)
        if flags & os.O_TRUNC and stat.S_ISREG(inode.mode):
            # With atomic O_TRUNC the host kernel leaves the truncation of open(2) to us, and
            # Linux truncates even for O_RDONLY|O_TRUNC (the kernel has checked write access);
            # skipping it would leave pages here under a file the host already sees as empty.
            # Like Linux, O_TRUNC means nothing for FIFOs, devices and other special files.
            inode.truncate_on_open()
        inode.opens += 1
        fh = self._next_fh
        self._next_fh += 1
        self.files[fh] = file
        return fh, file

    def file(self, fh: int) -> OpenFile:
        try:
            return self.files[fh]
        except KeyError:
            raise KernelError(errno.EBADF) from None

    def release(self, fh: int) -> None:
        file = self.files.pop(fh, None)
        if file is None:
            return
        try:
            file.release()
        finally:
            file.inode.opens -= 1
            file.inode.maybe_evict()

    # --- directories -------------------------------------------------------------------

    def opendir(self, ino: int) -> int:
        inode = self.inode(ino)
        if not inode.is_dir():
            raise KernelError(errno.ENOTDIR)
        fh = self._next_fh
        self._next_fh += 1
        self.dirs[fh] = DirHandle(inode)
        return fh

    def readdir(self, fh: int, start: int, cred: Credentials) -> Iterator[tuple[int, bytes, Inode]]:
        """(cookie, name, inode) of the entries past cookie `start`: ".", "..", then the directory's own.

        A directory with stable positions (tmpfs) is read where it stands, so an open directory
        costs nothing however large it is; a generated one (proc, sys) is listed from a snapshot
        taken when it is read from the start, which keeps a listing consistent while it runs.
        """
        handle = self.dirs.get(fh)
        if handle is None:
            raise KernelError(errno.EBADF)
        inode = handle.inode
        if start < 1:
            yield 1, b".", inode
        if start < 2:
            yield 2, b"..", self._parent_of(inode)
        if start == 0:
            handle.end = inode.next_cookie()
        rows = inode.iterate(max(start, 2), cred)
        if rows is not None:
            # Like shmem since 6.14 (offset_dir_open), a listing ends at the names that were there when it
            # began: a reader that creates as it reads (or a busy writer beside it) cannot keep it going forever.
            end = handle.end
            rows = takewhile(lambda row: row[0] < end, rows)
        else:
            if start == 0 or handle.rows is None:
                handle.rows = list(inode.entries(cred))
                self.snapshots.hold(handle, len(handle.rows) * DIR_ROW_BYTES)
            else:
                self.snapshots.touch(handle)
            snapshot = handle.rows
            rows = ((3 + i, *snapshot[i]) for i in range(max(0, start - 2), len(snapshot)))
        for cookie, name, child in rows:
            yield cookie, name, self.cross(child)

    def releasedir(self, fh: int) -> None:
        handle = self.dirs.pop(fh, None)
        if handle is not None:
            self.snapshots.release(handle)
