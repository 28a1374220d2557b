"""Swap through a real mount: tmpfs pages go to the image's swap partition and come back, the block-device
cache fills and drops, dirty pages reach the image, and the views and tools agree with what happened."""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.compat_helpers import meminfo, vmstat
from tests.conftest import Mounted, mount, rss_kb
from tests.integration.storage_helpers import MIB, SECTOR, layout, put_swap, run, sfdisk_image

SWAP_START, SWAP_SECTORS = 2048, 320 * MIB // SECTOR
DATA_START = SWAP_START + SWAP_SECTORS
MEM = "64M"


def build_swap_image(path: Path) -> Path:
    sfdisk_image(path, layout("tests-swap"), size=448 * MIB, fill_seed=3)
    put_swap(path, SWAP_START, SWAP_SECTORS * SECTOR, label="testswap")
    return path


def region(image: Path, start_sector: int, sectors: int) -> bytes:
    with open(image, "rb") as f:
        f.seek(start_sector * SECTOR)
        return f.read(sectors * SECTOR)


def settle(mnt: Path, timeout: float = 20.0) -> None:
    """Wait until kswapd and the swap I/O are idle, so that two views read one after the other see the same
    instant: each view is consistent when read, but kswapd may still be reclaiming to the high watermark
    after the writer stopped, and two files cannot be read atomically."""
    keys = ("pswpin", "pswpout", "pgscan_kswapd", "pgscan_direct", "pgfree")
    last = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = tuple(vmstat(mnt)[k] for k in keys)
        if now == last:
            return
        last = now
        time.sleep(0.3)
    raise AssertionError(f"the machine never settled: {dict(zip(keys, last or (), strict=False))}")


def tagged_pages(n: int, salt: bytes) -> Iterator[bytes]:
    """n pages of random bytes, each starting with a tag naming it, so it can be found in the image."""
    for i in range(n):
        yield b"RNXPAGE:" + salt + i.to_bytes(8, "little") + os.urandom(4096 - 24)


@pytest.fixture(scope="module")
def swap_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_swap_image(tmp_path_factory.mktemp("swapimg") / "swap.img")


@pytest.fixture
def own_image(swap_image: Path, tmp_path: Path) -> Path:
    """A copy of the swap image for one test: the module's long-lived mount holds the image's lock."""
    copy = tmp_path / "copy.img"
    shutil.copyfile(swap_image, copy)
    return copy


