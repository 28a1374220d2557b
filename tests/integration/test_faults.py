"""Faults injected through Linux's interfaces, and recovered from as Linux recovers, through real mounts.

Every fault is set the way it is on a debug kernel (debugfs under sys/kernel/debug, sysfs switches,
/proc/<pid>/make-it-fail and fail-nth) or, for what only a test bench can do to real hardware (bad
sectors, a fatal controller, a lost command, a pulled disk), through sys/block/<disk>/badblocks and
debugfs rinuxfs/<controller>/. Each test then reads and writes dev/ with real syscalls and checks what
the user gets (bytes against the image, errnos), what the kernel log says (Linux 6.18's lines,
faults.md), what the counters count, and that the mount goes on serving.

Timeouts cost no wall time: the simulated clock jumps by what Linux would have waited, which the
tests read in proc/uptime. Names that disappear and come back (hot removal, rescan) are read with
a short retry, as the host keeps a name of sys/ or dev/ in its dentry cache for up to a second.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Mounted, wait_until
from tests.integration.storage_helpers import (
    CTRL,
    MIB,
    PAGE,
    SECTOR,
    THREE_PARTS,
    THREE_PARTS_GPT,
    Controller,
    Log,
    diskstats,
    errno_of,
    image_slice,
    mounted,
    read_direct,
    sfdisk_image,
    uptime,
    write_attr,
    write_direct,
)

P1, P2, P4 = (THREE_PARTS[n][0] for n in (1, 2, 4))  # first sectors of partitions 1, 2 and 4
BAD = P2 + 8 * 100 + 3  # a sector inside page 100 of partition 2


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sfdisk_image(tmp_path_factory.mktemp("faults") / "disk.img", THREE_PARTS_GPT, 32 * MIB, fill_seed=8)


@pytest.fixture
def copy(image: Path, tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(image.read_bytes())
    return path


@pytest.fixture(params=["nvme", "ahci"])
def ctrl(request: pytest.FixtureRequest) -> Controller:
    return CTRL[request.param]


@pytest.fixture
def m(copy: Path, tmp_path: Path, ctrl: Controller) -> Iterator[Mounted]:
    with mounted(copy, tmp_path / "mnt", "--controller", ctrl.name) as mnt:
        yield mnt


@pytest.fixture
def nvme(copy: Path, tmp_path: Path) -> Iterator[Mounted]:
    with mounted(copy, tmp_path / "mnt") as mnt:
        yield mnt


@pytest.fixture
def ahci(copy: Path, tmp_path: Path) -> Iterator[Mounted]:
    with mounted(copy, tmp_path / "mnt", "--controller", "ahci") as mnt:
        yield mnt


# --- helpers -----------------------------------------------------------------------------------


def put(m: Mounted, path: str, value: str) -> int:
    return write_attr(m / path, value)


def reads_like_image(m: Mounted, dev: str, image: Path, base_sector: int, offset: int, size: int = PAGE) -> bool:
    return read_direct(m / f"dev/{dev}", offset, size) == image_slice(image, base_sector * SECTOR + offset, size)


def gone(path: Path) -> bool:
    return not os.path.lexists(path)


# --- debugfs and sysfs: the files of a fault-injection kernel ---------------------------------------


def test_debugfs_has_the_fault_injection_files(nvme: Mounted) -> None:
    debug = nvme / "sys/kernel/debug"
    assert os.stat(debug).st_mode & 0o777 == 0o700
    generic = {"probability", "interval", "times", "space", "verbose", "verbose_ratelimit_interval_ms",
               "verbose_ratelimit_burst", "task-filter"}
    assert set(os.listdir(debug / "fail_make_request")) == generic
    assert set(os.listdir(debug / "fail_io_timeout")) == generic
    assert set(os.listdir(debug / "fail_page_alloc")) == generic | {"ignore-gfp-wait", "ignore-gfp-highmem",
                                                                    "min-order"}
    for name in ("nvme0n1", "nvme0"):
        assert set(os.listdir(debug / name / "fault_inject")) == generic | {"status", "dont_retry"}
    for path in (debug / "fail_make_request/times", debug / "nvme0n1/fault_inject/status"):
        assert os.stat(path).st_mode & 0o777 == 0o600
    defaults = {f: (debug / "fail_make_request" / f).read_text() for f in ("probability", "interval", "times",
                                                                              "space", "verbose", "task-filter")}
    assert defaults == {"probability": "0\n", "interval": "1\n", "times": "1\n", "space": "0\n", "verbose": "2\n",
                        "task-filter": "N\n"}
    assert (debug / "nvme0n1/fault_inject/status").read_text() == "0x0001\n"
    assert (debug / "nvme0n1/fault_inject/dont_retry").read_text() == "Y\n"
    assert [(debug / "fail_page_alloc" / f).read_text() for f in ("ignore-gfp-wait", "ignore-gfp-highmem",
                                                                  "min-order")] == ["Y\n", "Y\n", "1\n"]
    assert put(nvme, "sys/kernel/debug/fail_make_request/probability", "lots") == errno.EINVAL
    # debugfs_write_file_bool returns the count whatever kstrtobool made of it: "maybe" changes nothing.
    assert put(nvme, "sys/kernel/debug/fail_make_request/task-filter", "maybe") == 0
    assert (debug / "fail_make_request/task-filter").read_text() == "N\n"
    assert put(nvme, "sys/kernel/debug/fail_make_request/times", "-1") == 0
    assert (debug / "fail_make_request/times").read_text() == "-1\n"
    assert set(os.listdir(debug / "rinuxfs/nvme0")) == {"controller_fatal_status", "lost_commands",
                                                         "surprise_removal"}
    block = nvme / "sys/block/nvme0n1"
    assert [(block / f).read_text() for f in ("make-it-fail", "io-timeout-fail", "badblocks",
                                              "nvme0n1p1/make-it-fail")] == ["0\n", "0\n", "", "0\n"]
    assert not (block / "nvme0n1p1/io-timeout-fail").exists()  # per disk only, as Linux
    assert put(nvme, "sys/block/nvme0n1/badblocks", "10") == errno.EINVAL
    assert put(nvme, "sys/block/nvme0n1/badblocks", "10 0") == errno.EINVAL
    assert errno_of(lambda: (nvme / "sys/class/nvme/nvme0/reset_controller").read_text()) == errno.EACCES
    assert (nvme / "proc/self/make-it-fail").read_text() == "0\n"
    assert (nvme / "proc/self/fail-nth").read_text() == "0\n"
    assert put(nvme, "proc/self/make-it-fail", "2") == errno.EINVAL


# --- the medium: bad sectors -------------------------------------------------------------------


def test_a_bad_sector_fails_its_page_only_and_a_write_remaps_it(m: Mounted, ctrl: Controller, image: Path) -> None:
    disk, part = ctrl.disk, ctrl.part(2)
    assert put(m, f"sys/block/{disk}/badblocks", f"{BAD} 1\n") == 0
    assert (m / f"sys/block/{disk}/badblocks").read_text() == f"{BAD} 1\n"
    log = Log(m)
    before = diskstats(m)[part][0]
    fd = os.open(m / f"dev/{part}", os.O_RDONLY)
    try:
        # A sequential reader: everything up to the bad page, then EIO at that page, then the rest.
        data = b""
        while len(data) < 100 * PAGE:
            chunk = os.read(fd, 64 * 1024)
            assert chunk
            data += chunk
        assert data[: 100 * PAGE] == image_slice(image, P2 * SECTOR, 100 * PAGE)
        assert errno_of(lambda: os.pread(fd, PAGE, 100 * PAGE)) == errno.EIO
        assert errno_of(lambda: os.pread(fd, 1, 100 * PAGE + 4095)) == errno.EIO  # the same page
        assert os.pread(fd, PAGE, 101 * PAGE) == image_slice(image, P2 * SECTOR + 101 * PAGE, PAGE)
    finally:
        os.close(fd)
    # O_DIRECT gets blk_status_to_errno: a medium error is ENODATA; the sector before it reads.
    assert errno_of(lambda: read_direct(m / f"dev/{part}", (BAD - P2) * SECTOR, SECTOR)) == errno.ENODATA
    assert reads_like_image(m, part, image, P2, (BAD - P2 - 1) * SECTOR, SECTOR)
    lines = log.refresh()
    sector = BAD if ctrl.name == "ahci" else P2 + 800  # sd names the bad LBA; NVMe the request's first sector
    assert f"critical medium error, dev {disk}, sector {sector} op 0x0:(READ) flags 0x0 phys_seg 1 prio class 2" \
        in lines
    assert any(line.startswith(f"critical medium error, dev {disk}, sector ") and "flags 0x80700" in line
               for line in lines)  # the readahead that hit it first, failfast
    assert f"critical medium error, dev {disk}, sector {BAD} op 0x0:(READ) flags 0x800 phys_seg 1 prio class 2" \
        in lines
    if ctrl.name == "nvme":
        assert f"{disk}: I/O Cmd(0x2) @ LBA {BAD}, 1 blocks, I/O Error (sct 0x2 / sc 0x81) " in lines
    else:
        assert "ata1.00: error: { UNC }" in lines and "ata1.00: status: { DRDY ERR }" in lines
        assert any(line.endswith("Emask 0x409 (media error) <F>") for line in lines)
        assert f"sd 0:0:0:0: [{disk}] tag#0 Sense Key : Medium Error [current] " in lines
        assert f"sd 0:0:0:0: [{disk}] tag#0 Add. Sense: Unrecovered read error - auto reallocate failed" in lines
        # readahead, the reader's page, the two preads of that page, O_DIRECT: 5, none retried (media errors)
        assert log.count("ata1.00: failed command: READ FPDMA QUEUED") == 5
        assert int((m / f"sys/block/{disk}/device/ioerr_cnt").read_text(), 16) == 5
    assert diskstats(m)[part][0] > before  # failed requests are counted too
    # A write over the bad range remaps it, as a drive reallocates a sector it rewrites.
    new = os.urandom(PAGE)
    write_direct(m / f"dev/{part}", 100 * PAGE, new)
    assert (m / f"sys/block/{disk}/badblocks").read_text() == ""
    assert read_direct(m / f"dev/{part}", 100 * PAGE) == new
    with open(m / f"dev/{part}", "rb") as f:
        f.seek(100 * PAGE)
        assert f.read(PAGE) == new
    assert image_slice(m.image, P2 * SECTOR + 100 * PAGE, PAGE) == new


# --- fail_make_request ---------------------------------------------------------------------------


def test_make_it_fail_fails_that_partitions_bios_in_the_block_layer(nvme: Mounted, image: Path) -> None:
    m = nvme
    assert put(m, "sys/block/nvme0n1/nvme0n1p1/make-it-fail", "1") == 0
    assert put(m, "sys/kernel/debug/fail_make_request/probability", "100") == 0
    assert put(m, "sys/kernel/debug/fail_make_request/times", "2") == 0
    log = Log(m)
    assert errno_of(lambda: read_direct(m / "dev/nvme0n1p1", 0)) == errno.EIO
    assert reads_like_image(m, "nvme0n1p2", image, P2, 0)  # another partition is not touched
    assert reads_like_image(m, "nvme0n1", image, 0, P1 * SECTOR)  # nor the whole disk: its own flag is 0
    assert (m / "sys/kernel/debug/fail_make_request/times").read_text() == "1\n"
    lines = log.refresh()
    assert lines.count("FAULT_INJECTION: forcing a failure.") == 1
    assert "name fail_make_request, interval 1, probability 100, space 0, times 2" in lines
    assert " should_fail_bio" in lines and " </TASK>" in lines
    assert not any("I/O error, dev" in line for line in lines)  # no request ever existed
    # The whole disk's flag catches the partition's bios too (should_fail_bio looks at the disk first).
    assert put(m, "sys/block/nvme0n1/nvme0n1p1/make-it-fail", "0") == 0
    assert put(m, "sys/block/nvme0n1/make-it-fail", "1") == 0
    assert errno_of(lambda: read_direct(m / "dev/nvme0n1p2", PAGE)) == errno.EIO
    assert errno_of(lambda: read_direct(m / "dev/nvme0n1p2", PAGE)) == 0  # times ran out
    # What sscanf("%d") cannot parse leaves the flag alone, and the write still succeeds.
    assert put(m, "sys/block/nvme0n1/make-it-fail", "on") == 0
    assert (m / "sys/block/nvme0n1/make-it-fail").read_text() == "1\n"


def test_task_filter_and_fail_nth_aim_at_one_process(nvme: Mounted, image: Path) -> None:
    m = nvme
    for path, value in (("sys/block/nvme0n1/nvme0n1p1/make-it-fail", "1"),
                        ("sys/kernel/debug/fail_make_request/probability", "100"),
                        ("sys/kernel/debug/fail_make_request/times", "-1"),
                        ("sys/kernel/debug/fail_make_request/verbose", "0"),
                        ("sys/kernel/debug/fail_make_request/task-filter", "Y")):
        assert put(m, path, value) == 0
    assert reads_like_image(m, "nvme0n1p1", image, P1, 0)  # this process has make-it-fail 0
    child = """
