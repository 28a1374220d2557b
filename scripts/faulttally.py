"""Fault tally: inject each kind of fault --rounds times on real NVMe and AHCI mounts; check each recovery.

Every fault goes in through the interfaces the README names (debugfs fault attributes, the sysfs
switches, sys/block/<disk>/badblocks, debugfs rinuxfs/<controller>/ for what a test bench does to
hardware). After each injection the round checks what the user got from the injected I/O, that the
next ordinary O_DIRECT read of known data through dev/<part> returns the image's bytes, and that
proc/kmsg carries the driver's recovery lines. Then every fault attribute is put back as it was at
boot and read again, so one kind cannot leak into the next: a leak is a failure of its own.

Images and mount points live under one tempfile.mkdtemp() directory (the daemons' pid and log files
too, through RINUXFS_RUNTIME_DIR), removed at the end; every mount is unmounted in a `finally`.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# wait_until(..., 5): names under sys/ and dev/ come and go asynchronously for the host's dentry cache.
from tests.conftest import mount, wait_until  # noqa: E402

# The fault tests' own disk: 32 MiB of pseudo-random bytes under a GPT (disks/tests-io.sfdisk).
from tests.integration.storage_helpers import (  # noqa: E402
    MIB,
    PAGE,
    RATELIMIT_SECONDS,
    SECTOR,
    THREE_PARTS,
    THREE_PARTS_GPT,
    Log,
    errno_of,
    klines,
    read_direct,
    sfdisk_image,
    uptime,
    write_attr,
    write_direct,
)

PART_START = {n: start for n, (start, _) in THREE_PARTS.items()}  # first sectors of partitions 1, 2 and 4
P1, P4 = PART_START[1], PART_START[4]
ROUND_TIMEOUT = 120  # s: a round that takes longer is a hung daemon, reported rather than waited on

# printk_ratelimited call sites whose lines may be legitimately missing in a fast loop: each pattern
# matches exactly one line per allowed call, so ten of them in the last interval prove the limit was hit.
SITE_NVME_LOG_ERROR = re.compile(r": I/O Cmd\(0x[0-9a-f]+\) @ LBA ")
SITE_BLK_REQ_ERROR = re.compile(r"^[\w/ ]+ error, dev \S+, sector ")
SITE_SD_FAILED = re.compile(r"\] tag#\d+ FAILED Result: ")


# --- the mount and errors ------------------------------------------------------------------------


@contextlib.contextmanager
def mounted(image: Path, mnt: Path, controller: str) -> Iterator[Path]:
    """`rinuxfs mount` the image; always unmount it, and end the daemon this mount started."""
    mnt.mkdir()
    try:
        m = mount(image, mnt, "--controller", controller)
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"rinuxfs mount --controller {controller} failed: {e.stderr.strip()}") from None
    try:
        yield m.path
    finally:
        try:
            m.unmount()  # `rinuxfs umount`, else a lazy unmount; our daemon killed, by its pid, if it would not exit
        except AssertionError as e:
            print(f"faulttally: unmount of {mnt}: {e}", file=sys.stderr)


def ename(e: OSError) -> str:
    """The errno's name, as the tally prints it."""
    return errno.errorcode.get(e.errno or 0, str(e))


# --- the tally -------------------------------------------------------------------------------------


@dataclass
class Tally:
    kind: str
    controller: str
    checks: str  # what "recovered" means for this kind
    rounds: int = 0
    injected: int = 0
    recovered: int = 0
    failures: list[str] = field(default_factory=list)
    notes: Counter[str] = field(default_factory=Counter)


class Round:
    """One injection: problems with the injection itself, and with what should have followed it."""

    def __init__(self) -> None:
        self.inject: list[str] = []
        self.recover: list[str] = []
        self.notes: list[str] = []

    def need(self, ok: bool, what: str) -> None:
        """A check of the injection: did the fault fire as the interface says it does?"""
        if not ok:
            self.inject.append(what)

    def after(self, ok: bool, what: str) -> None:
        """A check of the recovery."""
        if not ok:
            self.recover.append(what)

    def logged(self, log: Log, text: str, site: re.Pattern[str], what: str) -> None:
        """A ratelimited line: printed, or (noted, not failed) its site had used up its burst."""
        if log.has(text):
            return
        if log.ratelimited(site):
            self.notes.append(f"{what} suppressed by printk_ratelimit")
        else:
            self.recover.append(f"no {what} line (and its site was not ratelimited)")


class RoundTimeout(Exception):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise RoundTimeout(f"round took more than {ROUND_TIMEOUT} s")


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the `finally`s: unmount, end our daemon, remove the temp dir


