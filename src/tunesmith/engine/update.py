"""One optimizer update's accumulation: micro-batches → scaled backward passes → normalised metrics.

The engine contract: a task's loss is *summed* over the targets of a micro-batch (tokens, or items
for per-item losses). :func:`accumulate` divides it by the number of targets across every
micro-batch of the update and every rank, so accumulation and DDP equal one big batch. Metrics
are sums likewise and are divided by the same count (``x`` by ``x/count`` when the task reports
such a companion); a metric whose key starts with ``_`` is a per-micro-batch value, averaged over
micro-batches and logged under the key without the ``_``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from tunesmith.engine.distributed import all_reduce_sum
from tunesmith.engine.precision import SafeScaler

COUNT_SUFFIX = "/count"


@dataclasses.dataclass
class LossOutput:
    """A micro-batch's loss.

    ``loss_sum``: scalar, the loss summed over the batch's targets (logged as ``loss``; back-propagated
    into the model unless ``per_optimizer`` says otherwise). ``metrics``: sums likewise (see module doc).
    ``per_optimizer``: what to back-propagate per optimizer name (``"model"`` and the task's extra
    modules), each summed over targets; ``None`` means ``{"model": loss_sum}``.
    """

    loss_sum: torch.Tensor
    metrics: dict[str, torch.Tensor | float] = dataclasses.field(default_factory=dict)
    per_optimizer: dict[str, torch.Tensor] | None = None


@dataclasses.dataclass
class BackwardTarget:
    """How one optimizer's loss is back-propagated.

    ``inputs``: restrict the backward pass to these parameters (``None``: every leaf of the graph).
    ``reduce_by_hand``: the parameters are not synced by DDP/FSDP; their gradients are summed over
    ranks after the last micro-batch (so the loss is scaled by 1/targets, not world/targets).
    ``loss_metric``: the metric key under which this optimizer's loss is logged (``"loss"`` for the model).
    """

    scaler: SafeScaler
    inputs: list[torch.Tensor] | None = None
    reduce_by_hand: bool = False
    loss_metric: str = "loss"


@dataclasses.dataclass
class Accumulated:
    """``metrics``: normalised (see module doc); ``total``: targets of the update over all micro-batches
    and ranks; ``optimizers``: the optimizers that received a loss, in the order first seen."""

    metrics: dict[str, float]
    total: float
    optimizers: list[str]


def sync_context(module: nn.Module, is_last: bool) -> contextlib.AbstractContextManager:
    """Gradient sync (DDP all-reduce, FSDP reduce-scatter) only on the last micro-batch of an update."""
    inner = getattr(module, "_orig_mod", module)
    if hasattr(inner, "set_requires_gradient_sync"):  # FSDP2 (fully_shard)
        inner.set_requires_gradient_sync(is_last)
        return contextlib.nullcontext()
    if is_last or not hasattr(inner, "no_sync"):
        return contextlib.nullcontext()
    return inner.no_sync()


def global_count(n: float, device: torch.device) -> float:
    """``n`` summed over ranks (float64 all-reduce)."""
    return float(all_reduce_sum(torch.tensor([float(n)], dtype=torch.float64, device=device)).item())


def normalise_metrics(sums: dict[str, float], total: float) -> dict[str, float]:
    """Summed metrics → means: ``x`` over ``x/count`` when the task reports one, else over ``total`` targets."""
    out = {}
    for key, value in sums.items():
        if key.endswith(COUNT_SUFFIX):
            continue
        denominator = sums.get(key + COUNT_SUFFIX, total)
        if denominator > 0:
            out[key] = value / denominator
    return out


def _as_double(value: torch.Tensor | float, device: torch.device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to(device=device, dtype=torch.float64)
    return torch.tensor(float(value), dtype=torch.float64, device=device)


def accumulate(
    micro_batches: Sequence[Any],
    closure: Callable[[Any], LossOutput],
    *,
    count_targets: Callable[[Any], int],
    targets: dict[str, BackwardTarget],
    sync_module: nn.Module,
    autocast: Callable[[], contextlib.AbstractContextManager],
    world_size: int,
    device: torch.device,
) -> Accumulated:
    """Back-propagate ``closure(batch)`` for every micro-batch, normalised over the update's targets.

    Counts the targets of all micro-batches and ranks first (one all-reduce); then per micro-batch runs
    the closure under autocast and back-propagates each optimizer's loss × world/targets (DDP averages
    gradients over ranks) or × 1/targets (``reduce_by_hand``), through the precision scaler, with
    gradient sync of ``sync_module`` only on the last micro-batch. Afterwards sums the gradients of the
    ``reduce_by_hand`` targets over ranks and all-reduces and normalises the metrics. Stepping the
    optimizers is left to the caller.
    """
    total = global_count(sum(count_targets(b) for b in micro_batches), device)
    denominator = max(total, 1.0)
    zero = lambda: torch.zeros((), device=device, dtype=torch.float64)  # noqa: E731
    sums: dict[str, torch.Tensor] = defaultdict(zero)
    plain: dict[str, list[float]] = defaultdict(list)
    seen: list[str] = []
    for i, batch in enumerate(micro_batches):
        with sync_context(sync_module, i == len(micro_batches) - 1):
            with autocast():
                out = closure(batch)
            losses = out.per_optimizer if out.per_optimizer is not None else {"model": out.loss_sum}
            for name, loss in losses.items():
                target = targets[name]
                scale = (1.0 if target.reduce_by_hand else world_size) / denominator
                target.scaler.scale(loss.float() * scale).backward(inputs=target.inputs)
                if name not in seen:
                    seen.append(name)
        sums["loss"] += _as_double(out.loss_sum, device)
        for name, loss in losses.items():
            key = targets[name].loss_metric
            if key != "loss" and key not in out.metrics:
                sums[key] += loss.detach().double()
        for key, value in out.metrics.items():
            if key.startswith("_"):
                plain[key[1:]].append(float(value))
            else:
                sums[key] += _as_double(value, device)
    if world_size > 1:
        for name in seen:
            if targets[name].reduce_by_hand:
                _sum_gradients(targets[name].inputs or [])
    keys = sorted(sums)
    reduced = all_reduce_sum(torch.stack([sums[k] for k in keys]))
    metrics = normalise_metrics(dict(zip(keys, reduced.tolist(), strict=True)), total)
    metrics.update({k: sum(v) / len(v) for k, v in plain.items()})
    return Accumulated(metrics, total, seen)


def _sum_gradients(params: list[torch.Tensor]) -> None:
    """Sum the gradients of ``params`` over ranks in one flat all-reduce (each rank's loss was already
    divided by the global target count)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = all_reduce_sum(torch.cat([g.reshape(-1) for g in grads]))
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
