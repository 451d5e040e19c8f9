"""Eval-only for MIDI runs: the metrics of training's evaluate stage on any checkpoint and any split.

    report = evaluate_midi_run("midi/1a2b3c4d", split=None, checkpoint="best", num_samples=None, seed=0)
    print(report.table())                # or json.dumps(report.to_dict())

Per split: the teacher-forced figures (``loss``, ``accuracy``, ``tf_velocity_mae`` …) and, for a run
fine-tuned on piano tasks, the free-running task metrics next to their constant baselines, computed by
the same functions as training (:mod:`tunesmith.tasks.midi_metrics`) on the run's prepared data.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("tunesmith.midi")

STORE_SPLITS = ("train", "valid", "test")
TF_COLUMNS = ("loss", "accuracy", "tf_velocity_mae")


@dataclasses.dataclass
class MidiEvalReport:
    """What :func:`evaluate_midi_run` measured. ``splits``: split name → ``{metric: value}`` (names as in
    training's history without the split prefix, e.g. ``loss``, ``velocity/velocity_mae``)."""

    run: str
    checkpoint: str
    epoch: int | None
    stage: str
    tasks: list[str]
    data: str
    pieces: dict[str, int]
    splits: dict[str, dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def table(self) -> str:
        """A plain-text table: one block per split, teacher-forced figures, then per task the free-running
        metric(s) of the model beside the baselines measured on the same notes."""
        head = f"checkpoint {self.checkpoint}" + (f" (epoch {self.epoch})" if self.epoch is not None else "")
        lines = [head, f"data       {self.data}", f"stage      {self.stage}"]
        rows: list[tuple[str, ...]] = [("split", "task", "metric", "model", "sampled", "baseline")]

        def add(*cells: str | None) -> None:
            padded = [*cells, *[None] * (len(rows[0]) - len(cells))]
            rows.append(tuple(cell or "" for cell in padded))

        for split, m in self.splits.items():
            for key in TF_COLUMNS:
                if key in m:
                    add(split, "-", key if key.startswith("tf_") else f"{key} (teacher-forced)", _fmt(m[key]))
            for task in self.tasks:
                p = f"{task}/"
                if p + "velocity_mae" in m:
                    base = f"mean {_fmt(m[p + 'baseline_mean_velocity_mae'])}"
                    if p + "baseline_copy_velocity_mae" in m:
                        base += f", copy {_fmt(m[p + 'baseline_copy_velocity_mae'])}"
                    add(
                        split,
                        task,
                        "velocity_mae",
                        _fmt(m[p + "velocity_mae"]),
                        _fmt(m.get(p + "sampled_velocity_mae")),
                        base,
                    )
                    add(
                        split,
                        task,
                        "velocity_corr",
                        _fmt(m[p + "velocity_corr"]),
                        _fmt(m.get(p + "sampled_velocity_corr")),
                        "0 (constant)",
                    )
                elif p + "note_f1" in m:
                    base = f"copy {_fmt(m[p + 'baseline_copy_note_f1'])}"
                    add(split, task, "note_f1", _fmt(m[p + "note_f1"]), _fmt(m.get(p + "sampled_note_f1")), base)
                    add(split, task, "repairs", _fmt(m[p + "repairs"]), _fmt(m.get(p + "sampled_repairs")))
            add(split, "-", "pieces", str(self.pieces.get(split, 0)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for k, row in enumerate(rows):
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
            if k == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.0f}" if float(value).is_integer() and abs(value) >= 1 else f"{value:.4g}"


def resolve_target(target: str | Path, checkpoint: str | int | None, runs_dir: Path | None) -> Path:
    """The checkpoint folder of ``target`` (run signature, run folder or checkpoint/model folder):
    ``checkpoint`` "best" (default), "last" or an epoch number (``checkpoints/epoch_NNNN``)."""
    from tunesmith.artifacts import checkpoint as ckpt
    from tunesmith.artifacts.runs import find_run
    from tunesmith.errors import UserError

    path = Path(target)
    if not path.exists():
        path = find_run(str(target), runs_dir)
    which = "best" if checkpoint is None else str(checkpoint)
    if which.isdigit():
        folder = path / "checkpoints" / f"epoch_{int(which):04d}"
        if not folder.is_dir():
            have = sorted(p.name for p in (path / "checkpoints").glob("epoch_*"))
            raise UserError(
                f"{path}: no checkpoint of epoch {which} (numbered checkpoints: {', '.join(have) or 'none'})"
            )
        return ckpt.find_checkpoint(folder)
    if which not in ("best", "last"):
        raise UserError(f"checkpoint={checkpoint!r}: expected best, last or an epoch number")
    return ckpt.find_checkpoint(path, which=which)


def _split_ids(store: Any, cfg: Any, split: str | None) -> dict[str, list[int]]:
    from tunesmith.data.midi_prepare import parse_filter
    from tunesmith.errors import UserError
    from tunesmith.tasks.midi_metrics import eval_split_ids

    configured = eval_split_ids(store, cfg.eval_splits, cfg.dataset.eval_base_split, log=log)
    if split is None:
        if not configured:
            raise UserError(f"{store.root}: the run's eval splits select no piece (no valid split, no eval_splits)")
        return configured
    if split in configured:
        return {split: configured[split]}
    if split in store.splits() or split in STORE_SPLITS:
        ids = store.select(split)
        if not ids:
            raise UserError(f"split {split!r} of {store.root} has no piece (splits: {', '.join(store.splits())})")
        return {split: ids}
    if any(op in split for op in ("~", "=")):
        parse_filter(split, field_name="split")
        ids = store.select(None, split, name="split")
        if not ids:
            raise UserError(f"split filter {split!r} matches no piece of {store.root}")
        return {split: ids}
    choices = sorted(set(configured) | set(store.splits()))
    raise UserError(
        f"split {split!r}: not an eval split of the run nor a split of its data; choose from "
        f"{', '.join(choices)} or give a filter such as composer~Chopin"
    )


def evaluate_midi_run(
    target: str | Path,
    *,
    split: str | None = None,
    checkpoint: str | int | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    runs_dir: Path | None = None,
    data: str | Path | None = None,
    sampled: bool | None = None,
    device: str = "cpu",
    max_records: int | None = None,
) -> MidiEvalReport:
    """Evaluate a MIDI run's checkpoint (see the module docstring).

    ``split``: an eval split of the run, a split of its data (train/valid/test) or a metadata filter; None:
    the run's configured eval splits. ``num_samples``: at most this many pieces per split (spread evenly).
    ``seed``: the sampling seed of the sampled free-running metrics (``sampled``; default: the run's
    ``task_eval.sampled``). ``data``: another prepared folder than the one the run trained on.
    ``max_records``: records per split and task for the free-running metrics (default: the run's
    ``task_eval.max_records``; 0 = all).
    """
    import torch

    from tunesmith.artifacts import checkpoint as ckpt
    from tunesmith.config import from_dict
    from tunesmith.data.datasets.midi import (
        ConditionedWindows,
        PianoTaskRecords,
        TokenWindows,
        mean_velocity,
        token_stream,
        token_stream_with_offsets,
    )
    from tunesmith.data.midi_prepare import MidiNotesStore
    from tunesmith.errors import UserError
    from tunesmith.models.midi.loading import load_midi_model
    from tunesmith.models.midi.task_eval import evenly_spaced
    from tunesmith.tasks.midi import MidiConfig
    from tunesmith.tasks.midi_metrics import free_running_metrics, teacher_forced_metrics

    if num_samples is not None and num_samples < 1:
        raise UserError(f"num_samples={num_samples}: must be >= 1 (or None for every piece)")
    folder = resolve_target(target, checkpoint, runs_dir)
    stored = ckpt.read_config(folder).get("config") or {}
    loaded = load_midi_model(folder, device=torch.device(device))
    cfg = from_dict(MidiConfig, stored)
    data_dir = Path(data) if data is not None else Path(cfg.data)
    if not str(data_dir) or not (data_dir / "midi_dataset.json").is_file():
        raise UserError(
            f"the prepared data {str(data_dir) or '(none)'} of {folder} is not there (relative paths are read from "
            "the current folder); pass data=DIR"
        )
    store = MidiNotesStore(data_dir)
    splits = _split_ids(store, cfg, split)
    task_cfg = dataclasses.replace(cfg.task_eval, seed=int(seed))
    if sampled is not None:
        task_cfg = dataclasses.replace(task_cfg, sampled=bool(sampled))
    if max_records is not None:
        task_cfg = dataclasses.replace(task_cfg, max_records=int(max_records))
    tok, model = loaded.tokenizer, loaded.model
    tasks = list(loaded.piano_task.tasks) if loaded.stage == "piano_task" else []
    train_mean = mean_velocity(store, store.select("train")) if tasks else 0.0
    results: dict[str, dict[str, float]] = {}
    pieces: dict[str, int] = {}
    for name, ids in splits.items():
        if num_samples is not None:
            ids = evenly_spaced(ids, num_samples)
        pieces[name] = len(ids)
        cond = loaded.conditioner
        if tasks:
            dataset: Any = PianoTaskRecords(
                store, ids, tok, loaded.piano_task, model.cfg.max_seq_len, train=False, conditioner=cond
            )
        elif cond is not None:
            stream, offsets = token_stream_with_offsets(store, ids, tok)
            prefixes = [cond.piece_prefix(store.pieces[i]) for i in ids]
            dataset = ConditionedWindows(
                stream, offsets, prefixes, cond, cfg.dataset.context_size, random_crop=False, pad_id=tok.pad_id
            )
        else:
            stream = token_stream(store, ids, tok)
            dataset = TokenWindows(stream, cfg.dataset.context_size, random_crop=False, pad_id=tok.pad_id)
        metrics = teacher_forced_metrics(
            model,
            tok,
            dataset,
            name=name,
            stage=loaded.stage,
            batch_size=cfg.dataset.batch_size,
            device=torch.device(device),
        )
        if tasks:
            metrics.update(
                free_running_metrics(
                    model,
                    tok,
                    dataset,
                    name=name,
                    tasks=tasks,
                    cfg=task_cfg,
                    mean_velocity=train_mean,
                    uncond_prefix=cond.unconditional() if cond is not None else None,
                )
            )
        results[name] = {key.split("/", 1)[1]: value for key, value in metrics.items()}
    epoch = None
    if (folder / ckpt.STATE).is_file():
        epoch = ckpt.load_state(folder).get("epoch")
    return MidiEvalReport(
        run=str(Path(target)),
        checkpoint=str(folder),
        epoch=epoch,
        stage=loaded.stage,
        tasks=tasks,
        data=str(data_dir),
        pieces=pieces,
        splits=results,
    )
