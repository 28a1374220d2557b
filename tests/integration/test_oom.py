"""The OOM killer through a real mount: only processes this test spawned hold charged pages, and only they die."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rinuxfs.runtime import log_file
from tests.compat.compat_helpers import vmstat
from tests.conftest import Mounted, daemon_pid, is_mounted, make_image, mount, rinuxfs, wait_until

MIB = 1 << 20
FILL = """
import os, sys
path, mib, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
print(os.getpid(), flush=True)
if go == "wait":
    sys.stdin.readline()
chunk = b"x" * (1 << 20)
try:
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(chunk)
except OSError as e:
    print("errno", e.errno, flush=True)
    sys.exit(3)
print("done", flush=True)
if go == "hold":
    sys.stdin.readline()
"""


def spawn(path: Path, mib: int, go: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", FILL, str(path), str(mib), go], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def reap(*procs: subprocess.Popen[Any] | None) -> None:
    """Kill whichever of these children still runs, and wait for each: none outlives its test."""
    for p in procs:
        if p is not None:
            if p.poll() is None:
                p.kill()
            p.wait()


def machine(tmp_path: Path, *extra: str) -> Mounted:
    """64 MiB of RAM, no swap, a tmpfs allowed past RAM: filling it can only end in the OOM killer."""
    return mount(make_image(tmp_path / "disk.img"), tmp_path / "mnt", "--mem", "64M", "--swap", "off",
                 "--tmpfs-size", "256M", *extra)


def test_the_filler_dies_by_sigkill_and_everything_else_is_unharmed(tmp_path: Path) -> None:
    with machine(tmp_path) as m:
        keep = m.path / "tmp" / "keep"
        keep.write_bytes(b"precious\n" * 1000)
        filler = spawn(m.path / "tmp" / "fill", 200, "go")
        try:
            filler.wait(timeout=120)
        finally:
            reap(filler)
        assert filler.returncode == -signal.SIGKILL
        assert vmstat(m.path)["oom_kill"] == 1
        kmsg = (m.path / "proc" / "kmsg").read_text()
        assert re.search(r"python\S* invoked oom-killer: gfp_mask=0x140cca\(GFP_HIGHUSER_MOVABLE\|__GFP_COMP\), "
                         r"order=0, oom_score_adj=0", kmsg), kmsg[-3000:]
        assert "Mem-Info:" in kmsg and "Tasks state (memory values in pages):" in kmsg
        comm = Path(f"/proc/{os.getpid()}/comm").read_text().strip()  # the filler runs this same interpreter
        assert f"oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom," \
               f"task_memcg=/,task={comm},pid={filler.pid},uid=0" in kmsg
        assert re.search(rf"Out of memory: Killed process {filler.pid} \({comm}\) total-vm:\d+kB, anon-rss:0kB, "
                         rf"file-rss:0kB, shmem-rss:\d+kB, UID:0 pgtables:0kB oom_score_adj:0", kmsg)
        assert keep.read_bytes() == b"precious\n" * 1000
        assert (m.path / "tmp" / "fill").stat().st_size > 0, "what the victim wrote stays: tmpfs is not its memory"
        (m.path / "tmp" / "after").write_text("the machine goes on\n")


def test_oom_score_adj_steers_the_killer_and_then_enomem(tmp_path: Path) -> None:
    with machine(tmp_path) as m:
        holder = spawn(m.path / "tmp" / "held", 16, "hold")
        filler: subprocess.Popen[str] | None = None
        try:
            filler = spawn(m.path / "tmp" / "fill", 200, "wait")
            holder_pid, filler_pid = int(holder.stdout.readline()), int(filler.stdout.readline())  # type: ignore[union-attr]
            assert holder.stdout.readline().strip() == "done"  # type: ignore[union-attr]
            proc = m.path / "proc"
            score = int((proc / str(holder_pid) / "oom_score").read_text())
            assert score > 666, "16 MiB charged on a 64 MiB machine raises it above a task holding nothing"
            (proc / str(filler_pid) / "oom_score_adj").write_text("-1000\n")
            assert (proc / str(filler_pid) / "oom_score").read_text() == "0\n"
            assert (proc / str(filler_pid) / "oom_adj").read_text() == "-17\n"
            filler.stdin.write("\n")  # type: ignore[union-attr]
            filler.stdin.flush()  # type: ignore[union-attr]
            assert holder.wait(timeout=120) == -signal.SIGKILL, "the holder was chosen, not the protected filler"
            # The holder's death freed nothing (its file stays): with nobody left to kill, ENOMEM.
            assert filler.stdout.readline().split() == ["errno", "12"]  # type: ignore[union-attr]
            assert filler.wait(timeout=60) == 3
            assert vmstat(m.path)["oom_kill"] == 1
            assert "Out of memory and no killable processes..." in (proc / "kmsg").read_text()
        finally:
            reap(holder, filler)


def test_oom_errno_kills_nothing(tmp_path: Path) -> None:
    with machine(tmp_path, "--oom", "errno") as m:
        filler = spawn(m.path / "tmp" / "fill", 200, "go")
        try:
            assert filler.wait(timeout=120) == 3
            assert "errno 12" in filler.stdout.read()  # type: ignore[union-attr]
        finally:
            reap(filler)
        assert vmstat(m.path)["oom_kill"] == 0
        assert "(--oom errno)" in (m.path / "proc" / "kmsg").read_text()


def test_oom_score_and_adj_follow_linux(tmp_path: Path) -> None:
    with machine(tmp_path) as m:
        proc = m.path / "proc"
        sleeper = subprocess.Popen(["sleep", "60"])
        try:
            mine = proc / str(sleeper.pid)
            assert (mine / "oom_score").read_text() == "666\n", "nothing charged, adj 0: Linux's 666"
            assert (proc / "1" / "oom_score").read_text() == "0\n"
            info = {line.split(":")[0]: int(line.split()[1]) for line in (proc / "meminfo").read_text().splitlines()}
            total = (info["MemTotal"] + info["SwapTotal"]) // 4

            def expected(adj: int) -> str:  # oom_badness and proc_oom_score, integer for integer
                return f"{(1000 + adj * (total // 1000) * 1000 // total) * 2 // 3}\n"

            (mine / "oom_score_adj").write_text("500\n")
            assert (mine / "oom_score").read_text() == expected(500)  # 1000 on a machine of round size
            assert (mine / "oom_adj").read_text() == "8\n"
            (mine / "oom_score_adj").write_text("1000\n")
            assert (mine / "oom_score").read_text() == expected(1000) and (mine / "oom_adj").read_text() == "15\n"
            (mine / "oom_adj").write_text("-17\n")
            assert (mine / "oom_score_adj").read_text() == "-1000\n"
            assert "oom_adj is deprecated, please use" in (proc / "kmsg").read_text()
            for bad in ("1001", "-1001", "x"):
                with pytest.raises(OSError):
                    (mine / "oom_score_adj").write_text(bad)
            with pytest.raises(OSError):
                (mine / "oom_adj").write_text("16")
        finally:
            reap(sleeper)


def test_panic_on_oom_stops_the_machine_and_umount_cleans_up(tmp_path: Path) -> None:
    m = machine(tmp_path)
    try:
        (m.path / "proc" / "sys" / "vm" / "panic_on_oom").write_text("1\n")
        filler = spawn(m.path / "tmp" / "fill", 200, "go")
        try:
            filler.wait(timeout=120)
        finally:
            reap(filler)
        assert filler.returncode != 0
        assert m.pid is not None and wait_until(lambda: not Path(f"/proc/{m.pid}").exists() or
                                                "zombie" in Path(f"/proc/{m.pid}/status").read_text(), 30)
        with pytest.raises(OSError):
            os.listdir(m.path)  # a dead machine: ENOTCONN
        log = log_file(m.path).read_text()
        assert "Kernel panic - not syncing: Out of memory: system-wide panic_on_oom is enabled" in log
        result = rinuxfs("umount", str(m.path), check=False)
        assert result.returncode == 0, result.stderr
        assert not is_mounted(m.path)
    finally:
        if is_mounted(m.path):
            m.unmount()
    assert daemon_pid(m.path) is None


def test_oom_kill_allocating_task_kills_the_allocator(tmp_path: Path) -> None:
    with machine(tmp_path) as m:
        (m.path / "proc" / "sys" / "vm" / "oom_kill_allocating_task").write_text("1\n")
        holder = spawn(m.path / "tmp" / "held", 24, "hold")
        filler: subprocess.Popen[str] | None = None
        try:
            assert holder.stdout.readline() and holder.stdout.readline().strip() == "done"  # type: ignore[union-attr]
            filler = spawn(m.path / "tmp" / "fill", 200, "go")
            assert filler.wait(timeout=120) == -signal.SIGKILL, "the task whose allocation failed dies"
            assert holder.poll() is None, "though the holder has more charged, it lives"
            assert vmstat(m.path)["oom_kill"] == 1
        finally:
            reap(holder, filler)