@dataclass
class Machine:
    m: Path
    controller: str
    original: bytes  # the image as built: what every read of known data must return
    disk: str
    ctrl: str  # debugfs rinuxfs/<ctrl>: nvme0 or ata1
    pci: str = ""  # the NVMe function's address, for remove and rescan
    baseline: dict[str, str] = field(default_factory=dict)

    def part(self, n: int) -> str:
        return f"{self.disk}{'p' if self.disk[-1].isdigit() else ''}{n}"

    def dev(self, n: int) -> Path:
        return self.m / f"dev/{self.part(n)}"

    def known(self, n: int, offset: int, size: int = PAGE) -> bytes:
        start = PART_START[n] * SECTOR + offset
        return self.original[start : start + size]

    def read_known(self, r: Round, offset: int, failed: str = "the read failed") -> bytes | None:
        """O_DIRECT read of known data at `offset` of partition 1; None, and a failed recovery, if it errs."""
        try:
            return read_direct(self.dev(1), offset)
        except OSError as e:
            r.after(False, f"{failed}: {ename(e)}")
            return None

    def scan_line(self) -> str:
        """check_partition's line: a name ending in a digit gets its partitions printed as p1, p2, ..."""
        names = [f"p{n}" if self.disk[-1].isdigit() else self.part(n) for n in PART_START]
        return f" {self.disk}: {' '.join(names)}"

    # The fault attributes a round may touch. Their boot values are the baseline every round returns to.
    def fault_files(self) -> list[str]:
        debug = "sys/kernel/debug"
        dirs = [f"{debug}/fail_make_request", f"{debug}/fail_io_timeout", f"{debug}/fail_page_alloc",
                f"{debug}/rinuxfs/{self.ctrl}"]
        if self.controller == "nvme":
            dirs += [f"{debug}/{self.disk}/fault_inject", f"{debug}/nvme0/fault_inject"]
        files = [f"{d}/{name}" for d in dirs for name in sorted(os.listdir(self.m / d))]
        block = f"sys/block/{self.disk}"
        files += [f"{block}/{name}" for name in ("make-it-fail", "io-timeout-fail", "badblocks", "queue/io_timeout")]
        files += [f"{block}/{self.part(n)}/make-it-fail" for n in PART_START]
        return files

    def snapshot(self) -> dict[str, str]:
        return {f: (self.m / f).read_text() for f in self.fault_files()}

    def restore(self) -> list[str]:
        """Put every fault attribute back to its boot value; what still differs after that is a leak."""
        if self.controller == "nvme" and not (self.m / "sys/class/nvme/nvme0").exists():
            self.bring_back_nvme()
        if self.controller == "ahci" and not (self.m / f"sys/block/{self.disk}").exists():
            self.bring_back_ahci()
        bad = (self.m / f"sys/block/{self.disk}/badblocks").read_text().split("\n")
        for line in filter(None, bad):  # only a write of the data clears a bad range, as on the drive
            start, length = (int(v) for v in line.split())
            with contextlib.suppress(OSError):
                write_direct(self.m / f"dev/{self.disk}", start * SECTOR,
                             self.original[start * SECTOR : (start + length) * SECTOR])
        for path, value in self.baseline.items():
            if path.endswith("/badblocks"):
                continue
            # Only what differs is written: writing surprise_removal or a knob's 0 again is an event of its own.
            with contextlib.suppress(OSError):
                if (self.m / path).read_text() != value:
                    write_attr(self.m / path, value.strip())
        now = self.snapshot()
        return [f"{p} is {now[p].strip()!r}, was {v.strip()!r}" for p, v in self.baseline.items() if now[p] != v]

    def bring_back_nvme(self) -> None:
        """A removed controller: unplug the function and rescan the bus, as one does on Linux."""
        write_attr(self.m / f"sys/kernel/debug/rinuxfs/{self.ctrl}/surprise_removal", "0")
        fn = self.m / f"sys/bus/pci/devices/{self.pci}"
        if fn.exists():
            write_attr(fn / "remove", "1")
            wait_until(lambda: not os.path.lexists(fn), 5)
        write_attr(self.m / "sys/bus/pci/rescan", "1")
        wait_until(lambda: self.dev(2).exists(), 5)

    def bring_back_ahci(self) -> None:
        """A pulled or deleted disk: plug it back in, then ask the SCSI host to scan, as one does on Linux."""
        write_attr(self.m / f"sys/kernel/debug/rinuxfs/{self.ctrl}/surprise_removal", "0")
        if not wait_until(lambda: self.dev(2).exists(), 5):
            write_attr(self.m / "sys/class/scsi_host/host0/scan", "- - -")
            wait_until(lambda: self.dev(2).exists(), 5)

    def probe(self, r: Round, rnd: int) -> None:
        """The next ordinary read of known data: O_DIRECT through dev/<part 2>, at a page that moves each round."""
        offset = (rnd * 7919 % 2000) * PAGE
        try:
            got = read_direct(self.dev(2), offset)
        except OSError as e:
            r.after(False, f"probe read of {self.part(2)}@{offset}: {ename(e)}")
            return
        r.after(got == self.known(2, offset), f"probe read of {self.part(2)}@{offset}: wrong bytes")

    def no_io_error(self, r: Round, log: Log) -> None:
        r.after(not log.has(" error, dev "), "an unexpected block-layer error line: "
                + next((t for t in log.lines() if " error, dev " in t), ""))


