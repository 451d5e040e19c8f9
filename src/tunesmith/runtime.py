"""What every command needs from the machine it runs on: the CPUs it may use, the device, progress display.

Threads: :func:`cpu_budget` counts the CPUs this process may really use — its affinity mask, the
cgroup CPU quota (``cpu.max`` or v1 ``cfs_quota_us``), ``SLURM_CPUS_PER_TASK``, shared among the
torchrun ranks of one host (``LOCAL_WORLD_SIZE``) — and :func:`apply_thread_policy` (called by the
``tunesmith`` entry point before torch is imported) sets torch's intra-op threads to that; when other
processes keep CPUs busy at start it also picks OpenMP's passive wait policy, so idle threads sleep
instead of spinning on cores other jobs need (see :func:`thread_policy` for the measured trade-off).
``--threads N`` or ``TUNESMITH_THREADS=N`` overrides the count.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger("tunesmith.train")


THREADS_ENV = "TUNESMITH_THREADS"
PASSIVE = "PASSIVE"
DEFAULT_WAIT = "default"  # OpenMP's own: spin briefly, then sleep
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclasses.dataclass(frozen=True)
class CpuBudget:
    """How many CPUs this process may use (``cpus`` ≥ 1) and the facts that decided it, in words."""

    cpus: int
    reasons: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ThreadPolicy:
    """What :func:`apply_thread_policy` chose: torch intra-op ``threads``, the OpenMP ``wait_policy``, and why."""

    threads: int
    wait_policy: str
    reasons: tuple[str, ...]
    load_warning: str | None = None
    busy: float | None = None  # CPUs other processes kept busy when the policy was chosen (None: not measured)

    def describe(self) -> str:
        return f"{self.threads} torch thread(s), OpenMP wait policy {self.wait_policy} ({'; '.join(self.reasons)})"


def cgroup_cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The cgroup's CPU quota in CPUs (``1.5`` = one and a half cores), or None when unlimited or unknown."""
    candidates = [(root / "cpu.max", None)]  # cgroup v2: "QUOTA PERIOD" or "max PERIOD"
    candidates += [
        (root / sub / "cpu.cfs_quota_us", root / sub / "cpu.cfs_period_us") for sub in ("cpu", "cpu,cpuacct")
    ]
    for quota_file, period_file in candidates:
        try:
            if period_file is None:
                quota, period = quota_file.read_text().split()[:2]
            else:
                quota, period = quota_file.read_text().strip(), period_file.read_text().strip()
        except (OSError, ValueError):
            continue
        if quota in ("max", "-1"):
            return None
        try:
            value = int(quota) / int(period)
        except (ValueError, ZeroDivisionError):
            continue
        return value if value > 0 else None
    return None


