"""Evaluation of a MIDI GPT on eval splits, shared by training (``MidiSolver.evaluate``) and
``tunesmith eval`` (:mod:`tunesmith.inference.midi_eval`).

- :func:`teacher_forced_metrics`: next-token loss with the true previous tokens visible (``loss``,
  ``loss_<type>``, ``accuracy``, ``tf_velocity_mae``, per-task ``<task>/loss``).
- :func:`free_running_metrics`: the piano tasks done for real, token by token, as ``generate-midi``
  does, scored against the truth next to constant baselines (:mod:`tunesmith.models.midi.task_eval`).

Both shard their records over ranks and sum their statistics with ``reduce`` (an all-reduce under DDP).
Metric names are ``<split>/<metric>`` and ``<split>/<task>/<metric>``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from tunesmith.models.midi.generation import velocity_values
from tunesmith.models.midi.task_eval import FreeRunStats, TaskEvalConfig, evenly_spaced, summarize
from tunesmith.models.midi.tasks import VELOCITY_TASKS
from tunesmith.models.midi.tokenizer import ALL_TASKS, TOKEN_TYPES, VELOCITY, MidiTokenizer

Reduce = Callable[[torch.Tensor], torch.Tensor]
ALL_SPLITS = "all"


def _identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def lm_loss(
    model: nn.Module, tokens: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy over the targets of ``tokens [B, T]`` where ``mask [B, T-1]``.

    Returns (loss_sum, per-target losses ``[M]``, logits of the targets ``[M, V]``) and their labels are
    ``tokens[:, 1:][mask]``. With every position a target, the head runs on all of them without a gather.
    """
    inputs, labels = tokens[:, :-1], tokens[:, 1:]
    if bool(mask.all()):
        logits = model(inputs).flatten(0, 1)
        labels = labels.flatten()
    else:
        logits = model(inputs, select=mask)
        labels = labels[mask]
    per_target = F.cross_entropy(logits.float(), labels, reduction="none")
    return per_target.sum(), per_target, logits


def eval_split_ids(
    store: Any, eval_splits: dict[str, str], base_split: str, *, log: Any = None
) -> dict[str, list[int]]:
    """Piece ids of ``valid`` (the whole validation split, when it has pieces) and of each named split.

    A named split's filter selects from ``base_split`` unless it sets ``split=`` itself; ``base_split``
    ``"all"`` selects from every split. Named splits that match nothing are left out (and logged).
    """
    from tunesmith.data.midi_prepare import mentions_split

    out: dict[str, list[int]] = {}
    valid = store.select("valid")
    if valid:
        out["valid"] = valid
    for name, where in eval_splits.items():
        split = None if mentions_split(where) or base_split == ALL_SPLITS else base_split
        ids = store.select(split, where, name=f"eval_splits.{name}")
        if not ids:
            if log is not None:
                log.warning(
                    "eval_splits.%s (%r) matches no piece%s: skipped",
                    name,
                    where,
                    f" in split {base_split!r}" if split else "",
                )
            continue
        out[name] = ids
    return out


@torch.no_grad()
def teacher_forced_metrics(
    model: nn.Module,
    tok: MidiTokenizer,
    dataset: Dataset,
    *,
    name: str,
    stage: str,
    batch_size: int,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    world_size: int = 1,
    rank: int = 0,
    reduce: Reduce = _identity,
) -> dict[str, float]:
    """Teacher-forced metrics of one eval split (see the module docstring); empty for an empty split."""
    from tunesmith.data.datasets.midi import collate
    from tunesmith.engine.precision import input_dtype, move_batch
    from tunesmith.engine.sampler import valid_batches

    types = torch.from_numpy(tok.token_types.astype(np.int64)).to(device)
    values = torch.from_numpy(velocity_values(tok)).to(device).float()
    is_velocity_token = types == VELOCITY
    velocity_task_ids = torch.tensor([ALL_TASKS.index(t) for t in VELOCITY_TASKS], device=device)
    n_types, n_tasks = len(TOKEN_TYPES), len(ALL_TASKS)
    # [loss, count, correct, vel_abs_err, vel_count, type loss × n_types, type count × n_types,
    #  task loss × n_tasks, task count × n_tasks]
    sums = torch.zeros(5 + 2 * n_types + 2 * n_tasks, dtype=torch.float64, device=device)
    for keys in valid_batches(len(dataset), batch_size, world_size=world_size, rank=rank):
        batch = move_batch(collate([dataset[k] for k in keys], tok.pad_id), device, input_dtype(model))
        with autocast():
            _, per_target, logits = lm_loss(model, batch["tokens"], batch["mask"])
        mask = batch["mask"]
        labels = batch["tokens"][:, 1:][mask]
        task = batch["task"][:, None].expand_as(mask)[mask]
        label_type = types[labels]
        per_target = per_target.double()
        sums[0] += per_target.sum()
        sums[1] += len(labels)
        sums[2] += (logits.argmax(-1) == labels).sum()
        velocity_targets = (label_type == VELOCITY) & torch.isin(task, velocity_task_ids)
        if velocity_targets.any():
            restricted = logits[velocity_targets].float().masked_fill(~is_velocity_token, float("-inf"))
            predicted = values[restricted.argmax(-1)]
            sums[3] += (predicted - values[labels[velocity_targets]]).abs().sum().double()
            sums[4] += int(velocity_targets.sum())
        sums[5 : 5 + n_types] += torch.zeros(n_types, dtype=torch.float64, device=device).index_add_(
            0, label_type.long(), per_target
        )
        sums[5 + n_types : 5 + 2 * n_types] += torch.bincount(label_type.long(), minlength=n_types).double()
        has_task = task >= 0
        if has_task.any():
            off = 5 + 2 * n_types
            sums[off : off + n_tasks] += torch.zeros(n_tasks, dtype=torch.float64, device=device).index_add_(
                0, task[has_task], per_target[has_task]
            )
            sums[off + n_tasks :] += torch.bincount(task[has_task], minlength=n_tasks).double()
    totals = reduce(sums).cpu().tolist()
    results: dict[str, float] = {}
    if totals[1] == 0:
        return results
    results[f"{name}/loss"] = totals[0] / totals[1]
    results[f"{name}/accuracy"] = totals[2] / totals[1]
    results[f"{name}/targets"] = totals[1]
    if totals[4]:
        results[f"{name}/tf_velocity_mae"] = totals[3] / totals[4]
    for k, type_name in enumerate(TOKEN_TYPES):
        count = totals[5 + n_types + k]
        if count:
            results[f"{name}/loss_{type_name}"] = totals[5 + k] / count
    if stage == "piano_task":
        off = 5 + 2 * n_types
        for k, task_name in enumerate(ALL_TASKS):
            count = totals[off + n_tasks + k]
            if count:
                results[f"{name}/{task_name}/loss"] = totals[off + k] / count
    return results