# --- the kinds -------------------------------------------------------------------------------------
# Each takes the machine, a Round to fill and the round's number (which moves offsets and counts
# around, so twenty rounds are not twenty times the same request).


def fail_make_request(mc: Machine, r: Round, n: int) -> None:
    m, d = mc.m, "sys/kernel/debug/fail_make_request"
    write_attr(m / f"sys/block/{mc.disk}/make-it-fail", "1")
    write_attr(m / f"{d}/verbose", "1")  # the FAULT_INJECTION lines without a dump_stack: the ring holds 4096
    write_attr(m / f"{d}/times", "1")
    log = Log(m)
    write_attr(m / f"{d}/probability", "100")
    offset = (n % 500) * PAGE
    r.need(errno_of(lambda: read_direct(mc.dev(1), offset)) == errno.EIO, "the injected read did not fail with EIO")
    log.refresh()
    r.need(log.count("FAULT_INJECTION: forcing a failure.") == 1, "no FAULT_INJECTION line")
    r.need(log.has("name fail_make_request, interval 1, probability 100, space 0, times 1"), "no attribute line")
    mc.no_io_error(r, log)  # should_fail_bio: no request ever existed, so nothing to print
    r.after((m / f"{d}/times").read_text() == "0\n", "times was not used up by the one failure")


def fail_io_timeout(mc: Machine, r: Round, n: int) -> None:
    m, d = mc.m, "sys/kernel/debug/fail_io_timeout"
    write_attr(m / f"sys/block/{mc.disk}/io-timeout-fail", "1")
    write_attr(m / f"{d}/verbose", "1")
    write_attr(m / f"{d}/times", "1")
    timeout = int((m / f"sys/block/{mc.disk}/queue/io_timeout").read_text()) / 1000
    tmo0 = int((m / f"sys/block/{mc.disk}/device/iotmo_cnt").read_text(), 16) if mc.controller == "ahci" else 0
    log = Log(m)
    write_attr(m / f"{d}/probability", "100")
    offset = (n % 500) * PAGE
    # the completion is dropped; the driver's timeout handling must get the data after all
    got = mc.read_known(r, offset, "the timed-out read failed")
    waited = uptime(m) - log.t0
    log.refresh()
    r.need(log.has("name fail_io_timeout, interval 1, probability 100, space 0, times 1"), "no FAULT_INJECTION line")
    # nvme_timeout waits two expiries (abort, then reset), scsi_timeout one; proc/uptime has 10 ms steps
    expiries = 2 if mc.controller == "nvme" else 1
    r.need(waited >= expiries * timeout - 0.02,
           f"the clock moved {waited:.2f} s, less than {expiries} x io_timeout {timeout:.0f} s")
    if got is not None:
        r.after(got == mc.known(1, offset), "the timed-out read returned wrong bytes")
    if mc.controller == "nvme":  # nvme_timeout: abort at the first expiry, reset at the second, retried
        r.after(log.has("timeout, aborting req_op:READ(0) size:4096"), "no 'timeout, aborting' line")
        r.after(log.has("nvme nvme0: Abort status: 0x0"), "no 'Abort status' line")
        r.after(log.has("timeout, reset controller"), "no 'timeout, reset controller' line")
        r.after(log.has("nvme nvme0: 2/0/0 default/read/poll queues"), "the controller did not come back (queues line)")
        r.after((m / "sys/class/nvme/nvme0/state").read_text() == "live\n", "nvme0 is not live")
    else:  # scsi_timeout, then SCSI EH, which finds libata done with it: counted, nothing printed
        tmo = int((m / f"sys/block/{mc.disk}/device/iotmo_cnt").read_text(), 16)
        r.after(tmo == tmo0 + 1, f"iotmo_cnt went {tmo0:#x} -> {tmo:#x}, not +1")
    mc.no_io_error(r, log)