import mmap, os, sys
m = sys.argv[1]
def read(off):
    fd = os.open(m + "/dev/nvme0n1p1", os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 4096)
    try:
        os.preadv(fd, [buf], off)
        return 0
    except OSError as e:
        return e.errno
    finally:
        os.close(fd)
with open(m + "/proc/self/make-it-fail", "w") as f:
    f.write("1")
first = read(0)
with open(m + "/proc/self/make-it-fail", "w") as f:
    f.write("0")
second = read(0)
print(first, second)
"""
    out = subprocess.run([sys.executable, "-c", child, str(m.path)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(errno.EIO), "0"]
    # fail-nth: the next check in this task fails, whatever probability says
    assert put(m, "sys/kernel/debug/fail_make_request/task-filter", "N") == 0
    assert put(m, "sys/kernel/debug/fail_make_request/probability", "0") == 0
    child = """
import mmap, os, sys
m = sys.argv[1]
with open(m + "/proc/self/fail-nth", "w") as f:
    f.write("1")
fd = os.open(m + "/dev/nvme0n1p1", os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 4096)
try:
    os.preadv(fd, [buf], 0)
    print("read")
except OSError as e:
    print(e.errno)
print(open(m + "/proc/self/fail-nth").read().strip())
"""
    out = subprocess.run([sys.executable, "-c", child, str(m.path)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(errno.EIO), "0"]


# --- fail_io_timeout: the drivers' timeout handling ---------------------------------------------------


def test_io_timeout_fail_runs_the_drivers_timeout_handling(m: Mounted, ctrl: Controller, image: Path) -> None:
    disk = ctrl.disk
    assert put(m, f"sys/block/{disk}/queue/io_timeout", "7000") == 0
    assert put(m, f"sys/block/{disk}/io-timeout-fail", "1") == 0
    assert put(m, "sys/kernel/debug/fail_io_timeout/probability", "100") == 0
    assert put(m, "sys/kernel/debug/fail_io_timeout/verbose", "1") == 0
    log = Log(m)
    t0, ms0 = uptime(m), diskstats(m)[disk][3]
    assert reads_like_image(m, disk, image, 0, 5 * PAGE)  # the completion was dropped, then recovered
    waited = uptime(m) - t0
    lines = log.refresh()
    assert "name fail_io_timeout, interval 1, probability 100, space 0, times 1" in lines
    if ctrl.name == "nvme":
        # nvme_timeout: the first expiry aborts; the abort does not find it; the second resets; retried
        aborting = tuple(f"opcode 0x2 (I/O Cmd) QID {qid} timeout, aborting req_op:READ(0) size:4096" for qid in (1, 2))
        assert any(line.startswith("nvme nvme0: I/O tag ") and line.endswith(aborting) for line in lines)
        assert "nvme nvme0: Abort status: 0x0" in lines
        assert any(line.endswith("timeout, reset controller") for line in lines)
        assert "nvme nvme0: 2/0/0 default/read/poll queues" in lines
        assert 14 <= waited < 60  # two expiries of the queue's 7 s io_timeout
        assert diskstats(m)[disk][3] - ms0 >= 14000
        assert (m / "sys/class/nvme/nvme0/state").read_text() == "live\n"
    else:
        # SCSI EH after the timeout finds no command in libata: completed as done, nothing printed
        assert 7 <= waited < 60
        assert int((m / f"sys/block/{disk}/device/iotmo_cnt").read_text(), 16) == 1
        assert not any("exception" in line for line in lines)
    assert not any("I/O error" in line for line in lines)
    assert reads_like_image(m, disk, image, 0, 6 * PAGE)  # times 1: the next one is not touched


# --- NVMe: fault_inject, fatal status, lost commands, surprise removal, resets -----------------------


def test_nvme_fault_inject_status_and_retries(nvme: Mounted, image: Path) -> None:
    m, fi = nvme, "sys/kernel/debug/nvme0n1/fault_inject"
    assert put(m, f"{fi}/probability", "100") == 0
    assert put(m, f"{fi}/verbose", "1") == 0
    log = Log(m)
    # The defaults: Invalid Command Opcode with DNR: not retried, EOPNOTSUPP
    assert errno_of(lambda: read_direct(m / "dev/nvme0n1p1", 0)) == errno.EOPNOTSUPP
    lines = log.refresh()
    assert "nvme0n1: I/O Cmd(0x2) @ LBA 2048, 8 blocks, I/O Error (sct 0x0 / sc 0x1) DNR " in lines
    assert "operation not supported error, dev nvme0n1, sector 2048 op 0x0:(READ) flags 0x800 phys_seg 1 " \
           "prio class 2" in lines
    assert log.count("FAULT_INJECTION: forcing a failure.") == 1
    # Unrecovered Read Error without DNR, 3 times: retried, and the 4th attempt succeeds
    assert put(m, f"{fi}/status", "0x281") == 0 and put(m, f"{fi}/dont_retry", "N") == 0
    assert put(m, f"{fi}/times", "3") == 0
    log = Log(m)
    assert reads_like_image(m, "nvme0n1p1", image, P1, PAGE)
    log.refresh()
    assert log.count("FAULT_INJECTION: forcing a failure.") == 3 and not log.count("error, dev")
    # Always: nvme_max_retries 5, so 6 attempts, then the error once
    assert put(m, f"{fi}/times", "-1") == 0
    log = Log(m)
    before = diskstats(m)["nvme0n1"][0]
    assert errno_of(lambda: read_direct(m / "dev/nvme0n1p1", 2 * PAGE)) == errno.ENODATA
    log.refresh()
    assert log.count("FAULT_INJECTION: forcing a failure.") == 6
    assert log.count("nvme0n1: I/O Cmd(0x2) @ LBA 2064, 8 blocks, I/O Error (sct 0x2 / sc 0x81) ") == 1
    assert log.count("critical medium error, dev nvme0n1, sector 2064") == 1
    assert diskstats(m)["nvme0n1"][0] == before + 1  # one request, however many attempts
    assert put(m, f"{fi}/probability", "0") == 0


def test_nvme_fatal_status_resets_the_controller(nvme: Mounted, image: Path) -> None:
    m = nvme
    assert put(m, "sys/kernel/debug/rinuxfs/nvme0/controller_fatal_status", "1") == 0
    assert (m / "sys/kernel/debug/rinuxfs/nvme0/controller_fatal_status").read_text() == "1\n"
    log = Log(m)
    t0 = uptime(m)
    assert reads_like_image(m, "nvme0n1p2", image, P2, 0)
    assert uptime(m) - t0 >= 30  # noticed when the command timed out: nvme-pci has no health poll
    lines = log.refresh()
    assert lines[:2] == ["nvme nvme0: controller is down; will reset: CSTS=0x3, PCI_STATUS=0x10",
                         "nvme nvme0: 2/0/0 default/read/poll queues"]
    assert (m / "sys/kernel/debug/rinuxfs/nvme0/controller_fatal_status").read_text() == "0\n"
    assert (m / "sys/class/nvme/nvme0/state").read_text() == "live\n"


def test_nvme_lost_commands_are_aborted_then_reset_and_never_retried_forever(nvme: Mounted, image: Path) -> None:
    m, knob = nvme, "sys/kernel/debug/rinuxfs/nvme0/lost_commands"
    assert put(m, knob, "1") == 0
    log = Log(m)
    assert reads_like_image(m, "nvme0n1p2", image, P2, 3 * PAGE)
    lines = log.refresh()
    assert len(lines) == 4 and lines[1:] == ["nvme nvme0: Abort status: 0x0", lines[2],
                                             "nvme nvme0: 2/0/0 default/read/poll queues"]
    assert lines[0].endswith("timeout, aborting req_op:READ(0) size:4096") and lines[2].endswith(
        "timeout, reset controller")
    assert put(m, knob, "10") == 0
    log = Log(m)
    assert errno_of(lambda: read_direct(m / "dev/nvme0n1p2", 4 * PAGE)) == errno.EIO
    log.refresh()
    assert log.count("timeout, reset controller") == 6  # 6 attempts, each cancelled by a reset
    assert log.count("nvme0n1: I/O Cmd(0x2) @ LBA 18464, 8 blocks, I/O Error (sct 0x3 / sc 0x71) ") == 1
    assert log.count("I/O error, dev nvme0n1, sector 18464 op 0x0:(READ) flags 0x800 phys_seg 1 prio class 2") == 1
    assert (m / knob).read_text() == "4\n"
    assert put(m, knob, "0") == 0
    assert reads_like_image(m, "nvme0n1p2", image, P2, 4 * PAGE)


def test_nvme_reset_and_rescan_controller(nvme: Mounted, image: Path) -> None:
    m = nvme
    log = Log(m)
    assert put(m, "sys/class/nvme/nvme0/reset_controller", "1") == 0
    assert put(m, "sys/class/nvme/nvme0/rescan_controller", "1") == 0
    assert log.refresh() == ["nvme nvme0: 2/0/0 default/read/poll queues"]  # and nothing for an unchanged size
    assert reads_like_image(m, "nvme0n1", image, 0, 7 * PAGE)


def test_nvme_admin_fault_inject_makes_a_reset_fail(nvme: Mounted) -> None:
    m, fi = nvme, "sys/kernel/debug/nvme0/fault_inject"  # the controller's: requests without a gendisk
    assert put(m, f"{fi}/probability", "100") == 0 and put(m, f"{fi}/verbose", "0") == 0
    log = Log(m)
    assert put(m, "sys/class/nvme/nvme0/reset_controller", "1") == errno.ENETRESET
    assert log.refresh()[:3] == ["nvme nvme0: Identify Controller failed (16385)",  # 0x4001: the default, DNR
                               "nvme nvme0: Disabling device after reset failure: -5",
                               "nvme0n1: detected capacity change from 65536 to 0"]
    assert wait_until(lambda: gone(m / "dev/nvme0n1"), 5)
    assert errno_of(lambda: (m / "sys/block/nvme0n1/size").read_text()) == errno.ENOENT


def test_nvme_surprise_removal_kills_the_controller_and_pci_rescan_brings_it_back(nvme: Mounted,
                                                                                   image: Path) -> None:
    m = nvme
    (m / "tmp/note").write_text("still here\n")
    held = os.open(m / "dev/nvme0n1p2", os.O_RDONLY)
    try:
        assert put(m, "sys/kernel/debug/rinuxfs/nvme0/surprise_removal", "1") == 0
        log = Log(m)
        assert errno_of(lambda: read_direct(m / "dev/nvme0n1p1", 0)) == errno.EIO
        lines = log.refresh()
        assert lines[:5] == [
            "nvme nvme0: controller is down; will reset: CSTS=0xffffffff, PCI_STATUS=0xffff",
            "nvme nvme0: Does your device have a faulty power saving mode enabled?",
            "nvme nvme0: Try \"nvme_core.default_ps_max_latency_us=0 pcie_aspm=off pcie_port_pm=off\" and "
            "report a bug",
            "nvme nvme0: Disabling device after reset failure: -19",
            "nvme0n1: detected capacity change from 65536 to 0",
        ]
        assert not any("I/O error, dev" in line for line in lines)  # a dead disk's errors are quiet
        # The dead controller's disk goes away; the mount and everything else keep working.
        assert wait_until(lambda: gone(m / "sys/block/nvme0n1") and gone(m / "dev/nvme0n1p2"), 5)
        assert errno_of(lambda: os.stat(m / "dev/nvme0n1")) == errno.ENOENT
        assert errno_of(lambda: os.pread(held, PAGE, 0)) == errno.EIO
        assert (m / "proc/partitions").read_text() == "major minor  #blocks  name\n\n"
        assert (m / "tmp/note").read_text() == "still here\n" and "MemTotal" in (m / "proc/meminfo").read_text()
    finally:
        os.close(held)
    pci = m / "sys/bus/pci/devices/0000:00:04.0"
    assert (pci / "vendor").read_text() == "0x1b36\n" and not (pci / "driver").exists()
    # A new card in the slot; the function is removed and found again by a rescan.
    assert put(m, "sys/kernel/debug/rinuxfs/nvme0/surprise_removal", "0") == 0
    assert put(m, "sys/bus/pci/devices/0000:00:04.0/remove", "1") == 0
    assert wait_until(lambda: gone(m / "sys/bus/pci/devices/0000:00:04.0"), 5)
    assert put(m, "sys/bus/pci/rescan", "1") == 0
    # The rescan probes before it returns, and the names the host cached went with the old devices: the
    # same paths lead to the new ones at once (sysfs and debugfs), not after the entry cache times out.
    assert (m / "sys/class/nvme/nvme0/state").read_text() == "live\n"
    assert (m / "sys/kernel/debug/nvme0n1/fault_inject/probability").read_text() == "0\n"
    assert reads_like_image(m, "nvme0n1p2", image, P2, 9 * PAGE)
    assert sorted(os.listdir(m / "dev")) == ["nvme0n1", "nvme0n1p1", "nvme0n1p2", "nvme0n1p4"]
    assert put(m, "sys/bus/pci/rescan", "x") == errno.EINVAL


# --- AHCI: task-file errors, interface errors, hot plug, delete and scan --------------------------------


def test_ahci_task_file_errors_are_retried_by_sd_up_to_its_limit(ahci: Mounted, image: Path) -> None:
    m, knob = ahci, "sys/kernel/debug/rinuxfs/ata1/task_file_error"
    assert put(m, knob, "2") == 0
    log = Log(m)
    assert reads_like_image(m, "sda1", image, P1, 0)
    lines = log.refresh()
    assert lines.count("ata1.00: error: { ABRT }") == 2 and lines.count("ata1: EH complete") == 2
    assert any(line.endswith("Emask 0x401 (device error) <F>") for line in lines)
    assert not any("error, dev" in line for line in lines)
    assert put(m, knob, "9") == 0
    log = Log(m)
    assert errno_of(lambda: read_direct(m / "dev/sda1", PAGE)) == errno.EIO
    lines = log.refresh()
    assert lines.count("ata1.00: failed command: READ FPDMA QUEUED") == 6  # sd's 5 retries, then it gives up
    assert "sd 0:0:0:0: [sda] tag#0 Sense Key : Aborted Command [current] " in lines
    assert "sd 0:0:0:0: [sda] tag#0 CDB: Read(10) 28 00 00 00 08 08 00 00 08 00" in lines
    assert "I/O error, dev sda, sector 2056 op 0x0:(READ) flags 0x800 phys_seg 1 prio class 2" in lines
    dev = m / "sys/block/sda/device"
    assert int((dev / "ioerr_cnt").read_text(), 16) == 8 and int((dev / "iotmo_cnt").read_text(), 16) == 8
    assert (m / f"{knob}").read_text() == "3\n"
    assert put(m, knob, "0") == 0


def test_ahci_interface_error_hard_resets_the_link(ahci: Mounted, image: Path) -> None:
    m = ahci
    assert put(m, "sys/kernel/debug/rinuxfs/ata1/interface_fatal_error", "0x400000") == 0
    log = Log(m)
    assert reads_like_image(m, "sda2", image, P2, 0)
    lines = log.refresh()
    assert lines[0].startswith("ata1.00: exception Emask 0x10 SAct ") and lines[0].endswith(
        " SErr 0x400000 action 0x6 frozen")
    assert lines[1:4] == ["ata1.00: irq_stat 0x08000000, interface fatal error", "ata1: SError: { Handshk }",
                          "ata1.00: failed command: READ FPDMA QUEUED"]
    assert lines[4].endswith("ncq dma 4096 in")
    assert lines[5].endswith("Emask 0x10 (ATA bus error)")
    assert lines[6:] == ["ata1.00: status: { DRDY }", "ata1: hard resetting link",
                         "ata1: SATA link up 1.5 Gbps (SStatus 113 SControl 300)", "ata1.00: configured for UDMA/133",
                         "ata1: EH complete"]


def test_ahci_surprise_removal_delete_and_scan(ahci: Mounted, image: Path) -> None:
    m = ahci
    held = os.open(m / "dev/sda2", os.O_RDONLY)
    try:
        log = Log(m)
        assert put(m, "sys/kernel/debug/rinuxfs/ata1/surprise_removal", "1") == 0
        assert wait_until(lambda: gone(m / "sys/block/sda") and gone(m / "dev/sda2"), 5)
        assert errno_of(lambda: os.pread(held, PAGE, 0)) == errno.EIO
        lines = log.refresh()
        assert lines[:7] == ["ata1: exception Emask 0x10 SAct 0x0 SErr 0x4050000 action 0xe frozen",
                             "ata1: irq_stat 0x00400040, connection status changed",
                             "ata1: SError: { PHYRdyChg CommWake DevExch }", "ata1: hard resetting link",
                             "ata1: SATA link down (SStatus 0 SControl 300)", "ata1.00: disable device",
                             "ata1: EH complete"]
        assert "ata1.00: detaching (SCSI 0:0:0:0)" in lines and "sd 0:0:0:0: [sda] Synchronizing SCSI cache" in lines
    finally:
        os.close(held)
    assert (m / "sys/class/scsi_host/host0/proc_name").read_text() == "ahci\n"  # the host stays
    # Plugged back in: the link comes up and the disk is attached again, under its old name
    assert put(m, "sys/kernel/debug/rinuxfs/ata1/surprise_removal", "0") == 0
    assert wait_until(lambda: (m / "dev/sda2").exists(), 5)
    assert reads_like_image(m, "sda2", image, P2, PAGE)
    # sysfs delete: sd's shutdown, the disk goes; scan finds it again
    assert wait_until(lambda: (m / "sys/block/sda/device/delete").exists(), 5)
    log = Log(m)
    assert put(m, "sys/block/sda/device/delete", "1") == 0
    assert log.refresh() == ["sd 0:0:0:0: [sda] Synchronizing SCSI cache", "sd 0:0:0:0: [sda] Stopping disk",
                           "ata1.00: Entering standby power mode", "ata1.00: disable device"]
    assert wait_until(lambda: gone(m / "dev/sda"), 5)
    assert put(m, "sys/class/scsi_host/host0/scan", "0 1 0") == errno.EINVAL
    assert put(m, "sys/class/scsi_host/host0/scan", "-") == errno.EINVAL
    assert put(m, "sys/class/scsi_host/host0/scan", "- - -") == 0
    assert wait_until(lambda: (m / "dev/sda2").exists(), 5)
    assert reads_like_image(m, "sda2", image, P2, 2 * PAGE)
    assert (m / "sys/block/sda/device/rescan").exists()  # found by the path the host cached before the delete
    log = Log(m)
    assert put(m, "sys/block/sda/device/rescan", "1") == 0
    assert log.refresh() == []  # an unchanged disk: nothing to say


# --- fail_page_alloc -----------------------------------------------------------------------------


def test_fail_page_alloc_makes_allocations_fail_with_enomem(nvme: Mounted, image: Path) -> None:
    m, d = nvme, "sys/kernel/debug/fail_page_alloc"
    assert put(m, f"{d}/probability", "100") == 0 and put(m, f"{d}/times", "-1") == 0
    assert put(m, f"{d}/verbose", "0") == 0
    (m / "tmp/a").write_bytes(b"x" * PAGE)  # the defaults exempt allocations that may sleep, and order 0
    assert put(m, f"{d}/ignore-gfp-wait", "N") == 0
    (m / "tmp/b").write_bytes(b"x" * PAGE)  # min-order 1: order-0 pages still never fail
    assert put(m, f"{d}/min-order", "0") == 0
    assert errno_of(lambda: (m / "tmp/c").write_bytes(b"x" * PAGE)) == errno.ENOMEM
    assert errno_of(lambda: (m / "dev/nvme0n1p4").read_bytes()) == errno.ENOMEM
    assert put(m, f"{d}/times", "1") == 0  # the last one
    assert errno_of(lambda: (m / "tmp/d").write_bytes(b"x" * PAGE)) == errno.ENOMEM
    (m / "tmp/e").write_bytes(b"y" * PAGE)
    assert (m / "tmp/e").read_bytes() == b"y" * PAGE and (m / "tmp/a").read_bytes() == b"x" * PAGE
    assert reads_like_image(m, "nvme0n1p4", image, P4, 0)
