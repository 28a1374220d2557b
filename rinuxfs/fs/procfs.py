"""procfs: the kernel's state rendered in Linux 6.x text formats, on every read at offset 0.

The files are views: each `show` callback reads the kernel object it renders
and keeps nothing. Formats follow fs/proc/*.c (see the reference samples);
widths, tabs and trailing spaces matter to the tools that parse them.
"""

from __future__ import annotations

import errno
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING

from rinuxfs.errors import KernelError
from rinuxfs.fs.kernfs import GenDir, GenFile
from rinuxfs.fs.procfs_mm import (
    add_pid_mm_files,
    build_proc_pressure,
    build_proc_sys_vm,
    proc_numbuf_int,
    render_buddyinfo,
    render_pagetypeinfo,
    render_pid_statm,
    render_pid_vm,
    render_zoneinfo,
)
from rinuxfs.fs.superblock import StatFs, SuperBlock
from rinuxfs.fs.vfs import Credentials, Inode, Vfs
from rinuxfs.lib.kstrtox import kstrtouint
from rinuxfs.mm.vmstat import vmstat
from rinuxfs.sched import Task

if TYPE_CHECKING:
    from rinuxfs.kernel import Kernel

PROC_SUPER_MAGIC = 0x9FA0
PID_MAX = 4194304
TASK_COMM_LEN = 16
NEW_UTS_LEN = 64


class ProcSuperBlock(SuperBlock):
    fs_type = "proc"
    magic = PROC_SUPER_MAGIC
    source = "proc"
    entry_timeout = 1.0  # pid directories come and go
    attr_timeout = 1.0

    def __init__(self, vfs: Vfs, kernel: Kernel) -> None:
        super().__init__(vfs)
        self.kernel = kernel
        self.root = GenDir(self, mode=0o555)
        build_proc_tree(self.root, kernel)

    def statfs(self) -> StatFs:
        return StatFs(PROC_SUPER_MAGIC, 4096, 0, 0, 0, 0, 0)


def build_proc_tree(root: GenDir, k: Kernel) -> None:
    root.file("version", lambda: render_version(k))
    root.file("cpuinfo", lambda: render_cpuinfo(k))
    root.file("stat", lambda: render_stat(k))
    root.file("uptime", lambda: render_uptime(k))
    root.file("loadavg", lambda: render_loadavg(k))
    root.file("meminfo", lambda: render_meminfo(k.mm.meminfo()))
    root.file("vmstat", lambda: "".join(f"{name} {value}\n" for name, value in vmstat(k.mm)))
    root.file("filesystems", lambda: render_filesystems(k))
    root.file("swaps", lambda: k.mm.swap.render())
    root.file("partitions", lambda: k.block.render_partitions())
    root.file("diskstats", lambda: k.block.render_diskstats())
    root.file("interrupts", lambda: k.irqs.render(k.cpus.online, k.timer_ticks(), k.mm.tlb_shootdowns))
    root.file("buddyinfo", lambda: render_buddyinfo(k.mm))
    root.file("pagetypeinfo", lambda: render_pagetypeinfo(k.mm), mode=0o400)
    root.file("zoneinfo", lambda: render_zoneinfo(k.mm, sorted(k.cpus.online)))
    build_proc_pressure(root.path("pressure", mode=0o555), k)
    root.file("kmsg", lambda: k.log.render_kmsg(), mode=0o400)
    root.add_symlink("mounts", "self/mounts")
    root.add_symlink("self", lambda: str(k.current_pid()))
    root.add_symlink("thread-self", lambda: f"{k.current_pid()}/task/{k.current_pid()}")
    kernel = root.path("sys/kernel", mode=0o555)  # /proc/sys directories are read-only dirs
    uts = k.utsname
    kernel.file("ostype", lambda: f"{uts.sysname}\n")
    kernel.file("osrelease", lambda: f"{uts.release}\n")
    kernel.file("version", lambda: f"{uts.version}\n")
    kernel.file("hostname", lambda: f"{uts.nodename}\n", store=lambda v: _set_uts(k, "nodename", v))
    kernel.file("domainname", lambda: f"{uts.domainname}\n", store=lambda v: _set_uts(k, "domainname", v))
    kernel.file("pid_max", lambda: f"{PID_MAX}\n")
    kernel.path("random", mode=0o555).file("boot_id", lambda: f"{k.boot_id}\n")
    build_proc_sys_vm(root.path("sys/vm", mode=0o555), k)
    root.dynamic(
        keys=lambda: [str(t.pid) for t in k.tasks.list()],
        exists=lambda key: pid_of_name(key) is not None and k.tasks.get(int(key)) is not None,
        make=lambda key: make_pid_dir(root, k, int(key)),
    )