def nvme_status_retried(mc: Machine, r: Round, n: int) -> None:
    m, fi = mc.m, f"sys/kernel/debug/{mc.disk}/fault_inject"
    times = 1 + n % 5  # up to nvme_max_retries (5): the last attempt succeeds
    write_attr(m / f"{fi}/status", "0x281")  # Unrecovered Read Error, no DNR: nvme_decide_disposition retries it
    write_attr(m / f"{fi}/dont_retry", "N")
    write_attr(m / f"{fi}/verbose", "1")
    write_attr(m / f"{fi}/times", str(times))
    log = Log(m)
    write_attr(m / f"{fi}/probability", "100")
    offset = (n % 500) * PAGE
    got = mc.read_known(r, offset, "the read failed although retries remained")
    log.refresh()
    r.need(log.count("FAULT_INJECTION: forcing a failure.") == times,
           f"{log.count('FAULT_INJECTION: forcing a failure.')} failures forced, not {times}")
    if got is not None:
        r.after(got == mc.known(1, offset), "the retried read returned wrong bytes")
    mc.no_io_error(r, log)


def nvme_status_dont_retry(mc: Machine, r: Round, n: int) -> None:
    m, fi = mc.m, f"sys/kernel/debug/{mc.disk}/fault_inject"
    write_attr(m / f"{fi}/status", "0x6")  # Internal Error: nvme_error_status's default, BLK_STS_IOERR
    write_attr(m / f"{fi}/dont_retry", "Y")
    write_attr(m / f"{fi}/verbose", "1")
    write_attr(m / f"{fi}/times", "1")
    log = Log(m)
    write_attr(m / f"{fi}/probability", "100")
    offset = (n % 500) * PAGE
    r.need(errno_of(lambda: read_direct(mc.dev(1), offset)) == errno.EIO, "the injected read did not fail with EIO")
    log.refresh()
    r.need(log.count("FAULT_INJECTION: forcing a failure.") == 1, "not exactly one forced failure (DNR: no retry)")
    lba = P1 + offset // SECTOR
    line = f"{mc.disk}: I/O Cmd(0x2) @ LBA {lba}, 8 blocks, I/O Error (sct 0x0 / sc 0x6) DNR "
    r.logged(log, line, SITE_NVME_LOG_ERROR, "nvme_log_error")
    r.logged(log, f"I/O error, dev {mc.disk}, sector {lba} op 0x0:(READ)", SITE_BLK_REQ_ERROR, "'I/O error, dev'")


def badblocks(mc: Machine, r: Round, n: int) -> None:
    m, disk = mc.m, mc.disk
    page = 100 + n % 1000  # in partition 4, away from the probe's partition 2
    bad = P4 + page * 8 + 1 + n % 6  # a sector inside that page, with neighbours on both sides within it
    r.need(write_attr(m / f"sys/block/{disk}/badblocks", f"{bad} 1\n") == 0, "writing badblocks failed")
    r.need((m / f"sys/block/{disk}/badblocks").read_text() == f"{bad} 1\n", "badblocks does not list the range")
    log = Log(m)
    # blk_status_to_errno: a medium error is ENODATA with O_DIRECT
    r.need(errno_of(lambda: read_direct(mc.dev(4), page * PAGE)) == errno.ENODATA,
           "the read over the bad sector did not fail with ENODATA")
    for s in (bad - 1, bad + 1):  # its neighbours, sector by sector
        off = (s - P4) * SECTOR
        try:
            r.after(read_direct(mc.dev(4), off, SECTOR) == mc.known(4, off, SECTOR), f"sector {s} read wrong bytes")
        except OSError as e:
            r.after(False, f"neighbour sector {s} failed: {ename(e)}")
    log.refresh()
    if mc.controller == "nvme":
        r.logged(log, "I/O Error (sct 0x2 / sc 0x81)", SITE_NVME_LOG_ERROR, "Unrecovered Read Error")
    else:  # libata EH: not ratelimited; sd's lines are
        r.after(log.has("ata1.00: error: { UNC }"), "no 'error: { UNC }' line")
        r.after(log.has("ata1: EH complete"), "no 'EH complete' line")
        r.logged(log, "Sense Key : Medium Error [current] ", SITE_SD_FAILED, "sd Medium Error")
    sector = bad if mc.controller == "ahci" else P4 + page * 8  # sd names the bad LBA; NVMe the request's start
    r.logged(log, f"critical medium error, dev {disk}, sector {sector} ", SITE_BLK_REQ_ERROR, "'critical medium error'")
    # A write of the page's own data over it: the drive remaps, the range is gone, the page reads again.
    try:
        write_direct(mc.dev(4), page * PAGE, mc.known(4, page * PAGE))
    except OSError as e:
        r.after(False, f"the write over the bad sector failed: {ename(e)}")
    r.after((m / f"sys/block/{disk}/badblocks").read_text() == "", "the write did not clear the bad range")
    try:
        r.after(read_direct(mc.dev(4), page * PAGE) == mc.known(4, page * PAGE), "the rewritten page reads wrong")
    except OSError as e:
        r.after(False, f"the rewritten page does not read: {ename(e)}")


