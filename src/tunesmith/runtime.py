"""What every command needs from the machine it runs on: the device to use and how to show progress."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import torch

log = logging.getLogger("tunesmith.train")


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` → this rank's CUDA device when there is one, else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def progress_enabled(wanted: bool) -> bool:
    """A live progress bar only when asked for, on a terminal, and not switched off (``TUNESMITH_NO_PROGRESS``
    set to anything but empty or ``0``)."""
    return wanted and sys.stderr.isatty() and os.environ.get("TUNESMITH_NO_PROGRESS", "") in ("", "0")


def format_metrics(metrics: dict[str, Any], keys: tuple[str, ...] | None = None) -> str:
    """``{"loss": 1.234567, "step": 3}`` → ``"loss=1.235 step=3"`` (floats to 4 significant digits)."""
    parts = []
    for key, value in metrics.items():
        if keys and key not in keys:
            continue
        if isinstance(value, float):
            parts.append(f"{key}={value:.4g}")
        elif isinstance(value, int):
            parts.append(f"{key}={value}")
    return " ".join(parts)


class EpochProgress:
    """A rich progress bar for one epoch (or plain log lines when there is no terminal)."""

    def __init__(self, description: str, total: int, *, enabled: bool, log_every: int):
        self.total = total
        self.log_every = max(1, log_every)
        self.description = description
        self.bar = None
        self.count = 0
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[metrics]}"),
                transient=False,
            )
            self.task = self.bar.add_task(description, total=total, metrics="")
            self.bar.start()

    def update(self, metrics: dict[str, Any]) -> None:
        self.count += 1
        text = format_metrics(metrics)
        if self.bar is not None:
            self.bar.update(self.task, advance=1, metrics=text)
        elif self.count % self.log_every == 0 or self.count == self.total:
            log.info("%s %d/%d %s", self.description, self.count, self.total, text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