@pytest.fixture(scope="module")
def swapped(swap_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mounted, bytes, Path]]:
    """A 64 MiB machine that wrote 3x its RAM into tmpfs: (the mount, the data's digest, the file)."""
    before_header = region(swap_image, SWAP_START, 8)
    before_data = hashlib.sha256(region(swap_image, DATA_START, 64 * MIB // SECTOR)).digest()
    before_table = region(swap_image, 0, SWAP_START)
    with mount(swap_image, tmp_path_factory.mktemp("swapmnt") / "mnt", "--mem", MEM, "--tmpfs-size", "1G") as m:
        salt = os.urandom(8)
        path = m.path / "tmp" / "big"
        digest = hashlib.sha256()
        peak = 0
        with open(path, "wb") as f:
            for k, page in enumerate(tagged_pages(3 * 64 * 256, salt)):
                f.write(page)
                digest.update(page)
                if k % 4096 == 0 and m.pid is not None:
                    peak = max(peak, rss_kb(m.pid))
        m.peak_rss_kb = peak  # type: ignore[attr-defined]
        m.salt = salt  # type: ignore[attr-defined]
        m.untouched = (before_header, before_data, before_table)  # type: ignore[attr-defined]
        yield m, digest.digest(), path


def test_swap_partition_is_activated_at_boot(swapped: tuple[Mounted, bytes, Path]) -> None:
    m, _, _ = swapped
    settle(m.path)
    lines = (m.path / "proc" / "swaps").read_text().splitlines()
    assert lines[0] == "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority"
    match = re.fullmatch(r"/dev/nvme0n1p1 +partition\t(\d+)\t\t?(\d+)\t\t?(-?\d+)", lines[1])
    assert match, lines
    size, used, prio = map(int, match.groups())
    assert size == 320 * 1024 - 4 and prio == -2, "every page but the header, as mkswap made it"
    info = meminfo(m.path)
    assert info["SwapTotal"] == size and info["SwapTotal"] - info["SwapFree"] == used
    kmsg = (m.path / "proc" / "kmsg").read_text()
    assert f"Adding {size}k swap on /dev/nvme0n1p1.  Priority:-2 extents:1 across:{size}k SS" in kmsg


def test_three_times_ram_goes_to_swap_and_only_there(swapped: tuple[Mounted, bytes, Path],
                                                     swap_image: Path) -> None:
    m, _, _ = swapped
    stat = vmstat(m.path)
    info = meminfo(m.path)
    assert stat["pswpout"] > 64 * 256, "more than all of RAM went out"
    assert info["SwapFree"] < info["SwapTotal"] - 100 * 1024
    # The swapped pages are in the swap partition, after its header page.
    area = region(swap_image, SWAP_START, SWAP_SECTORS)
    tags = [area.find(b"RNXPAGE:" + m.salt)]  # type: ignore[attr-defined]
    found = area.count(b"RNXPAGE:" + m.salt)  # type: ignore[attr-defined]
    assert found >= stat["pswpout"] * 0.9 and tags[0] >= 4096
    header, data, table = m.untouched  # type: ignore[attr-defined]
    assert region(swap_image, SWAP_START, 8) == header, "the mkswap header page is never written"
    assert hashlib.sha256(region(swap_image, DATA_START, 64 * MIB // SECTOR)).digest() == data
    assert region(swap_image, 0, SWAP_START) == table
    blkid = run("blkid", "-p", "-O", str(SWAP_START * SECTOR), "-o", "export", str(swap_image))
    assert "TYPE=swap" in blkid.stdout and "LABEL=testswap" in blkid.stdout


def test_every_byte_comes_back(swapped: tuple[Mounted, bytes, Path]) -> None:
    m, digest, path = swapped
    before = vmstat(m.path)["pswpin"]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            h.update(chunk)
    assert h.digest() == digest
    after = vmstat(m.path)
    assert after["pswpin"] - before > 64 * 256
    assert after["workingset_refault_anon"] > 0
    assert (path.stat().st_blocks * 512) == 3 * 64 * MIB, "swapped pages count in st_blocks, as shmem's"


def test_the_daemon_stays_within_mem_plus_100m(swapped: tuple[Mounted, bytes, Path]) -> None:
    m, _, _ = swapped
    assert m.peak_rss_kb < (64 + 100) * 1024, m.peak_rss_kb  # type: ignore[attr-defined]
    assert m.pid is not None and rss_kb(m.pid) < (64 + 100) * 1024


def test_views_agree_while_swapping(swapped: tuple[Mounted, bytes, Path]) -> None:
    m, _, path = swapped
    settle(m.path)
    info = meminfo(m.path)
    swaps = (m.path / "proc" / "swaps").read_text().splitlines()[1].split()
    assert int(swaps[3]) == info["SwapTotal"] - info["SwapFree"]
    assert info["Active"] + info["Inactive"] + info["Unevictable"] >= info["Shmem"] + info["Buffers"]
    assert info["Shmem"] <= 64 * 1024
    # The pages are charged to this process, which wrote them: in RAM (RssShmem) and in swap (VmSwap).
    status = (m.path / "proc" / "self" / "status").read_text()
    rss = int(re.search(r"^RssShmem:\s+(\d+) kB", status, re.M).group(1))  # type: ignore[union-attr]
    swap = int(re.search(r"^VmSwap:\s+(\d+) kB", status, re.M).group(1))  # type: ignore[union-attr]
    assert rss + swap == 3 * 64 * 1024 and swap == info["SwapTotal"] - info["SwapFree"]
    pressure = (m.path / "proc" / "pressure" / "memory").read_text().splitlines()
    assert re.fullmatch(r"some avg10=\d+\.\d\d avg60=\d+\.\d\d avg300=\d+\.\d\d total=\d+", pressure[0])
    assert re.fullmatch(r"full avg10=\d+\.\d\d avg60=\d+\.\d\d avg300=\d+\.\d\d total=\d+", pressure[1])
    assert int(pressure[0].rsplit("=", 1)[1]) > 0, "direct reclaim and swap-in stalled the writer"


def test_swapon_show_free_and_vmstat_see_the_swap(swapped: tuple[Mounted, bytes, Path]) -> None:
    m, _, path = swapped
    env = {**os.environ, "LIBMOUNT_SWAPS": str(m.path / "proc" / "swaps"), "LC_ALL": "C"}
    show = subprocess.run(["swapon", "--show", "--bytes", "--noheadings", "--raw"], capture_output=True, text=True,
                          env=env, check=True).stdout.split()
    info = meminfo(m.path)
    assert show[0] == "/dev/nvme0n1p1" and show[1] == "partition"
    assert int(show[2]) == info["SwapTotal"] * 1024 and int(show[4]) == -2
    script = f"mount --bind {m.path}/proc/meminfo /proc/meminfo && free -k"
    free = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], capture_output=True,
                          text=True, check=True).stdout
    row = re.search(r"^Swap:\s+(\d+)\s+(\d+)\s+(\d+)$", free, re.M)
    assert row and int(row.group(1)) == info["SwapTotal"], free
    # vmstat's si/so columns come from pswpin/pswpout: read the file back while vmstat watches.
    reader = subprocess.Popen(["sh", "-c", f"for i in 1 2 3; do cat {path} > /dev/null; done"])
    try:
        script = "".join(f"mount --bind {m.path}/proc/{f} /proc/{f} && " for f in
                         ("meminfo", "stat", "vmstat")) + "vmstat -n 1 3"
        out = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], capture_output=True,
                             text=True, check=True).stdout.splitlines()
    finally:
        reader.wait(timeout=120)
    header = out[1].split()
    samples = [dict(zip(header, map(int, line.split()), strict=True)) for line in out[3:]]
    assert any(s["si"] > 0 for s in samples), out


