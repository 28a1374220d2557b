"""tmpfs: files whose pages live in the simulated RAM (shmem), directories in memory.

Contract:
- A regular file's data is an AddressSpace of frames from the memory manager,
  charged to this superblock's size= limit (ENOSPC past it, as Linux tmpfs).
  size= is rounded up to whole pages, and size=0 means no limit, as in Linux.
- nr_inodes= counts names as shmem does: each file, directory and symlink, and
  each extra hard link (ENOSPC when none is left).
- A symlink target of SHORT_SYMLINK_LEN bytes or more lives in a page of its
  own (st_blocks 8, charged like file data); shorter ones are inline.
- Directories keep their children in insertion order, each name with a stable
  readdir offset (fs/libfs.py, as shmem's simple_offset); nlink of a directory is
  2 + its subdirectories; st_size counts BOGO_DIRENT_SIZE per entry as shmem does.
- Every namespace change updates the times POSIX names: the parent's mtime and
  ctime, and the ctime of an inode whose link count or name changes.
- An inode with no name left keeps its pages until the last open file closes.
"""

from __future__ import annotations

import errno
import stat
from collections.abc import Iterable, Iterator

from rinuxfs.errors import KernelError
from rinuxfs.fs.libfs import OffsetMap
from rinuxfs.fs.superblock import StatFs, SuperBlock
from rinuxfs.fs.vfs import MAX_LFS_FILESIZE, AttrChange, Credentials, Inode, OpenFile, Vfs, now_ns
from rinuxfs.hw.ram import PAGE_SIZE
from rinuxfs.mm.core import MemoryManager
from rinuxfs.mm.filemap import AddressSpace

TMPFS_MAGIC = 0x01021994
BOGO_DIRENT_SIZE = 20
# A tmpfs page is page cache (Cached, Shmem); the mapping puts it on the anon LRU, as only swap can free it.
SHMEM_PAGE_ITEMS = ("nr_shmem", "nr_file_pages")
HUGE_MODES = ("never", "always", "within_size", "advise")  # advise: madvise(MADV_HUGEPAGE), which FUSE never sends
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
# Targets this long (with their NUL) or longer get a page: shmem_symlink's inline limit.
SHORT_SYMLINK_LEN = 128


