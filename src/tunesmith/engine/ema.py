"""Exponential moving average of weights, bias-corrected (as Adam corrects its moments)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class EMA:
    """Shadow weights ``s_t = d s_{t-1} + (1-d) w_t`` from ``s_0 = 0``; read as ``s_t / (1 - d^t)``.

    The correction makes the average an unbiased weighting of the weights seen so far,
    so early in training it is not pulled towards zero or the initial weights.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.num_updates = 0
        self.shadow = {
            name: torch.zeros_like(p, dtype=torch.float32) for name, p in model.named_parameters() if p.requires_grad
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        for name, p in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].mul_(self.decay).add_(p.detach().float(), alpha=1.0 - self.decay)

    def averaged(self) -> dict[str, torch.Tensor]:
        """Bias-corrected averages, by parameter name."""
        correction = 1.0 - self.decay**self.num_updates if self.num_updates else 1.0
        return {name: s / correction for name, s in self.shadow.items()}

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[None]:
        """Temporarily load the averaged weights into ``model`` (e.g. for validation)."""
        if self.num_updates == 0:
            yield
            return
        params = dict(model.named_parameters())
        backup = {name: params[name].detach().clone() for name in self.shadow}
        with torch.no_grad():
            for name, value in self.averaged().items():
                params[name].copy_(value.to(params[name].dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for name, value in backup.items():
                    params[name].copy_(value)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        for name, value in state["shadow"].items():
            if name in self.shadow:
                self.shadow[name].copy_(value)