def nvme_controller_fatal(mc: Machine, r: Round, n: int) -> None:
    m, knob = mc.m, f"sys/kernel/debug/rinuxfs/{mc.ctrl}/controller_fatal_status"
    log = Log(m)
    write_attr(m / knob, "1")
    offset = (n % 500) * PAGE
    # noticed when the command times out (nvme-pci has no health poll), then the reset, then retried
    got = mc.read_known(r, offset)
    log.refresh()
    r.need(log.has("nvme nvme0: controller is down; will reset: CSTS=0x3, PCI_STATUS=0x10"),
           "no 'controller is down; will reset: CSTS=0x3' line")
    r.after(got is None or got == mc.known(1, offset), "the read returned wrong bytes")
    r.after(log.has("nvme nvme0: 2/0/0 default/read/poll queues"), "no queues line after the reset")
    r.after((m / knob).read_text() == "0\n", "CSTS.CFS still set after the reset")
    r.after((m / "sys/class/nvme/nvme0/state").read_text() == "live\n", "nvme0 is not live")
    mc.no_io_error(r, log)


def nvme_lost_commands(mc: Machine, r: Round, n: int) -> None:
    m, knob = mc.m, f"sys/kernel/debug/rinuxfs/{mc.ctrl}/lost_commands"
    lost = 1 + n % 3  # each attempt lost is aborted, then reset and retried: fewer than nvme_max_retries
    log = Log(m)
    write_attr(m / knob, str(lost))
    offset = (n % 500) * PAGE
    got = mc.read_known(r, offset)
    log.refresh()
    r.need(log.count("timeout, aborting req_op:READ(0) size:4096") == lost,
           f"{log.count('timeout, aborting')} aborts, not {lost}")
    r.after(got is None or got == mc.known(1, offset), "the read returned wrong bytes")
    r.after(log.count("nvme nvme0: Abort status: 0x0") == lost, "not one 'Abort status' line per lost command")
    r.after(log.count("timeout, reset controller") == lost, "not one reset per lost command")
    r.after(log.count("nvme nvme0: 2/0/0 default/read/poll queues") == lost, "not one queues line per reset")
    r.after((m / knob).read_text() == "0\n", "lost_commands not used up")
    mc.no_io_error(r, log)


def nvme_surprise_removal(mc: Machine, r: Round, n: int) -> None:
    m = mc.m
    log = Log(m)
    write_attr(m / f"sys/kernel/debug/rinuxfs/{mc.ctrl}/surprise_removal", "1")
    r.need(errno_of(lambda: read_direct(mc.dev(1), (n % 500) * PAGE)) == errno.EIO, "the read did not fail with EIO")
    log.refresh()
    r.need(log.has("nvme nvme0: controller is down; will reset: CSTS=0xffffffff, PCI_STATUS=0xffff"),
           "no 'CSTS=0xffffffff' line")
    r.after(log.has("nvme nvme0: Disabling device after reset failure: -19"), "no 'Disabling device' line")
    r.after(log.has(f"{mc.disk}: detected capacity change from 65536 to 0"), "no capacity change to 0")
    r.after(wait_until(lambda: not os.path.lexists(m / f"sys/block/{mc.disk}") and not os.path.lexists(mc.dev(2)),
                       5),
            "the dead disk did not leave sys/ and dev/")
    # A new card in the slot: the function is removed and found again by a PCI rescan.
    write_attr(m / f"sys/kernel/debug/rinuxfs/{mc.ctrl}/surprise_removal", "0")
    fn = m / f"sys/bus/pci/devices/{mc.pci}"
    r.after(write_attr(fn / "remove", "1") == 0, "PCI remove failed")
    r.after(wait_until(lambda: not os.path.lexists(fn), 5), "the PCI function did not go")
    log = Log(m)
    r.after(write_attr(m / "sys/bus/pci/rescan", "1") == 0, "PCI rescan failed")
    r.after(wait_until(lambda: mc.dev(2).exists(), 5), "dev/ did not come back after the rescan")
    log.refresh()
    r.after(log.has("nvme nvme0: 2/0/0 default/read/poll queues"), "no queues line after the rescan")
    r.after(log.has(mc.scan_line()), "the partitions were not scanned again")
    r.after((m / "sys/class/nvme/nvme0/state").read_text() == "live\n", "nvme0 is not live")


