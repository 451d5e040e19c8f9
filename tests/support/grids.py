"""Helpers for grid and launcher tests: tiny toy grids, per-step losses, waiting on run folders."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ENV = {**os.environ, "TUNESMITH_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "TUNESMITH_THREADS": "1"}

# long enough to be signalled mid-run (200 updates over 2 epochs), a few seconds of training
LONG = ["train.epochs=2", "train.updates_per_epoch=100", "dataset.num_items=400", "model.dim=256", "dataset.crop=48"]


def history(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "history.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line being written
            out.append(json.loads(line))
    return out


def step_losses(run_dir: Path) -> dict[int, float]:
    return {h["step"]: h["loss"] for h in history(run_dir) if h["stage"] == "train_step"}


def status(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_for(predicate, timeout: float, what: str, poll: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def train_reference(runs: Path, overrides: list[str]) -> Path:
    """An uninterrupted `tunesmith train toy default ...` run; its folder."""
    proc = subprocess.run(
        [sys.executable, "-m", "tunesmith", "train", "toy", "default", *overrides, "--runs-dir", str(runs), "--json"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return Path(json.loads(proc.stdout.strip().splitlines()[-1])["run_dir"])


def write_grid(path: Path, base: list[str], lrs: list[float]) -> Path:
    values = ", ".join(map(str, lrs))
    path.write_text(f"command: train toy default {' '.join(base)}\ngrid:\n  - product:\n      optim.lr: [{values}]\n")
    return path
