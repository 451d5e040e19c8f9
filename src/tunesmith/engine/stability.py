"""Stability guard: skip non-finite updates, count them, abort past a ratio per epoch."""

from __future__ import annotations

import dataclasses
import logging

log = logging.getLogger(__name__)


class TrainingAborted(RuntimeError):
    """Training became unstable beyond the configured tolerance."""


@dataclasses.dataclass
class StabilityGuard:
    max_nan_ratio_per_epoch: float = 0.1
    max_inf_grad_ratio_per_epoch: float = 0.5
    adaptive_lr: bool = False
    lr_backoff: float = 0.5
    min_lr_factor: float = 0.01
    lr_factor: float = 1.0
    updates: int = 0
    nan_skips: int = 0  # non-finite loss or grad norm: update skipped
    inf_grads: int = 0  # fp16 overflow handled by the loss scaler
    total_nan_skips: int = 0

    def record(self, *, nan: bool = False, inf_grad: bool = False) -> None:
        self.updates += 1
        if nan:
            self.nan_skips += 1
            self.total_nan_skips += 1
            if self.adaptive_lr:
                self.lr_factor = max(self.min_lr_factor, self.lr_factor * self.lr_backoff)
                log.warning("non-finite update skipped; LR factor reduced to %.4g", self.lr_factor)
        if inf_grad:
            self.inf_grads += 1

    def end_epoch(self, epoch: int) -> dict[str, float]:
        """Check this epoch's ratios (raises :class:`TrainingAborted`) and reset the counters."""
        n = max(1, self.updates)
        nan_ratio, inf_ratio = self.nan_skips / n, self.inf_grads / n
        summary = {"nan_skips": self.nan_skips, "inf_grad_skips": self.inf_grads, "lr_factor": self.lr_factor}
        self.updates = self.nan_skips = self.inf_grads = 0
        if nan_ratio > self.max_nan_ratio_per_epoch:
            raise TrainingAborted(
                f"epoch {epoch}: {nan_ratio:.0%} of updates had a non-finite loss or gradient "
                f"(limit train.stability.max_nan_ratio_per_epoch={self.max_nan_ratio_per_epoch}). "
                "Lower optim.lr, raise optim.warmup_steps, use precision=bf16 or fp32, or check the data."
            )
        if inf_ratio > self.max_inf_grad_ratio_per_epoch:
            log.warning(
                "epoch %d: %.0f%% of updates overflowed in fp16 and were skipped by the loss scaler; "
                "consider precision=bf16 or fp32",
                epoch,
                100 * inf_ratio,
            )
        return summary

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            if hasattr(self, key):
                setattr(self, key, value)
