"""Graceful stop: SIGINT, SIGTERM and SIGUSR1 (Slurm's pre-timeout signal) end a run at an update boundary.

The first of these signals only sets a flag: the engine finishes the update in progress, writes the
``last`` checkpoint (mid-epoch if need be; the resume continues at that very update), marks the run
``interrupted`` and raises :class:`TrainingStopped`, which the entry point turns into exit code
:data:`STOPPED_EXIT_CODE`. A second Ctrl-C (SIGINT) raises ``KeyboardInterrupt`` at once; a repeated
SIGTERM/SIGUSR1 (torchrun forwards its own) is ignored while the stop is under way.

Under DDP every rank catches the signals and :meth:`StopRequest.agreed` all-reduces the flag at each
update boundary, so all ranks stop after the same update; alone, it is a plain attribute read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

log = logging.getLogger("tunesmith.train")

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
STOPPED_EXIT_CODE = 3  # stopped on request, checkpoint written: the same command resumes


class TrainingStopped(Exception):
    """A run stopped by a signal after writing its checkpoint (``checkpoint``: None when none was due)."""

    exit_code = STOPPED_EXIT_CODE

    def __init__(self, signal_name: str, step: int, checkpoint: str | None) -> None:
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        where = f"checkpoint {checkpoint}" if checkpoint else "the last checkpoint"
        super().__init__(
            f"stopped by {signal_name} after update {step}; {where} holds it: run the same command again to resume"
        )


class StopRequest:
    """The stop flag and its signal handlers (installed only on the main thread, restored on exit)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is None:
            self.signal_name = name
            again = " (Ctrl-C again to stop at once)" if signum == signal.SIGINT else ""
            _notice("WARNING", f"{name} received: finishing the current update, then writing a checkpoint{again}")
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            _notice("INFO", f"{name} received: already stopping")

    def agreed(self, device: torch.device, distributed: bool) -> bool:
        """Whether to stop now. Distributed: a collective (call it on every rank at the same point) that
        is true on all ranks when any rank was signalled."""
        if not distributed:
            return self.signal_name is not None
        import torch

        from tunesmith.engine.distributed import all_reduce_sum

        flag = torch.tensor([1.0 if self.signal_name else 0.0], device=device)
        stop = float(all_reduce_sum(flag)[0]) > 0
        if stop and self.signal_name is None:
            self.signal_name = "a signal on another rank"
        return stop


def _notice(level: str, message: str) -> None:
    """Say something from a signal handler: one ``os.write`` to stderr, in the log's format. A handler runs
    between two bytecodes of the main thread, possibly inside its write to the same stream, where ``logging``
    fails with "reentrant call inside <_io.BufferedWriter name='<stderr>'>" (and prints a traceback). The
    engine logs the stop itself, through every handler, once the update ends."""
    with contextlib.suppress(OSError):  # stderr closed: nothing to say it on
        os.write(2, f"{time.strftime('%H:%M:%S')} {level} {log.name}: {message}\n".encode())


def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: workers leave the stop signals to the main process (a worker killed
    by Ctrl-C or Slurm's SIGTERM would otherwise fail the update the main process is finishing)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
