"""devtmpfs-like /dev: one node per registered block device, holding the device's bytes.

A block device node is shown as a regular file (FUSE cannot hand the host a
block device of ours) whose size is the device's and whose bytes are the
device's, read and written through the device's page cache, the block layer,
the driver and the controller model, as block/fops.c does:
- a read at or past the end returns 0 bytes; reads are shortened at the end;
- a write at or past the end fails with ENOSPC; writes are shortened at the end;
- O_DIRECT I/O must be aligned to the logical block size (EINVAL otherwise)
  and bypasses the page cache;
- fsync writes back and flushes the device cache; the last close writes back.
- a device that goes away (hot removal) leaves /dev at once: lookups give
  ENOENT, opening a node still held gives ENODEV, and I/O through a file
  still open fails with EIO (its disk is dead).
- A device error reaches a buffered reader and fsync as EIO, whatever the
  device said (filemap_read and filemap_write_and_wait report -EIO); O_DIRECT
  gets the block layer's own errno (ENODATA for a medium error), as in Linux.
The host sees these files with direct_io, so every read reaches the
simulated page cache (the one /proc/meminfo counts as Buffers).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator

from rinuxfs.block.bio import REQ_IDLE, REQ_SYNC, SECTOR_SHIFT, Bio, ReqOp
from rinuxfs.block.genhd import BlockDevice
from rinuxfs.errors import KernelError
from rinuxfs.fs.kernfs import GenDir
from rinuxfs.fs.superblock import StatFs, SuperBlock
from rinuxfs.fs.vfs import Credentials, Inode, OpenFile, Vfs
from rinuxfs.hw.ram import PAGE_SHIFT, PAGE_SIZE
from rinuxfs.mm.bdev_mapping import BlockDeviceMapping
from rinuxfs.mm.core import MemoryManager

TMPFS_MAGIC = 0x01021994  # devtmpfs is a tmpfs instance
DISK_GID = 6  # group "disk", owner of block device nodes on Debian


class DevSuperBlock(SuperBlock):
    fs_type = "devtmpfs"
    magic = TMPFS_MAGIC
    source = "devtmpfs"
    entry_timeout = 1.0  # disks come and go (hot removal, rescan): the host forgets a name within a second

    def __init__(self, vfs: Vfs) -> None:
        super().__init__(vfs)
        self.root = GenDir(self, mode=0o755)
        self.nodes: dict[str, BlockDeviceNode] = {}

    def add_block_device(self, mm: MemoryManager, bdev: BlockDevice, mapping: BlockDeviceMapping) -> BlockDeviceNode:
        node = BlockDeviceNode(self, mm, bdev, mapping)
        self.root.static[bdev.name.encode()] = node
        self.nodes[bdev.name] = node
        return node

    def remove_block_device(self, name: str) -> None:
        """devtmpfs_delete_node: the node leaves /dev; files still open keep it, and fail."""
        node = self.nodes.pop(name, None)
        if node is not None and self.root.static.get(name.encode()) is node:
            del self.root.static[name.encode()]
            self.vfs.entry_gone(self.root.ino, name.encode())  # the host's cached name goes at once

    def options(self) -> str:
        return "rw,mode=755"

    def statfs(self) -> StatFs:
        return StatFs(TMPFS_MAGIC, 4096, 0, 0, 0, 0, 0)


class BlockDeviceNode(Inode):
    def __init__(self, sb: DevSuperBlock, mm: MemoryManager, bdev: BlockDevice, mapping: BlockDeviceMapping) -> None:
        super().__init__(sb, stat.S_IFREG | 0o660, 0, DISK_GID)
        self.bdev = bdev
        self.mapping = mapping
        self.mm = mm

    @property
    def size(self) -> int:
        return self.bdev.size_bytes

    @property
    def blocks(self) -> int:
        return len(self.mapping.pages) * (PAGE_SIZE // 512)

    def truncate(self, size: int) -> None:
        # truncate(2) of a block device fails (do_sys_ftruncate wants a regular file) …
        raise KernelError(errno.EINVAL, "a block device has the size of its medium")

    def truncate_on_open(self) -> None:
        # … while O_TRUNC, as in `echo > /dev/sda1`, is ignored for devices.
        return None

    def open(self, flags: int, cred: Credentials) -> OpenFile:
        if self.bdev.disk.dead:  # blkdev_get_by_dev of a disk that went away
            raise KernelError(errno.ENODEV, f"{self.bdev.name}: no such device")
        if flags & os.O_ACCMODE != os.O_RDONLY and (self.bdev.read_only or self.bdev.disk.read_only):
            raise KernelError(errno.EROFS, f"{self.bdev.name} is read-only")
        return BlockDeviceFile(self, flags)

    def sync(self) -> None:
        self.mapping.writeback()


class BlockDeviceFile(OpenFile):
    inode: BlockDeviceNode
    direct_io = True

    def __init__(self, inode: BlockDeviceNode, flags: int) -> None:
        super().__init__(inode, flags)
        self.o_direct = bool(flags & os.O_DIRECT)
        self.next_offset = 0  # where a sequential reader will read next: readahead starts there

    def read(self, offset: int, size: int) -> bytes:
        node = self.inode
        if self.o_direct:
            return self._direct(ReqOp.READ, offset, size)
        readahead = 0
        if offset == self.next_offset:
            readahead = node.bdev.disk.queue.limits.read_ahead_kb * 1024
        with _buffered_io_errors():
            data = node.mapping.read(offset, size, readahead)
        self.next_offset = offset + len(data)
        return data

    def write(self, offset: int, data: bytes) -> int:
        node = self.inode
        if offset >= node.size and data:
            raise KernelError(errno.ENOSPC, "write past the end of the device")
        if self.o_direct:
            self._direct(ReqOp.WRITE, offset, len(data), data)
            return min(len(data), node.size - offset)
        n = node.mapping.write(offset, data)
        node.touch(m=True, c=True)
        return n

    def _direct(self, op: ReqOp, offset: int, size: int, data: bytes = b"") -> bytes:
        """O_DIRECT: aligned I/O through bounce frames, after writing back and dropping the range's cached pages."""
        node = self.inode
        # blkdev_read_iter/blkdev_write_iter cut the request at the end of the device before
        # blkdev_direct_IO checks alignment: a read at or past the end is 0 bytes, and a tail
        # that sticks out (even by an unaligned length) is dropped first.
        size = max(0, min(size, node.size - offset))
        if not size:
            return b""
        lbs = node.bdev.disk.queue.limits.logical_block_size
        if offset % lbs or size % lbs:
            raise KernelError(errno.EINVAL, f"O_DIRECT I/O must be aligned to {lbs} bytes")
        node.mapping.invalidate_range(offset, size)
        npages = (size + PAGE_SIZE - 1) >> PAGE_SHIFT
        pfns = node.mm.alloc_pages(npages)
        ram = node.mm.ram.view
        try:
            segments = []
            for i, pfn in enumerate(pfns):
                length = min(PAGE_SIZE, size - (i << PAGE_SHIFT))
                addr, pos = pfn << PAGE_SHIFT, i << PAGE_SHIFT
                segments.append((addr, length))
                if op == ReqOp.WRITE:
                    ram[addr : addr + length] = data[pos : pos + length]
            flags = REQ_SYNC if op == ReqOp.READ else REQ_SYNC | REQ_IDLE  # what blkdev_direct_IO sets
            node.bdev.submit([Bio(op, offset >> SECTOR_SHIFT, size >> SECTOR_SHIFT, segments, flags=flags)])
            if op == ReqOp.READ:
                return b"".join(bytes(ram[addr : addr + length]) for addr, length in segments)
            return b""
        finally:
            node.mm.free_pages(pfns)

    def fsync(self, datasync: bool) -> None:
        with _buffered_io_errors():
            self.inode.mapping.flush()

    def release(self) -> None:
        if self.inode.opens <= 1:
            self.inode.mapping.writeback()


@contextlib.contextmanager
def _buffered_io_errors() -> Iterator[None]:
    """A failed request seen through the page cache is EIO; running short of memory stays ENOMEM."""
    try:
        yield
    except KernelError as e:
        if e.errno in (errno.EIO, errno.ENOMEM):
            raise
        raise KernelError(errno.EIO, e.args[0] if e.args else "I/O error") from None
