"""The pyfuse3 adapter: FUSE requests in, VFS calls, attributes and errnos out.

The only module that imports pyfuse3. It translates and decides nothing:
each handler builds the caller's credentials, calls the VFS, and turns the
result into pyfuse3 types. Every handler runs under `_syscall`, which maps a
KernelError to its errno and any other exception to EIO plus a kernel-log
line, because an exception escaping a pyfuse3 handler kills the mount.
`forget` has no reply to carry an errno, so it logs and swallows instead.

Ids are translated here too (`IdMap`): a mount made by a user shows the simulated
kernel's root (uid and gid 0) as that user, the way the host maps the ids of a FUSE
daemon that runs in a user namespace, and the user's requests reach the kernel as root's.
"""

from __future__ import annotations

import errno
import functools
import os
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pyfuse3

from rinuxfs.errors import KernelError
from rinuxfs.fs.vfs import AttrChange, Credentials, Inode
from rinuxfs.kernel import Kernel

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def _syscall(fn: F) -> F:
    name = fn.__name__

    @functools.wraps(fn)
    async def handler(self: RinuxOperations, *args: Any) -> Any:
        self.kernel.stats["ctxt"] += 1
        try:
            return await fn(self, *args)
        except pyfuse3.FUSEError:
            raise
        except KernelError as e:
            raise pyfuse3.FUSEError(e.errno) from None
        except Exception as e:  # noqa: BLE001 - the mount must survive any bug
            self._log_bug(name, e)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return handler  # type: ignore[return-value]


@dataclass(frozen=True)
class IdMap:
    """The host ids that stand for the kernel's root: 0 and 0 for a mount made by root.

    For a user's mount they are the user's own, as in a user namespace whose root is that user
    (Linux's FUSE maps a daemon's ids through its user namespace the same way): the user sees
    the machine as its root does (dev/ nodes, sys/ attributes, proc/kmsg), and other ids pass
    through unchanged.
    """

    uid: int = 0
    gid: int = 0

    def host_uid(self, uid: int) -> int:
        return self.uid if uid == 0 else uid

    def host_gid(self, gid: int) -> int:
        return self.gid if gid == 0 else gid

    def kernel_uid(self, uid: int) -> int:
        return 0 if uid == self.uid else uid

    def kernel_gid(self, gid: int) -> int:
        return 0 if gid == self.gid else gid


