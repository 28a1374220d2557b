"""Size parsing, the printk ring, and the load average's fixed point."""

from __future__ import annotations

import pytest

from rinuxfs.errors import KernelError
from rinuxfs.printk import LOG_BUF_RECORDS, KernelLog
from rinuxfs.sched import FIXED_1, LoadAverage, _calc_load
from rinuxfs.units import format_size, parse_size


@pytest.mark.parametrize("text,value", [("4096", 4096), ("256M", 256 << 20), ("1g", 1 << 30), ("512K", 512 << 10),
                                        ("2T", 2 << 40), ("64MiB", 64 << 20)])
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value
    assert parse_size(format_size(value)) == value


@pytest.mark.parametrize("text", ["", "M", "-1M", "1.5G", "12X", "lots"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(KernelError):
        parse_size(text)


def test_kmsg_lines_and_ring_limit() -> None:
    now = [0]
    log = KernelLog(lambda: now[0])
    now[0] = 5_123_456
    log.info("hello")
    log.err("bad thing")
    lines = log.render_kmsg().splitlines()
    assert lines == ["<6>[    5.123456] hello", "<3>[    5.123456] bad thing"]
    for i in range(LOG_BUF_RECORDS + 10):
        log.info(f"m{i}")
    records = log.records()
    assert len(records) == LOG_BUF_RECORDS and records[-1].text == f"m{LOG_BUF_RECORDS + 9}"


def test_calc_load_converges_like_the_kernel() -> None:
    load = 0
    for _ in range(200):
        load = _calc_load(load, 1884, 2 * FIXED_1)
    assert abs(load / FIXED_1 - 2.0) < 0.01


def test_loadavg_rendering_rounds() -> None:
    class StoppedClock:
        def uptime(self) -> float:
            return 0.0

    la = LoadAverage(StoppedClock())  # type: ignore[arg-type]
    la.avenrun = [FIXED_1 * 2 + FIXED_1 // 2, 0, FIXED_1 - 1]
    assert la.render_fields() == ["2.50", "0.00", "1.00"]
