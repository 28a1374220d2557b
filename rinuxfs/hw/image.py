"""The raw disk image file: the medium under the simulated controller.

Opened once at boot; reads and writes go to the byte offset of an LBA.
Open errors become a KernelError naming the file, so the command line can
print one clear line.

- The image is locked as QEMU locks it (`image_lock`): exclusively for a
  read-write open, shared for a read-only one; a conflict is one line naming
  the holder's pid. Nothing is read before the lock is held.
- An image that cannot be opened for writing (no write permission, an
  immutable file, a read-only filesystem) is opened read-only instead, as
  Linux mounts write-protected media read-only: `write_protected` says why.
- `size` is the file's size when it was opened or last `refresh_size()`d: the
  controller's capacity. If the file shrinks under us, a read of what is gone
  fails (the controller reports a media error) and so does a write there,
  rather than growing the file back; if it grows, nothing changes until a
  rescan of the controller calls `refresh_size()`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from pathlib import Path

from rinuxfs.errors import KernelError
from rinuxfs.hw.image_lock import lock_image

_WRITE_PROTECTED = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ETXTBSY)


class DiskImage:
    def __init__(self, path: str | Path, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.write_protected = ""  # why a read-write open became read-only
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise KernelError(errno.ENOENT, f"{self.path}: no such disk image") from None
        except OSError as e:
            raise KernelError(e.errno or errno.EIO, f"{self.path}: {e.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            raise KernelError(errno.EISDIR, f"{self.path}: is a directory, not a disk image")
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else \
                "a character device"
            raise KernelError(errno.EINVAL, f"{self.path}: is {kind}, not a disk image (a regular file or a block"
                                            " device)")
        self.fd = self._open()
        try:
            st = os.fstat(self.fd)
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
                raise KernelError(errno.EINVAL, f"{self.path}: changed into something that is not a disk image")
            self.regular = stat.S_ISREG(st.st_mode)
            self.locked = lock_image(self.fd, self.path, write=not self.read_only)
        except BaseException:
            os.close(self.fd)
            self.fd = -1
            raise
        self.refresh_size()

    def _open(self) -> int:
        # O_NONBLOCK: should the path turn into a FIFO after the stat, opening it must not wait for a
        # writer (it changes nothing for regular files and block devices).
        try:
            return os.open(self.path, (os.O_RDONLY if self.read_only else os.O_RDWR) | os.O_NONBLOCK)
        except OSError as e:
            if self.read_only or e.errno not in _WRITE_PROTECTED:
                how = "readable" if self.read_only else "readable and writable (or use --ro)"
                if e.errno == errno.EACCES:
                    raise KernelError(errno.EACCES, f"{self.path}: permission denied: the image must be {how}") \
                        from None
                raise KernelError(e.errno or errno.EIO, f"{self.path}: {e.strerror}") from None
            reason = e.strerror or "not writable"
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except PermissionError:
            raise KernelError(errno.EACCES, f"{self.path}: permission denied: the image must be readable") from None
        except OSError as e:
            raise KernelError(e.errno or errno.EIO, f"{self.path}: {e.strerror}") from None
        self.read_only = True
        self.write_protected = reason.lower()
        return fd

    def refresh_size(self) -> int:
        """Read the medium's size again (a rescan): the file may have grown or shrunk since it was opened."""
        self.size = os.fstat(self.fd).st_size if self.regular else _device_size(self.fd)
        return self.size

    def pread(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def read_into(self, offset: int, buffers: list[memoryview]) -> None:
        """Fill `buffers` (DMA targets in RAM) from `offset` with one preadv; zeros past the end of the file."""
        want = sum(map(len, buffers))
        got = os.preadv(self.fd, buffers, offset)
        if got < want:
            if offset + got < self.size:  # the file ended early: it was truncated under us
                raise KernelError(errno.EIO, f"{self.path}: the image file ends at {offset + got}, inside the "
                                             f"disk's {self.size} bytes: it shrank")
            # past `size`: an image whose size is not a multiple of the block size; the tail reads as zeros
            skip = got
            for b in buffers:
                if skip >= len(b):
                    skip -= len(b)
                    continue
                b[skip:] = bytes(len(b) - skip)
                skip = 0

    def write_from(self, offset: int, buffers: list[memoryview]) -> None:
        """Write `buffers` (DMA sources in RAM) at `offset` with one pwritev."""
        self._check_writable()
        want = sum(map(len, buffers))
        if self.regular and offset + want > os.fstat(self.fd).st_size:  # truncated under us: never regrow it
            raise KernelError(errno.EIO, f"{self.path}: write past the end of the image file at {offset}")
        done = os.pwritev(self.fd, buffers, offset)
        if done != want:
            raise KernelError(errno.EIO, f"short write to the image at {offset}: {done} of {want} bytes")

    def discard(self, offset: int, length: int) -> None:
        """Deallocate a range: it reads back as zeros and, on a sparse image, frees the host blocks."""
        self._check_writable()
        if length <= 0:
            return
        if _libc_fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0:
            # Filesystems without hole punching: write the zeros instead.
            zeros = bytes(min(length, 1 << 20))
            pos = offset
            while pos < offset + length:
                n = min(len(zeros), offset + length - pos)
                os.pwrite(self.fd, zeros[:n], pos)
                pos += n

    def _check_writable(self) -> None:
        if self.read_only:
            raise KernelError(errno.EROFS, "the disk image is opened read-only")

    def flush(self) -> None:
        if not self.read_only:
            os.fdatasync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            self.flush()
            os.close(self.fd)
            self.fd = -1


FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]


def _libc_fallocate(fd: int, mode: int, offset: int, length: int) -> int:
    """fallocate(2) with a mode, which os.posix_fallocate cannot pass."""
    return int(_libc.fallocate(fd, mode, offset, length))


def _device_size(fd: int) -> int:
    return os.lseek(fd, 0, os.SEEK_END)
