"""Precision policy (auto|bf16|fp16|fp32), autocast, and a GradScaler that cannot crash.

fp16 uses one ``torch.amp.GradScaler`` per optimizer. torch raises "No inf checks were
recorded for this optimizer" when ``scaler.step`` meets an optimizer none of whose
parameters received a gradient (frozen or unused parameters, a LoRA-only step that
missed a module); :class:`SafeScaler` skips such a step instead.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return False  # CPU bf16 autocast works but is slower than fp32 on most CPUs


def precision_problems(precision: str, device: torch.device) -> list[str]:
    """``train.precision=bf16`` on a GPU without bf16 → the fix (fp16 with the loss scaler, or auto); checked by
    the engine before anything is built, for every task. CPU autocast runs bf16, so CPU is never refused."""
    if precision == "bf16" and device.type == "cuda" and not bf16_supported(device):
        name = torch.cuda.get_device_name(device) if torch.cuda.is_available() else "this GPU"
        return [
            f"train.precision=bf16: {name} does not support bfloat16; use train.precision=fp16 "
            "(mixed precision with the loss scaler) or train.precision=auto"
        ]
    return []


def resolve_precision(policy: str, device: torch.device) -> str:
    """``auto`` → bf16 where the device supports it, else fp16 on older GPUs, fp32 on CPU."""
    if policy == "auto":
        if device.type == "cuda":
            return "bf16" if bf16_supported(device) else "fp16"
        return "fp32"
    if policy not in DTYPES:
        raise ValueError(f"precision must be auto, bf16, fp16 or fp32, got {policy!r}")
    return policy


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def input_dtype(module: nn.Module) -> torch.dtype:
    """The dtype floating inputs must have for ``module``: that of its first floating parameter."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def move_batch(batch, device: torch.device, float_dtype: torch.dtype | None = None):
    """Move every tensor in a nested batch to ``device``; floating tensors cast to ``float_dtype``.

    This is the one place inputs are cast: to the module's parameter dtype (see
    :func:`input_dtype`), so a bf16 model never meets float32 audio and vice versa.
    """
    if isinstance(batch, torch.Tensor):
        if float_dtype is not None and batch.is_floating_point() and batch.dtype != float_dtype:
            return batch.to(device=device, dtype=float_dtype, non_blocking=True)
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_batch(v, device, float_dtype) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and not isinstance(batch, str):
        moved = [move_batch(v, device, float_dtype) for v in batch]
        return type(batch)(moved) if isinstance(batch, tuple) and not hasattr(batch, "_fields") else moved
    return batch


def has_grads(optimizer: torch.optim.Optimizer) -> bool:
    return any(p.grad is not None for group in optimizer.param_groups for p in group["params"])


class SafeScaler:
    """Loss scaling for fp16; a pass-through for bf16/fp32. Checkpointable."""

    def __init__(self, precision: str, device: torch.device, init_scale: float = 2.0**16):
        self.enabled = precision == "fp16"
        self.scaler = torch.amp.GradScaler(device.type, init_scale=init_scale) if self.enabled else None

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return self.scaler.scale(loss) if self.enabled else loss

    def unscale_(self, optimizer: torch.optim.Optimizer) -> bool:
        """Unscale grads in place; False when the optimizer has no grads at all (step must be skipped)."""
        if not has_grads(optimizer):
            return False
        if self.enabled:
            self.scaler.unscale_(optimizer)
        return True

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """Step unless grads are inf/nan (fp16) or absent; True when the parameters changed."""
        if not has_grads(optimizer):
            return False
        if not self.enabled:
            optimizer.step()
            return True
        scale_before = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        return self.scaler.get_scale() >= scale_before  # the scale drops exactly when the step was skipped

    def get_scale(self) -> float:
        return float(self.scaler.get_scale()) if self.enabled else 1.0

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.enabled else {}

    def load_state_dict(self, state: dict) -> None:
        if self.enabled and state:
            self.scaler.load_state_dict(state)


def no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Inside an autocast region: run the enclosed ops in their own dtypes (as outside autocast)."""
    return torch.autocast(device_type=device.type, enabled=False)
