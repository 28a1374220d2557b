"""The raw disk image file: the medium under the simulated controller.

Opened once at boot; reads and writes go to the byte offset of an LBA.
Open errors become a KernelError naming the file, so the command line can
print one clear line.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from pathlib import Path

from rinuxfs.errors import KernelError


class DiskImage:
    def __init__(self, path: str | Path, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
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
        try:
            # O_NONBLOCK: should the path turn into a FIFO after the stat, opening it must not wait for a
            # writer (it changes nothing for regular files and block devices).
            self.fd = os.open(self.path, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_NONBLOCK)
        except PermissionError:
            how = "readable" if read_only else "readable and writable (or use --ro)"
            raise KernelError(errno.EACCES, f"{self.path}: permission denied: the image must be {how}") from None
        except OSError as e:
            raise KernelError(e.errno or errno.EIO, f"{self.path}: {e.strerror}") from None
        st = os.fstat(self.fd)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            os.close(self.fd)
            raise KernelError(errno.EINVAL, f"{self.path}: changed into something that is not a disk image")
        self.size = st.st_size if stat.S_ISREG(st.st_mode) else _device_size(self.fd)

    def pread(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def read_into(self, offset: int, buffers: list[memoryview]) -> None:
        """Fill `buffers` (DMA targets in RAM) from `offset` with one preadv; zeros past the end of the file."""
        want = sum(map(len, buffers))
        got = os.preadv(self.fd, buffers, offset)
        if got < want:  # an image whose size is not a multiple of the block size: the tail reads as zeros
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
