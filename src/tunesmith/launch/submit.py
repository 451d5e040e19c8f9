"""Sending grid runs to Slurm through submitit (``slurm``), or to submitit's local executor
(``submitit-local``: detached local jobs with the same checkpoint-and-requeue path, used by tests).

Slurm settings are laid over each other: team config (cluster) < grid file ``slurm:`` < command-line
flags. Each run's submitit folder (sbatch script, pickles, the scheduler's stdout/stderr) is
``RUN/submitit``; the job id and log paths are recorded in ``RUN/launch.json``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError
from tunesmith.launch.plan import PlannedRun
from tunesmith.launch.state import now, update_launch
from tunesmith.team import closest

SUBMITIT_DIR = "submitit"
DEFAULTS: dict[str, Any] = {"time_min": 60, "nodes": 1, "signal_delay_s": 90, "max_requeues": 3}


def merge_slurm(*layers: dict[str, Any] | None) -> dict[str, Any]:
    """Later layers win; None values (an unset flag) do not override."""
    out = dict(DEFAULTS)
    for layer in layers:
        out.update({k: v for k, v in (layer or {}).items() if v is not None})
    return out


def slurm_partitions() -> list[str] | None:
    """The cluster's partitions (``sinfo``), None when sinfo is missing or fails."""
    if shutil.which("sinfo") is None:
        return None
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return sorted({line.strip() for line in out.stdout.splitlines() if line.strip()})


def check_slurm(params: dict[str, Any], where: str, partitions: list[str] | None = None) -> None:
    """A partition is set and exists (when sinfo can tell); ``where`` names the config that applies."""
    partition = params.get("partition")
    if not partition:
        raise UserError(
            f"no Slurm partition: pass --partition NAME, or set slurm.partition in the grid file or in the team "
            f"config ({where})"
        )
    partitions = partitions if partitions is not None else slurm_partitions()
    if partitions is not None and partition not in partitions:
        raise UserError(
            f"Slurm partition {partition!r} does not exist on this cluster (have: {', '.join(partitions) or 'none'})"
            f"{closest(partition, partitions)}"
        )
    if shutil.which("sbatch") is None:
        raise UserError(
            "sbatch is not on PATH: the slurm launcher runs on a Slurm login node (or use --launcher local)"
        )


def tasks_per_node(params: dict[str, Any]) -> int:
    return int(params.get("tasks_per_node") or params.get("gpus_per_node") or 1)


def make_executor(kind: str, folder: Path, params: dict[str, Any], job_name: str):
    """A submitit executor for one run: ``slurm`` (sbatch) or ``submitit-local``."""
    try:
        import submitit
    except ImportError:
        raise UserError("the slurm launcher needs submitit: pip install 'tunesmith[cluster]'") from None
    if kind == "submitit-local":
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=int(params["max_requeues"]))
        executor.update_parameters(
            timeout_min=float(params["time_min"]),
            tasks_per_node=1,
            signal_delay_s=int(params["signal_delay_s"]),
        )
        return executor
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=int(params["max_requeues"]))
    sbatch: dict[str, Any] = {
        "job_name": job_name,
        "partition": params["partition"],
        "time": int(params["time_min"]),
        "nodes": int(params["nodes"]),
        "ntasks_per_node": tasks_per_node(params),
        "signal_delay_s": int(params["signal_delay_s"]),
    }
    optional = {
        "account": "account",
        "qos": "qos",
        "constraint": "constraint",
        "cpus_per_task": "cpus_per_task",
        "gpus_per_node": "gpus_per_node",
        "mem_gb": "mem",
        "setup": "setup",
        "additional": "additional_parameters",
    }
    for key, name in optional.items():
        if params.get(key) not in (None, 0, "", [], {}):
            sbatch[name] = params[key]
    executor.update_parameters(**sbatch)
    return executor


def submit_runs(
    runs: list[PlannedRun], kind: str, params: dict[str, Any], echo: Callable[[str], None] = print
) -> list[tuple[PlannedRun, Any]]:
    """Submit one job per run (not waiting); returns (run, submitit job) pairs."""
    from tunesmith.launch.job import TrainJob

    jobs = []
    stop_wait = max(10.0, float(params["signal_delay_s"]) - 10.0)
    for run in runs:
        folder = run.run_dir / SUBMITIT_DIR
        run.run_dir.mkdir(parents=True, exist_ok=True)
        executor = make_executor(kind, folder, params, f"{run.task}-{run.signature}")
        try:
            job = executor.submit(TrainJob(run.train_args(), str(run.run_dir), stop_wait))
        except Exception as err:  # submitit raises plain errors carrying sbatch's message
            raise UserError(f"submitting {run.signature} failed: {err}") from None
        record = {
            "launcher": "slurm" if kind == "slurm" else kind,
            "job_id": str(job.job_id),
            "stdout": str(job.paths.stdout),
            "stderr": str(job.paths.stderr),
            "submitit_folder": str(folder),
            "submitted_at": now(),
            "exit_code": None,
            "requeues": 0,
            "attempts": 0,
        }
        if kind == "submitit-local":
            import socket

            record.update(pid=int(job.job_id), host=socket.gethostname())
        update_launch(run.run_dir, **record)
        echo(f"submitted {run.signature}  job {job.job_id}  {run.label}")
        jobs.append((run, job))
    return jobs


def cancel_job(record: dict, run_dir: Path) -> bool:
    """Stop a recorded job: ``scancel`` for Slurm (its SIGTERM makes the engine checkpoint), SIGTERM to the
    training process for local jobs. Whether something was signalled."""
    from tunesmith.launch.local import stop_local

    if record.get("launcher") == "slurm" and record.get("job_id"):
        if shutil.which("scancel") is None:
            raise UserError("scancel is not on PATH: cancel Slurm jobs from a Slurm login node")
        return subprocess.run(["scancel", str(record["job_id"])], capture_output=True, timeout=60).returncode == 0
    return stop_local(record, run_dir)
