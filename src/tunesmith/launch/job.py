"""The submitit job of one grid run: ``python -m tunesmith train ...`` as a child process, checkpointed
and requeued on Slurm's pre-timeout signal or a preemption.

submitit catches its signal (USR2) in the job process and calls :meth:`TrainJob.checkpoint` on global
rank 0; that forwards SIGUSR1 to the training process (the engine's graceful stop: it finishes the
update, writes the mid-epoch ``last`` checkpoint, marks the run interrupted and exits 3), waits for it,
and hands submitit a fresh job to requeue, which runs the same command: the engine resumes exactly.
The training process ignores USR2 itself (Slurm signals every process of the step), so only the
engine's own stop path runs. Multi-node DDP: every task runs its own child; the child turns Slurm's
variables into torchrun's (tunesmith.engine.distributed.adopt_slurm_env).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import submitit
from submitit.helpers import Checkpointable, DelayedSubmission

from tunesmith.engine.signals import STOPPED_EXIT_CODE
from tunesmith.launch.state import now, read_launch, update_launch


def _ignore_submitit_signal() -> None:
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


class TrainJob(Checkpointable):
    """Callable submitted by submitit: trains (or resumes) one run folder to its end."""

    def __init__(self, train_args: list[str], run_dir: str, stop_wait_s: float = 120.0) -> None:
        self.train_args = list(train_args)
        self.run_dir = str(run_dir)
        self.stop_wait_s = float(stop_wait_s)
        self._proc: subprocess.Popen | None = None
        self._code: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_proc", "_code")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._proc, self._code = None, None

    def _exit_code(self) -> int | None:
        """The training process's exit code, None while it runs. A non-blocking ``waitpid`` of our own
        (Popen.poll takes a lock that the interrupted main loop may hold when checkpoint() runs)."""
        if self._code is None and self._proc is not None:
            try:
                pid, status = os.waitpid(self._proc.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by the other caller between its waitpid and storing the code
                return self._code if self._code is not None else -1
            if pid:
                self._code = os.waitstatus_to_exitcode(status)
        return self._code

    def __call__(self) -> dict[str, Any]:
        env = submitit.JobEnvironment()
        main = env.global_rank == 0
        if main:
            record = read_launch(self.run_dir)
            update_launch(
                self.run_dir,
                job_id=str(env.job_id),
                job_pid=os.getpid(),
                host=socket.gethostname(),
                stdout=str(env.paths.stdout),
                stderr=str(env.paths.stderr),
                attempts=int(record.get("attempts", 0)) + 1,
                started_at=now(),
                exit_code=None,
            )
        cmd = [sys.executable, "-m", "tunesmith", "train", *self.train_args]
        self._proc = subprocess.Popen(cmd, preexec_fn=_ignore_submitit_signal)  # noqa: PLW1509 - no threads here
        if main:
            update_launch(self.run_dir, train_pid=self._proc.pid)
        while (code := self._exit_code()) is None:  # never a blocking wait: checkpoint() polls from a signal handler
            time.sleep(0.5)
        if main:
            update_launch(self.run_dir, exit_code=code, ended_at=now())
        if code == 0:
            return {"run_dir": self.run_dir, "exit_code": 0}
        if code == STOPPED_EXIT_CODE:
            raise RuntimeError(
                f"{self.run_dir}: stopped by a signal; its checkpoint is written and `tunesmith grid FILE` resumes it"
            )
        raise RuntimeError(f"tunesmith train exited with code {code}; see {self.run_dir}/train.log")

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """Stop the training process gracefully (checkpoint written) and requeue the same run."""
        proc = self._proc
        if proc is not None and self._exit_code() is None:
            proc.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + self.stop_wait_s
            while self._exit_code() is None and time.monotonic() < deadline:
                time.sleep(0.2)
        record = read_launch(self.run_dir)
        update_launch(
            self.run_dir,
            requeues=int(record.get("requeues", 0)) + 1,
            requeued_at=now(),
            exit_code=self._exit_code(),
        )
        return DelayedSubmission(TrainJob(self.train_args, self.run_dir, self.stop_wait_s))
