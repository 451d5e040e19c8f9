"""runtime: the CPUs a process may use, the thread policy the entry point applies, a closed pipe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith.errors import UserError
from tunesmith.runtime import (
    busy_cpus,
    cgroup_cpu_quota,
    cpu_budget,
    cpu_times,
    load_warning,
    other_load,
    thread_policy,
)


def _cgroup(tmp_path: Path, v2: str | None = None, v1: tuple[str, str] | None = None) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2 + "\n")
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(v1[0] + "\n")
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(v1[1] + "\n")
    return tmp_path


def test_cgroup_quota_v2_v1_and_unlimited(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(_cgroup(tmp_path / "a", v2="150000 100000")) == 1.5
    assert cgroup_cpu_quota(_cgroup(tmp_path / "b", v2="max 100000")) is None
    assert cgroup_cpu_quota(_cgroup(tmp_path / "c", v1=("50000", "100000"))) == 0.5
    assert cgroup_cpu_quota(_cgroup(tmp_path / "d", v1=("-1", "100000"))) is None
    assert cgroup_cpu_quota(tmp_path / "nothing-here") is None


def test_budget_takes_the_smallest_limit_and_shares_it_among_local_ranks(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    root = _cgroup(tmp_path, v2="800000 100000")  # 8 CPUs of quota on a 16-CPU mask
    budget = cpu_budget({}, root)
    assert budget.cpus == 8 and any("quota 8" in r for r in budget.reasons)
    assert cpu_budget({"SLURM_CPUS_PER_TASK": "6"}, root).cpus == 6
    shared = cpu_budget({"SLURM_CPUS_PER_TASK": "6", "LOCAL_WORLD_SIZE": "4"}, root)
    assert shared.cpus == 1 and "shared by 4 ranks on this host" in shared.reasons
    assert cpu_budget({"SLURM_CPUS_PER_TASK": "junk"}, root).cpus == 8  # unreadable: ignored
    fractional = cpu_budget({}, _cgroup(tmp_path / "f", v2="50000 100000"))
    assert fractional.cpus == 1  # half a CPU of quota still runs one thread


def test_policy_overrides_and_bad_values(monkeypatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert thread_policy(3, {}).threads == 3
    assert thread_policy(None, {"TUNESMITH_THREADS": "5"}).threads == 5
    policy = thread_policy(None, {}, busy=1.0)  # another process keeps a CPU busy: sleep, do not spin
    assert policy.wait_policy == "PASSIVE" and policy.threads >= 1 and policy.reasons
    assert thread_policy(None, {}, busy=0.0).wait_policy == "default"  # idle: OpenMP's own brief spin
    assert thread_policy(None, {"OMP_WAIT_POLICY": "active"}, busy=1.0).wait_policy == "ACTIVE"  # yours wins
    with pytest.raises(UserError, match="--threads=0"):
        thread_policy(0, {})
    with pytest.raises(UserError, match="TUNESMITH_THREADS"):
        thread_policy(None, {"TUNESMITH_THREADS": "two"})


def test_load_warning(tmp_path: Path) -> None:
    message = load_warning(2, 2, busy=1.0)
    assert message is not None and "--threads 1" in message
    assert load_warning(2, 2, busy=0.1) is None
    assert load_warning(1, 2, busy=1.5) is None  # one thread cannot be oversubscribed by us
    assert load_warning(8, 16, busy=12.0) is not None
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 50 0 50 400 0 0 0 0 0 0\ncpu1 50 0 50 400 0 0 0 0 0 0\n")
    before = cpu_times(stat)
    assert before == (200.0, 1000.0, 2)
    stat.write_text("cpu  150 0 150 900 0 0 0 0 0 0\ncpu0 75 0 75 450 0 0 0 0 0 0\ncpu1 75 0 75 450 0 0 0 0 0 0\n")
    after = cpu_times(stat)  # 100 of 200 jiffies busy on 2 CPUs: one CPU busy
    assert busy_cpus(before, after, own_cpu_s=0.0, seconds=0.1) == 1.0
    assert busy_cpus(before, after, own_cpu_s=0.05, seconds=0.1) == 0.5  # half of it was us
    assert cpu_times(tmp_path / "missing") is None and other_load(0.01, tmp_path / "missing") is None
    assert other_load(0.05) is not None  # the real /proc/stat


def _tunesmith(*argv: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tunesmith", *argv], capture_output=True, text=True, env=env, timeout=120, **kwargs
    )


def test_entry_point_applies_and_reports_the_policy() -> None:
    env = {**os.environ, "TUNESMITH_THREADS": "1"}
    env.pop("OMP_WAIT_POLICY", None)
    done = _tunesmith("runs", "list", "--runs-dir", "/nonexistent-runs", env=env)
    assert "threads: 1 torch thread(s), OpenMP wait policy " in done.stderr and "($TUNESMITH_THREADS=1)" in done.stderr
    done = _tunesmith("--threads", "2", "runs", "list", "--runs-dir", "/nonexistent-runs", env=env)
    assert "threads: 2 torch thread(s)" in done.stderr and "(--threads 2)" in done.stderr


def test_closed_pipe_ends_quietly() -> None:
    """`tunesmith train ... --print-config | head -1`: no BrokenPipeError traceback."""
    command = f"{sys.executable} -m tunesmith train toy default --print-config | head -1"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("{")
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
