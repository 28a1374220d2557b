"""sysfs and debugfs rendering the driver core's tree, on a booted kernel without FUSE.

A kernel boots over an NVMe image; paths are walked through the VFS as a FUSE lookup would,
files are opened, read and written through the same inode and open-file objects the FUSE
adapter calls. Queue stores are checked against block/blk-sysfs.c (Linux 6.1), unregistering
against what hot removal will need: everything the controller registered disappears.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from rinuxfs.drivers.base import (
    Kobject,
    debugfs_create_dir,
    debugfs_create_file,
    debugfs_remove,
    kobject_create,
    kobject_del,
)
from rinuxfs.drivers.nvme import NvmeDriver
from rinuxfs.errors import KernelError
from rinuxfs.fs.vfs import ROOT_CRED, Inode
from rinuxfs.kernel import Kernel, KernelConfig


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    k = Kernel(KernelConfig(image=image, mem=64 << 20, cpus=2))
    try:
        yield k
    finally:
        k.close()


def node(k: Kernel, path: str) -> Inode:
    """The inode at absolute `path`, following symlinks on the way, as the host kernel's path walk does."""
    parts = [p for p in path.split("/") if p]
    done: list[str] = []
    inode = k.vfs.resolve("/")
    while parts:
        part = parts.pop(0)
        child = inode.lookup(part.encode(), ROOT_CRED)
        if child is None:
            raise KernelError(errno.ENOENT, "/" + "/".join([*done, part]))
        child = k.vfs.cross(child)
        if stat.S_ISLNK(child.mode):
            target = posixpath.normpath(posixpath.join("/" + "/".join(done), child.readlink().decode()))
            parts = [p for p in target.split("/") if p] + parts
            done, inode = [], k.vfs.resolve("/")
            continue
        done.append(part)
        inode = child
    return inode


def read(k: Kernel, path: str) -> str:
    return bytes(node(k, path).open(os.O_RDONLY, ROOT_CRED).read(0, 65536)).decode()


def write(k: Kernel, path: str, text: str) -> int:
    """0 on success, else the errno, as write(2) would see it."""
    try:
        node(k, path).open(os.O_WRONLY, ROOT_CRED).write(0, text.encode())
    except KernelError as e:
        return e.errno
    return 0


def errno_of(k: Kernel, path: str) -> int:
    try:
        node(k, path)
    except KernelError as e:
        return e.errno
    return 0


Q = "/sys/block/nvme0n1/queue"


@pytest.mark.parametrize(("name", "text", "result", "shown"), [
    ("io_timeout", "1000", 0, "1000"),
    ("io_timeout", "1", 0, "10"),  # msecs_to_jiffies rounds up to a tick of HZ=100
    ("io_timeout", "0", errno.EINVAL, "30000"),
    ("io_timeout", "abc", errno.EINVAL, "30000"),
    ("io_timeout", "-5", errno.EINVAL, "30000"),
    ("io_timeout", "4294967296", errno.EINVAL, "30000"),  # kstrtou32 overflow is EINVAL there too
    ("io_timeout", "+7000\n", 0, "7000"),
    ("wbt_lat_usec", "0", 0, "0"),
    ("wbt_lat_usec", "-1", 0, "2000"),  # back to the default of a non-rotational disk
    ("wbt_lat_usec", "-2", errno.EINVAL, "2000"),
    ("wbt_lat_usec", "x", errno.EINVAL, "2000"),
    ("wbt_lat_usec", "9223372036854775808", errno.ERANGE, "2000"),  # kstrtos64's own errno
    ("io_poll", "1", errno.EINVAL, "0"),  # no poll queues
    ("io_poll_delay", "5", 0, "5"),
    ("io_poll_delay", "-2", errno.EINVAL, "-1"),
    ("io_poll_delay", "2147483648", errno.ERANGE, "-1"),
    ("nomerges", "7", 0, "1"),
    ("nomerges", "2", 0, "2"),
    ("rq_affinity", "3", 0, "1"),  # accepted, changes nothing
    ("rq_affinity", "2", 0, "2"),
    ("iostats", "0", 0, "0"),
    ("stable_writes", "1", 0, "1"),
    ("add_random", "0x1", errno.EINVAL, "0"),  # base 10
    ("rotational", "5", 0, "1"),
    ("write_cache", "none", 0, "write through"),
    ("write_cache", "write backwards", 0, "write back"),  # strncmp: a prefix is enough
    ("write_cache", "sometimes", errno.EINVAL, "write back"),
    ("discard_max_bytes", "1000", errno.EINVAL, None),  # not a multiple of discard_granularity
    ("dma_alignment", "1", errno.EACCES, "3"),
    ("max_discard_segments", "1", errno.EACCES, "256"),
])
def test_queue_stores_follow_blk_sysfs(kernel: Kernel, name: str, text: str, result: int, shown: str | None) -> None:
    before = read(kernel, f"{Q}/{name}")
    assert write(kernel, f"{Q}/{name}", text) == result
    after = read(kernel, f"{Q}/{name}")
    assert after == (before if shown is None else shown + "\n")


