"""A real Slurm (single-node test cluster): a 2-run grid goes through sbatch via submitit, one job is
signalled with scancel mid-run, is requeued and resumes exactly; bad Slurm settings are refused."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta

import pytest

from support.grids import ENV, LONG, status, step_losses, wait_for
from support.slurm_cluster import CRED_EXPIRE_S
from tunesmith.cli import main

pytest.importorskip("submitit")

REFERENCE_LR = 0.01  # the long_reference fixture's (tests/launch/conftest.py)


@pytest.fixture
def slurm_env(slurm_cluster):
    with pytest.MonkeyPatch.context() as mp:
        for key in ("TUNESMITH_NO_PROGRESS", "OMP_NUM_THREADS", "TUNESMITH_THREADS"):
            mp.setenv(key, ENV[key])
        mp.setenv("SLURM_CONF", slurm_cluster.env["SLURM_CONF"])
        mp.delenv("TUNESMITH_CONFIG", raising=False)
        yield slurm_cluster


def write_grid(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(
        f"command: train toy default {' '.join(LONG)}\n"
        "slurm: {time_min: 20, cpus_per_task: 1, signal_delay_s: 60}\n"
        "grid:\n"
        f"  - runs:\n      - {{optim.lr: {REFERENCE_LR}}}\n"
        "      - {optim.lr: 0.02, train.epochs: 1, train.updates_per_epoch: 3}\n"
    )
    return path


def test_grid_through_sbatch_with_a_scancelled_job_requeued_and_resumed_exactly(
    tmp_path, slurm_env, long_reference, capsys
) -> None:
    cluster = slurm_env
    grid, runs = write_grid(tmp_path), tmp_path / "runs"
    assert main(["grid", str(grid), "--runs-dir", str(runs), "--launcher", "slurm", "--partition", "debug"]) == 0
    out = capsys.readouterr().out
    assert out.count("submitted ") == 2, out
    long_dir = runs / "toy" / long_reference.name
    short_dir = next(p for p in (runs / "toy").iterdir() if p != long_dir)
    job_id = json.loads((long_dir / "launch.json").read_text())["job_id"]
    try:
        wait_for(lambda: len(step_losses(long_dir)) >= 10, 300, "the long run to reach update 10 under Slurm", 0.05)
    except AssertionError:
        raise AssertionError(cluster.logs() + "\n" + (long_dir / "launch.json").read_text()) from None
    cluster.run("scancel", "--signal=USR2", job_id)  # Slurm's pre-timeout signal: checkpoint, requeue
    wait_for(lambda: status(long_dir).get("state") == "interrupted" or status(long_dir).get("step", 0) >= 200, 120,
             "the signalled run to stop")  # fmt: skip
    assert status(long_dir)["state"] == "interrupted" and status(long_dir)["step"] < 200, "stopped too late"
    # Slurm holds a requeued job back until its node has dropped the old launch's credential (BeginTime =
    # requeue + cred_expire + 1 s); once that time has passed, start it now instead of at the next periodic
    # scheduling pass (up to a minute). Releasing it earlier races the revocation: "Job credential revoked".
    reason = wait_for(lambda: _pending_reason(cluster, job_id), 120, "the job to be requeued (pending)", 0.2)
    begin = _begin_time(cluster, job_id)
    wait_for(lambda: datetime.now() > begin + timedelta(seconds=1), 2 * CRED_EXPIRE_S + 30, "the requeue hold")
    cluster.run("scontrol", "update", f"JobId={job_id}", "StartTime=now", check=False)  # already started: fine
    sys.__stderr__.write(f"\nrequeued job {job_id} was pending ({reason}) until {begin:%H:%M:%S}; released\n")
    finished = lambda: all(status(d).get("state") == "finished" for d in (long_dir, short_dir))  # noqa: E731
    try:
        wait_for(finished, 600, "both runs to finish (the requeued job to resume)", 0.5)
    except AssertionError:
        queue = cluster.run("squeue", "-o", "%i %T %r %S", check=False).stdout
        raise AssertionError(f"{queue}\n{cluster.logs()}\n{(long_dir / 'launch.json').read_text()}") from None
    record = json.loads((long_dir / "launch.json").read_text())
    assert record["launcher"] == "slurm" and record["job_id"] == job_id and record["requeues"] == 1
    assert record["attempts"] == 2 and str(long_dir) in record["stdout"]
    assert step_losses(long_dir) == step_losses(long_reference)
    capsys.readouterr()

    def table_says_done() -> bool:
        assert main(["grid", str(grid), "--runs-dir", str(runs), "--status"]) == 0
        return capsys.readouterr().out.splitlines()[-1] == "2 done"

    wait_for(table_says_done, 120, "the status table to say 2 done", 1.0)


def test_slurm_settings_are_checked_before_submitting(tmp_path, slurm_env, capsys) -> None:
    grid, runs = write_grid(tmp_path), tmp_path / "runs"
    assert main(["grid", str(grid), "--runs-dir", str(runs), "--launcher", "slurm"]) == 2
    assert "no Slurm partition: pass --partition" in capsys.readouterr().err
    assert main(["grid", str(grid), "--runs-dir", str(runs), "--launcher", "slurm", "--partition", "debugg"]) == 2
    assert (
        "partition 'debugg' does not exist on this cluster (have: debug); did you mean 'debug'"
        in capsys.readouterr().err
    )
    assert not runs.exists()


def _pending_reason(cluster, job_id: str) -> str:
    out = cluster.run("squeue", "-h", "-j", job_id, "-o", "%T|%r", check=False).stdout.strip()
    state, _, reason = out.partition("|")
    return reason if state == "PENDING" else ""


def _begin_time(cluster, job_id: str) -> datetime:
    """When Slurm lets the pending job start (squeue's START_TIME for a job held by BeginTime), local time."""
    out = cluster.run("squeue", "-h", "-j", job_id, "-o", "%S", check=False).stdout.strip()
    try:
        return datetime.fromisoformat(out)
    except ValueError:
        return datetime.now()  # no begin time to wait for (N/A): Slurm already let it go


def test_a_two_task_job_trains_one_ddp_run_from_slurms_variables(tmp_path, slurm_env, capsys) -> None:
    """--tasks-per-node 2: srun starts two tasks; each becomes a DDP rank (engine.distributed.adopt_slurm_env)."""
    import torch

    grid, runs = tmp_path / "ddp.yaml", tmp_path / "runs"
    grid.write_text("command: train toy default train.epochs=1 train.updates_per_epoch=3 dataset.batch_size=2\n")
    flags = ["--launcher", "slurm", "--partition", "debug", "--tasks-per-node", "2", "--cpus-per-task", "1"]
    assert main(["grid", str(grid), "--runs-dir", str(runs), *flags]) == 0
    (run_dir,) = (runs / "toy").iterdir()
    try:
        wait_for(lambda: status(run_dir).get("state") in ("finished", "failed"), 300, "the DDP job to finish", 0.5)
    except AssertionError:
        raise AssertionError(slurm_env.logs() + "\n" + (run_dir / "launch.json").read_text()) from None
    assert status(run_dir)["state"] == "finished"
    state = torch.load(run_dir / "checkpoints" / "last" / "state.pt", weights_only=False)
    assert state["world_size"] == 2
    assert (run_dir / "train.log").is_file() and (run_dir / "worker_1.log").is_file()