class TmpfsSuperBlock(SuperBlock):
    fs_type = "tmpfs"
    magic = TMPFS_MAGIC

    def __init__(self, vfs: Vfs, mm: MemoryManager, size: int, nr_inodes: int, mode: int = 0o755,
                 source: str = "tmpfs", huge: str = "never") -> None:
        super().__init__(vfs)
        if huge not in HUGE_MODES:
            raise KernelError(errno.EINVAL, f"tmpfs: Bad value for 'huge': {huge}")
        self.huge = huge
        self.mm = mm
        self.source = source
        self.max_pages = -(-size // PAGE_SIZE)  # 0: unlimited
        self.used_pages = 0
        self.max_inodes = nr_inodes
        self.used_inodes = 0
        self.root_mode = mode
        self.root = TmpfsDir(self, stat.S_IFDIR | mode, 0, 0, parent=None)

    # --- the size= and nr_inodes= limits -------------------------------------------------

    def charge(self, pages: int) -> None:
        if self.max_pages and self.used_pages + pages > self.max_pages:
            raise KernelError(errno.ENOSPC, "tmpfs size limit reached")
        self.used_pages += pages

    def uncharge(self, pages: int) -> None:
        self.used_pages -= pages

    def new_inode_slot(self) -> None:
        if self.used_inodes >= self.max_inodes:
            raise KernelError(errno.ENOSPC, "tmpfs inode limit reached")
        self.used_inodes += 1

    def options(self) -> str:
        size = f"size={self.max_pages * (PAGE_SIZE // 1024)}k," if self.max_pages else ""
        huge = f",huge={self.huge}" if self.huge != "never" else ""
        return f"rw,{size}nr_inodes={self.max_inodes},mode={self.root_mode:o}{huge}"

    def statfs(self) -> StatFs:
        # Without a size limit Linux reports no blocks at all rather than a made-up total.
        free = self.max_pages - self.used_pages if self.max_pages else 0
        return StatFs(TMPFS_MAGIC, PAGE_SIZE, self.max_pages, free, free,
                      self.max_inodes, self.max_inodes - self.used_inodes)


class TmpfsInode(Inode):
    sb: TmpfsSuperBlock

    def __init__(self, sb: TmpfsSuperBlock, mode: int, uid: int, gid: int, nlink: int = 1, rdev: int = 0) -> None:
        sb.new_inode_slot()
        super().__init__(sb, mode, uid, gid, nlink, rdev)
        self._evicted = False

    def maybe_evict(self) -> None:
        if self.nlink == 0 and self.opens == 0 and not self._evicted:
            self._evicted = True
            self.release_data()
            self.sb.used_inodes -= 1

    def release_data(self) -> None:
        """Free what the inode holds beyond its attributes."""


class ShmemFile(TmpfsInode):
    """A regular file (or FIFO/socket/device node, which carry no data)."""

    def __init__(self, sb: TmpfsSuperBlock, mode: int, uid: int, gid: int, rdev: int = 0) -> None:
        super().__init__(sb, mode, uid, gid, 1, rdev)
        self._size = 0
        self.mapping = AddressSpace(sb.mm, sb, SHMEM_PAGE_ITEMS, huge=lambda: sb.huge)

    @property
    def size(self) -> int:
        return self._size

    @property
    def blocks(self) -> int:
        return self.mapping.nrblocks * (PAGE_SIZE // 512)  # swapped-out pages count too, as shmem's i_blocks

    def truncate(self, size: int) -> None:
        if not stat.S_ISREG(self.mode):
            raise KernelError(errno.EINVAL, "only a regular file has a size to change")
        if size > MAX_LFS_FILESIZE:
            raise KernelError(errno.EFBIG)
        if size != self._size:
            if size < self._size:
                self.mapping.truncate(size)
            self._size = size
            self.touch(m=True, c=True)

    def setattr(self, change: AttrChange) -> None:
        super().setattr(change)

    def open(self, flags: int, cred: Credentials) -> OpenFile:
        if not stat.S_ISREG(self.mode):
            raise KernelError(errno.ENXIO, "no device or reader behind this node")
        return ShmemOpenFile(self, flags)

    def write(self, offset: int, data: bytes) -> int:
        end = offset + len(data)
        if end > MAX_LFS_FILESIZE:
            raise KernelError(errno.EFBIG)
        self.mapping.write(offset, data, self._size)
        if end > self._size:
            self._size = end
        return len(data)

    def read(self, offset: int, size: int) -> bytes | memoryview:
        if offset >= self._size:
            return b""
        return self.mapping.read(offset, min(size, self._size - offset))

    def release_data(self) -> None:
        self.mapping.release()


class ShmemOpenFile(OpenFile):
    inode: ShmemFile
    keep_cache = False  # each open re-reads through the daemon, so atime follows reads

    def read(self, offset: int, size: int) -> bytes | memoryview:
        inode = self.inode
        data = inode.read(offset, size)
        # relatime: update atime if it is not newer than mtime/ctime or is a day old
        if inode.atime_ns <= inode.mtime_ns or inode.atime_ns <= inode.ctime_ns \
                or now_ns() - inode.atime_ns > 86400 * 10**9:
            inode.touch(a=True)
        return data

    def write(self, offset: int, data: bytes) -> int:
        n = self.inode.write(offset, data)
        self.inode.touch(m=True, c=True)
        return n


class TmpfsSymlink(TmpfsInode):
    def __init__(self, sb: TmpfsSuperBlock, target: bytes, uid: int, gid: int) -> None:
        super().__init__(sb, stat.S_IFLNK | 0o777, uid, gid)
        self._len = len(target)
        self._inline: bytes | None = target
        self.mapping: AddressSpace | None = None
        if self._len + 1 > SHORT_SYMLINK_LEN:
            mapping = AddressSpace(sb.mm, sb, SHMEM_PAGE_ITEMS)
            try:
                mapping.write(0, target)
            except KernelError:
                sb.used_inodes -= 1  # never attached: give the inode slot back
                raise
            self.mapping, self._inline = mapping, None

    @property
    def size(self) -> int:
        return self._len

    @property
    def blocks(self) -> int:
        return self.mapping.nrblocks * (PAGE_SIZE // 512) if self.mapping is not None else 0

    def readlink(self) -> bytes:
        self.touch(a=True)
        if self._inline is not None:
            return self._inline
        assert self.mapping is not None
        return bytes(self.mapping.read(0, self._len))

    def release_data(self) -> None:
        if self.mapping is not None:
            self.mapping.release()


class TmpfsDir(TmpfsInode):
    def __init__(self, sb: TmpfsSuperBlock, mode: int, uid: int, gid: int, parent: TmpfsDir | None) -> None:
        super().__init__(sb, mode, uid, gid, nlink=2)
        self.children: dict[bytes, TmpfsInode] = {}
        self.offsets = OffsetMap()  # changes with `children`, name for name
        self._parent = parent

    @property
    def parent(self) -> Inode:
        return self._parent if self._parent is not None else self

    @property
    def size(self) -> int:
        return (len(self.children) + 2) * BOGO_DIRENT_SIZE

    def lookup(self, name: bytes, cred: Credentials) -> Inode | None:
        return self.children.get(name)

    def entries(self, cred: Credentials) -> Iterable[tuple[bytes, Inode]]:
        return list(self.children.items())

    def iterate(self, start: int, cred: Credentials) -> Iterator[tuple[int, bytes, Inode]]:
        children = self.children
        return ((offset, name, children[name]) for offset, name in self.offsets.after(start))

    def next_cookie(self) -> int:
        return self.offsets.next

    # --- creating ----------------------------------------------------------------------

    def _owner(self, mode: int, cred: Credentials) -> tuple[int, int, int]:
        """uid, gid and mode of a new inode; a set-gid directory passes on its group (and the bit to subdirs)."""
        gid = cred.gid
        if self.mode & stat.S_ISGID:
            gid = self.gid
            if stat.S_ISDIR(mode):
                mode |= stat.S_ISGID
        return cred.uid, gid, mode

    def _attach(self, name: bytes, child: TmpfsInode) -> None:
        if name in self.children:
            raise KernelError(errno.EEXIST)
        self.children[name] = child
        self.offsets.add(name)
        self.touch(m=True, c=True)

    def _check_free(self, name: bytes) -> None:
        if name in self.children:
            raise KernelError(errno.EEXIST)

    def create(self, name: bytes, mode: int, rdev: int, cred: Credentials) -> Inode:
        self._check_free(name)
        uid, gid, mode = self._owner(mode, cred)
        fmt = stat.S_IFMT(mode) or stat.S_IFREG
        if fmt not in (stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK):
            raise KernelError(errno.EINVAL, "unsupported file type")
        child = ShmemFile(self.sb, fmt | stat.S_IMODE(mode), uid, gid, rdev)
        self._attach(name, child)
        return child

    def mkdir(self, name: bytes, mode: int, cred: Credentials) -> Inode:
        self._check_free(name)
        uid, gid, mode = self._owner(stat.S_IFDIR | mode, cred)
        child = TmpfsDir(self.sb, stat.S_IFDIR | stat.S_IMODE(mode), uid, gid, parent=self)
        self._attach(name, child)
        self.nlink += 1
        return child

    def symlink(self, name: bytes, target: bytes, cred: Credentials) -> Inode:
        self._check_free(name)
        if len(target) >= PAGE_SIZE:
            raise KernelError(errno.ENAMETOOLONG, "symlink target longer than a page")
        uid, gid, _ = self._owner(0, cred)
        child = TmpfsSymlink(self.sb, target, uid, gid)
        self._attach(name, child)
        return child

    def link(self, name: bytes, inode: Inode) -> None:
        if inode.is_dir():
            raise KernelError(errno.EPERM, "hard link to a directory")
        assert isinstance(inode, TmpfsInode)
        if inode.nlink == 0:
            raise KernelError(errno.ENOENT, "the file has been removed")
        self._check_free(name)
        # shmem_link: every name pins memory that cannot be reclaimed, so an extra link takes an
        # inode slot of nr_inodes like a new file (ENOSPC when none is left), and unlink returns it.
        self.sb.new_inode_slot()
        self._attach(name, inode)
        inode.nlink += 1
        inode.touch(c=True)

    # --- removing ----------------------------------------------------------------------

    def _child(self, name: bytes) -> TmpfsInode:
        child = self.children.get(name)
        if child is None:
            raise KernelError(errno.ENOENT)
        return child

    def _detach(self, name: bytes) -> TmpfsInode:
        child = self.children.pop(name)
        self.offsets.remove(name)
        self.touch(m=True, c=True)
        return child

    def unlink(self, name: bytes) -> None:
        child = self._child(name)
        if child.is_dir():
            raise KernelError(errno.EISDIR)
        self._detach(name)
        _drop_link(child)

    def rmdir(self, name: bytes) -> None:
        child = self._child(name)
        if not isinstance(child, TmpfsDir):
            raise KernelError(errno.ENOTDIR)
        if child.children:
            raise KernelError(errno.ENOTEMPTY)
        self._detach(name)
        self.nlink -= 1
        child.nlink = 0
        child.touch(c=True)
        child.maybe_evict()

    def rename(self, name: bytes, new_dir: Inode, new_name: bytes, flags: int) -> None:
        assert isinstance(new_dir, TmpfsDir)
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == RENAME_NOREPLACE | RENAME_EXCHANGE:
            raise KernelError(errno.EINVAL, "unsupported rename flags")
        src = self._child(name)
        dst = new_dir.children.get(new_name)
        if isinstance(src, TmpfsDir) and new_dir._is_within(src):
            raise KernelError(errno.EINVAL, "cannot move a directory into itself")
        if flags & RENAME_EXCHANGE:
            if dst is None:
                raise KernelError(errno.ENOENT)
            if isinstance(dst, TmpfsDir) and self._is_within(dst):
                raise KernelError(errno.EINVAL, "cannot move a directory into itself")
            self._exchange(name, new_dir, new_name, src, dst)
            return
        if dst is src:
            return  # two names of one inode: POSIX says do nothing
        if dst is not None:
            if flags & RENAME_NOREPLACE:
                raise KernelError(errno.EEXIST)
            if src.is_dir():
                if not isinstance(dst, TmpfsDir):
                    raise KernelError(errno.ENOTDIR)
                if dst.children:
                    raise KernelError(errno.ENOTEMPTY)
            elif dst.is_dir():
                raise KernelError(errno.EISDIR)
        del self.children[name]
        self.offsets.remove(name)
        if dst is not None:
            del new_dir.children[new_name]
            new_dir.offsets.remove(new_name)
            if isinstance(dst, TmpfsDir):
                new_dir.nlink -= 1
                dst.nlink = 0
                dst.touch(c=True)
                dst.maybe_evict()
            else:
                _drop_link(dst)
        new_dir.children[new_name] = src
        new_dir.offsets.add(new_name)  # a new offset, as simple_offset_rename gives
        if isinstance(src, TmpfsDir) and new_dir is not self:
            self.nlink -= 1
            new_dir.nlink += 1
            src._parent = new_dir
        src.touch(c=True)
        self.touch(m=True, c=True)
        new_dir.touch(m=True, c=True)

    def _exchange(self, name: bytes, new_dir: TmpfsDir, new_name: bytes, src: TmpfsInode, dst: TmpfsInode) -> None:
        self.children[name], new_dir.children[new_name] = dst, src
        if new_dir is not self:
            for moved, old_parent, new_parent in ((src, self, new_dir), (dst, new_dir, self)):
                if isinstance(moved, TmpfsDir):
                    old_parent.nlink -= 1
                    new_parent.nlink += 1
                    moved._parent = new_parent
        for inode in (src, dst):
            inode.touch(c=True)
        self.touch(m=True, c=True)
        new_dir.touch(m=True, c=True)

    def _is_within(self, ancestor: TmpfsDir) -> bool:
        node: TmpfsDir | None = self
        while node is not None:
            if node is ancestor:
                return True
            node = node._parent
        return False


def _drop_link(inode: TmpfsInode) -> None:
    if inode.nlink > 1:
        inode.sb.used_inodes -= 1  # the slot of an extra link (shmem_unlink); the last one goes with the inode
    inode.nlink -= 1
    inode.touch(c=True)
    inode.maybe_evict()