def pid_of_name(name: str) -> int | None:
    """name_to_int: ASCII digits without a leading zero ("01", "١" and "+1" name no process)."""
    if not name or not name.isascii() or not name.isdigit() or (len(name) > 1 and name[0] == "0"):
        return None
    pid = int(name)
    return pid if pid <= PID_MAX else None


def _set_uts(k: Kernel, field: str, value: str) -> None:
    """proc_dostring: the bytes up to the first newline or NUL, cut at __NEW_UTS_LEN; any byte goes."""
    raw = value.encode(errors="surrogateescape")
    for stop in (b"\n", b"\0"):
        raw = raw.split(stop, 1)[0]
    setattr(k.utsname, field, raw[:NEW_UTS_LEN].decode(errors="surrogateescape"))


def make_pid_dir(root: GenDir, k: Kernel, pid: int) -> Inode:
    """/proc/<pid>, and in its task/ the one thread rinuxfs knows of the process (/proc/thread-self's target)."""

    def task() -> Task:
        t = k.tasks.get(pid)
        if t is None:
            raise KernelError(errno.ESRCH, f"process {pid} has exited")
        return t

    d = _pid_files(GenDir(root.sb, root, mode=0o555), k, task)
    threads = d.dir("task", mode=0o555)
    threads.static[str(pid).encode()] = _pid_files(GenDir(root.sb, threads, mode=0o555), k, task)
    own_pid_dir(d, task())
    return d


def _pid_files(d: GenDir, k: Kernel, task: Callable[[], Task]) -> GenDir:
    d.file("stat", lambda: render_pid_stat(k, task()))
    d.file("statm", lambda: render_pid_statm(k, task()))
    d.file("status", lambda: render_pid_status(k, task()))
    d.static[b"comm"] = CommFile(d.sb, task)
    d.file("cmdline", lambda: "".join(a + "\0" for a in task().cmdline), mode=0o444)
    d.file("mounts", lambda: render_mounts(k))
    d.file("mountinfo", lambda: render_mountinfo(k))
    add_pid_mm_files(d, k, task)
    d.static[b"oom_score_adj"] = OomScoreAdjFile(d.sb, task)
    # CONFIG_FAULT_INJECTION's per-task files (fs/proc/base.c proc_fault_inject_*, proc_fail_nth_*)
    d.file("make-it-fail", lambda: f"{int(task().make_it_fail)}\n", store=lambda v: _store_make_it_fail(k, task(), v))
    d.file("fail-nth", lambda: f"{task().fail_nth}\n", store=lambda v: _store_fail_nth(k, task(), v))
    return d


def _store_fail_nth(k: Kernel, t: Task, text: str) -> None:
    """proc_fail_nth_write: the n-th fault-injection check in this task fails (0: none)."""
    t.fail_nth = kstrtouint(text, 0)
    if t.fail_nth:
        k.fault_env.fail_nth_armed = True


def _store_make_it_fail(k: Kernel, t: Task, text: str) -> None:
    """proc_fault_inject_write: CAP_SYS_RESOURCE (root here), then 0 or 1 (parsed as oom_adj's numbers)."""
    if k.current.uid != 0:
        raise KernelError(errno.EPERM, "make-it-fail needs CAP_SYS_RESOURCE")
    value = proc_numbuf_int(text)
    if value not in (0, 1):
        raise KernelError(errno.EINVAL, "make-it-fail takes 0 or 1")
    t.make_it_fail = bool(value)


# fs/proc/base.c's tgid_base_stuff: the mode of each file of /proc/<pid>.
PID_FILE_MODES = {
    "stat": 0o444, "statm": 0o444, "status": 0o444, "comm": 0o644, "cmdline": 0o444, "mounts": 0o444,
    "mountinfo": 0o444, "oom_score": 0o444, "oom_score_adj": 0o644, "oom_adj": 0o644, "environ": 0o400,
    "auxv": 0o400, "mem": 0o600, "io": 0o400, "limits": 0o444, "maps": 0o444, "smaps": 0o444,
    "make-it-fail": 0o644, "fail-nth": 0o644,
}


