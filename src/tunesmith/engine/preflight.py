"""Checks before training: the task's own (data, settings), then those that need the built model.

Each check returns a list of problems, each naming what is wrong and the fix; :func:`raise_problems`
turns a non-empty list into one :class:`PreflightError` that lists them all.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from tunesmith.errors import UserError


class PreflightError(UserError):
    """A problem found before training started; the message lists every problem and its fix."""


def raise_problems(problems: list[str]) -> None:
    if problems:
        raise PreflightError("preflight found problems:\n  - " + "\n  - ".join(problems))


def run_folder_problems(run_dir: Path, rank: int, n_params: int) -> list[str]:
    """The run folder is writable and has room for a checkpoint of ``n_params`` parameters
    (fp32 weights + two Adam moments, twice while a checkpoint is replaced)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-probe-{rank}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        return [f"run folder {run_dir} is not writable ({err}); pass --runs-dir"]
    need = n_params * 4 * 3 * 2
    free = shutil.disk_usage(run_dir).free
    if free < need:
        return [f"only {free / 1e9:.2f} GB free under {run_dir}, a checkpoint needs ~{need / 1e9:.2f} GB"]
    return []


def cuda_memory_problems(
    model: nn.Module,
    device: torch.device,
    batch_size: int,
    grad_accum: int,
    probe: Callable[[int], None],
) -> list[str]:
    """Static estimate (weights, grads, Adam: 16 bytes per trainable parameter), then a real probe.

    ``probe(size)`` runs forward and backward on one training micro-batch of ``size`` items; on out of
    memory the size is halved until it fits, so the message can suggest a batch and accumulation with
    the same global batch instead of an OOM an hour later.
    """
    free, _ = torch.cuda.mem_get_info(device)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    static = n_params * 16
    if static > free:
        return [
            f"the model's weights, gradients and optimizer state need ~{static / 2**30:.1f} GiB but only "
            f"{free / 2**30:.1f} GiB is free: use train.fsdp=true with several GPUs, or a smaller preset"
        ]
    fits = largest_fitting_batch(model, device, batch_size, probe)
    if fits >= batch_size:
        return []
    if fits == 0:
        return ["even one item per micro-batch runs out of GPU memory: use a smaller preset or train.fsdp=true"]
    new_accum = -(-batch_size * grad_accum // fits)
    gpu = torch.cuda.get_device_name(device)
    return [
        f"dataset.batch_size={batch_size} runs out of GPU memory on {gpu}; "
        f"dataset.batch_size={fits} fits: use dataset.batch_size={fits} train.grad_accum={new_accum} "
        f"for (about) the same global batch"
    ]


def largest_fitting_batch(model: nn.Module, device: torch.device, batch_size: int, probe: Callable[[int], None]) -> int:
    """The largest of batch_size, batch_size/2, ... whose ``probe`` runs without CUDA OOM (0: none).
    Gradients and the torch/CUDA RNG states are restored afterwards."""
    rng = torch.cuda.get_rng_state(device), torch.get_rng_state()
    size = batch_size
    try:
        while size > 0:
            try:
                torch.cuda.reset_peak_memory_stats(device)
                probe(size)
                return size
            except torch.cuda.OutOfMemoryError:
                size //= 2
            finally:
                for p in model.parameters():
                    p.grad = None
                torch.cuda.empty_cache()
        return 0
    finally:
        torch.cuda.set_rng_state(rng[0], device)
        torch.set_rng_state(rng[1])


def count_parameters(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())