def test_io_timeout_is_kept_in_the_request_queue(kernel: Kernel) -> None:
    queue = kernel.block.disks[0].queue
    assert queue.timeout_seconds == 30.0
    assert write(kernel, f"{Q}/io_timeout", "2500") == 0
    assert queue.rq_timeout == 250 and queue.timeout_seconds == 2.5


def test_discard_max_bytes_is_capped_by_the_hardware(kernel: Kernel) -> None:
    hw = int(read(kernel, f"{Q}/discard_max_hw_bytes"))
    assert hw > 0
    assert write(kernel, f"{Q}/discard_max_bytes", "4096") == 0
    assert read(kernel, f"{Q}/discard_max_bytes") == "4096\n"
    assert write(kernel, f"{Q}/discard_max_bytes", "4294966784") == 0  # UINT_MAX rounded to 512
    assert int(read(kernel, f"{Q}/discard_max_bytes")) == min(hw, 4294966784)


def test_links_inode_numbers_and_nlink(kernel: Kernel) -> None:
    block = node(kernel, "/sys/block")
    link = block.lookup(b"nvme0n1", ROOT_CRED)
    assert link is not None and link.readlink() == b"../devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1"
    disk = node(kernel, "/sys/block/nvme0n1")
    assert node(kernel, "/sys/block/nvme0n1") is disk  # the same inode at every lookup
    subdirs = [name.decode() for name, child in disk.entries(ROOT_CRED) if child.is_dir()]
    assert sorted(subdirs) == ["holders", "power", "queue", "slaves"]  # no partition on this blank disk
    assert disk.nlink == 2 + len(subdirs)
    assert read(kernel, "/sys/dev/char/240:0/model").strip() == "rinuxfs NVMe disk"
    assert read(kernel, "/sys/bus/pci/devices/0000:00:04.0/uevent").splitlines()[:2] == \
        ["DRIVER=nvme", "PCI_CLASS=10802"]
    assert read(kernel, "/sys/kernel/uevent_seqnum") == f"{kernel.core.uevent_seqnum}\n"
    assert kernel.core.uevent_seqnum > 0


def test_what_is_registered_after_boot_shows_at_once(kernel: Kernel) -> None:
    mm = node(kernel, "/sys/kernel/mm")
    before = mm.nlink
    assert b"ksm" not in dict(mm.entries(ROOT_CRED))
    ksm = kobject_create("ksm", kernel.core.mm_kobj)
    group = kobject_create("sub", ksm)
    group.add_attr("run", lambda: "0\n", lambda text: None)
    assert mm.nlink == before + 1
    f = node(kernel, "/sys/kernel/mm/ksm/sub/run")
    assert stat.S_IMODE(f.mode) == 0o644 and f.size == 4096
    assert read(kernel, "/sys/kernel/mm/ksm/sub/run") == "0\n"
    assert write(kernel, "/sys/kernel/mm/ksm/sub/run", "4") == 0
    kobject_del(ksm)
    assert errno_of(kernel, "/sys/kernel/mm/ksm") == errno.ENOENT and mm.nlink == before


