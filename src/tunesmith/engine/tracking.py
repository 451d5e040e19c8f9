"""What a run reports: progress bar, history.jsonl, TensorBoard, optional wandb, throughput, MFU."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunesmith.fileio import atomic_write_bytes

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


@dataclasses.dataclass
class EpochMeter:
    """One epoch's running sums: metric sums weighted by targets, targets, data-wait and compute seconds.

    Plain data: a mid-epoch checkpoint stores it, so a resumed epoch reports the means an epoch never
    stopped would (``seconds``: wall time spent in the epoch before this process took it over)."""

    totals: dict[str, float] = dataclasses.field(default_factory=dict)
    weight: float = 0.0
    targets: float = 0.0
    wait: float = 0.0
    compute: float = 0.0
    seconds: float = 0.0

    def add(self, metrics: dict[str, float], targets: float) -> None:
        """One update's normalised ``metrics`` over ``targets`` targets."""
        self.targets += targets
        for key, value in metrics.items():
            if math.isfinite(value):
                self.totals[key] = self.totals.get(key, 0.0) + value * max(targets, 1.0)
        self.weight += max(targets, 1.0)

    def means(self) -> dict[str, float]:
        return {k: v / max(self.weight, 1.0) for k, v in self.totals.items()}

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: dict | None) -> EpochMeter:
        state = state or {}
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in state.items() if k in fields})


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
            rest = f.read(1)
        if rest:  # a new file renamed into place: a kill here keeps the old history whole
            atomic_write_bytes(self.history_path, b"".join(kept))

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


RUN_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def run_log_name(rank: int) -> str:
    """The run folder's plain-text log: ``train.log`` for rank 0, ``worker_K.log`` for rank K."""
    return "train.log" if rank == 0 else f"worker_{rank}.log"


@contextlib.contextmanager
def run_log(run_dir: Path, rank: int) -> Iterator[Path | None]:
    """Append every ``tunesmith`` log record (INFO and up) to the run's text log while the block runs.

    Yields the log's path, or None when the file cannot be opened (a read-only run folder: the run's
    own checks report that)."""
    logger = logging.getLogger("tunesmith")
    path = Path(run_dir) / run_log_name(rank)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        yield None
        return
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(RUN_LOG_FORMAT, "%Y-%m-%d %H:%M:%S"))
    previous = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        handler.close()


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