@torch.no_grad()
def free_running_metrics(
    model: nn.Module,
    tok: MidiTokenizer,
    dataset: Any,
    *,
    name: str,
    tasks: list[str],
    cfg: TaskEvalConfig,
    mean_velocity: float,
    world_size: int = 1,
    rank: int = 0,
    reduce: Reduce = _identity,
    uncond_prefix: np.ndarray | None = None,
) -> dict[str, float]:
    """Free-running task metrics of one eval split of piano-task records (a ``PianoTaskRecords``):
    up to ``cfg.max_records`` records per task, spread evenly over the split, sharded over ranks.
    ``uncond_prefix``: a conditioned model's prefix with every field dropped (for ``cfg.guidance``)."""
    from tunesmith.engine.sampler import VALID_SEED

    stats = FreeRunStats(tok, tasks, cfg, mean_velocity, uncond_prefix)
    was_training = model.training
    model.eval()
    for task in tasks:
        chosen = evenly_spaced(dataset.task_indices(task), cfg.max_records)
        for index in chosen[rank::world_size]:
            stats.add(model, dataset.record((index, VALID_SEED)), record_seed=index)
    model.train(was_training)
    device = next(model.parameters()).device
    totals = reduce(torch.tensor(stats.vector(), dtype=torch.float64, device=device)).cpu().tolist()
    stats.load_vector(totals)
    return {f"{name}/{key}": value for key, value in summarize(stats.sums, tasks, cfg).items()}


def split_summary_lines(results: dict[str, float], tasks: list[str]) -> list[str]:
    """One human line per eval split: loss, and each task's free-running metric with its baseline."""
    splits = sorted({key.split("/", 1)[0] for key in results}, key=lambda s: (s != "valid", s))
    lines = []
    for split in splits:
        parts = []
        if f"{split}/loss" in results:
            parts.append(f"loss {results[f'{split}/loss']:.4f}")
        if f"{split}/tf_velocity_mae" in results:
            parts.append(f"tf_velocity_mae {results[f'{split}/tf_velocity_mae']:.2f}")
        for task in tasks:
            p = f"{split}/{task}/"
            if p + "velocity_mae" in results:
                text = f"{task}: mae {results[p + 'velocity_mae']:.2f} corr {results[p + 'velocity_corr']:.2f}"
                if p + "sampled_velocity_mae" in results:
                    text += f" (sampled mae {results[p + 'sampled_velocity_mae']:.2f})"
                text += f" vs mean {results[p + 'baseline_mean_velocity_mae']:.2f}"
                if p + "baseline_copy_velocity_mae" in results:
                    text += f", copy {results[p + 'baseline_copy_velocity_mae']:.2f}"
                parts.append(text)
            elif p + "note_f1" in results:
                text = f"{task}: f1 {results[p + 'note_f1']:.3f} vs copy {results[p + 'baseline_copy_note_f1']:.3f}"
                if p + "pitch_accuracy" in results:
                    text += (
                        f", pitch acc {results[p + 'pitch_accuracy']:.3f} "
                        f"vs copy {results[p + 'baseline_copy_pitch_accuracy']:.3f}"
                    )
                if p + "onset_mae" in results:
                    text += (
                        f", onset mae {1000 * results[p + 'onset_mae']:.1f} ms "
                        f"vs copy {1000 * results[p + 'baseline_copy_onset_mae']:.1f} ms"
                    )
                parts.append(text + f", repairs {int(results[p + 'repairs'])}")
        if parts:
            lines.append(f"{split}: " + " | ".join(parts))
    return lines
