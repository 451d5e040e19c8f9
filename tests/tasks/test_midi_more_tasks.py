"""Quartile and span-infilling piano tasks: their splits, their (reserved) task tokens, and a fine-tuning
run that trains and evaluates them free-running (note F1, 0 repairs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tunesmith.data.midi_prepare import prepare_midi
from tunesmith.errors import UserError
from tunesmith.models.midi.synthetic import make_fake_maestro, synth_piece
from tunesmith.models.midi.tasks import PianoTaskConfig, build_record, check_task_config, partition_target
from tunesmith.models.midi.tokenizer import RESERVED_TASKS, MidiTokenizerConfig, build_tokenizer
from tunesmith.tasks import build_solver

NEW = ["infill_span", "high_quartile", "low_quartile", "loud_quartile", "soft_quartile"]


def test_quartile_and_span_targets() -> None:
    notes = synth_piece("mozart", 8.0, seed=4).take(slice(0, 64))
    rng = np.random.default_rng(0)
    high = partition_target("high_quartile", notes, rng)
    assert np.all(notes.pitch[high] > np.percentile(notes.pitch, 75)) and 0 < high.sum() <= len(notes) // 4 + 1
    soft = partition_target("soft_quartile", notes, rng)
    assert np.all(notes.velocity[soft] < np.percentile(notes.velocity, 25))
    span = partition_target("infill_span", notes, np.random.default_rng(3))
    inside = notes.start[span]
    assert span.any() and not span.all()
    # the masked notes are exactly those in one contiguous time span of a quarter of the slice
    lo, hi = inside.min(), inside.max()
    assert np.array_equal(span, (notes.start >= lo) & (notes.start <= hi))
    assert hi - lo <= 0.25 * (notes.start.max() - notes.start.min()) + 1e-9
    again = partition_target("infill_span", notes, np.random.default_rng(3))
    assert np.array_equal(span, again)


def test_new_tasks_use_reserved_task_tokens() -> None:
    tok = build_tokenizer(MidiTokenizerConfig())
    notes = synth_piece("bach", 4.0, seed=1).take(slice(0, 24))
    cfg = PianoTaskConfig(tasks=NEW)
    check_task_config(cfg)
    for k, task in enumerate(RESERVED_TASKS):
        rec = build_record(tok, task, notes, cfg, np.random.default_rng(0), 1000)
        assert tok.vocab[rec.tokens[1]] == f"Reserved_{k}"
    small = build_tokenizer(MidiTokenizerConfig(reserved_tokens=2))
    with pytest.raises(UserError, match="reserved_tokens >= 5"):
        small.task_id("soft_quartile")


def test_fine_tuning_on_the_new_tasks_evaluates_them(tmp_path) -> None:
    make_fake_maestro(tmp_path / "src", pieces_per_composer=2, seconds=4.0, corrupt=False)
    prepare_midi(tmp_path / "src", tmp_path / "data")
    overrides = [
        f"data={tmp_path / 'data'}",
        "stage=piano_task",
        "piano_task.tasks=[infill_span,high_quartile,loud_quartile]",
        "piano_task.notes_per_record=12",
        "model.dim=32",
        "model.max_seq_len=96",
        "dataset.batch_size=4",
        "train.epochs=1",
        "train.updates_per_epoch=2",
        "task_eval.max_records=2",
        "eval_splits={}",
    ]
    result = build_solver("midi", "tiny", overrides, runs_dir=tmp_path / "runs").fit()
    lines = [json.loads(line) for line in (Path(result["run_dir"]) / "history.jsonl").read_text().splitlines()]
    evaluated = [h for h in lines if h["stage"] == "evaluate"][-1]
    for task in ("infill_span", "high_quartile", "loud_quartile"):
        assert 0 <= evaluated[f"valid/{task}/note_f1"] <= 1
        assert evaluated[f"valid/{task}/repairs"] == 0
        assert f"valid/{task}/baseline_copy_note_f1" in evaluated and f"valid/{task}/loss" in evaluated
    assert (Path(result["run_dir"]) / "samples" / "epoch_0001" / "00_infill_span.mid").is_file()