def ahci_interface_fatal(mc: Machine, r: Round, n: int) -> None:
    m = mc.m
    log = Log(m)
    write_attr(m / f"sys/kernel/debug/rinuxfs/{mc.ctrl}/interface_fatal_error", "0x400000")  # SError.H: handshake
    offset = (n % 500) * PAGE
    got = mc.read_known(r, offset)
    log.refresh()
    r.need(log.has("ata1.00: irq_stat 0x08000000, interface fatal error"), "no 'interface fatal error' line")
    r.need(log.has("ata1: SError: { Handshk }"), "no SError line")
    r.after(got is None or got == mc.known(1, offset), "the read returned wrong bytes")
    for line in ("ata1: hard resetting link", "ata1: SATA link up 1.5 Gbps (SStatus 113 SControl 300)",
                 "ata1.00: configured for UDMA/133", "ata1: EH complete"):
        r.after(log.has(line), f"no {line!r} line")
    mc.no_io_error(r, log)


def ahci_task_file_retried(mc: Machine, r: Round, n: int) -> None:
    m, knob = mc.m, f"sys/kernel/debug/rinuxfs/{mc.ctrl}/task_file_error"
    errors = 1 + n % 5  # sd retries up to 5 times: the last attempt succeeds
    log = Log(m)
    write_attr(m / knob, str(errors))
    offset = (n % 500) * PAGE
    got = mc.read_known(r, offset, "the read failed although retries remained")
    log.refresh()
    r.need(log.count("ata1.00: error: { ABRT }") == errors, f"{log.count('error: { ABRT }')} ABRT errors, not {errors}")
    r.after(got is None or got == mc.known(1, offset), "the retried read returned wrong bytes")
    r.after(log.count("ata1: EH complete") == errors, "not one 'EH complete' per error")
    r.after((m / knob).read_text() == "0\n", "task_file_error not used up")
    mc.no_io_error(r, log)


def ahci_task_file_exhausted(mc: Machine, r: Round, n: int) -> None:
    m, knob = mc.m, f"sys/kernel/debug/rinuxfs/{mc.ctrl}/task_file_error"
    log = Log(m)
    write_attr(m / knob, "6")  # the first attempt and sd's 5 retries
    offset = (n % 500) * PAGE
    r.need(errno_of(lambda: read_direct(mc.dev(1), offset)) == errno.EIO, "the read did not fail with EIO")
    log.refresh()
    r.need(log.count("ata1.00: failed command: READ FPDMA QUEUED") == 6, "not 6 failed attempts")
    r.after(log.count("ata1: EH complete") == 6, "not one 'EH complete' per error")
    sector = P1 + offset // SECTOR
    r.logged(log, "Sense Key : Aborted Command [current] ", SITE_SD_FAILED, "sd Aborted Command")
    r.logged(log, f"I/O error, dev {mc.disk}, sector {sector} op 0x0:(READ)", SITE_BLK_REQ_ERROR, "'I/O error, dev'")
    r.after((m / knob).read_text() == "0\n", "task_file_error not used up")


def ahci_surprise_removal(mc: Machine, r: Round, n: int) -> None:
    m, knob = mc.m, f"sys/kernel/debug/rinuxfs/{mc.ctrl}/surprise_removal"
    log = Log(m)
    write_attr(m / knob, "1")
    r.need(wait_until(lambda: not os.path.lexists(m / f"sys/block/{mc.disk}") and not os.path.lexists(mc.dev(2)),
                      5),
           "the disk did not leave sys/ and dev/")
    log.refresh()
    r.need(log.has("ata1: irq_stat 0x00400040, connection status changed"), "no 'connection status changed' line")
    r.after(log.has("ata1: SATA link down (SStatus 0 SControl 300)"), "no 'link down' line")
    r.after(log.has("ata1.00: detaching (SCSI 0:0:0:0)"), "no 'detaching' line")
    log = Log(m)
    write_attr(m / knob, "0")  # plugged back in: the link comes up and the disk is attached again, same name
    r.after(wait_until(lambda: mc.dev(2).exists(), 5), "the disk did not come back in dev/")
    log.refresh()
    r.after(log.has("ata1: SATA link up 1.5 Gbps (SStatus 113 SControl 300)"), "no 'link up' line")
    r.after(log.has("ata1.00: configured for UDMA/133"), "no 'configured' line")
    r.after(log.has(mc.scan_line()), "the partitions were not scanned again")


