"""The re-check of a machine that gets busy after start: ``tunesmith.runtime.LoadMonitor``, polled from every
progress update, reads /proc/stat at most every N seconds (no sleeping) and warns, rate-limited, when other
processes leave fewer CPUs than torch threads."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from tunesmith.runtime import EpochProgress, LoadMonitor, busy_machine_warning, cpu_times, own_cpu_seconds

HZ = 100  # jiffies per second in the fake /proc/stat readings


class FakeMachine:
    """A 2-CPU machine whose /proc/stat, clock and our own CPU time the test advances by hand."""

    def __init__(self, cpus: int = 2) -> None:
        self.cpus, self.now, self.busy, self.total, self.own, self.reads = cpus, 0.0, 0.0, 0.0, 0.0, 0

    def advance(self, seconds: float, others: float, own: float) -> None:
        """``seconds`` pass with ``others`` CPUs used by other processes and ``own`` by this one."""
        self.now += seconds
        self.total += seconds * self.cpus * HZ
        self.busy += seconds * (others + own) * HZ
        self.own += seconds * own

    def read(self) -> tuple[float, float, int]:
        self.reads += 1
        return self.busy, self.total, self.cpus

    def monitor(self, **kwargs) -> LoadMonitor:
        options = {"threads": 2, "cpus": self.cpus, "every_s": 30.0, "repeat_s": 600.0, **kwargs}
        return LoadMonitor(read=self.read, own=lambda: self.own, clock=lambda: self.now, **options)


def test_warns_once_when_others_take_the_cpus_and_again_after_the_repeat_interval(caplog) -> None:
    machine = FakeMachine()
    monitor = machine.monitor()
    with caplog.at_level(logging.WARNING, logger="tunesmith.train"):
        assert monitor.poll() is None and machine.reads == 1  # the first reading only starts a window
        machine.advance(10, others=0.0, own=2.0)
        assert monitor.poll() is None and machine.reads == 1  # not due: no reading at all
        machine.advance(20, others=0.1, own=2.0)
        assert monitor.poll() is None and machine.reads == 2  # idle machine, we use our 2 CPUs: fine
        assert monitor.others == pytest.approx(0.1 * 20 / 30)
        machine.advance(40, others=1.3, own=0.7)  # another job started: it takes 1.3 of the 2 CPUs
        message = monitor.poll()
        assert monitor.others == pytest.approx(1.3)  # busy 2.0 CPUs in all, less our own 0.7
        assert message is not None and caplog.text.count("the machine got busy") == 1
        for words in ("about 1.3 of its 2 CPU(s)", "over the last 40s", "about 0.7 for this run's 2 torch threads",
                      "--threads 1", "TUNESMITH_THREADS=1", "Ctrl-C writes a checkpoint"):  # fmt: skip
            assert words in message, words
        for _ in range(10):  # still busy for 5 more minutes: no repetition
            machine.advance(30, others=1.3, own=0.7)
            assert monitor.poll() is None
        assert caplog.text.count("the machine got busy") == 1
        machine.advance(300, others=1.3, own=0.7)  # 10 minutes after the first warning: once more
        assert monitor.poll() is not None and caplog.text.count("the machine got busy") == 2


def test_no_warning_for_one_thread_our_own_load_or_an_unreadable_proc_stat() -> None:
    machine = FakeMachine()
    single = machine.monitor(threads=1)
    ours = machine.monitor()
    for monitor in (single, ours):
        monitor.poll()
    machine.advance(60, others=0.0, own=2.0)  # our own threads fill the machine: not someone else's load
    assert ours.poll() is None and ours.others == pytest.approx(0.0)
    machine.advance(60, others=1.8, own=0.2)
    assert single.poll() is None  # one thread cannot do with less
    blind = LoadMonitor(threads=2, cpus=2, every_s=0, read=lambda: None, own=lambda: 0.0)
    assert blind.poll() is None and blind.poll() is None and blind.others is None


def test_warning_counts_the_cpus_this_process_may_use_not_the_whole_machine() -> None:
    # a 64-CPU host, 4 CPUs for us (cgroup quota), 40 CPUs busy elsewhere: 24 idle, our 4 threads fit
    assert busy_machine_warning(40.0, threads=4, cpus=4, machine_cpus=64, seconds=30) is None
    # 62 busy elsewhere: 2 left for 4 threads
    message = busy_machine_warning(62.0, threads=4, cpus=4, machine_cpus=64, seconds=30)
    assert message is not None and "--threads 2" in message and "about 2.0 for this run's 4 torch threads" in message


def test_progress_updates_poll_the_monitor_cheaply() -> None:
    machine = FakeMachine()
    monitor = machine.monitor(every_s=30.0)
    progress = EpochProgress("train 1/1", 10_000, enabled=False, log_every=10**9, monitor=monitor, interval_s=1e9)
    start = time.perf_counter()
    for _ in range(10_000):
        progress.update({"loss": 1.0})
    elapsed = time.perf_counter() - start
    assert machine.reads == 1  # the clock did not move: one reading for 10,000 updates
    assert elapsed < 1.0, elapsed  # ~10 µs per update on a busy 2-core box
    real = LoadMonitor(threads=2, cpus=2, every_s=0.0)  # every poll due: real /proc/stat and /proc/self reads
    start = time.perf_counter()
    for _ in range(50):
        real.poll()
    per_poll = (time.perf_counter() - start) / 50
    assert per_poll < 0.01, per_poll  # never the 0.1 s sleep of a start-up measurement


def _cpu_seconds_of(pid: int) -> float:
    """utime + stime of process ``pid`` from /proc (an independent reading of the child's CPU time)."""
    import os
    from pathlib import Path

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _busy_code(seconds: float) -> str:
    return f"import time\nend = time.perf_counter() + {seconds}\nwhile time.perf_counter() < end: pass\n"


def _child_spinner(seconds: float) -> subprocess.Popen:
    """A busy-looping child of this process."""
    return subprocess.Popen([sys.executable, "-c", _busy_code(seconds)])


def _spinner(seconds: float) -> int:
    """The pid of a busy-looping process that is NOT our child (its parent exits at once, so it is re-parented):
    a live child's CPU time counts as ours (DataLoader workers), someone else's must not."""
    code = _busy_code(seconds)
    launcher = (
        "import subprocess, sys\n"
        f"p = subprocess.Popen([sys.executable, '-c', {code!r}], start_new_session=True,\n"
        "                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(p.pid, flush=True)\n"
    )
    out = subprocess.run([sys.executable, "-c", launcher], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


@pytest.mark.skipif(cpu_times() is None, reason="no /proc/stat")
def test_a_real_busy_process_is_seen_and_warned_about(caplog) -> None:
    machine_cpus = cpu_times()[2]
    # as many threads as the machine has CPUs: any other process using more than half a CPU must be warned about
    monitor = LoadMonitor(threads=machine_cpus, cpus=machine_cpus, every_s=0.0)
    spinner = _spinner(60.0)
    try:
        deadline = time.monotonic() + 30
        while _cpu_seconds_of(spinner) < 0.1 and time.monotonic() < deadline:
            time.sleep(0.05)  # let it start spinning
        monitor.poll()
        time.sleep(1.0)  # this process sleeps: what is busy is someone else
        with caplog.at_level(logging.WARNING, logger="tunesmith.train"):
            message = monitor.poll()
    finally:
        os.kill(spinner, signal.SIGKILL)
    assert monitor.others is not None and monitor.others >= 0.6, monitor.others
    assert message is not None and "--threads" in message and "the machine got busy" in caplog.text


@pytest.mark.skipif(cpu_times() is None, reason="no /proc/stat")
def test_own_cpu_time_includes_live_children() -> None:
    """DataLoader workers are our own work: a child's CPU time counts before it is reaped."""
    before = own_cpu_seconds()
    child = _child_spinner(60.0)
    try:
        deadline = time.monotonic() + 30
        while (used := _cpu_seconds_of(child.pid)) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)  # however busy the box, wait until the child has used some CPU
        during = own_cpu_seconds()  # the child is still running: not in os.times() children yet
    finally:
        child.kill()
        child.wait()
    assert used >= 0.3 and during - before >= used - 0.02, (during - before, used)
