"""The fault-injection core (lib/fault-inject.c), the bad-block table, ratelimits and the NVMe/ATA status maps.

Pure logic: should_fail's order of checks and its counters, what a failure prints, the debugfs
parsers, badblocks_show/store and the merge/clear rules, ___ratelimit, nvme_error_status.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

import pytest

from rinuxfs.block.errors import BlkStatus, blk_status_to_errno
from rinuxfs.drivers.nvme import nvme_error_status
from rinuxfs.errors import KernelError
from rinuxfs.lib.badblocks import BB_MAX_LEN, MAX_BADBLOCKS, BadBlocks
from rinuxfs.lib.fault_inject import FaultAttr, FaultEnv, fault_attr_files
from rinuxfs.lib.kstrtox import kstrtobool
from rinuxfs.lib.ratelimit import RateLimit


@dataclass
class Task:
    pid: int = 42
    uid: int = 0
    comm: str = "dd"
    make_it_fail: bool = False
    fail_nth: int = 0


class Machine:
    """A FaultEnv whose printk, current task and jiffies the test controls."""

    def __init__(self, seed: int = 0) -> None:
        self.lines: list[tuple[int, str]] = []
        self.task: Task | None = Task()
        self.now = 0
        self.env = FaultEnv(lambda level, text: self.lines.append((level, text)), current=lambda: self.task,
                            whoami=lambda: (42, 0, "dd"), jiffies=lambda: self.now, seed=seed)

    def attr(self, **values: int) -> FaultAttr:
        attr = FaultAttr("fail_make_request", self.env)
        for name, value in values.items():
            setattr(attr, name, value)
        return attr

    def text(self) -> list[str]:
        return [text for _, text in self.lines]


def test_defaults_are_linux_fault_attr_initializer() -> None:
    attr = Machine().attr()
    assert (attr.probability, attr.interval, attr.times, attr.space, attr.verbose, attr.task_filter) == (
        0, 1, 1, 0, 2, False)
    files = {name: show() for name, show, _ in fault_attr_files(attr)}
    assert files == {"probability": "0\n", "interval": "1\n", "times": "1\n", "space": "0\n", "verbose": "2\n",
                     "verbose_ratelimit_interval_ms": "0\n", "verbose_ratelimit_burst": "10\n", "task-filter": "N\n"}
    assert not attr.should_fail(4096)  # probability 0: nothing fires


def test_times_counts_down_and_minus_one_is_unlimited() -> None:
    m = Machine()
    attr = m.attr(probability=100, times=2)
    assert [attr.should_fail(1) for _ in range(4)] == [True, True, False, False]
    assert attr.times == 0 and attr.injected == 2
    attr.times = -1
    assert all(attr.should_fail(1) for _ in range(50)) and attr.times == -1


def test_interval_lets_every_nth_call_fail() -> None:
    attr = Machine().attr(probability=100, times=-1, interval=3)
    assert [attr.should_fail(1) for _ in range(9)] == [False, False, True] * 3


def test_space_is_consumed_before_failures_start() -> None:
    attr = Machine().attr(probability=100, times=-1, space=10000)
    assert not attr.should_fail(4096) and attr.space == 5904
    assert not attr.should_fail(4096) and attr.space == 1808
    assert attr.should_fail(4096) and attr.space == 1808  # space <= size: left as is, and evaluation goes on


def test_probability_is_deterministic_given_the_seed() -> None:
    def run(seed: int) -> list[bool]:
        attr = Machine(seed).attr(probability=30, times=-1)
        return [attr.should_fail(1) for _ in range(400)]

    a, b, c = run(7), run(7), run(8)
    assert a == b and a != c
    assert 80 < sum(a) < 160  # about 30 %


def test_task_filter_needs_a_task_with_make_it_fail() -> None:
    m = Machine()
    attr = m.attr(probability=100, times=-1, task_filter=True)
    assert not attr.should_fail(1)
    assert m.task is not None
    m.task.make_it_fail = True
    assert attr.should_fail(1)
    assert not attr.should_fail(1, in_task=False)  # interrupt context: never the task's
    m.task = None
    assert not attr.should_fail(1)


def test_fail_nth_wins_over_probability_and_times() -> None:
    m = Machine()
    attr = m.attr(probability=0, times=0)
    assert m.task is not None
    m.task.fail_nth = 3
    m.env.fail_nth_armed = True
    assert [attr.should_fail(1) for _ in range(4)] == [False, False, True, False]
    assert m.task.fail_nth == 0 and attr.times == 0  # times is not counted below 0


def test_a_failure_prints_the_message_before_times_counts_down_and_the_stack() -> None:
    m = Machine()
    attr = m.attr(probability=100, times=2)
    assert attr.should_fail(512, stack=("should_fail_bio", "submit_bio_noacct"))
    lines = m.lines
    assert lines[0] == (5, "FAULT_INJECTION: forcing a failure.")
    assert lines[1] == (5, "name fail_make_request, interval 1, probability 100, space 0, times 2")
    text = m.text()
    assert text[2].startswith("CPU: 0 UID: 0 PID: 42 Comm: dd Not tainted ") and text[2].endswith(" ")
    assert text[4:10] == ["Call Trace:", " <TASK>", " dump_stack_lvl", " should_fail_ex", " should_fail_bio",
                          " submit_bio_noacct"]
    assert text[-1] == " </TASK>"
    m.lines.clear()
    attr.verbose = 1
    assert attr.should_fail(1)
    assert len(m.lines) == 2  # verbose 1: the message without the stack
    m.lines.clear()
    attr.times, attr.verbose = 1, 0
    assert attr.should_fail(1) and m.lines == []  # verbose 0: silent
    attr.times, attr.verbose = 1, 2
    assert attr.should_fail(1, nowarn=True) and m.lines == []  # FAULT_NOWARN


def test_messages_are_ratelimited_by_the_verbose_ratelimit_files() -> None:
    m = Machine()
    attr = m.attr(probability=100, times=-1, verbose=1)
    files = {name: store for name, _, store in fault_attr_files(attr)}
    files["verbose_ratelimit_interval_ms"]("100")
    files["verbose_ratelimit_burst"]("2")
    for _ in range(5):
        attr.should_fail(1)
    assert m.text().count("FAULT_INJECTION: forcing a failure.") == 2
    m.now = 200
    attr.should_fail(1)
    assert "fail_dump: 3 callbacks suppressed" in m.text()
    assert attr.injected == 6  # every call failed; only the messages were limited


@pytest.mark.parametrize(("name", "text", "shown"), [
    ("probability", "0x10", "16\n"), ("interval", "010", "8\n"), ("times", "-1", "-1\n"),
    ("times", "4294967295", "-1\n"), ("space", "+7\n", "7\n"), ("task-filter", "yes", "Y\n"),
    ("task-filter", "off", "N\n"), ("verbose", "0", "0\n"),
    # simple_attr parses the first 23 bytes only; a bool write kstrtobool cannot read changes nothing.
    ("interval", "0" * 23 + "5", "0\n"), ("task-filter", "1_000", "Y\n"), ("task-filter", "maybe", "N\n"),
    ("task-filter", "", "N\n"),
])
def test_debugfs_files_parse_as_linux(name: str, text: str, shown: str) -> None:
    attr = Machine().attr()
    files = {n: (show, store) for n, show, store in fault_attr_files(attr)}
    show, store = files[name]
    store(text)
    assert show() == shown


@pytest.mark.parametrize(("name", "text", "err"), [
    ("probability", "ten", errno.EINVAL), ("probability", "-1", errno.EINVAL), ("times", "1 2", errno.EINVAL),
    ("probability", "99999999999999999999", errno.ERANGE), ("times", "-99999999999999999999999", errno.ERANGE),
    ("interval", "9" * 4096, errno.ERANGE), ("space", "12345678901234567890123x", errno.ERANGE),
])
def test_debugfs_files_refuse_what_linux_refuses(name: str, text: str, err: int) -> None:
    attr = Machine().attr()
    store = {n: st for n, _, st in fault_attr_files(attr)}[name]
    with pytest.raises(KernelError) as e:
        store(text)
    assert e.value.errno == err


def test_kstrtobool_decides_on_the_first_characters() -> None:
    assert [kstrtobool(t) for t in ("1", "y", "Yes", "t", "on", "ON\n")] == [True] * 6
    assert [kstrtobool(t) for t in ("0", "n", "No", "f", "off")] == [False] * 5
    for bad in ("", "o", "2", "x"):
        with pytest.raises(KernelError):
            kstrtobool(bad)


# --- bad blocks -------------------------------------------------------------------------------


def test_badblocks_store_and_show_as_linux() -> None:
    bb = BadBlocks()
    assert bb.show() == "" and bb.first_bad(0, 1 << 30) is None
    bb.store("100 8\n")
    bb.store("108 4")  # touching: merged
    bb.store("50 1")
    assert bb.show() == "50 1\n100 12\n"
    bb.store("1000 1000")  # one range, two table entries of at most 512
    assert bb.show() == "50 1\n100 12\n1000 512\n1512 488\n"
    for bad in ("100", "100 0", "100 -3", "100 5x", "100 5 ", "a 5", ""):
        with pytest.raises(KernelError) as e:
            bb.store(bad)
        assert e.value.errno == errno.EINVAL, bad


def test_badblocks_first_bad_and_clear() -> None:
    bb = BadBlocks()
    bb.set(100, 8)
    bb.set(200, 8)
    assert bb.first_bad(0, 100) is None
    assert bb.first_bad(96, 8) == 100
    assert bb.first_bad(104, 200) == 104
    assert bb.first_bad(108, 92) is None and bb.first_bad(108, 93) == 200
    bb.clear(102, 2)  # a write in the middle splits the range
    assert bb.ranges() == [(100, 2), (104, 4), (200, 8)]
    bb.clear(0, 300)
    assert not bb and bb.first_bad(0, 1000) is None


def test_badblocks_table_is_full_at_512_entries() -> None:
    bb = BadBlocks()
    for i in range(MAX_BADBLOCKS):
        bb.set(i * 10, 1)
    with pytest.raises(KernelError) as e:
        bb.set(100000, 1)
    assert e.value.errno == errno.ENOSPC
    bb.set(1, 1)  # touching an entry: merged into it, so it still fits
    assert len(bb.entries()) == MAX_BADBLOCKS and bb.first_bad(1, 1) == 1
    big = BadBlocks()
    with pytest.raises(KernelError):
        big.set(0, (MAX_BADBLOCKS + 1) * BB_MAX_LEN)


# --- ratelimit and status maps -------------------------------------------------------------------


def test_ratelimit_counts_what_it_suppressed() -> None:
    rl = RateLimit(500, 10)
    said: list[str] = []
    allowed = [rl.allow(t, said.append, "blk_print_req_error") for t in range(15)]
    assert allowed == [True] * 10 + [False] * 5 and said == []
    assert rl.allow(600, said.append, "blk_print_req_error")
    assert said == ["blk_print_req_error: 5 callbacks suppressed"]
    assert RateLimit(0, 10).check(0) == (True, 0)


@pytest.mark.parametrize(("status", "blk", "err"), [
    (0x281, BlkStatus.MEDIUM, errno.ENODATA), (0x4281, BlkStatus.MEDIUM, errno.ENODATA),
    (0x280, BlkStatus.MEDIUM, errno.ENODATA), (0x4001, BlkStatus.NOTSUPP, errno.EOPNOTSUPP),
    (0x080, BlkStatus.TARGET, errno.EREMOTEIO), (0x371, BlkStatus.IOERR, errno.EIO),
    (0x006, BlkStatus.IOERR, errno.EIO), (0x081, BlkStatus.NOSPC, errno.ENOSPC),
])
def test_nvme_error_status(status: int, blk: BlkStatus, err: int) -> None:
    assert nvme_error_status(status) == blk and blk_status_to_errno(blk) == err