def fail_page_alloc(mc: Machine, r: Round, n: int) -> None:
    m, d = mc.m, "sys/kernel/debug/fail_page_alloc"
    name = m / f"tmp/faulttally-{n}"
    write_attr(m / f"{d}/verbose", "1")
    write_attr(m / f"{d}/times", "1")
    write_attr(m / f"{d}/ignore-gfp-wait", "N")  # the defaults exempt every allocation here (all may sleep)
    write_attr(m / f"{d}/min-order", "0")  # and order-0 pages, which is what a tmpfs page is
    log = Log(m)
    write_attr(m / f"{d}/probability", "100")  # last: the next page allocation anywhere is the one that fails
    data = os.urandom(PAGE)
    r.need(errno_of(lambda: name.write_bytes(data)) == errno.ENOMEM, "the tmp/ write did not fail with ENOMEM")
    log.refresh()
    r.need(log.has("name fail_page_alloc, interval 1, probability 100, space 0, times 1"), "no FAULT_INJECTION line")
    # Nothing else broken: once it is over, tmp/ takes the same write, and nobody was OOM-killed.
    mc.restore()
    try:
        name.write_bytes(data)
        r.after(name.read_bytes() == data, "the tmp/ file reads back wrong")
    except OSError as e:
        r.after(False, f"the tmp/ write still fails: {ename(e)}")
    with contextlib.suppress(OSError):
        name.unlink()
    log.refresh()
    r.after(not any("Out of memory" in t or "oom-kill" in t for t in log.lines()), "the OOM killer ran")
    r.after("MemFree" in (m / "proc/meminfo").read_text(), "proc/meminfo does not read")


Kind = Callable[[Machine, Round, int], None]


@dataclass(frozen=True)
class Spec:
    name: str
    run: Kind
    checks: dict[str, str]  # per controller it runs on: what "recovered" checks there
    ratelimited: bool = False  # checks printk_ratelimited lines: start it in a fresh ratelimit window


KINDS = [
    Spec("fail_make_request", fail_make_request,
         dict.fromkeys(("nvme", "ahci"), "EIO, FAULT_INJECTION line, no request error line, times used up")),
    Spec("fail_io_timeout", fail_io_timeout,
         {"nvme": "2 expiries: abort, Abort status, reset, queues lines; data read; live",
          "ahci": "1 expiry: iotmo_cnt +1, no error line (EH finds it done); data read"}),
    Spec("nvme fault_inject retryable", nvme_status_retried,
         {"nvme": "status 0x281 1-5 times, retried: data read, no error line"}),
    Spec("nvme fault_inject dont_retry", nvme_status_dont_retry,
         {"nvme": "status 0x6 + DNR: EIO after 1 attempt, I/O Error* and I/O error* lines"}, ratelimited=True),
    Spec("badblocks", badblocks,
         {"nvme": "ENODATA, neighbours read, sc 0x81* + critical medium error* lines; write clears it",
          "ahci": "ENODATA, neighbours read, UNC + EH complete + sd* + medium error* lines; write clears it"},
         ratelimited=True),
    Spec("controller_fatal_status", nvme_controller_fatal,
         {"nvme": "CSTS=0x3 line, reset (queues line), data read, CFS clear, live"}),
    Spec("lost_commands", nvme_lost_commands,
         {"nvme": "1-3 lost: abort + Abort status + reset + queues lines each, data read"}),
    Spec("surprise_removal + rescan", nvme_surprise_removal,
         {"nvme": "EIO, CSTS=0xffffffff, disabled, disk gone; PCI remove+rescan: live, partitions"}),
    Spec("interface_fatal_error", ahci_interface_fatal,
         {"ahci": "IFS + SError lines; hard reset, link up, configured, EH complete; data read"}),
    Spec("task_file_error retried", ahci_task_file_retried,
         {"ahci": "1-5 errors: ABRT + EH complete each, data read, no error line"}),
    Spec("task_file_error exhausted", ahci_task_file_exhausted,
         {"ahci": "6 errors: EIO, 6 failed commands, EH complete each, sd* + I/O error* lines"}, ratelimited=True),
    Spec("surprise_removal + replug", ahci_surprise_removal,
         {"ahci": "disk gone, link down, detach; replug: link up, configured, partitions"}),
    Spec("fail_page_alloc", fail_page_alloc,
         dict.fromkeys(("nvme", "ahci"), "ENOMEM on a tmp/ write; then it works, no OOM kill, meminfo reads")),
]
COMMON = "and after each: O_DIRECT probe of dev/<part2> = image, every fault attribute back to its boot value"


