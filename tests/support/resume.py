"""Helpers for the exact-resume tests of real training processes (no tests here): a run's per-update losses,
a run killed with SIGKILL mid-epoch, and the check that the rerun resumes to the uninterrupted losses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def step_losses(run_dir: Path) -> dict[int, float]:
    """step → loss of every ``train_step`` line of ``RUN/history.jsonl``."""
    lines = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return {line["step"]: line["loss"] for line in lines if line["stage"] == "train_step"}


def kill_mid_epoch(
    args: list[str], runs: Path, run_dir: Path, env: dict[str, str], past_step: int, steps_per_epoch: int
) -> int | None:
    """Start ``python -m tunesmith ARGS --runs-dir RUNS`` and SIGKILL it as soon as ``run_dir`` has a ``last``
    checkpoint and its history a step past ``past_step`` that is not at an epoch boundary (step mod
    ``steps_per_epoch`` is neither 0 nor the epoch's last). The step it was killed at; None when the run
    finished (or 300 s passed) first."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunesmith", *args, "--runs-dir", str(runs)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline, killed_at = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:
        losses = step_losses(run_dir) if (run_dir / "history.jsonl").exists() else {}
        last = run_dir / "checkpoints" / "last"
        if (
            last.is_dir()
            and losses
            and max(losses) > past_step
            and max(losses) % steps_per_epoch not in (0, steps_per_epoch - 1)
        ):
            proc.send_signal(signal.SIGKILL)
            killed_at = max(losses)
            break
        time.sleep(0.02)
    proc.wait()
    return killed_at


def assert_resumes_to(
    args: list[str], runs: Path, run_dir: Path, env: dict[str, str], expected: dict[int, float]
) -> None:
    """Rerun the same command: it must say it resumed, and ``run_dir``'s per-update losses must equal
    ``expected`` (the uninterrupted run's) step for step."""
    rerun = subprocess.run(
        [sys.executable, "-m", "tunesmith", *args, "--runs-dir", str(runs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resumed from" in rerun.stderr
    got = step_losses(run_dir)
    assert sorted(got) == sorted(expected)
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, rel=1e-6, abs=1e-7), step
