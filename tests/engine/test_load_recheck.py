"""A machine that gets busy after training started: the engine's progress updates poll the process's
LoadMonitor (tunesmith.runtime), which logs one rate-limited warning naming the CPUs others use and --threads."""

from __future__ import annotations

import logging
from pathlib import Path

from tunesmith import runtime
from tunesmith.cli import main


def test_training_warns_once_when_others_take_the_cpus(tmp_path: Path, monkeypatch, caplog) -> None:
    state = {"now": 0.0, "busy": 0.0, "total": 0.0}

    def clock() -> float:  # every progress update happens 40 s after the previous one
        state["now"] += 40.0
        return state["now"]

    def read() -> tuple[float, float, int]:  # since the last reading: 1.5 of 2 CPUs busy, none of it ours
        state["total"] += 40.0 * 2 * 100
        state["busy"] += 40.0 * 1.5 * 100
        return state["busy"], state["total"], 2

    monitor = runtime.LoadMonitor(threads=2, cpus=2, read=read, own=lambda: 0.0, clock=clock)
    monkeypatch.setattr(runtime, "_LOAD_MONITOR", monitor)
    with caplog.at_level(logging.WARNING, logger="tunesmith.train"):
        code = main(["train", "toy", "default", "train.epochs=2", "train.updates_per_epoch=6",
                     "--runs-dir", str(tmp_path)])  # fmt: skip
    assert code == 0
    warnings = [r.getMessage() for r in caplog.records if "the machine got busy" in r.getMessage()]
    assert len(warnings) == 1, warnings  # 12 updates over 8 minutes: one warning (repeats after 10 minutes)
    assert "about 1.5 of its 2 CPU(s)" in warnings[0] and "--threads 1" in warnings[0]
    assert monitor.others is not None and abs(monitor.others - 1.5) < 1e-9
