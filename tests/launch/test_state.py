"""Grid run states (tunesmith.launch.state) from status.json and the launch record, and GPU hand-out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith.errors import UserError
from tunesmith.launch.local import gpu_slots
from tunesmith.launch.state import run_state


def make(run_dir: Path, status: dict | None, launch: dict | None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    if status is not None:
        (run_dir / "status.json").write_text(json.dumps(status))
    if launch is not None:
        (run_dir / "launch.json").write_text(json.dumps(launch))
    return run_dir


@pytest.fixture(scope="module")
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_states_from_status_and_job(tmp_path: Path, dead_pid: int) -> None:
    import os
    import socket

    host = socket.gethostname()
    alive = {"launcher": "local", "pid": os.getpid(), "host": host}
    dead = {"launcher": "local", "pid": dead_pid, "host": host}
    cases = {
        "never": (None, None, "pending"),
        "queued": (None, {"launcher": "slurm", "job_id": "7"}, "pending"),
        "running": ({"state": "running"}, alive, "running"),
        "killed": ({"state": "running"}, dead, "failed"),
        "done": ({"state": "finished", "epoch": 3}, dead, "done"),
        "aborted": ({"state": "aborted", "reason": "NaN"}, None, "failed"),
        "stopped": ({"state": "interrupted"}, dead, "interrupted"),
        "requeued": ({"state": "interrupted"}, {**alive, "requeues": 1}, "preempted"),
        "crashed at start": (None, {**dead, "exit_code": 1}, "failed"),
    }
    for name, (status, launch, expected) in cases.items():
        state = run_state(make(tmp_path / name, status, launch), slurm={"7": "PENDING"})
        assert state.state == expected, name
    assert run_state(tmp_path / "killed").reason.startswith("the job ended without writing a final state")
    assert run_state(tmp_path / "done").epoch == 3


def test_slurm_job_state_comes_from_the_queue(tmp_path: Path) -> None:
    d = make(tmp_path / "r", {"state": "running"}, {"launcher": "slurm", "job_id": "9"})
    assert run_state(d, slurm={"9": "RUNNING"}).state == "running"
    assert run_state(d, slurm={}).state == "failed"  # left the queue while the engine said running
    assert run_state(d, slurm=None).state == "running"  # squeue unavailable: trust the engine


def test_gpu_slots() -> None:
    assert gpu_slots(1, None) == [None]
    assert gpu_slots(2, ["3", "5", "7"]) == ["3", "5"]
    with pytest.raises(UserError, match="3 jobs at once need 3 GPUs, 2 available"):
        gpu_slots(3, ["0", "1"])