def test_block_cache_fills_and_drop_caches_empties_it(own_image: Path, tmp_path: Path) -> None:
    with mount(own_image, tmp_path / "mnt", "--mem", "128M", "--swap", "off") as m:
        before = meminfo(m.path)
        with open(m.path / "dev" / "nvme0n1p2", "rb") as f:
            f.read(32 * MIB)
        filled = meminfo(m.path)
        assert filled["Buffers"] - before["Buffers"] >= 30 * 1024
        assert filled["Inactive(file)"] + filled["Active(file)"] >= 30 * 1024
        drop = m.path / "proc" / "sys" / "vm" / "drop_caches"
        assert drop.stat().st_mode & 0o777 == 0o200
        drop.write_text("3\n")
        dropped = meminfo(m.path)
        assert dropped["Buffers"] < 1024 and dropped["MemFree"] > filled["MemFree"] + 28 * 1024
        assert vmstat(m.path)["drop_pagecache"] == 1 and vmstat(m.path)["drop_slab"] == 1
        assert ": drop_caches: 3" in (m.path / "proc" / "kmsg").read_text()
        for bad in ("0", "5", "x", "-1"):
            fd = os.open(drop, os.O_WRONLY)
            try:
                with pytest.raises(OSError) as e:
                    os.write(fd, bad.encode())
                assert e.value.errno == errno.EINVAL
            finally:
                os.close(fd)


def test_dirty_pages_reach_the_image_on_their_deadline(own_image: Path, tmp_path: Path) -> None:
    swap_image = own_image
    data_at = DATA_START * SECTOR + 8 * MIB
    payload = os.urandom(256 * 1024)
    with mount(own_image, tmp_path / "mnt", "--mem", "128M", "--swap", "off") as m:
        vm = m.path / "proc" / "sys" / "vm"
        (vm / "dirty_expire_centisecs").write_text("50\n")
        (vm / "dirty_writeback_centisecs").write_text("20\n")
        with open(m.path / "dev" / "nvme0n1p2", "r+b", buffering=0) as f:
            f.seek(8 * MIB)
            f.write(payload)
            assert meminfo(m.path)["Dirty"] >= 256
            deadline = time.monotonic() + 10
            while meminfo(m.path)["Dirty"] and time.monotonic() < deadline:
                time.sleep(0.1)
            assert meminfo(m.path)["Dirty"] == 0, "the flusher wrote them while the file stayed open"
            with open(swap_image, "rb") as img:
                img.seek(data_at)
                assert img.read(len(payload)) == payload
        assert vmstat(m.path)["nr_written"] >= 64


