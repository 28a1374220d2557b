"""/sys as the driver core's tree through a real mount: queue/ as Linux 6.1 has it, links, debugfs.

One GPT image is mounted once per controller, at a mount point every user can reach, so that
an unprivileged process (setpriv) can show what root alone may enter. Expected names and values
come from Linux 6.1's own queue/ directories (tests/samples) and block/blk-sysfs.c's rules.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Mounted
from tests.integration.storage_helpers import (
    CONTROLLERS,
    CTRL,
    Controller,
    build_gpt_image,
    diskstats,
    per_controller_mounts,
    read_direct,
    write_attr,
)

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
SAMPLE = {"nvme": "sys_block_nvme0n1_queue_linux6.1.txt", "ahci": "sys_block_sda_queue_linux6.1.txt"}
# blk-sysfs.c 6.1: QUEUE_RW_ENTRY (0644); every other queue attribute is QUEUE_RO_ENTRY (0444).
WRITABLE = {"nr_requests", "read_ahead_kb", "max_sectors_kb", "scheduler", "discard_max_bytes", "rotational",
            "nomerges", "rq_affinity", "iostats", "stable_writes", "add_random", "io_poll", "io_poll_delay",
            "write_cache", "wbt_lat_usec", "io_timeout"}
# What does not depend on the drive: the same on QEMU's disks and on rinuxfs's.
SHARED = ("chunk_sectors", "dax", "discard_zeroes_data", "dma_alignment", "hw_sector_size", "io_poll",
          "io_poll_delay", "io_timeout", "iostats", "logical_block_size", "max_discard_segments",
          "max_integrity_segments", "nomerges", "nr_zones", "physical_block_size", "read_ahead_kb", "rq_affinity",
          "stable_writes", "virt_boundary_mask", "write_same_max_bytes", "zone_append_max_bytes",
          "zone_write_granularity", "zoned")


def sample(ctrl: Controller) -> dict[str, str]:
    rows = (SAMPLES / SAMPLE[ctrl.name]).read_text().splitlines()
    return {name: value.strip() for name, _, value in (row.partition(": ") for row in rows)}


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_gpt_image(tmp_path_factory.mktemp("devmodel") / "gpt.img")


@pytest.fixture(scope="module")
def mounts(image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Mounted]]:
    base = Path(tempfile.mkdtemp(prefix="rinuxfs-devmodel-"))
    base.chmod(0o755)  # mkdtemp makes it 0700: other users could not even reach the mount
    try:
        with per_controller_mounts(image, tmp_path_factory, base) as get:
            yield get
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module", params=CONTROLLERS)
def mc(request: pytest.FixtureRequest, mounts: Callable[[str], Mounted]) -> tuple[Mounted, Controller]:
    """The mount of one controller's kernel, and what Linux names its disk."""
    return mounts(request.param), CTRL[request.param]


def test_queue_has_the_attributes_of_linux_6_1(mc: tuple[Mounted, Controller]) -> None:
    m, ctrl = mc
    q = m / f"sys/block/{ctrl.disk}/queue"
    names = sorted(os.listdir(q))
    assert names == sorted(sample(ctrl))
    assert len(names) == 40
    for name in names:
        st = os.stat(q / name)
        assert stat.S_ISREG(st.st_mode) and st.st_size == 4096, name
        assert stat.S_IMODE(st.st_mode) == (0o644 if name in WRITABLE else 0o444), name


def test_queue_values_are_linuxs(mc: tuple[Mounted, Controller]) -> None:
    m, ctrl = mc
    q = m / f"sys/block/{ctrl.disk}/queue"
    ours = {name: (q / name).read_text() for name in os.listdir(q)}
    assert all(text.endswith("\n") and text.count("\n") == 1 for text in ours.values())
    ours = {name: text.strip() for name, text in ours.items()}
    theirs = sample(ctrl)
    assert {k: ours[k] for k in SHARED} == {k: theirs[k] for k in SHARED}
    assert ours["wbt_lat_usec"] == ("75000" if ours["rotational"] == "1" else "2000")  # wbt_default_latency_nsec
    assert ours["add_random"] == (ours["rotational"] if ctrl.name == "ahci" else "0")  # sd: spinning disks only
    assert ours["fua"] == ("1" if ctrl.name == "nvme" and ours["write_cache"] == "write back" else "0")
    assert int(ours["max_sectors_kb"]) <= int(ours["max_hw_sectors_kb"])
    assert int(ours["discard_max_bytes"]) <= int(ours["discard_max_hw_bytes"])


