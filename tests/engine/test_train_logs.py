"""Readable training logs: wall-clock timestamps, ETA for the epoch and the run, rates with units."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from tunesmith import runtime
from tunesmith.runtime import EpochProgress, format_duration

ENV = {**os.environ, "TUNESMITH_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}


def test_train_lines_have_timestamps_eta_and_units_while_history_keys_stay(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tunesmith", "train", "toy", "default", "--runs-dir", str(tmp_path), "--json"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert lines and all(re.match(r"\d\d:\d\d:\d\d (INFO|WARNING) tunesmith", line) for line in lines), lines[:3]
    first = next(line for line in lines if "train 1/3 1/5 " in line)
    assert "tokens/s=" in first and "ETA" in first and "run ETA" in first  # 10 more updates after epoch 1
    last = next(line for line in lines if "train 3/3 5/5 " in line)
    assert "ETA 0s" in last and "run ETA" not in last
    epoch = next(line for line in lines if "epoch 1 step 5 |" in line)
    assert "tokens/s=" in epoch and "targets_per_s" not in epoch
    run_dir = Path(json.loads(proc.stdout.strip().splitlines()[-1])["run_dir"])
    history = [json.loads(x) for x in (run_dir / "history.jsonl").read_text().splitlines()]
    assert all("targets_per_s" in h and "tokens/s" not in h for h in history if h["stage"] in ("train_step", "train"))


def test_plain_progress_lines_come_by_count_and_by_time(monkeypatch, caplog):
    clock = [100.0]
    monkeypatch.setattr(runtime.time, "monotonic", lambda: clock[0])
    progress = EpochProgress("train 2/3", 40, enabled=False, log_every=100, start=10, after=80, interval_s=5.0)
    with caplog.at_level(logging.INFO, logger="tunesmith.train"):
        clock[0] += 2.0
        progress.update({"loss": 1.0})  # 11/40: neither 100 updates nor 5 s since the last line
        assert not caplog.records
        clock[0] += 4.0
        progress.update({"loss": 1.0})  # 12/40 after 6 s: 3 s per update from this process's rate
    (record,) = caplog.records
    message = record.getMessage()
    assert message.startswith("train 2/3 12/40 loss=1 | ")
    assert "6s elapsed" in message and "ETA 1:24" in message and "run ETA 5:24" in message


def test_durations_and_task_units():
    assert [format_duration(s) for s in (0.4, 42, 125, 3725)] == ["0s", "42s", "2:05", "1:02:05"]
    from tunesmith.engine.task import Task
    from tunesmith.tasks import solver_class

    assert Task.target_unit == "targets"
    units = {name: solver_class(name).target_unit for name in ("codec", "lm", "midi", "toy")}
    assert units == {"codec": "clips", "lm": "tokens", "midi": "tokens", "toy": "tokens"}
