"""Long fuzz campaigns: many cases of the targets, with what they found (`scripts/fuzz`).

A campaign runs each target's hypothesis strategy and check in batches
(hypothesis keeps the choices of every case of a run, so a run of 100 000
would grow without bound): batch k is seeded with `seed + k`, so a campaign
is reproducible. A case that raises is shrunk by hypothesis to a minimal one,
which is written to the output directory as a replayable file (and, for
partitions, as a disk image that `rinuxfs inspect` reads). A case that runs
longer than `case_timeout` seconds is stopped and counts as a failure: a hang
is a defect too.
"""

from __future__ import annotations

import re
import signal
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from fuzzing import ahci, nvme, partitions


@dataclass(frozen=True)
class Target:
    name: str
    strategy: Callable[[], st.SearchStrategy[Any]]
    check: Callable[[Any, Path], str]
    namespace: dict[str, Any]  # what a saved case's repr needs to be evaluated again


TARGETS = {
    "partitions": Target("partitions", partitions.disks, lambda disk, _: partitions.check_partitions(disk),
                         {"FuzzDisk": partitions.FuzzDisk}),
    "nvme": Target("nvme", nvme.cases, nvme.check_nvme, {"NvmeCase": nvme.NvmeCase}),
    "ahci": Target("ahci", ahci.cases, ahci.check_ahci, {"AhciCase": ahci.AhciCase}),
}


class CaseTimeout(Exception):
    """A case ran past the campaign's limit: the code under test hangs (or nearly)."""


@dataclass
class Finding:
    target: str
    kind: str  # exception type and where it was raised
    message: str
    seen: int = 1
    case: Any = None  # the smallest case hypothesis found
    blob: str = ""  # hypothesis's @reproduce_failure line
    file: Path | None = None


@dataclass
class Report:
    target: str
    cases: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    findings: dict[str, Finding] = field(default_factory=dict)


def _key(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames)
                  if "hypothesis" not in f.filename), "?")
    return f"{type(error).__name__} at {where}"


def _alarm(signum: int, frame: object) -> None:
    raise CaseTimeout("the case ran past the time limit")


def run_batch(target: Target, examples: int, batch_seed: int, workdir: Path, report: Report,
              case_timeout: float) -> None:
    """One hypothesis run of `examples` cases; failures are recorded in `report`, never raised."""
    failing: dict[str, Any] = {}  # finding key -> the last failing case (the shrunk one comes last)

    @seed(batch_seed)
    @settings(max_examples=examples, database=None, deadline=None, derandomize=False, print_blob=True,
              report_multiple_bugs=True, phases=(Phase.generate, Phase.shrink),
              suppress_health_check=list(HealthCheck))
    @given(case=target.strategy())
    def one(case: Any) -> None:
        signal.setitimer(signal.ITIMER_REAL, case_timeout)
        try:
            report.outcomes[target.check(case, workdir)] += 1
            report.cases += 1
        except BaseException as e:
            failing[_key(e)] = case
            raise
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        one()
    except BaseException as group:  # noqa: BLE001 - every failure is a finding to report
        if isinstance(group, KeyboardInterrupt):
            raise
        errors = list(group.exceptions) if isinstance(group, BaseExceptionGroup) else [group]
        for error in errors:
            _record(target, error, failing, report)
    finally:
        signal.signal(signal.SIGALRM, old)


def _record(target: Target, error: BaseException, failing: dict[str, Any], report: Report) -> None:
    key = _key(error)
    notes = getattr(error, "__notes__", [])
    blob = next((m.group(0) for n in notes if (m := re.search(r"@reproduce_failure\(.*?\)", n))), "")
    message = " ".join(str(error).split())[:400]
    found = report.findings.get(key)
    if found is not None:
        found.seen += 1
        return
    report.findings[key] = Finding(target.name, key, message, case=failing.get(key), blob=blob)


def save(finding: Finding, out: Path, number: int) -> None:
    """The shrunk case as a file `scripts/fuzz --replay` runs again (and, for a disk, its image)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{finding.target}-{number}.case"
    path.write_text(f"{finding.target}\n{finding.case!r}\n")
    finding.file = path
    if finding.target == "partitions" and finding.case is not None:
        finding.case.write_image(out / f"{finding.target}-{number}.img")


def replay(path: Path) -> int:
    """Run a saved case again; print what it raises."""
    name, text = path.read_text().split("\n", 1)
    target = TARGETS[name]
    case = eval(text, dict(target.namespace))  # noqa: S307 - a file this tool wrote
    with tempfile.TemporaryDirectory(prefix="rinuxfs-fuzz-") as tmp:
        try:
            print(f"{name}: {target.check(case, Path(tmp))}")
        except Exception:
            traceback.print_exc()
            return 1
    return 0


def campaign(names: list[str], cases: int, *, base_seed: int, batch: int, out: Path, case_timeout: float,
             progress: Callable[[str], None] = print) -> list[Report]:
    reports = []
    with tempfile.TemporaryDirectory(prefix="rinuxfs-fuzz-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None
                                     ) as tmp:
        for i, name in enumerate(names):
            target, report = TARGETS[name], Report(name)
            share = cases // len(names) + (1 if i < cases % len(names) else 0)
            start = time.monotonic()
            k = 0
            while report.cases < share:
                before, known = report.cases, set(report.findings)
                run_batch(target, min(batch, share - report.cases), base_seed + k, Path(tmp), report, case_timeout)
                report.seconds = time.monotonic() - start
                progress(f"{name}: {report.cases}/{share} cases, {len(report.findings)} findings,"
                         f" {report.seconds:.0f} s")
                for key in set(report.findings) - known:
                    progress(f"  new in batch seed {base_seed + k}: {key}: {report.findings[key].message[:200]}")
                k += 1
                if report.cases == before:  # every case of the batch failed: nothing more to learn here
                    break
            reports.append(report)
    number = 0
    for report in reports:
        for finding in report.findings.values():
            number += 1
            save(finding, out, number)
    return reports


def summary(reports: list[Report]) -> str:
    lines = [f"{'target':<11} {'cases':>8} {'findings':>9} {'seconds':>8}  outcomes (most common first)"]
    for r in reports:
        common = ", ".join(f"{k} {v}" for k, v in r.outcomes.most_common(8))
        lines.append(f"{r.target:<11} {r.cases:>8} {len(r.findings):>9} {r.seconds:>8.0f}  {common}")
    findings = [f for r in reports for f in r.findings.values()]
    if findings:
        lines.append("")
        lines.append("findings:")
    for f in findings:
        lines.append(f"  {f.target}: {f.kind} (seen in {f.seen} batch{'es' if f.seen > 1 else ''}): {f.message}")
        if f.file is not None:
            lines.append(f"    replay: scripts/fuzz --replay {f.file}")
        if f.blob:
            lines.append(f"    or decorate the unit test's sample with {f.blob}")
    return "\n".join(lines)