def test_io_timeout_is_written_as_linux_takes_it(mc: tuple[Mounted, Controller]) -> None:
    m, ctrl = mc
    path = m / f"sys/block/{ctrl.disk}/queue/io_timeout"
    try:
        for bad in ("0", "abc", "-1", "4294967296", "\n", "1.5"):
            assert write_attr(path, bad) == errno.EINVAL, bad
        assert path.read_text() == "30000\n"
        assert write_attr(path, "12000\n") == 0
        assert path.read_text() == "12000\n"
        assert write_attr(path, "5") == 0  # a tick is 10 ms here (HZ 100): msecs_to_jiffies rounds up
        assert path.read_text() == "10\n"
        if ctrl.name == "ahci":  # sd's device/timeout is the same queue timeout, in seconds
            assert (m / f"sys/block/{ctrl.disk}/device/timeout").read_text() == "0\n"
    finally:
        write_attr(path, "30000")
    assert path.read_text() == "30000\n"


def test_iostats_off_stops_the_accounting(mc: tuple[Mounted, Controller]) -> None:
    m, ctrl = mc
    q = m / f"sys/block/{ctrl.disk}/queue"

    def direct_read(offset: int) -> None:
        assert len(read_direct(m / f"dev/{ctrl.disk}", offset)) == 4096

    try:
        assert write_attr(q / "iostats", "0") == 0
        before = diskstats(m)[ctrl.disk]
        direct_read(1 << 20)
        assert diskstats(m)[ctrl.disk] == before, "no request counted while iostats is 0"
    finally:
        assert write_attr(q / "iostats", "1") == 0
    direct_read(2 << 20)
    assert diskstats(m)[ctrl.disk][0] == before[0] + 1


def test_every_link_resolves_and_every_attribute_reads(mc: tuple[Mounted, Controller]) -> None:
    """A walk of the whole tree: no dangling link, no unreadable attribute, no directory error."""
    m, ctrl = mc
    sys_dir = os.path.realpath(m / "sys")
    links = files = 0
    for top, dirs, names in os.walk(m / "sys", onerror=lambda e: pytest.fail(f"walk: {e}")):
        if os.path.realpath(top) == os.path.realpath(m / "sys/kernel/debug"):
            dirs[:] = []  # another filesystem (debugfs)
        for name in dirs + names:
            path = os.path.join(top, name)
            if os.path.islink(path):
                links += 1
                target = os.path.realpath(path)
                assert target.startswith(sys_dir + "/") and os.path.exists(target), f"{path} -> {os.readlink(path)}"
            elif name in names:
                files += 1
                if not os.stat(path).st_mode & 0o444:  # write-only (reset_controller, delete, rescan): not read
                    continue
                with open(path, "rb") as f:
                    text = f.read()
                assert text.endswith(b"\n") or text == b"", path  # a uevent with no variables is empty
    assert links > 20 and files > 200
    assert "BUG" not in (m / "proc/kmsg").read_text()


def test_devices_buses_and_classes(mc: tuple[Mounted, Controller]) -> None:
    m, ctrl = mc
    sys = m / "sys"
    slot = "0000:00:04.0" if ctrl.name == "nvme" else "0000:00:1f.2"
    pci = Path(os.path.realpath(sys / f"bus/pci/devices/{slot}"))
    assert pci == Path(os.path.realpath(sys / "devices/pci0000:00" / slot))
    assert Path(os.path.realpath(pci / "driver")) == Path(os.path.realpath(sys / f"bus/pci/drivers/{ctrl.name}"))
    uevent = (pci / "uevent").read_text().splitlines()
    assert uevent[0] == f"DRIVER={ctrl.name}" and f"PCI_SLOT_NAME={slot}" in uevent
    assert (pci / "class").read_text() == ("0x010802\n" if ctrl.name == "nvme" else "0x010601\n")
    disk = Path(os.path.realpath(sys / f"block/{ctrl.disk}"))
    assert disk.is_relative_to(pci)
    assert (disk / "power/control").read_text() == "auto\n"
    assert write_attr(disk / "power/control", "sometimes") == errno.EINVAL
    assert int((sys / "kernel/uevent_seqnum").read_text()) > 0
    if ctrl.name == "nvme":
        assert (sys / "class/nvme/nvme0/dev").read_text() == "240:0\n"
        assert os.path.realpath(sys / "dev/char/240:0") == os.path.realpath(sys / "class/nvme/nvme0")
    else:
        assert os.path.realpath(sys / "bus/scsi/drivers/sd/0:0:0:0") == os.path.realpath(disk / "device")
        assert (disk / "device/uevent").read_text() == "DEVTYPE=scsi_device\nDRIVER=sd\nMODALIAS=scsi:t-0x00\n"


def test_debugfs_is_mounted_for_root_only(mc: tuple[Mounted, Controller]) -> None:
    m, ctrl = mc
    debug = m / "sys/kernel/debug"
    st = os.stat(debug)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and (st.st_uid, st.st_gid) == (0, 0)
    assert "debugfs /sys/kernel/debug debugfs rw,nosuid,nodev,noexec,relatime 0 0\n" in \
        (m / "proc/mounts").read_text()
    assert "nodev\tdebugfs\n" in (m / "proc/filesystems").read_text()

    def as_nobody(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "ls", str(path)],
                              capture_output=True, text=True, timeout=30)

    assert as_nobody(m / "sys/kernel").returncode == 0  # the way there is open to everyone
    denied = as_nobody(debug)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