@pytest.mark.parametrize(("name", "value", "err"), [
    ("swappiness", "201", errno.EINVAL), ("swappiness", "-1", errno.EINVAL), ("dirty_ratio", "101", errno.EINVAL),
    ("dirty_background_ratio", "x", errno.EINVAL), ("overcommit_memory", "3", errno.EINVAL),
    ("page-cluster", "32", errno.EINVAL), ("panic_on_oom", "3", errno.EINVAL), ("dirty_bytes", "1", errno.EINVAL),
    ("dirty_expire_centisecs", "-5", errno.EINVAL), ("overcommit_ratio", "-1", errno.EINVAL),
    ("dirty_bytes", "0", errno.EINVAL), ("dirty_background_bytes", "0", errno.EINVAL),
    ("dirty_bytes", str(1 << 46), errno.ERANGE), ("dirty_background_bytes", str((1 << 44) + 1), errno.ERANGE),
])
def test_vm_tunables_reject_what_linux_rejects(swapped: tuple[Mounted, bytes, Path], name: str, value: str,
                                               err: int) -> None:
    m, _, _ = swapped
    path = m.path / "proc" / "sys" / "vm" / name
    before = path.read_text()
    fd = os.open(path, os.O_WRONLY)
    try:
        with pytest.raises(OSError) as e:
            os.write(fd, value.encode())
        assert e.value.errno == err
    finally:
        os.close(fd)
    assert path.read_text() == before


def test_tunables_take_effect(swapped: tuple[Mounted, bytes, Path]) -> None:
    m, _, _ = swapped
    vm = m.path / "proc" / "sys" / "vm"
    info = meminfo(m.path)
    try:
        (vm / "overcommit_ratio").write_text("80\n")
        pages = (info["MemTotal"] - info["Hugetlb"]) // 4
        assert meminfo(m.path)["CommitLimit"] == pages * 80 // 100 * 4 + info["SwapTotal"]
        (vm / "dirty_bytes").write_text(f"{4 * MIB}\n")
        assert (vm / "dirty_ratio").read_text() == "0\n"
        assert vmstat(m.path)["nr_dirty_threshold"] == 1024
        # Each of a pair clears the other (page-writeback.c, util.c).
        (vm / "dirty_ratio").write_text("20\n")
        assert (vm / "dirty_bytes").read_text() == "0\n"
        (vm / "dirty_background_bytes").write_text(f"{MIB}\n")
        assert (vm / "dirty_background_ratio").read_text() == "0\n"
        (vm / "dirty_background_ratio").write_text("10\n")
        assert (vm / "dirty_background_bytes").read_text() == "0\n"
        (vm / "overcommit_kbytes").write_text("1024\n")
        assert (vm / "overcommit_ratio").read_text() == "0\n"
        assert meminfo(m.path)["CommitLimit"] == 1024 + info["SwapTotal"]
    finally:
        (vm / "overcommit_ratio").write_text("50\n")
        (vm / "dirty_ratio").write_text("20\n")
        (vm / "dirty_background_ratio").write_text("10\n")
    assert (vm / "overcommit_kbytes").read_text() == "0\n"


