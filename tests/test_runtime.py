"""The CPU policy: idle cores from /proc/stat, one thread each, the user's OMP_NUM_THREADS respected."""
from __future__ import annotations

import torch

from equimod_zoo import runtime
from equimod_zoo.runtime import CpuState, _cpu_times, idle_cores, num_threads_to_use

STAT_BEFORE = """cpu  300 0 100 1000 0 0 0 0 0 0
cpu0 100 0 50 500 0 0 0 0 0 0
cpu1 200 0 50 500 0 0 0 0 0 0
cpu2 0 0 0 900 0 0 0 0 0 0
intr 12345
"""
# Over the window cpu0 is busy, cpu1 idle (with some iowait), cpu2 is outside the affinity mask.
STAT_AFTER = """cpu  400 0 100 1100 0 0 0 0 0 0
cpu0 200 0 50 500 0 0 0 0 0 0
cpu1 200 0 50 590 10 0 0 0 0 0
cpu2 0 0 0 1000 0 0 0 0 0 0
intr 12399
"""


def test_idle_cores_counts_only_the_allowed_ones():
    before, after = _cpu_times(STAT_BEFORE, {0, 1}), _cpu_times(STAT_AFTER, {0, 1})
    assert before == {0: (500, 650), 1: (500, 750)}
    assert idle_cores(before, after) == 1.0
    assert idle_cores(_cpu_times(STAT_BEFORE, {0, 1, 2}), _cpu_times(STAT_AFTER, {0, 1, 2})) == 2.0


def test_one_thread_per_idle_core_and_at_least_one():
    assert CpuState(usable=2, idle=2.0).num_threads == 2
    assert CpuState(usable=2, idle=1.05).num_threads == 1  # a core held by another process
    assert CpuState(usable=2, idle=0.0).num_threads == 1
    assert CpuState(usable=8, idle=5.6).num_threads == 6
    assert CpuState(usable=4, idle=9.0).num_threads == 4


def test_cgroup_quota_caps_the_usable_cores(monkeypatch, tmp_path):
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")
    monkeypatch.setattr(runtime, "CGROUP_CPU_MAX", quota)
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert runtime.usable_cpus() == 2
    quota.write_text("max 100000\n")
    assert runtime.usable_cpus() == 4


def test_policy_follows_the_idle_cores_unless_the_user_chose(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runtime, "measure_cpus", lambda window: CpuState(usable=2, idle=1.0))
    assert num_threads_to_use() == 1
    monkeypatch.setattr(runtime, "measure_cpus", lambda window: CpuState(usable=2, idle=2.0))
    assert num_threads_to_use() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert num_threads_to_use() == before  # the user's choice, as torch took it, stands
    assert torch.get_num_threads() == before  # counting changes nothing


def test_measuring_sleeps_through_a_window_and_stays_in_range():
    state = runtime.measure_cpus(0.05)
    assert state.usable >= 1 and 0.0 <= state.idle <= state.usable and 1 <= state.num_threads <= state.usable