def own_pid_dir(d: GenDir, t: Task) -> None:
    """/proc/<pid> and all in it belong to the task's uid and gid (pid_update_inode), with base.c's modes."""
    d.uid, d.gid = t.uid, t.gid
    for name, inode in d.static.items():
        if isinstance(inode, GenDir):
            own_pid_dir(inode, t)
            continue
        inode.uid, inode.gid = t.uid, t.gid
        mode = PID_FILE_MODES.get(name.decode())
        if mode is not None:
            inode.mode = stat.S_IFMT(inode.mode) | mode


OOM_SCORE_ADJ_MIN, OOM_SCORE_ADJ_MAX = -1000, 1000


class TaskFile(GenFile):
    """A /proc/<pid> file whose writes depend on who writes: `store_as` is given the opener."""

    def __init__(self, sb: SuperBlock, task: Callable[[], Task], show: Callable[[], str]) -> None:
        super().__init__(sb, show, store=self._through_store_as)
        self.task = task

    @staticmethod
    def _through_store_as(text: str) -> None:
        raise AssertionError("a TaskFile is written through store_as")


class OomScoreAdjFile(TaskFile):
    """/proc/<pid>/oom_score_adj (proc_oom_score_adj_write): -1000..1000; below its floor only for root."""

    def __init__(self, sb: SuperBlock, task: Callable[[], Task]) -> None:
        super().__init__(sb, task, lambda: f"{task().oom_score_adj}\n")

    def store_as(self, text: str, opener: Credentials) -> None:
        t = self.task()
        value = proc_numbuf_int(text)
        if not OOM_SCORE_ADJ_MIN <= value <= OOM_SCORE_ADJ_MAX:
            raise KernelError(errno.EINVAL, f"oom_score_adj is {OOM_SCORE_ADJ_MIN}..{OOM_SCORE_ADJ_MAX}")
        privileged = opener.uid == 0  # CAP_SYS_RESOURCE
        if value < t.oom_score_adj_min and not privileged:
            raise KernelError(errno.EACCES, "lowering oom_score_adj below its minimum needs CAP_SYS_RESOURCE")
        t.oom_score_adj = value
        if privileged:
            t.oom_score_adj_min = value


class CommFile(TaskFile):
    """/proc/<pid>/comm: a task may rename itself (comm_write), anyone else's write is EINVAL."""

    def __init__(self, sb: SuperBlock, task: Callable[[], Task]) -> None:
        super().__init__(sb, task, lambda: f"{task().comm}\n")

    def store_as(self, text: str, opener: Credentials) -> None:
        t = self.task()
        if opener.pid != t.pid:  # same_thread_group(current, p); FUSE names a thread by its own id
            raise KernelError(errno.EINVAL, "comm is written by its own task only")
        # The first TASK_COMM_LEN - 1 bytes, up to a NUL; like Linux, a newline written is kept.
        t.comm = text.encode(errors="surrogateescape")[:TASK_COMM_LEN - 1].split(b"\0")[0] \
            .decode(errors="surrogateescape")


# --- renderers ---------------------------------------------------------------------------


def render_version(k: Kernel) -> str:
    u = k.utsname
    return f"{u.sysname} version {u.release} (rinuxfs@simulator) (python {k.python_version}) {u.version}\n"


def render_meminfo(info: dict[str, int]) -> str:
    lines = []
    for key, value in info.items():
        if key.startswith("HugePages_"):
            lines.append(f"{key + ':':<16}   {value:5d}\n")
        elif key == "HardwareCorrupted":
            lines.append(f"{key}: {value:5d} kB\n")
        else:
            lines.append(f"{key + ':':<16}{value:8d} kB\n")
    return "".join(lines)