def test_unregistering_the_controller_takes_all_of_it_out_of_sys(kernel: Kernel) -> None:
    driver = kernel.storage_driver
    assert isinstance(driver, NvmeDriver)
    size = node(kernel, "/sys/block/nvme0n1/size")
    held = size.open(os.O_RDONLY, ROOT_CRED)
    disk_dir = node(kernel, "/sys/block/nvme0n1")
    assert held.read(0, 100) == b"32768\n"

    driver.remove()  # nvme_remove: the disk and the controller go, the PCI function stays without its driver
    assert errno_of(kernel, "/sys/bus/pci/devices/0000:00:04.0/driver") == errno.ENOENT
    assert errno_of(kernel, "/sys/bus/pci/devices/0000:00:04.0/vendor") == 0
    kernel.pci.remove(kernel.pci.slots["0000:00:04.0"])  # pci_stop_and_remove_bus_device

    for path in ("/sys/block/nvme0n1", "/sys/class/nvme/nvme0", "/sys/class/block/nvme0n1", "/sys/dev/block/259:0",
                 "/sys/dev/char/240:0", "/sys/bus/pci/devices/0000:00:04.0", "/sys/bus/pci/drivers/nvme/0000:00:04.0",
                 "/sys/devices/pci0000:00/0000:00:04.0"):
        assert errno_of(kernel, path) == errno.ENOENT, path
    with pytest.raises(KernelError) as e:
        held.read(0, 100)
    assert e.value.errno == errno.ENODEV  # kernfs: the file is open but its node is gone
    with pytest.raises(KernelError) as e:
        size.open(os.O_RDONLY, ROOT_CRED)  # the host's name for it, before it heard of the removal
    assert e.value.errno == errno.ENOENT  # what a fresh lookup gives
    assert disk_dir.lookup(b"size", ROOT_CRED) is None and not list(disk_dir.entries(ROOT_CRED))
    assert kernel.block.render_partitions() == "major minor  #blocks  name\n\n"

    def names(kobj: Kobject, prefix: str = "") -> list[str]:
        rows = []
        for name, entry in kobj.entries.items():
            rows.append(prefix + name)
            if isinstance(entry, Kobject):
                rows += names(entry, f"{prefix}{name}/")
        return rows

    left = [n for n in names(kernel.core.root) if "nvme" in n or "0000:00:04.0" in n]
    assert left == ["bus/pci/drivers/nvme", "class/nvme"]  # the registered driver and class stay, as in Linux


def test_debugfs_renders_what_is_created_and_forgets_what_is_removed(kernel: Kernel) -> None:
    root = node(kernel, "/sys/kernel/debug")
    assert stat.S_IMODE(root.mode) == 0o700 and root.uid == 0
    value = {"p": 0}

    def store(text: str) -> None:
        value["p"] = int(text)

    before = [name for name, _ in root.entries(ROOT_CRED)]
    d = debugfs_create_dir("example", kernel.core.debugfs)
    debugfs_create_file("probability", 0o600, d, lambda: f"{value['p']}\n", store)
    f = node(kernel, "/sys/kernel/debug/example/probability")
    assert stat.S_IMODE(f.mode) == 0o600 and f.size == 0
    assert stat.S_IMODE(node(kernel, "/sys/kernel/debug/example").mode) == 0o755
    assert write(kernel, "/sys/kernel/debug/example/probability", "10") == 0
    assert read(kernel, "/sys/kernel/debug/example/probability") == "10\n"
    held = f.open(os.O_RDONLY, ROOT_CRED)
    debugfs_remove(d)
    assert errno_of(kernel, "/sys/kernel/debug/example") == errno.ENOENT
    with pytest.raises(KernelError) as e:
        held.read(0, 10)
    assert e.value.errno == errno.EIO
    assert [name for name, _ in root.entries(ROOT_CRED)] == before
