"""Gradient balancer: weight losses by their share of the gradient, not by raw multipliers.

For losses ``L_i(y)`` that depend on the model only through its output ``y``, the balancer takes each
partial gradient ``g_i = dL_i/dy``, tracks a bias-corrected exponential moving average of its norm
``n_i``, and sends back into the model

    G = sum_i total_norm * (w_i / sum_j w_j) * g_i / (eps + n_i)

so that loss ``i`` supplies about ``w_i / sum w`` of the gradient whatever its natural scale (EnCodec,
section 3.4). With ``per_batch_item`` the norm of each item's gradient is averaged over the batch
(independent of the batch size). Norms are averaged over ``torch.distributed`` ranks.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


class GradientBalancer:
    """Combine losses on one output tensor into a single balanced gradient for that tensor."""

    def __init__(
        self,
        weights: dict[str, float],
        total_norm: float = 1.0,
        ema_decay: float = 0.999,
        per_batch_item: bool = True,
        epsilon: float = 1e-12,
    ) -> None:
        if not weights or sum(weights.values()) <= 0:
            raise ValueError(f"balancer weights must be positive and not all zero, got {weights}")
        self.weights = {k: float(v) for k, v in weights.items() if v > 0}
        self.total_norm = total_norm
        self.ema_decay = ema_decay
        self.per_batch_item = per_batch_item
        self.epsilon = epsilon
        self._ema_sum: dict[str, float] = {}
        self._ema_count: dict[str, float] = {}

    def _average(self, name: str, value: float) -> float:
        self._ema_sum[name] = self.ema_decay * self._ema_sum.get(name, 0.0) + value
        self._ema_count[name] = self.ema_decay * self._ema_count.get(name, 0.0) + 1.0
        return self._ema_sum[name] / self._ema_count[name]

    def gradient(self, losses: dict[str, Tensor], output: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Balanced gradient with respect to ``output`` (same shape) and each loss's share of the raw norms.

        ``losses`` must hold exactly the keys with a positive weight; the graph behind ``output`` is kept.
        """
        if set(losses) != set(self.weights):
            raise ValueError(f"balancer expects losses {sorted(self.weights)}, got {sorted(losses)}")
        grads: dict[str, Tensor] = {}
        norms = torch.zeros(len(losses), dtype=torch.float64)
        for i, (name, loss) in enumerate(losses.items()):
            (grad,) = torch.autograd.grad(loss, [output], retain_graph=True)
            if self.per_batch_item:
                norms[i] = grad.reshape(grad.shape[0], -1).norm(dim=1).mean().double()
            else:
                norms[i] = grad.norm().double()
            grads[name] = grad
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            norms = norms.to(output.device)
            dist.all_reduce(norms)
            norms = norms.cpu() / dist.get_world_size()
        averaged = {name: self._average(name, float(norms[i])) for i, name in enumerate(losses)}
        weight_sum = sum(self.weights.values())
        out = torch.zeros_like(output)
        for name, grad in grads.items():
            scale = self.total_norm * self.weights[name] / weight_sum / (self.epsilon + averaged[name])
            out.add_(grad, alpha=scale)
        total = sum(averaged.values()) or 1.0
        return out, {f"ratio_{name}": value / total for name, value in averaged.items()}

    def state_dict(self) -> dict[str, dict[str, float]]:
        """Plain floats (the moving averages), for checkpoints."""
        return {"ema_sum": dict(self._ema_sum), "ema_count": dict(self._ema_count)}

    def load_state_dict(self, state: dict[str, dict[str, float]]) -> None:
        self._ema_sum = {k: float(v) for k, v in state.get("ema_sum", {}).items()}
        self._ema_count = {k: float(v) for k, v in state.get("ema_count", {}).items()}