def cpu_budget(environ: dict[str, str] | None = None, cgroup_root: Path = CGROUP_ROOT) -> CpuBudget:
    """The CPUs this process may use: affinity ∩ cgroup quota ∩ Slurm's allocation, shared by local ranks."""
    env = os.environ if environ is None else environ
    try:
        cpus = len(os.sched_getaffinity(0))
        reasons = [f"{cpus} CPU(s) in the affinity mask"]
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
        reasons = [f"{cpus} CPU(s) on the machine"]
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None and quota < cpus:
        cpus = max(1, math.floor(quota))
        reasons.append(f"cgroup CPU quota {quota:g}")
    slurm = _positive_int(env.get("SLURM_CPUS_PER_TASK"))
    if slurm is not None and slurm < cpus:
        cpus = slurm
        reasons.append(f"SLURM_CPUS_PER_TASK={slurm}")
    ranks = _positive_int(env.get("LOCAL_WORLD_SIZE"))
    if ranks is not None and ranks > 1:
        cpus = max(1, cpus // ranks)
        reasons.append(f"shared by {ranks} ranks on this host")
    return CpuBudget(cpus, tuple(reasons))


def _positive_int(value: str | None) -> int | None:
    try:
        number = int(str(value).strip())
    except ValueError:
        return None
    return number if number > 0 else None


def thread_policy(
    requested: int | None = None, environ: dict[str, str] | None = None, busy: float | None = None
) -> ThreadPolicy:
    """Threads from ``requested`` (``--threads``), else ``$TUNESMITH_THREADS``, else :func:`cpu_budget`; the
    OpenMP wait policy from ``$OMP_WAIT_POLICY``, else PASSIVE when other processes keep at least half a CPU
    busy (``busy``, default :func:`other_load`), else OpenMP's default (spin briefly, then sleep).

    Why not always passive: measured on the 2-core box (benchmarks/threads.py), passive waiting costs
    ~27 % wall time on an idle machine for the tiny presets (same CPU time: every op pays a thread
    wake-up) and saves 35–43 % wall time and half the CPU time beside one busy process."""
    env = os.environ if environ is None else environ
    budget = cpu_budget(env)
    wait = env.get("OMP_WAIT_POLICY", "").upper()
    if not wait:
        busy = other_load() if busy is None else busy
        wait = PASSIVE if busy is not None and busy >= 0.5 else DEFAULT_WAIT
    policy = _choose_threads(requested, env, budget, wait)
    return dataclasses.replace(policy, busy=busy)


def _choose_threads(requested: int | None, env: dict[str, str], budget: CpuBudget, wait: str) -> ThreadPolicy:
    if requested is not None:
        if requested < 1:
            from tunesmith.errors import UserError

            raise UserError(f"--threads={requested}: must be at least 1")
        return ThreadPolicy(requested, wait, (f"--threads {requested}",))
    from_env = env.get(THREADS_ENV)
    if from_env:
        threads = _positive_int(from_env)
        if threads is None:
            from tunesmith.errors import UserError

            raise UserError(f"${THREADS_ENV}={from_env!r}: must be a whole number ≥ 1")
        return ThreadPolicy(threads, wait, (f"${THREADS_ENV}={threads}",))
    return ThreadPolicy(budget.cpus, wait, budget.reasons)


def cpu_times(stat: Path = Path("/proc/stat")) -> tuple[float, float, int] | None:
    """(busy jiffies, total jiffies, CPUs) of the whole machine from ``/proc/stat``; None where unreadable."""
    try:
        lines = stat.read_text().splitlines()
        values = [float(v) for v in lines[0].split()[1:]]
        cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    except (OSError, ValueError, IndexError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user
    return total - idle, total, max(cpus, 1)


def busy_cpus(
    before: tuple[float, float, int], after: tuple[float, float, int], own_cpu_s: float, seconds: float
) -> float:
    """CPUs other processes kept busy between two :func:`cpu_times` samples ``seconds`` apart, less this
    process's own ``own_cpu_s`` CPU seconds."""
    busy, total = after[0] - before[0], after[1] - before[1]
    if total <= 0 or seconds <= 0:
        return 0.0
    return max(0.0, busy / total * after[2] - own_cpu_s / seconds)


def other_load(window: float = 0.1, stat: Path = Path("/proc/stat")) -> float | None:
    """CPUs other processes keep busy now, measured over ``window`` seconds (a load average would also
    count our own previous command); None where the kernel does not say."""
    import time

    before, own_before, start = cpu_times(stat), sum(os.times()[:2]), time.perf_counter()
    if before is None:
        return None
    time.sleep(window)
    after = cpu_times(stat)
    if after is None:
        return None
    return busy_cpus(before, after, sum(os.times()[:2]) - own_before, time.perf_counter() - start)


def load_warning(threads: int, cpus: int, busy: float | None = None) -> str | None:
    """A warning when other work (``busy`` CPUs, default :func:`other_load`) leaves fewer idle CPUs than ``threads``."""
    busy = other_load() if busy is None else busy
    if busy is None:
        return None
    idle = cpus - busy
    if threads > 1 and idle < threads - 0.5:
        return (
            f"other processes keep about {busy:.1f} of {cpus} CPU(s) busy, leaving about {max(idle, 0):.1f} for "
            f"{threads} threads; if that lasts, pass --threads {max(1, math.floor(max(idle, 1)))}"
        )
    return None


def own_cpu_seconds(proc: Path = Path("/proc")) -> float:
    """User + system CPU seconds of this process, its finished children and its live children (DataLoader
    workers, listed in ``/proc/self/task/*/children`` where the kernel has it), so their work is not
    mistaken for other people's."""
    times = os.times()
    total = times.user + times.system + times.children_user + times.children_system
    try:
        tick = float(os.sysconf("SC_CLK_TCK"))
        tasks = list((proc / "self" / "task").iterdir())
    except (OSError, ValueError, AttributeError):
        return total
    children: set[str] = set()
    for task in tasks:
        try:
            children.update((task / "children").read_text().split())
        except OSError:
            continue  # a thread that ended in between, or a kernel without the file
    for pid in children:
        try:
            fields = (proc / pid / "stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14 and 15 of stat)
        except (OSError, ValueError, IndexError):
            continue  # it ended in between: its time is in children_user/children_system now
    return total


LOAD_CHECK_S = 30.0  # a LoadMonitor reads /proc/stat at most this often
LOAD_WARN_REPEAT_S = 600.0  # and repeats its warning at most this often


def busy_machine_warning(others: float, threads: int, cpus: int, machine_cpus: int, seconds: float) -> str | None:
    """The warning for a machine that got busy after start: ``others`` CPUs used by other processes (of the
    machine's ``machine_cpus``) over the last ``seconds``, leaving fewer than ``threads`` for this process
    (which may use ``cpus``); None while the threads still fit or there is only one."""
    free = max(0.0, min(float(cpus), machine_cpus - others))
    if threads <= 1 or free >= threads - 0.5:
        return None
    fit = max(1, math.floor(max(free, 1.0)))
    spinning = os.environ.get("OMP_WAIT_POLICY", "").upper() != PASSIVE
    return (
        f"the machine got busy: other processes used about {others:.1f} of its {machine_cpus} CPU(s) over the last "
        f"{format_duration(seconds)}, leaving about {free:.1f} for this run's {threads} torch threads, so every op "
        f"waits for CPUs. If that lasts, stop it (Ctrl-C writes a checkpoint) and run the same command again as "
        f"`tunesmith --threads {fit} ...` (or with TUNESMITH_THREADS={fit}): it resumes where it stopped"
        + (", and the restart also switches OpenMP to its passive wait policy" if spinning else "")
    )


class LoadMonitor:
    """Notices when other processes take the CPUs after start (the thread policy measured them only then).

    :meth:`poll` is called from progress updates: it does nothing until ``every_s`` seconds have passed since
    its last reading, then reads ``/proc/stat`` once (no sleeping: the window is the time between two
    readings) and this process's CPU time, and logs :func:`busy_machine_warning` at most once every
    ``repeat_s`` seconds. ``read``, ``own`` and ``clock`` are injectable for tests; ``threads`` defaults to
    torch's intra-op threads, ``cpus`` to :func:`cpu_budget`. Only local rank 0 of a host warns.
    """

    def __init__(
        self,
        *,
        threads: int | None = None,
        cpus: int | None = None,
        every_s: float = LOAD_CHECK_S,
        repeat_s: float = LOAD_WARN_REPEAT_S,
        read: Any = cpu_times,
        own: Any = own_cpu_seconds,
        clock: Any = time.monotonic,
    ) -> None:
        self.threads, self.cpus = threads, cpus
        self.every_s, self.repeat_s = every_s, repeat_s
        self._read, self._own, self._clock = read, own, clock
        self._last: tuple[float, tuple[float, float, int], float] | None = None
        self._last_poll: float | None = None
        self._warned_at: float | None = None
        self.others: float | None = None  # CPUs other processes used over the last window
        self.enabled = os.environ.get("LOCAL_RANK", "0") in ("", "0")

    def poll(self) -> str | None:
        """The warning logged now, if any (at most one reading per ``every_s``; cheap otherwise)."""
        now = self._clock()
        if not self.enabled or (self._last_poll is not None and now - self._last_poll < self.every_s):
            return None
        self._last_poll = now
        sample, own = self._read(), self._own()
        previous = self._last
        self._last = None if sample is None else (now, sample, own)
        if previous is None or sample is None:
            return None
        seconds = now - previous[0]
        self.others = busy_cpus(previous[1], sample, own - previous[2], seconds)
        threads = self.threads or _torch_threads()
        if self.cpus is None:
            self.cpus = cpu_budget().cpus
        message = busy_machine_warning(self.others, threads, self.cpus, sample[2], seconds)
        if message is None or (self._warned_at is not None and now - self._warned_at < self.repeat_s):
            return None
        self._warned_at = now
        log.warning("%s", message)
        return message


def _torch_threads() -> int:
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else 1


_LOAD_MONITOR: LoadMonitor | None = None


def load_monitor() -> LoadMonitor:
    """The process's :class:`LoadMonitor`, which every :class:`EpochProgress` polls (one per process, so its
    window and its rate limit span epochs and commands)."""
    global _LOAD_MONITOR
    if _LOAD_MONITOR is None:
        _LOAD_MONITOR = LoadMonitor()
    return _LOAD_MONITOR


def apply_thread_policy(requested: int | None = None, *, uses_torch: bool = True) -> ThreadPolicy:
    """Set the OpenMP wait policy (before torch loads OpenMP) and torch's intra-op threads; return the choice.

    Call it before anything imports torch: OpenMP reads ``OMP_WAIT_POLICY`` once, when it starts.
    ``OMP_NUM_THREADS`` set by the user is kept for OpenMP itself; torch's count follows the policy.
    ``uses_torch=False`` (a command that never runs torch, e.g. ``download``) does not import torch just to
    set its threads (seconds at start-up); a torch imported already is still set.
    """
    policy = thread_policy(requested)
    if policy.wait_policy == PASSIVE:
        os.environ.setdefault("OMP_WAIT_POLICY", PASSIVE)
    if uses_torch or "torch" in sys.modules:
        import torch

        if torch.get_num_threads() != policy.threads:
            torch.set_num_threads(policy.threads)
    warning = load_warning(policy.threads, cpu_budget().cpus, policy.busy)
    return dataclasses.replace(policy, load_warning=warning)


def available_memory(device: str | torch.device = "cpu") -> int | None:
    """Bytes free for new tensors on ``device``: the GPU's free memory, or the host's MemAvailable; None if unknown."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` → this rank's CUDA device when there is one, else CPU."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def progress_enabled(wanted: bool) -> bool:
    """A live progress bar only when asked for, on a terminal, and not switched off (``TUNESMITH_NO_PROGRESS``
    set to anything but empty or ``0``)."""
    return wanted and sys.stderr.isatty() and os.environ.get("TUNESMITH_NO_PROGRESS", "") in ("", "0")


def format_metrics(metrics: dict[str, Any], keys: tuple[str, ...] | None = None) -> str:
    """``{"loss": 1.234567, "step": 3}`` → ``"loss=1.235 step=3"`` (floats to 4 significant digits)."""
    parts = []
    for key, value in metrics.items():
        if keys and key not in keys:
            continue
        if isinstance(value, float):
            parts.append(f"{key}={value:.4g}")
        elif isinstance(value, int):
            parts.append(f"{key}={value}")
    return " ".join(parts)


class EpochProgress:
    """A rich progress bar for one epoch (or plain log lines when there is no terminal).

    ``start``: units already done before this process took the epoch over (a resume); ``after``: units
    the run still has after this epoch, for the run's ETA. Plain lines come every ``log_every`` units and
    at least every ``interval_s`` seconds, each with the elapsed time and the ETAs of the epoch and the run.
    Each update polls ``monitor`` (default: the process's :func:`load_monitor`), which warns when other
    processes took the CPUs since start.
    """

    def __init__(
        self,
        description: str,
        total: int,
        *,
        enabled: bool,
        log_every: int,
        start: int = 0,
        after: int = 0,
        interval_s: float = 5.0,
        monitor: LoadMonitor | None = None,
    ):
        self.total = total
        self.log_every = max(1, log_every)
        self.description = description
        self.bar = None
        self.start = self.count = max(0, start)
        self.after = max(0, after)
        self.interval_s = interval_s
        self.started = self.last_line = time.monotonic()
        self.monitor = monitor if monitor is not None else load_monitor()
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[metrics]}"),
                transient=False,
            )
            self.task = self.bar.add_task(description, total=total, completed=self.start, metrics="")
            self.bar.start()

    def update(self, metrics: dict[str, Any]) -> None:
        self.count += 1
        self.monitor.poll()  # a machine that got busy since start: one rate-limited warning
        text = format_metrics(metrics)
        if self.bar is not None:
            self.bar.update(self.task, advance=1, metrics=text)
            return
        now = time.monotonic()
        due = self.count % self.log_every == 0 or now - self.last_line >= self.interval_s
        if due or self.count == self.total:
            self.last_line = now
            log.info("%s %d/%d %s | %s", self.description, self.count, self.total, text, self.timing(now))

    def timing(self, now: float | None = None) -> str:
        """``"12s, ETA 1:05, run 9:40"``: elapsed in this epoch and the time left, from this process's rate."""
        elapsed = (time.monotonic() if now is None else now) - self.started
        done = self.count - self.start
        parts = [f"{format_duration(elapsed)} elapsed"]
        if done > 0:
            per_unit = elapsed / done
            left = max(0, self.total - self.count)
            parts.append(f"ETA {format_duration(left * per_unit)}")
            if self.after:
                parts.append(f"run ETA {format_duration((left + self.after) * per_unit)}")
        return ", ".join(parts)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def format_duration(seconds: float) -> str:
    """``42`` → ``"42s"``, ``125`` → ``"2:05"``, ``3725`` → ``"1:02:05"``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}" if minutes else f"{secs}s"
