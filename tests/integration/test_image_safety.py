"""The image under a live daemon: locks against a second user, dead mounts, images cut, grown or write-protected.

Every case runs the real CLI over a real image file and a real FUSE mount; the lock holder is
the daemon process (the `mount` command that took the lock has exited by then).
"""

from __future__ import annotations

import errno
import mmap
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rinuxfs.runtime import pid_file
from tests.conftest import Mounted, daemon_pid, is_mounted, mount, pid_alive, rinuxfs, wait_until

MIB = 1 << 20


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def lock_lines(pid: int, image: Path) -> list[str]:
    """The `lock:` lines of the daemon's descriptors of `image` in /proc/PID/fdinfo."""
    st = os.stat(image)
    tag = f" {os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino} "
    lines = []
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        with open(f"/proc/{pid}/fdinfo/{fd}") as f:
            lines += [line for line in f if line.startswith("lock:") and tag in line]
    return lines


def test_a_read_write_mount_keeps_every_other_user_of_the_image_out(tmp_path: Path, blank_image: Path) -> None:
    with mount(blank_image, tmp_path / "a") as m:
        assert m.pid is not None
        assert [line.split()[4] for line in lock_lines(m.pid, blank_image)] == ["WRITE"], "the daemon holds it"
        (tmp_path / "b").mkdir()
        for extra, words in (((), 'Failed to get "write" lock'), (("--ro",), 'Failed to get shared "write" lock')):
            line = one_line_error(rinuxfs("mount", str(blank_image), str(tmp_path / "b"), *extra, check=False))
            assert words in line and f"in use by pid {m.pid} (rinuxfs mount" in line and "read-write" in line
            assert not is_mounted(tmp_path / "b")
        line = one_line_error(rinuxfs("inspect", str(blank_image), check=False))
        assert line.startswith("rinuxfs inspect:") and f"pid {m.pid}" in line
        line = one_line_error(rinuxfs("mkdisk", str(blank_image), "--force", "--size", "8M", check=False))
        assert f"pid {m.pid}" in line and os.path.getsize(blank_image) == 64 * MIB
    with mount(blank_image, tmp_path / "b"):  # the lock went with the daemon
        pass


def test_read_only_mounts_share_the_image_and_keep_writers_out(tmp_path: Path, blank_image: Path) -> None:
    rinuxfs("mkdisk", str(blank_image), "--force", "--size", "64M")
    with mount(blank_image, tmp_path / "a", "--ro") as a, mount(blank_image, tmp_path / "b", "--ro") as b:
        assert rinuxfs("inspect", str(blank_image)).stdout.startswith(f"Disk {blank_image}:")
        (tmp_path / "c").mkdir()
        line = one_line_error(rinuxfs("mount", str(blank_image), str(tmp_path / "c"), check=False))
        assert 'Failed to get "write" lock' in line and "read-only" in line
        assert f"pid {a.pid} " in line or f"pid {b.pid} " in line
        assert (a / "dev/nvme0n1p1").read_bytes()[:512] == (b / "dev/nvme0n1p1").read_bytes()[:512]


def test_a_killed_daemon_leaves_a_dead_mount_that_umount_removes(tmp_path: Path, blank_image: Path) -> None:
    with mount(blank_image, tmp_path / "mnt") as m:
        assert m.pid is not None
        os.kill(m.pid, signal.SIGKILL)
        assert wait_until(lambda: not pid_alive(m.pid))
        with pytest.raises(OSError) as e:
            os.statvfs(m.path)
        assert e.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)  # the second: a request caught mid-flight
        assert pid_file(m.path).exists(), "a SIGKILLed daemon removes nothing itself"
        result = rinuxfs("umount", str(m.path))
        assert result.stderr == f"rinuxfs umount: {m.path}: the daemon (pid {m.pid}) had died: removed its dead mount\n"
        assert not is_mounted(m.path) and not pid_file(m.path).exists()
        assert list(m.path.iterdir()) == []


def test_mount_over_a_dead_mount_removes_it_and_says_so(tmp_path: Path, blank_image: Path) -> None:
    with mount(blank_image, tmp_path / "mnt") as m:
        assert m.pid is not None
        os.kill(m.pid, signal.SIGKILL)
        assert wait_until(lambda: not pid_alive(m.pid))
        result = rinuxfs("mount", str(blank_image), str(m.path))  # the image lock died with the daemon
        assert result.stderr == (f"rinuxfs mount: {m.path}: the rinuxfs daemon (pid {m.pid}) mounted there had died: "
                                 "removed its dead mount\n")
        with Mounted(m.path, blank_image, daemon_pid(m.path)) as again:
            assert again.pid != m.pid and pid_alive(again.pid)  # type: ignore[arg-type]
            assert (again / "proc/version").read_text().startswith("Linux version")


