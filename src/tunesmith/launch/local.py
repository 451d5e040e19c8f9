"""The local launcher: grid runs as ``python -m tunesmith train ...`` processes on this machine, one
after another or N at once, each with its own GPU (``CUDA_VISIBLE_DEVICES``) when there are GPUs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tunesmith.errors import UserError
from tunesmith.launch.plan import PlannedRun
from tunesmith.launch.state import now, update_launch

JOB_LOG = "launcher.log"  # the process's stdout and stderr, next to train.log


def train_command(run: PlannedRun) -> list[str]:
    return [sys.executable, "-m", "tunesmith", "train", *run.train_args()]


def gpu_slots(parallel: int, gpus: list[str] | None) -> list[str | None]:
    """One ``CUDA_VISIBLE_DEVICES`` value per concurrent job: the given GPU ids, else every visible GPU
    when more than one job runs at once, else None (the job sees what this process sees)."""
    if gpus is None and parallel > 1:
        import torch

        count = torch.cuda.device_count()
        gpus = [str(i) for i in range(count)] if count else None
    if gpus is None:
        return [None] * parallel
    if parallel > len(gpus):
        raise UserError(
            f"{parallel} jobs at once need {parallel} GPUs, {len(gpus)} available ({','.join(gpus)}); "
            "lower --parallel or pass --gpus"
        )
    return list(gpus[:parallel])


def launch_local(
    runs: list[PlannedRun],
    *,
    parallel: int = 1,
    gpus: list[str] | None = None,
    echo: Callable[[str], None] = print,
    poll_s: float = 0.2,
) -> dict[str, int]:
    """Run each of ``runs`` to its end (resuming the ones that have checkpoints); signature → exit code.

    Ctrl-C reaches the jobs too (same process group): each stops gracefully, writes its checkpoint and
    is marked interrupted; launching the grid again resumes them."""
    free = gpu_slots(max(1, parallel), gpus)
    queue = list(runs)
    active: dict[str, tuple[PlannedRun, subprocess.Popen, str | None, float]] = {}
    results: dict[str, int] = {}
    while queue or active:
        while queue and free:
            run = queue.pop(0)
            slot = free.pop(0)
            env = dict(os.environ)
            if slot is not None:
                env["CUDA_VISIBLE_DEVICES"] = slot
            run.run_dir.mkdir(parents=True, exist_ok=True)
            cmd = train_command(run)
            with open(run.run_dir / JOB_LOG, "ab") as log:
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            update_launch(
                run.run_dir,
                launcher="local",
                job_id=str(proc.pid),
                pid=proc.pid,
                host=socket.gethostname(),
                gpu=slot,
                stdout=str(run.run_dir / JOB_LOG),
                command=cmd,
                started_at=now(),
                exit_code=None,
            )
            echo(f"started  {run.signature}  {run.label}" + (f"  (GPU {slot})" if slot is not None else ""))
            active[run.signature] = (run, proc, slot, time.perf_counter())
        time.sleep(poll_s)
        for sig, (run, proc, slot, started) in list(active.items()):
            code = proc.poll()
            if code is None:
                continue
            del active[sig]
            free.append(slot)
            results[sig] = code
            update_launch(run.run_dir, exit_code=code, ended_at=now())
            word = {0: "done", 3: "stopped (checkpoint written)"}.get(code, f"failed (exit code {code})")
            echo(f"{word:<8} {sig}  {time.perf_counter() - started:.1f} s  {run.run_dir}")
    return results


def stop_local(record: dict, run_dir: Path) -> bool:
    """SIGTERM to a local job's process (graceful stop: checkpoint, interrupted); whether one was signalled."""
    import signal

    from tunesmith.fileio import pid_alive

    if record.get("host") not in (None, socket.gethostname()):
        return False
    sent = False
    for key in ("train_pid", "pid"):
        pid = record.get(key)
        if pid and pid_alive(int(pid)):
            try:
                os.kill(int(pid), signal.SIGTERM)
                sent = True
            except (ProcessLookupError, PermissionError):
                pass
    return sent