def render_cpuinfo(k: Kernel) -> str:
    blocks = []
    cpus = k.cpus
    for cpu in sorted(cpus.online):
        blocks.append(
            f"processor\t: {cpu}\n"
            "vendor_id\t: GenuineIntel\n"
            "cpu family\t: 6\n"
            "model\t\t: 85\n"
            f"model name\t: {cpus.model_name}\n"
            "stepping\t: 7\n"
            "microcode\t: 0x1\n"
            f"cpu MHz\t\t: {cpus.mhz:.3f}\n"
            "cache size\t: 16384 KB\n"
            "physical id\t: 0\n"
            f"siblings\t: {len(cpus.online)}\n"
            f"core id\t\t: {cpu}\n"
            f"cpu cores\t: {len(cpus.online)}\n"
            f"apicid\t\t: {cpu}\n"
            f"initial apicid\t: {cpu}\n"
            "fpu\t\t: yes\n"
            "fpu_exception\t: yes\n"
            "cpuid level\t: 13\n"
            "wp\t\t: yes\n"
            "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr "
            "sse sse2 ht syscall nx pdpe1gb lm constant_tsc rep_good nopl xtopology cpuid pni ssse3 cx16 sse4_1 sse4_2 "
            "x2apic popcnt hypervisor lahf_lm\n"
            "bugs\t\t:\n"
            f"bogomips\t: {cpus.mhz * 2:.2f}\n"
            "clflush size\t: 64\n"
            "cache_alignment\t: 64\n"
            "address sizes\t: 46 bits physical, 48 bits virtual\n"
            "power management:\n"
            "\n"
        )
    return "".join(blocks)


def render_stat(k: Kernel) -> str:
    fields = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice")
    rows = k.cpu_accounting.per_cpu(k.cpus.online)
    online = sorted(k.cpus.online)
    # fs/proc/stat.c sums every possible CPU but prints a line per online one only.
    total = {f: sum(row[f] for row in rows) for f in fields}
    lines = ["cpu  " + " ".join(str(total[f]) for f in fields) + "\n"]
    lines += [f"cpu{c} " + " ".join(str(rows[c][f]) for f in fields) + "\n" for c in online]
    irqs = k.irq_counts()
    lines.append(f"intr {sum(irqs)} " + " ".join(map(str, irqs)) + "\n")
    lines.append(f"ctxt {k.stats['ctxt']}\n")
    lines.append(f"btime {int(k.clock.boot_epoch)}\n")
    lines.append(f"processes {k.tasks.forks}\n")
    lines.append(f"procs_running {k.tasks.nr_running()}\n")
    lines.append("procs_blocked 0\n")
    lines.append("softirq 0 0 0 0 0 0 0 0 0 0 0\n")
    return "".join(lines)


def render_uptime(k: Kernel) -> str:
    up = k.clock.uptime()
    idle_ticks = sum(row["idle"] for row in k.cpu_accounting.per_cpu(k.cpus.online))
    return f"{up:.2f} {idle_ticks // 100}.{idle_ticks % 100:02d}\n"


def render_loadavg(k: Kernel) -> str:
    k.loadavg.sample(k.tasks.nr_running())
    a, b, c = k.loadavg.render_fields()
    return f"{a} {b} {c} {k.tasks.nr_running()}/{len(k.tasks.list())} {k.tasks.last_pid}\n"


def render_filesystems(k: Kernel) -> str:
    return "".join(("nodev" if nodev else "") + f"\t{name}\n" for name, nodev in k.filesystem_types)


def _escape(path: str) -> str:
    """seq_file's mangling of mount paths: space, tab, newline and backslash in octal."""
    return "".join(f"\\{ord(ch):03o}" if ch in " \t\n\\" else ch for ch in path)


def render_mounts(k: Kernel) -> str:
    return "".join(
        f"{_escape(m.sb.source)} {_escape(m.path)} {m.sb.fs_type} {_merge(m.flags, m.sb.options())} 0 0\n"
        for m in k.vfs.mounts
    )


def _merge(mount_flags: str, sb_options: str) -> str:
    """What /proc/mounts prints: the per-mount flags, then the superblock's options past rw/ro."""
    extra = [o for o in sb_options.split(",") if o not in ("rw", "ro")]
    return ",".join([mount_flags, *extra])