def test_a_dead_mount_of_another_filesystem_is_reported_not_touched(tmp_path: Path, blank_image: Path) -> None:
    """A FUSE mount that is not rinuxfs's (fsname/subtype differ): mount says how to clean it, and leaves it."""
    mnt = tmp_path / "other"
    mnt.mkdir()
    helper = subprocess.Popen([sys.executable, "-c", _OTHER_FUSE, str(mnt)], stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: is_mounted(mnt), 10), helper.stderr.read() if helper.stderr else ""
        helper.kill()
        helper.wait()
        line = one_line_error(rinuxfs("mount", str(blank_image), str(mnt), check=False))
        assert "dead fuse.otherfs mount" in line and f"fusermount3 -u {mnt}" in line
        assert is_mounted(mnt)
    finally:
        if helper.poll() is None:
            helper.kill()
            helper.wait()
        subprocess.run(["fusermount3", "-uz", str(mnt)], check=False, capture_output=True)


# A FUSE filesystem of another name: mounts with subtype otherfs and serves until killed.
_OTHER_FUSE = """
import sys, pyfuse3, trio
pyfuse3.init(pyfuse3.Operations(), sys.argv[1], ["fsname=other", "subtype=otherfs"])
trio.run(pyfuse3.main)
"""


@pytest.mark.parametrize("controller", ["nvme", "ahci"])
def test_reads_past_the_end_of_an_image_cut_under_the_daemon_are_media_errors(
        tmp_path: Path, blank_image: Path, controller: str) -> None:
    with open(blank_image, "r+b") as f:
        f.write(os.urandom(32 * MIB))
    disk = "nvme0n1" if controller == "nvme" else "sda"
    with mount(blank_image, tmp_path / "mnt", "--controller", controller) as m:
        os.truncate(blank_image, 32 * MIB)
        dev = m / f"dev/{disk}"
        fd = os.open(dev, os.O_RDONLY)
        try:
            with pytest.raises(OSError) as e:
                os.pread(fd, 4096, 40 * MIB)
            assert e.value.errno == errno.EIO, "a buffered read gets EIO, whatever the device said"
            assert os.pread(fd, 4096, 16 * MIB) == blank_image.read_bytes()[16 * MIB : 16 * MIB + 4096]
        finally:
            os.close(fd)
        fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, 4096)
        try:
            with pytest.raises(OSError) as e:
                os.preadv(fd, [buf], 48 * MIB)
            # O_DIRECT sees the block layer's status: a medium error is ENODATA for NVMe (nvme_error_status)
            assert e.value.errno == (errno.ENODATA if controller == "nvme" else errno.EIO)
        finally:
            buf.close()
            os.close(fd)
        log = (m / "proc/kmsg").read_text()
        assert f"error, dev {disk}, sector {48 * MIB // 512} op 0x0:(READ)" in log
        if controller == "nvme":
            lba = 48 * MIB // 512
            # Debian builds without NVME_VERBOSE_ERRORS: generic names
            assert f"nvme0n1: I/O Cmd(0x2) @ LBA {lba}, 8 blocks, I/O Error (sct 0x2 / sc 0x81) " in log
        else:
            assert "ata1.00: failed command: READ FPDMA QUEUED" in log and "ata1.00: error: { UNC }" in log
        assert "BUG in" not in log and "Traceback" not in log
        assert os.stat(dev).st_size == 64 * MIB, "the capacity is what the disk said at boot until a rescan"
        assert (m / "proc/version").read_text().startswith("Linux version"), "the daemon goes on serving"
    assert os.path.getsize(blank_image) == 32 * MIB


def test_a_grown_image_changes_nothing_until_a_rescan(tmp_path: Path, blank_image: Path) -> None:
    with mount(blank_image, tmp_path / "mnt") as m:
        os.truncate(blank_image, 96 * MIB)
        assert os.stat(m / "dev/nvme0n1").st_size == 64 * MIB
        assert (m / "sys/block/nvme0n1/size").read_text() == f"{64 * MIB // 512}\n"
        with open(m / "dev/nvme0n1", "rb") as f:
            f.seek(64 * MIB)
            assert f.read(4096) == b""
        fd = os.open(m / "dev/nvme0n1", os.O_WRONLY)
        try:
            with pytest.raises(OSError) as e:
                os.pwrite(fd, b"x", 64 * MIB)
            assert e.value.errno == errno.ENOSPC
        finally:
            os.close(fd)
    assert os.path.getsize(blank_image) == 96 * MIB


def test_a_write_protected_image_mounts_read_only_with_a_warning(tmp_path: Path, blank_image: Path) -> None:
    subprocess.run(["chattr", "+i", str(blank_image)], check=True)  # immutable: not writable even for root
    try:
        (tmp_path / "mnt").mkdir()
        result = rinuxfs("mount", str(blank_image), str(tmp_path / "mnt"))
        with Mounted((tmp_path / "mnt").resolve(), blank_image, daemon_pid(tmp_path / "mnt")) as m:
            assert result.stderr == (f"rinuxfs mount: WARNING: {blank_image} is write-protected (operation not "
                                     "permitted), mounted read-only\n")
            assert (m / "sys/block/nvme0n1/ro").read_text() == "1\n"
            with pytest.raises(OSError) as e:
                os.open(m / "dev/nvme0n1", os.O_WRONLY)
            assert e.value.errno == errno.EROFS
            assert "disk image is write-protected (operation not permitted)" in (m / "proc/kmsg").read_text()
            assert (m / "dev/nvme0n1").read_bytes()[:4096] == bytes(4096)
    finally:
        subprocess.run(["chattr", "-i", str(blank_image)], check=True)
