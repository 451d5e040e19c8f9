"""Checks before training: the task's own (data, settings), then those that need the built model.

Each check returns a list of problems, each naming what is wrong and the fix; :func:`raise_problems`
turns a non-empty list into one :class:`PreflightError` that lists them all.
"""

from __future__ import annotations

import errno
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


# errors of a write that failed for lack of room or permission, not because of a bug
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
# how a full disk shows through serializers that do not raise OSError (torch.save, safetensors)
DISK_FULL_SIGNS = ("no space left on device", "unexpected pos", "file write failed", "storagefull")


def writable_problems(run_dir: Path, rank: int) -> list[str]:
    """The run folder (new or existing: a resume writes checkpoints, history, TensorBoard) is writable."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-probe-{rank}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        reason = err.strerror or str(err)
        return [
            f"run folder {run_dir} is not writable ({reason}); nothing was written or lost: "
            "make it writable, or pass --runs-dir to train elsewhere"
        ]
    return []


def checkpoint_bytes(n_params: int) -> int:
    """About what one checkpoint of ``n_params`` fp32 parameters takes: weights and two Adam moments."""
    return n_params * 4 * 3


def run_folder_problems(run_dir: Path, rank: int, n_params: int) -> list[str]:
    """The run folder is writable and has room for a checkpoint of ``n_params`` parameters
    (fp32 weights + two Adam moments, twice while a checkpoint is replaced)."""
    problems = writable_problems(run_dir, rank)
    if problems:
        return problems
    need = checkpoint_bytes(n_params) * 2
    free = shutil.disk_usage(run_dir).free
    if free < need:
        return [f"only {free / 1e9:.2f} GB free under {run_dir}, a checkpoint needs ~{need / 1e9:.2f} GB"]
    return []


def write_failure(err: BaseException, where: Path, need_bytes: int, kept: str) -> UserError | None:
    """One line for a write that failed for lack of space (anywhere) or permission (under ``where``'s
    parent, the run folder), naming the path, the room needed and what is intact (``kept``); None when
    ``err`` is something else."""
    path = Path(getattr(err, "filename", None) or where)
    full = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
    full = full or (not isinstance(err, OSError) and any(s in str(err).lower() for s in DISK_FULL_SIGNS))
    if full:
        free = _free_bytes(path)
        room = f"~{_size(need_bytes)} needed" + (f", {_size(free)} free" if free is not None else "")
        return UserError(
            f"no space left on the device writing {path} ({room}); nothing was lost: {kept}. "
            "Free some space and run the same command again to resume."
        )
    if isinstance(err, OSError) and err.errno in WRITE_ERRNOS and _inside(path, where.parent):
        reason = err.strerror or str(err)
        return UserError(f"cannot write {path} ({reason}); nothing was lost: {kept}. Make it writable and resume.")
    return None


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies under ``folder`` (a permission error elsewhere is a data problem, not ours)."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def _free_bytes(path: Path) -> int | None:
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


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