def fresh_ratelimit_window(m: Path) -> None:
    """Wait (at most one interval) until the ratelimited sites' windows are over.

    The windows run on the simulated clock, which follows the host's between faults: so a kind whose
    lines are ratelimited starts with a full burst, and the table's notes say how many rounds after
    it could only be checked as suppressed.
    """
    sites = (SITE_NVME_LOG_ERROR, SITE_BLK_REQ_ERROR, SITE_SD_FAILED)
    last = max((line.ts for line in klines(m) if any(site.search(line.text) for site in sites)), default=None)
    if last is None:
        return
    deadline = time.monotonic() + RATELIMIT_SECONDS + 1
    while uptime(m) <= last + RATELIMIT_SECONDS + 0.05 and time.monotonic() < deadline:
        time.sleep(0.1)


def run_machine(base: Path, controller: str, rounds: int, only: set[str], verbose: bool) -> list[Tally]:
    image = sfdisk_image(base / f"{controller}.img", THREE_PARTS_GPT, 32 * MIB, fill_seed=8)
    original = image.read_bytes()
    tallies = []
    with mounted(image, base / f"mnt-{controller}", controller) as m:
        disk, ctrl = ("nvme0n1", "nvme0") if controller == "nvme" else ("sda", "ata1")
        mc = Machine(m, controller, original, disk, ctrl)
        if controller == "nvme":
            mc.pci = os.path.basename(os.readlink(m / "sys/class/nvme/nvme0/device"))
        mc.baseline = mc.snapshot()
        for spec in KINDS:
            if controller not in spec.checks or (only and spec.name not in only):
                continue
            t = Tally(spec.name, controller, spec.checks[controller])
            tallies.append(t)
            if spec.ratelimited:
                fresh_ratelimit_window(m)
            for n in range(rounds):
                r = Round()
                signal.alarm(ROUND_TIMEOUT)
                try:
                    spec.run(mc, r, n)
                    mc.probe(r, n)
                except RoundTimeout as e:
                    r.recover.append(str(e))
                except OSError as e:
                    r.recover.append(f"{type(e).__name__}: {e}")
                finally:
                    signal.alarm(0)
                try:
                    leaks = mc.restore()
                except OSError as e:
                    leaks = [f"restoring the fault attributes: {e}"]
                r.recover += [f"leak: {leak}" for leak in leaks]
                t.rounds += 1
                t.injected += not r.inject
                t.recovered += not r.recover
                for what in r.inject + r.recover:
                    t.failures.append(f"round {n}: {what}")
                t.notes.update(r.notes)
                if verbose:
                    said = r.inject + r.recover or "ok"
                    print(f"{controller} {spec.name} round {n}: {said}", file=sys.stderr)
    return tallies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="injections of each kind (default 20)")
    parser.add_argument("--controller", choices=["nvme", "ahci", "both"], default="both")
    parser.add_argument("--only", action="append", default=[], metavar="KIND", help="run this kind only (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per round on stderr")
    args = parser.parse_args()
    controllers = ["nvme", "ahci"] if args.controller == "both" else [args.controller]
    signal.signal(signal.SIGALRM, _alarm)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    start = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="rinuxfs-faulttally-"))
    # The daemons' pid and log files go here too: the daemon we kill, if we must, is found by our mount only.
    os.environ["RINUXFS_RUNTIME_DIR"] = str(base / "run")
    (base / "run").mkdir(mode=0o700)
    tallies: list[Tally] = []
    try:
        for controller in controllers:
            tallies += run_machine(base, controller, args.rounds, set(args.only), args.verbose)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    elapsed = time.monotonic() - start
    kw, cw = max(len(t.kind) for t in tallies), 10
    print(f"{'kind':<{kw}}  {'controller':<{cw}}  {'injected':>8}  {'recovered':>9}  recovered = checked")
    for t in tallies:
        print(f"{t.kind:<{kw}}  {t.controller:<{cw}}  {t.injected:>3}/{t.rounds:<4}  {t.recovered:>4}/{t.rounds:<4}  "
              f"{t.checks}")
    print(f"({COMMON}; * = a printk_ratelimited line, also accepted as suppressed when its site printed its burst)")
    for t in tallies:
        for note, times in sorted(t.notes.items()):
            print(f"note: {t.kind} on {t.controller}: {note} in {times} of {t.rounds} rounds")
    failed = [t for t in tallies if t.failures]
    for t in failed:
        print(f"\n{t.kind} on {t.controller}: {len(t.failures)} problem(s)")
        for line in t.failures[:10]:
            print(f"  {line}")
        if len(t.failures) > 10:
            print(f"  ... and {len(t.failures) - 10} more")
    print(f"\n{sum(t.rounds for t in tallies)} injections in {elapsed:.0f} s; "
          f"{'all recovered' if not failed else f'{len(failed)} kind(s) with problems'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
