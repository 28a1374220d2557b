"""Limits the daemon itself enforces, checked on a booted kernel without FUSE.

Through FUSE the host kernel refuses sizes past MAX_LFS_FILESIZE before the daemon sees them,
so a test through the mount would only prove the host's check. Here the daemon's own.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator

import pytest

from rinuxfs.errors import KernelError
from rinuxfs.fs.vfs import MAX_LFS_FILESIZE, ROOT_CRED, AttrChange
from rinuxfs.kernel import Kernel, KernelConfig


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    k = Kernel(KernelConfig(image=None, mem=32 << 20))
    try:
        yield k
    finally:
        k.close()


def test_efbig_past_max_lfs_filesize(kernel: Kernel) -> None:
    vfs = kernel.vfs
    f = vfs.create(kernel.rootfs.root.ino, b"big", stat.S_IFREG | 0o644, 0, ROOT_CRED)
    for size in (MAX_LFS_FILESIZE + 1, 1 << 64):
        with pytest.raises(KernelError) as e:
            vfs.setattr(f.ino, AttrChange(size=size))
        assert e.value.errno == errno.EFBIG
    vfs.setattr(f.ino, AttrChange(size=MAX_LFS_FILESIZE))
    assert f.size == MAX_LFS_FILESIZE
    opened = f.open(os.O_RDWR, ROOT_CRED)
    with pytest.raises(KernelError) as e:
        opened.write(MAX_LFS_FILESIZE - 1, b"!!")  # would end one byte past the limit
    assert e.value.errno == errno.EFBIG
    assert opened.write(MAX_LFS_FILESIZE - 1, b"!") == 1
