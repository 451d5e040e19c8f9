"""What a grid run is doing, from its run folder and the job that runs it.

``RUN/launch.json`` is the launch record: the launcher, the job id, the scheduler's log paths, the
host and process ids, the number of requeues. ``RUN/status.json`` is the engine's own state. The grid
state combines them:

=============  ==============================================================================
pending        not started yet (no status), or its job waits in the scheduler's queue
running        the engine says running and the job is alive (or cannot be checked)
done           the engine finished
failed         the engine failed or aborted, or the job died without writing a final state
preempted      stopped by a signal with a checkpoint written, and its requeued job is waiting
interrupted    stopped by a signal with a checkpoint written; launching the grid again resumes it
=============  ==============================================================================
"""

from __future__ import annotations

import dataclasses
import datetime
import getpass
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

from tunesmith.artifacts.runs import STATUS_FILE, read_json
from tunesmith.engine.tracking import run_log_name
from tunesmith.fileio import atomic_write_json, pid_alive

LAUNCH_FILE = "launch.json"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d (\d\d:\d\d:\d\d) [A-Z]+ [\w.]+: (.*)$")
STATES = ("pending", "running", "done", "failed", "preempted", "interrupted")
ACTIVE = ("pending", "running", "preempted")  # a live job holds the run: launching again skips it


@dataclasses.dataclass
class RunState:
    state: str
    epoch: int = 0
    step: int = 0
    best: dict | None = None
    job: str = ""  # "local:1234", "slurm:56" ...
    alive: bool | None = None  # whether the recorded job is alive (None: unknown or no job)
    reason: str = ""
    last_line: str = ""


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def read_launch(run_dir: Path) -> dict:
    return read_json(Path(run_dir) / LAUNCH_FILE) or {}


def update_launch(run_dir: Path, **fields: Any) -> dict:
    """Merge ``fields`` into RUN/launch.json (creating the run folder); returns the record."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = read_launch(run_dir)
    record.update(fields, updated_at=now())
    atomic_write_json(run_dir / LAUNCH_FILE, record)
    return record


def last_log_line(run_dir: Path, max_bytes: int = 8192) -> str:
    """The last non-empty line of RUN/train.log ("" when there is none)."""
    path = Path(run_dir) / run_log_name(0)
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line for line in tail.splitlines() if line.strip()]
    if not lines:
        return ""
    match = LOG_LINE.match(lines[-1])  # "2026-01-02 10:11:12 INFO tunesmith.train: msg" → "10:11:12 msg"
    return f"{match.group(1)} {match.group(2)}" if match else lines[-1]


def slurm_states(job_ids: list[str]) -> dict[str, str] | None:
    """Job id → Slurm state (PENDING, RUNNING, ...) of this user's jobs in the queue; None without squeue.
    A job that has left the queue is absent."""
    if not job_ids or shutil.which("squeue") is None:
        return None
    try:
        out = subprocess.run(
            ["squeue", "-h", "-u", getpass.getuser(), "-o", "%i|%T"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    states = {}
    for line in out.splitlines():
        job, _, state = line.strip().partition("|")
        states[job] = state
    return states


def job_alive(record: dict, slurm: dict[str, str] | None = None) -> bool | None:
    """Whether the job of a launch record still exists (queued or running); None when it cannot be told."""
    launcher = record.get("launcher")
    if launcher == "slurm":
        if slurm is None:
            return None
        return str(record.get("job_id")) in slurm
    if record.get("host") and record["host"] != socket.gethostname():
        return None
    pids = [record.get(k) for k in ("pid", "job_pid", "train_pid") if record.get(k)]
    if not pids:
        return None
    return any(pid_alive(int(p)) for p in pids)


def run_state(run_dir: Path, slurm: dict[str, str] | None = None) -> RunState:
    """The grid state of one run folder (see the module docstring)."""
    run_dir = Path(run_dir)
    status = read_json(run_dir / STATUS_FILE) or {}
    record = read_launch(run_dir)
    alive = job_alive(record, slurm) if record else None
    job = f"{record.get('launcher')}:{record.get('job_id') or record.get('pid')}" if record else ""
    engine = status.get("state")
    common = {
        "epoch": int(status.get("epoch", 0)),
        "step": int(status.get("step", 0)),
        "best": status.get("best"),
        "job": job,
        "alive": alive,
        "last_line": last_log_line(run_dir),
    }
    if engine == "finished":
        return RunState("done", **common)
    if engine in ("failed", "aborted"):
        return RunState("failed", reason=status.get("reason", engine), **common)
    if engine == "running":
        if alive is False:
            return RunState("failed", reason="the job ended without writing a final state (killed?)", **common)
        return RunState("running", **common)
    if engine == "interrupted":
        if alive and record.get("requeues"):
            return RunState("preempted", reason=status.get("reason", ""), **common)
        if alive:
            return RunState("running", reason="stopping or restarting", **common)
        return RunState("interrupted", reason=status.get("reason", ""), **common)
    if alive is False and record.get("exit_code") not in (None, 0):
        return RunState("failed", reason=f"exit code {record['exit_code']} before training started", **common)
    return RunState("pending", **common)


def collect_states(run_dirs: list[Path]) -> list[RunState]:
    """States of many run folders with one scheduler query."""
    records = [read_launch(d) for d in run_dirs]
    slurm_ids = [str(r["job_id"]) for r in records if r.get("launcher") == "slurm" and r.get("job_id")]
    slurm = slurm_states(slurm_ids) if slurm_ids else None
    return [run_state(d, slurm) for d in run_dirs]


def follow_log(
    run_dir: Path, lines: int = 20, *, follow: bool = True, poll_s: float = 0.5, write=None, max_s: float | None = None
) -> None:
    """Print the last ``lines`` lines of RUN/train.log, then (``follow``) new lines as they come while the
    run is running (status.json); stops when it is not, or after ``max_s`` seconds."""
    import sys
    import time

    write = write or (lambda text: (sys.stdout.write(text), sys.stdout.flush()))
    path = Path(run_dir) / run_log_name(0)
    start = time.monotonic()
    while not path.exists():
        if not follow or (max_s is not None and time.monotonic() - start > max_s) or not _running(run_dir):
            write(f"(no {path.name} yet in {run_dir})\n")
            return
        time.sleep(poll_s)
    with open(path, encoding="utf-8", errors="replace") as f:
        tail = f.read().splitlines(keepends=True)[-lines:] if lines else []
        write("".join(tail))
        while follow:
            chunk = f.read()
            if chunk:
                write(chunk)
                continue
            if not _running(run_dir) or (max_s is not None and time.monotonic() - start > max_s):
                write(f.read())
                return
            time.sleep(poll_s)


def _running(run_dir: Path) -> bool:
    return (read_json(Path(run_dir) / STATUS_FILE) or {}).get("state") in (None, "running")