class RinuxOperations(pyfuse3.Operations):
    # No writeback cache: with it the host owns file sizes and times, so ENOSPC would surface only
    # at close, and the size of a dev/ or proc file would be what the host last wrote, not ours.
    # It would make small buffered writes about 5x faster (README, "Speed").
    enable_writeback_cache = False
    supports_dot_lookup = True

    def __init__(self, kernel: Kernel, ids: IdMap | None = None) -> None:
        super().__init__()
        self.kernel = kernel
        self.vfs = kernel.vfs
        self.ids = ids or IdMap()
        self.vfs.entry_gone = self._entry_gone

    @staticmethod
    def _entry_gone(parent_ino: int, name: bytes) -> None:
        # Asynchronous: a notification sent from a handler while the host waits for it could deadlock.
        pyfuse3.invalidate_entry_async(parent_ino, name, ignore_enoent=True)

    # --- helpers -----------------------------------------------------------------------

    def _log_bug(self, handler: str, e: BaseException) -> None:
        self.kernel.log.err(f"rinuxfs: BUG in {handler}: {e!r}")
        for line in traceback.format_exc().splitlines():
            self.kernel.log.printk(7, line)

    def _cred(self, ctx: pyfuse3.RequestContext) -> Credentials:
        cred = Credentials(self.ids.kernel_uid(ctx.uid), self.ids.kernel_gid(ctx.gid), ctx.pid, ctx.umask)
        self.kernel.current = cred
        return cred

    def _attrs(self, inode: Inode) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = inode.ino
        a.generation = 0
        a.entry_timeout = inode.sb.entry_timeout
        a.attr_timeout = inode.sb.attr_timeout
        a.st_mode = inode.mode
        a.st_nlink = inode.nlink
        a.st_uid = self.ids.host_uid(inode.uid)
        a.st_gid = self.ids.host_gid(inode.gid)
        a.st_rdev = inode.rdev
        a.st_size = inode.size
        a.st_blksize = 4096
        a.st_blocks = inode.blocks
        a.st_atime_ns = inode.atime_ns
        a.st_mtime_ns = inode.mtime_ns
        a.st_ctime_ns = inode.ctime_ns
        return a

    @staticmethod
    def _file_info(fh: int, file: Any) -> pyfuse3.FileInfo:
        return pyfuse3.FileInfo(fh=fh, direct_io=file.direct_io, keep_cache=file.keep_cache,
                                nonseekable=file.nonseekable)

    # --- namespace ---------------------------------------------------------------------

    @_syscall
    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attrs(self.vfs.lookup(parent_inode, name, self._cred(ctx)))

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        # Not under _syscall: FORGET has no reply, and pyfuse3 awaits it outside any
        # `except FUSEError`, so even the EIO that _syscall makes would end the mount.
        self.kernel.stats["ctxt"] += 1
        for ino, nlookup in inode_list:
            try:
                self.vfs.forget(ino, nlookup)
            except Exception as e:  # noqa: BLE001 - the mount must survive any bug
                self._log_bug("forget", e)

    @_syscall
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attrs(self.vfs.inode(inode))

    @_syscall
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._cred(ctx)
        change = AttrChange(
            mode=attr.st_mode if fields.update_mode else None,
            uid=self.ids.kernel_uid(attr.st_uid) if fields.update_uid else None,
            gid=self.ids.kernel_gid(attr.st_gid) if fields.update_gid else None,
            size=attr.st_size if fields.update_size else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            ctime_ns=attr.st_ctime_ns if fields.update_ctime else None,
        )
        return self._attrs(self.vfs.setattr(inode, change))

    @_syscall
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        self._cred(ctx)
        # pyfuse3 needs bytes here; anything else fails after the handler returns and ends the mount.
        return bytes(self.vfs.inode(inode).readlink())

    @_syscall
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attrs(self.vfs.create(parent_inode, name, mode, rdev, self._cred(ctx)))

    @_syscall
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attrs(self.vfs.mkdir(parent_inode, name, mode, self._cred(ctx)))

    @_syscall
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._cred(ctx)
        self.vfs.unlink(parent_inode, name)

    @_syscall
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._cred(ctx)
        self.vfs.rmdir(parent_inode, name)

    @_syscall
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attrs(self.vfs.symlink(parent_inode, name, target, self._cred(ctx)))

    @_syscall
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
                     flags: int, ctx: pyfuse3.RequestContext) -> None:
        self._cred(ctx)
        self.vfs.rename(parent_inode_old, name_old, parent_inode_new, name_new, flags)

    @_syscall
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._cred(ctx)
        return self._attrs(self.vfs.link(inode, new_parent_inode, new_name))

    # --- files -------------------------------------------------------------------------

    @_syscall
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        fh, file = self.vfs.open(inode, flags, self._cred(ctx))
        return self._file_info(fh, file)

    @_syscall
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        cred = self._cred(ctx)
        inode = self.vfs.create(parent_inode, name, mode, 0, cred)
        fh, file = self.vfs.open(inode.ino, flags & ~(os.O_TRUNC | os.O_CREAT | os.O_EXCL), cred)
        return self._file_info(fh, file), self._attrs(inode)

    @_syscall
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        return self.vfs.file(fh).read(off, size)

    @_syscall
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return self.vfs.file(fh).write(off, buf)

    @_syscall
    async def flush(self, fh: int) -> None:
        return None

    @_syscall
    async def release(self, fh: int) -> None:
        self.vfs.release(fh)

    @_syscall
    async def fsync(self, fh: int, datasync: bool) -> None:
        self.vfs.file(fh).fsync(datasync)

    # --- directories -------------------------------------------------------------------

    @_syscall
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        self._cred(ctx)
        return self.vfs.opendir(inode)

    @_syscall
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        for cookie, name, inode in self.vfs.readdir(fh, start_id, self.kernel.current):
            if not pyfuse3.readdir_reply(token, name, self._attrs(inode), cookie):
                break
            if name not in (b".", b".."):
                self.vfs.remember(inode)

    @_syscall
    async def releasedir(self, fh: int) -> None:
        self.vfs.releasedir(fh)

    @_syscall
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        return None

    @_syscall
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        # FUSE asks for the filesystem of the mount as a whole: the rootfs answers.
        s = self.kernel.rootfs.statfs()
        d = pyfuse3.StatvfsData()
        d.f_bsize, d.f_frsize = s.f_bsize, s.f_frsize
        d.f_blocks, d.f_bfree, d.f_bavail = s.f_blocks, s.f_bfree, s.f_bavail
        d.f_files, d.f_ffree, d.f_favail = s.f_files, s.f_ffree, s.f_ffree
        d.f_namemax = s.f_namemax
        return d
