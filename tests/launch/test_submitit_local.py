"""submitit's local executor runs a grid end to end; a job signalled mid-run (what Slurm sends before the
time limit or on preemption) checkpoints, is requeued, and resumes exactly."""

from __future__ import annotations

import json
import os
import signal

import pytest

from support.grids import ENV, LONG, status, step_losses, wait_for
from tunesmith.launch.grid import load_grid
from tunesmith.launch.plan import plan
from tunesmith.launch.state import collect_states
from tunesmith.launch.submit import merge_slurm, submit_runs

pytest.importorskip("submitit")

REFERENCE_LR = 0.01  # the long_reference fixture's (tests/launch/conftest.py)


@pytest.fixture
def env():
    with pytest.MonkeyPatch.context() as mp:
        for key in ("TUNESMITH_NO_PROGRESS", "OMP_NUM_THREADS", "TUNESMITH_THREADS"):
            mp.setenv(key, ENV[key])
        mp.delenv("TUNESMITH_CONFIG", raising=False)
        yield


def test_local_executor_runs_a_grid_and_a_signalled_job_is_requeued_and_resumes_exactly(
    tmp_path, long_reference, env
) -> None:
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(
        f"command: train toy default {' '.join(LONG)}\n"
        "grid:\n"
        f"  - runs:\n      - {{optim.lr: {REFERENCE_LR}}}\n"
        "      - {optim.lr: 0.02, train.epochs: 1, train.updates_per_epoch: 3}\n"
    )
    runs = plan(load_grid(grid_file), tmp_path / "runs")
    assert runs[0].signature == long_reference.name
    jobs = submit_runs(runs, "submitit-local", merge_slurm({"time_min": 20}), echo=lambda _: None)
    long_dir, short_dir = runs[0].run_dir, runs[1].run_dir
    wait_for(lambda: len(step_losses(long_dir)) >= 10, 300, "the long run to reach update 10")
    job_pid = json.loads((long_dir / "launch.json").read_text())["job_pid"]
    os.kill(job_pid, signal.SIGUSR2)  # submitit's timeout/preemption signal, as Slurm sends it to the job step
    wait_for(lambda: status(long_dir).get("state") == "interrupted" or status(long_dir).get("step", 0) >= 200, 300,
             "the signalled run to stop")  # fmt: skip
    stopped_at = status(long_dir)["step"]
    assert status(long_dir)["state"] == "interrupted" and stopped_at < 200, "stopped too late: make the run longer"
    results = [job.result() for _, job in jobs]  # the requeued job runs again, resumes and finishes
    assert [r["exit_code"] for r in results] == [0, 0]
    assert [s.state for s in collect_states([long_dir, short_dir])] == ["done", "done"]
    record = json.loads((long_dir / "launch.json").read_text())
    assert record["launcher"] == "submitit-local" and record["requeues"] == 1 and record["attempts"] == 2
    assert os.path.isfile(record["stdout"]) and str(long_dir) in record["stdout"]
    assert step_losses(long_dir) == step_losses(long_reference)  # every update, before and after the requeue
    assert status(short_dir)["step"] == 3 and (short_dir / "train.log").is_file()