def render_mountinfo(k: Kernel) -> str:
    lines = []
    for m in k.vfs.mounts:
        major, minor = m.sb.dev
        lines.append(
            f"{m.mount_id} {m.parent_id} {major}:{minor} / {_escape(m.path)} {m.flags} shared:{m.mount_id - 19}"
            f" - {m.sb.fs_type} {_escape(m.sb.source)} {m.sb.options()}\n"
        )
    return "".join(lines)


_STATE_NAMES = {"R": "R (running)", "S": "S (sleeping)", "D": "D (disk sleep)", "I": "I (idle)", "Z": "Z (zombie)"}


def _state(k: Kernel, t: Task) -> str:
    """A host process reading its own /proc entry is on a CPU doing so, as ps and top expect to see themselves."""
    return "R" if t.host and t.pid == k.current_pid() else t.state


def render_pid_stat(k: Kernel, t: Task) -> str:
    """The 52 fields of /proc/<pid>/stat (fs/proc/array.c do_task_stat)."""
    flags = 0x00208040 if t.kthread else 0x00400100  # PF_KTHREAD|PF_NOFREEZE|PF_IDLE, or PF_SUPERPRIV|PF_RANDOMIZE
    fields = [
        t.pid, f"({t.comm})", _state(k, t), t.ppid, t.pid, t.pid, 0, -1, flags,
        0, 0, 0, 0,  # minflt cminflt majflt cmajflt
        0, 0, 0, 0,  # utime stime cutime cstime
        20, 0, 1, 0,  # priority nice num_threads itrealvalue
        t.start_ticks, 0, 0, 18446744073709551615,  # starttime vsize rss rsslim
        0, 0, 0, 0, 0,  # startcode endcode startstack kstkesp kstkeip
        0, 0, 0, 0, 0,  # signal blocked sigignore sigcatch wchan
        0, 0, 17, 0, 0, 0,  # nswap cnswap exit_signal processor rt_priority policy
        0, 0, 0,  # delayacct_blkio_ticks guest_time cguest_time
        0, 0, 0, 0, 0, 0, 0,  # start_data end_data start_brk arg_start arg_end env_start env_end
        0,  # exit_code
    ]
    return " ".join(map(str, fields)) + "\n"


def render_pid_status(k: Kernel, t: Task) -> str:
    ncpu = k.cpus.possible
    mask = format(sum(1 << c for c in k.cpus.online), "x")
    return (
        f"Name:\t{t.comm}\n"
        "Umask:\t0022\n"
        f"State:\t{_STATE_NAMES.get(_state(k, t), t.state)}\n"
        f"Tgid:\t{t.pid}\n"
        "Ngid:\t0\n"
        f"Pid:\t{t.pid}\n"
        f"PPid:\t{t.ppid}\n"
        "TracerPid:\t0\n"
        f"Uid:\t{t.uid}\t{t.uid}\t{t.uid}\t{t.uid}\n"
        f"Gid:\t{t.gid}\t{t.gid}\t{t.gid}\t{t.gid}\n"
        "FDSize:\t64\n"
        "Groups:\t \n"
        f"NStgid:\t{t.pid}\n"
        f"NSpid:\t{t.pid}\n"
        f"NSpgid:\t{t.pid}\n"
        f"NSsid:\t{t.pid}\n"
        f"Kthread:\t{1 if t.kthread else 0}\n"
        + render_pid_vm(k, t)
        + "Threads:\t1\n"
        "SigQ:\t0/7823\n"
        "SigPnd:\t0000000000000000\n"
        "ShdPnd:\t0000000000000000\n"
        "SigBlk:\t0000000000000000\n"
        "SigIgn:\t0000000000000000\n"
        "SigCgt:\t0000000000000000\n"
        "CapInh:\t0000000000000000\n"
        "CapPrm:\t000001ffffffffff\n"
        "CapEff:\t000001ffffffffff\n"
        "CapBnd:\t000001ffffffffff\n"
        "CapAmb:\t0000000000000000\n"
        "NoNewPrivs:\t0\n"
        "Seccomp:\t0\n"
        "Seccomp_filters:\t0\n"
        f"Cpus_allowed:\t{mask}\n"
        f"Cpus_allowed_list:\t0-{ncpu - 1}\n"
        "Mems_allowed:\t1\n"
        "Mems_allowed_list:\t0\n"
        "voluntary_ctxt_switches:\t0\n"
        "nonvoluntary_ctxt_switches:\t0\n"
    )
