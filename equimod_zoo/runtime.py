"""How many compute threads a process should use on this machine now.

torch starts one OpenMP thread per core. On a machine where another process already holds a
core, every parallel region ends at a barrier that waits for the thread sharing its core with
that process: each region then costs a scheduler time slice, and a job slows several-fold
instead of by the share of CPU it lost. So a command counts the cores that are idle when it
starts (over a short window of /proc/stat, within its CPU affinity and cgroup quota) and runs
that many threads (OMP_NUM_THREADS, when set, still decides).

OpenMP's wait policy matters less: libgomp reads OMP_WAIT_POLICY once, when torch loads it
(so only the environment can set it), and its default already lets an idle thread sleep after a short spin (0.01 CPU
seconds over a 2 s pause, against 0.2 with ACTIVE, on the development machine). A user sharing
a machine can still export OMP_WAIT_POLICY=PASSIVE; bench/busy_machine.py --wait-policy
measures what it changes.

This module only counts: entry points (the CLI, when a command first imports torch; the bench
scripts) pass `num_threads_to_use()` to `torch.set_num_threads`, process-wide state a library
function must not touch.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


@dataclass(frozen=True)
class CpuState:
    """The cores this process may use, and how many of them were idle over the window."""

    usable: int
    idle: float

    @property
    def num_threads(self) -> int:
        """Threads that each get a core of their own: the idle cores, rounded, at least one."""
        return max(1, min(self.usable, math.floor(self.idle + 0.5)))


def usable_cpus() -> int:
    """The cores this process may run on: its affinity mask, capped by a cgroup CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def measure_cpus(window: float = 0.1) -> CpuState:
    """Count the idle cores among this process's over `window` seconds of /proc/stat.

    The caller sleeps through the window, so its own threads do not count as load. Without
    /proc/stat (not Linux) every usable core counts as idle.
    """
    usable = usable_cpus()
    try:
        allowed = os.sched_getaffinity(0)
        before = _cpu_times(PROC_STAT.read_text(), allowed)
        time.sleep(window)
        after = _cpu_times(PROC_STAT.read_text(), allowed)
    except (AttributeError, OSError):
        return CpuState(usable=usable, idle=float(usable))
    return CpuState(usable=usable, idle=min(float(usable), idle_cores(before, after)))


def idle_cores(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> float:
    """Idle cores between two `/proc/stat` readings of (idle ticks, total ticks) per core."""
    idle = 0.0
    for cpu, (idle_after, total_after) in after.items():
        idle_before, total_before = before.get(cpu, (idle_after, total_after))
        elapsed = total_after - total_before
        if elapsed > 0:
            idle += (idle_after - idle_before) / elapsed
    return idle


def num_threads_to_use(window: float = 0.1) -> int:
    """The torch thread count for this process now: one per idle core, or, when OMP_NUM_THREADS
    is set, the count torch already took from it. Entry points pass it to `torch.set_num_threads`.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        import torch

        return torch.get_num_threads()
    return measure_cpus(window).num_threads


def _cpu_times(stat: str, cpus: set[int]) -> dict[int, tuple[int, int]]:
    """(idle + iowait, total) ticks of each core of `cpus` from the text of /proc/stat."""
    times: dict[int, tuple[int, int]] = {}
    for line in stat.splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        cpu = int(name[3:])
        if cpu not in cpus:
            continue
        ticks = [int(value) for value in fields[:8]]  # user nice system idle iowait irq softirq steal
        times[cpu] = (ticks[3] + ticks[4], sum(ticks))
    return times


def _cgroup_quota() -> float | None:
    """CPUs allowed by a cgroup v2 `cpu.max` quota, or None without one."""
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)
