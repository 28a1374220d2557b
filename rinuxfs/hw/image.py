"""The raw disk image file: the medium under the simulated controller.

Opened once at boot; reads and writes go to the byte offset of an LBA.
Open errors become a KernelError naming the file, so the command line can
print one clear line.
"""

from __future__ import annotations

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
        try:
            self.fd = os.open(self.path, os.O_RDONLY if read_only else os.O_RDWR)
        except PermissionError:
            how = "readable" if read_only else "readable and writable (or use --ro)"
            raise KernelError(errno.EACCES, f"{self.path}: permission denied: the image must be {how}") from None
        except OSError as e:
            raise KernelError(e.errno or errno.EIO, f"{self.path}: {e.strerror}") from None
        self.size = os.fstat(self.fd).st_size if stat.S_ISREG(st.st_mode) else _device_size(self.fd)

    def pread(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def pwrite(self, offset: int, data: bytes | memoryview) -> int:
        if self.read_only:
            raise KernelError(errno.EROFS, "the disk image is opened read-only")
        return os.pwrite(self.fd, data, offset)

    def flush(self) -> None:
        if not self.read_only:
            os.fdatasync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            self.flush()
            os.close(self.fd)
            self.fd = -1


def _device_size(fd: int) -> int:
    return os.lseek(fd, 0, os.SEEK_END)
