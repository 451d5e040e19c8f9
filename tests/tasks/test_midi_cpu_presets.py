"""The CPU-sized MIDI presets (`piano-cpu` pretraining, `velocity-cpu` piano-task fine-tuning) resolve and
validate, fit each other (fine-tuning loads the pretraining weights), are listed with their description, and
their records fit the model's context whole (a record that does not fit is silently cut to fewer notes)."""

from __future__ import annotations

import dataclasses

import numpy as np

from tunesmith.config import preset_description, resolve
from tunesmith.models.midi.notes import Notes
from tunesmith.models.midi.tasks import build_record
from tunesmith.models.midi.tokenizer import PITCH, VELOCITY, build_tokenizer
from tunesmith.tasks import solver_class


def _resolve(preset: str):
    return resolve("midi", solver_class("midi").config_class, preset, ["data=/nowhere"]).config


def test_cpu_presets_resolve_fit_each_other_and_differ_from_the_smoke_presets(capsys) -> None:
    pre, tune, tiny = _resolve("piano-cpu"), _resolve("velocity-cpu"), _resolve("tiny")
    assert pre.stage == "pretrain" and tune.stage == "piano_task"
    # fine-tuning starts from the pretraining weights: the same model and tokenizer
    assert dataclasses.asdict(tune.model) == dataclasses.asdict(pre.model)
    assert dataclasses.asdict(tune.tokenizer) == dataclasses.asdict(pre.tokenizer)
    assert pre.dataset.context_size <= pre.model.max_seq_len
    assert pre.model.dim > tiny.model.dim and pre.model.num_layers > tiny.model.num_layers
    # real budgets, not the 40-update smoke budget of tiny / velocity-tiny
    assert pre.train.epochs * pre.train.updates_per_epoch == 1200
    assert tune.train.epochs * tune.train.updates_per_epoch == 1600
    assert tiny.train.epochs * tiny.train.updates_per_epoch == 40
    assert tune.optim.lr < pre.optim.lr and tune.optim.warmup_steps < tune.train.updates_per_epoch
    assert set(tune.piano_task.tasks) == {"velocity", "velocity_denoise"}
    for preset in ("piano-cpu", "velocity-cpu"):
        assert "2-core CPU" in preset_description("midi", preset)
    from tunesmith.cli import main

    assert main(["train", "--list-presets", "midi"]) == 0
    listed = capsys.readouterr().out
    assert "piano-cpu" in listed and "velocity-cpu" in listed


def test_velocity_cpu_records_fit_the_context_whole() -> None:
    cfg = _resolve("velocity-cpu")
    tok = build_tokenizer(cfg.tokenizer)
    n = cfg.piano_task.notes_per_record
    rng = np.random.default_rng(0)
    # a sparse line (a TimeShift before every note, gaps up to the longest single shift) and dense chords
    starts = np.cumsum(rng.uniform(0.05, cfg.tokenizer.max_time_shift, n))
    sparse = Notes(rng.integers(40, 90, n), starts, starts + 0.3, rng.integers(20, 120, n))
    onsets = np.repeat(np.arange(n // 4) * 0.5, 4)  # four-note chords
    chords = Notes(rng.integers(40, 90, n), onsets, onsets + 0.4, rng.integers(20, 120, n))
    for notes in (sparse, chords.sorted()):
        for task in cfg.piano_task.tasks:
            record = build_record(tok, task, notes, cfg.piano_task, np.random.default_rng(1), cfg.model.max_seq_len)
            types = tok.types_of(record.tokens)
            source = types[: record.prompt_len]
            assert int((source == PITCH).sum()) == n, (task, len(record.tokens))  # all notes
            assert int((types[record.target_mask] == VELOCITY).sum()) == n  # and every note's velocity