@pytest.mark.parametrize(("damage", "message"), [
    ("magic", "Unable to find swap-space signature"),
    ("version", "Unable to handle swap header version 2"),
    ("pagesize", "Unable to find swap-space signature"),
    ("tiny", "swap space needs to be at least 40 KiB"),
])
def test_bad_swap_headers_are_not_activated(tmp_path: Path, damage: str, message: str) -> None:
    image = tmp_path / "bad.img"
    if damage == "tiny":
        sfdisk_image(image, "label: gpt\n1 : start=2048, size=16KiB, type=swap\n2 : size=1MiB, type=linux\n",
                     size=8 * MIB)
        with open(image, "r+b") as f:  # what a header would say for 4 pages: mkswap refuses to write one
            f.seek(2048 * SECTOR + 4096 - 10)
            f.write(b"SWAPSPACE2")
            f.seek(2048 * SECTOR + 0x400)
            f.write((1).to_bytes(4, "little") + (3).to_bytes(4, "little"))
    else:
        sfdisk_image(image, "label: gpt\n1 : start=2048, size=8MiB, type=swap\n", size=16 * MIB)
        area = tmp_path / "area"
        with open(area, "wb") as f:
            f.truncate(8 * MIB)
        run("mkswap", *(["-p", "16384"] if damage == "pagesize" else []), str(area))
        raw = bytearray(area.read_bytes())
        if damage == "magic":
            raw[4096 - 10 : 4096] = b"SWAP-SPACE"
        elif damage == "version":
            raw[0x400:0x404] = (2).to_bytes(4, "little")
        with open(image, "r+b") as f:
            f.seek(2048 * SECTOR)
            f.write(raw)
    with mount(image, tmp_path / "mnt") as m:
        assert (m.path / "proc" / "swaps").read_text().count("\n") == 1
        assert meminfo(m.path)["SwapTotal"] == 0
        kmsg = (m.path / "proc" / "kmsg").read_text()
        assert message in kmsg, kmsg[-2000:]


def test_tmpfs_huge_pages_come_and_split(own_image: Path, tmp_path: Path) -> None:
    with mount(own_image, tmp_path / "mnt", "--mem", "128M", "--tmpfs-huge", "always", "--tmpfs-size", "512M") as m:
        assert "huge=always" in (m.path / "proc" / "mounts").read_text().splitlines()[0]
        data = os.urandom(8 * MIB)
        f = m.path / "tmp" / "huge"
        f.write_bytes(data)
        info, stat = meminfo(m.path), vmstat(m.path)
        assert info["ShmemHugePages"] == 8 * 1024 and stat["nr_shmem_hugepages"] == 4
        assert stat["thp_file_alloc"] == 4
        os.truncate(f, 3 * MIB)  # cuts into the second folio: split, the rest freed
        assert meminfo(m.path)["ShmemHugePages"] == 2048 and vmstat(m.path)["thp_split_page"] == 1
        assert f.read_bytes() == data[: 3 * MIB]
        # Pressure: folios split before their pages go to swap, and the bytes survive.
        big = m.path / "tmp" / "big"
        payload = os.urandom(MIB)
        with open(big, "wb") as out:
            for _ in range(300):
                out.write(payload)
        assert vmstat(m.path)["pswpout"] > 0 and vmstat(m.path)["thp_split_page"] > 1
        with open(big, "rb") as back:
            for _ in range(300):
                assert back.read(MIB) == payload
        assert f.read_bytes() == data[: 3 * MIB]


def _write_past_ram(m: Mounted) -> tuple[Path, list[bytes]]:
    """160 MiB of random blocks into tmp/out of a 64 MiB machine: its start goes to swap first."""
    path = m.path / "tmp" / "out"
    blocks = [os.urandom(MIB) for _ in range(160)]
    with open(path, "wb") as f:
        for block in blocks:
            f.write(block)
    return path, blocks


def _fail_swap_bios(m: Mounted, on: bool) -> None:
    """fail_make_request on the swap partition: every bio to it fails with EIO (should_fail_bio)."""
    (m.path / "sys/block/nvme0n1/nvme0n1p1/make-it-fail").write_text("1\n" if on else "0\n")
    dbg = m.path / "sys/kernel/debug/fail_make_request"
    (dbg / "probability").write_text("100\n" if on else "0\n")
    (dbg / "times").write_text("-1\n")


