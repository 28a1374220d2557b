"""The runtime directory: pid records, and the sweep that removes what dead daemons left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rinuxfs import runtime


@pytest.fixture(autouse=True)
def private_runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "run"
    monkeypatch.setenv("RINUXFS_RUNTIME_DIR", str(path))
    return path


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_pid_record_round_trip(tmp_path: Path) -> None:
    path = runtime.write_pid_file(tmp_path / "mnt", tmp_path / "disk.img")
    assert path.parent == runtime.runtime_dir() == tmp_path / "run"
    record = runtime.daemon_of(tmp_path / "mnt")
    assert record == runtime.DaemonRecord(os.getpid(), str(tmp_path / "mnt"), str(tmp_path / "disk.img"))
    assert runtime.pid_file(tmp_path / "mnt").stem == runtime.log_file(tmp_path / "mnt").stem


def test_sweep_removes_dead_daemons_files_and_keeps_live_ones(tmp_path: Path) -> None:
    base = runtime.runtime_dir()
    # a live "daemon": a process whose command line names rinuxfs
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "rinuxfs"])
    other = subprocess.Popen(["sleep", "60"])  # a pid the kernel gave to another program since
    try:
        (base / "live.pid").write_text(f"{live.pid}\n/mnt/a\n/a.img\n")
        (base / "live.log").write_text("")
        (base / "dead.pid").write_text(f"{dead_pid()}\n/mnt/b\n/b.img\n")
        (base / "dead.log").write_text("")  # a SIGKILLed daemon says nothing
        (base / "reused.pid").write_text(f"{other.pid}\n/mnt/c\n/c.img\n")
        for i in range(runtime.KEEP_FAILED_LOGS + 3):  # logs of daemons that failed: the newest are kept
            log = base / f"failed{i}.log"
            log.write_text(f"failure {i}\n")
            os.utime(log, (1_000_000 + i, 1_000_000 + i))
        removed = {p.name for p in runtime.sweep()}
        assert removed == {"dead.pid", "dead.log", "reused.pid", "failed0.log", "failed1.log", "failed2.log"}
        assert (base / "live.pid").exists() and (base / "live.log").exists()
        assert len(list(base.glob("failed*.log"))) == runtime.KEEP_FAILED_LOGS
        assert runtime.sweep() == []
    finally:
        for proc in (live, other):
            proc.kill()
            proc.wait()
