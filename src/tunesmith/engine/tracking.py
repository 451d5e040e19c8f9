"""What a run reports: progress bar, history.jsonl, TensorBoard, optional wandb, throughput, MFU."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("tunesmith.train")

# Dense bf16 peak FLOP/s per device (no sparsity), by a substring of the CUDA device name.
PEAK_BF16_FLOPS: dict[str, float] = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "V100": 125e12,
    "T4": 65e12,
}


def device_peak_flops(device_name: str) -> float | None:
    for key, flops in PEAK_BF16_FLOPS.items():
        if key in device_name:
            return flops
    return None


def progress_enabled(wanted: bool) -> bool:
    return wanted and sys.stderr.isatty() and not os.environ.get("TUNESMITH_NO_PROGRESS")


def format_metrics(metrics: dict[str, Any], keys: tuple[str, ...] | None = None) -> str:
    parts = []
    for key, value in metrics.items():
        if keys and key not in keys:
            continue
        if isinstance(value, float):
            parts.append(f"{key}={value:.4g}")
        elif isinstance(value, int):
            parts.append(f"{key}={value}")
    return " ".join(parts)


class Tracker:
    """Writes history lines and scalars; only the main rank creates one that writes."""

    def __init__(
        self,
        run_dir: Path,
        *,
        enabled: bool,
        tensorboard: bool,
        wandb_mode: str,
        wandb_project: str,
        run_name: str,
        config: dict,
    ):
        self.enabled = enabled
        self.history_path = Path(run_dir) / "history.jsonl"
        self.tb = None
        self.wandb = None
        if not enabled:
            return
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
            except ImportError:
                log.warning("tensorboard is not installed; `pip install tensorboard` for TensorBoard events")
        if wandb_mode != "off":
            try:
                import wandb

                self.wandb = wandb.init(
                    project=wandb_project,
                    name=run_name,
                    id=run_name.replace("/", "-"),
                    resume="allow",
                    mode=wandb_mode,
                    dir=str(run_dir),
                    config=config,
                )
            except ImportError:
                log.warning("wandb is not installed; `pip install 'tunesmith[wandb]'` or set train.log.wandb=off")

    def history_lines(self) -> int:
        if not self.history_path.exists():
            return 0
        with open(self.history_path, "rb") as f:
            return sum(1 for _ in f)

    def truncate_history(self, lines: int) -> None:
        """Drop lines a killed run wrote after its last checkpoint."""
        if not self.enabled or not self.history_path.exists():
            return
        with open(self.history_path, "rb") as f:
            kept = [line for _, line in zip(range(lines), f, strict=False)]
        with open(self.history_path, "wb") as f:
            f.writelines(kept)

    def write(self, stage: str, step: int, epoch: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = {"stage": stage, "epoch": epoch, "step": step, "time": round(time.time(), 3)}
        line.update({k: _plain(v) for k, v in metrics.items()})
        with open(self.history_path, "a") as f:
            f.write(json.dumps(line) + "\n")
        scalars = {k: v for k, v in line.items() if isinstance(v, (int, float)) and k not in ("epoch", "step", "time")}
        if self.tb is not None:
            for key, value in scalars.items():
                if math.isfinite(value):
                    self.tb.add_scalar(f"{stage}/{key}", value, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log({f"{stage}/{k}": v for k, v in scalars.items()}, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


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