def test_a_failed_swap_out_keeps_the_page(own_image: Path, tmp_path: Path) -> None:
    """Write-error on swap-device: the page stays in memory, dirty; with nowhere to put more, ENOMEM."""
    with mount(own_image, tmp_path / "mnt", "--mem", MEM, "--tmpfs-size", "512M", "--oom", "errno") as m:
        _fail_swap_bios(m, True)
        path = m.path / "tmp" / "stuck"
        payload = os.urandom(MIB)
        (tmp_path / "payload").write_bytes(payload)
        writer = subprocess.run([sys.executable, "-c", f"""
import sys
data = open({str(tmp_path / 'payload')!r}, 'rb').read()
n = 0
try:
    with open({str(path)!r}, 'wb') as f:
        for _ in range(128):
            f.write(data)
            n += 1
except OSError as e:
    print(n, e.errno)
"""], capture_output=True, text=True, timeout=120)
        written, err = map(int, writer.stdout.split())
        assert err == errno.ENOMEM and 16 <= written < 64, writer.stdout
        kmsg = (m.path / "proc" / "kmsg").read_text()
        assert re.search(r"<1>\[[ \d.]+\] Write-error on swap-device \(259:0:\d+\)", kmsg)
        info = meminfo(m.path)
        assert info["SwapFree"] == info["SwapTotal"], "the slots of failed writes were given back"
        _fail_swap_bios(m, False)
        with open(path, "rb") as f:  # nothing lost: every MiB the writer got in reads back
            for _ in range(written):
                assert f.read(MIB) == payload


def test_a_failed_swap_in_fails_that_read_only(own_image: Path, tmp_path: Path) -> None:
    with mount(own_image, tmp_path / "mnt", "--mem", MEM, "--tmpfs-size", "512M") as m:
        path, blocks = _write_past_ram(m)
        assert vmstat(m.path)["pswpout"] > 0
        _fail_swap_bios(m, True)
        with open(path, "rb", buffering=0) as f:
            with pytest.raises(OSError) as e:
                f.read(MIB)  # the file's start went to swap first
            assert e.value.errno == errno.EIO
        assert re.search(r"Read-error on swap-device \(259:0:\d+\)", (m.path / "proc" / "kmsg").read_text())
        _fail_swap_bios(m, False)
        with open(path, "rb") as f:
            for block in blocks:
                assert f.read(MIB) == block


def test_top_shows_the_swap(swapped: tuple[Mounted, bytes, Path]) -> None:
    m, _, _ = swapped
    out = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                          f"mount --bind {m.path}/proc /proc && top -bn1"], capture_output=True, text=True,
                         check=True).stdout
    info = meminfo(m.path)
    row = re.search(r"^MiB Swap:\s+([\d.]+) total,\s+([\d.]+) free,\s+([\d.]+) used", out, re.M)
    assert row, out
    assert float(row.group(1)) == round(info["SwapTotal"] / 1024, 1)
    assert float(row.group(3)) == round((info["SwapTotal"] - info["SwapFree"]) / 1024, 1)



def test_swap_readahead_reads_the_page_cluster_window(own_image: Path, tmp_path: Path) -> None:
    """A 4 KiB read of a swapped page brings the other in-use slots of its aligned 2^page-cluster
    window into the swap cache (swap_ra, SwapCached); reading their pages then costs no I/O
    (swap_ra_hit); with page-cluster 0 only the page asked for is read."""
    with mount(own_image, tmp_path / "mnt", "--mem", MEM, "--tmpfs-size", "512M") as m:
        path, blocks = _write_past_ram(m)
        vm = m.path / "proc" / "sys" / "vm"
        assert (vm / "page-cluster").read_text() == "3\n"
        page = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT wants: every pread reaches the daemon

        def read_page(offset: int) -> bytes:
            assert os.preadv(fd, [page], offset) == 4096
            return page[:]

        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        try:
            before = vmstat(m.path)
            assert read_page(0) == blocks[0][:4096]  # the file's start went to swap first
            after = vmstat(m.path)
            ahead = after["swap_ra"] - before["swap_ra"]
            assert 1 <= ahead <= 7 and after["pswpin"] - before["pswpin"] == 1 + ahead
            assert meminfo(m.path)["SwapCached"] > 0
            for k in (1, 2, 3):  # the pages written next went to the slots next to it
                assert read_page(k * 4096) == blocks[0][k * 4096:(k + 1) * 4096]
            hit = vmstat(m.path)
            assert hit["swap_ra_hit"] - after["swap_ra_hit"] == 3 and hit["pswpin"] == after["pswpin"]
            (vm / "page-cluster").write_text("0\n")
            assert read_page(64 * MIB) == blocks[64][:4096]
            last = vmstat(m.path)
            assert last["swap_ra"] == hit["swap_ra"] and last["pswpin"] - hit["pswpin"] == 1
        finally:
            os.close(fd)
            page.close()
