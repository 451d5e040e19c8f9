"""Augmented training items are pure functions of their sample key: deterministic, well formed, and a run
with augmentation resumes exactly after a kill."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.data.datasets.midi import AugmentedWindows, PianoTaskRecords
from tunesmith.data.midi_prepare import MidiNotesStore, prepare_midi
from tunesmith.engine.solver import Solver
from tunesmith.models.midi.augment import MidiAugmentConfig
from tunesmith.models.midi.synthetic import make_fake_maestro
from tunesmith.models.midi.tasks import PianoTaskConfig
from tunesmith.models.midi.tokenizer import MidiTokenizerConfig, build_tokenizer
from tunesmith.tasks import build_solver

AUG = MidiAugmentConfig(pitch_shift=5, tempo_stretch=0.15)
SMALL = [
    "model.dim=32",
    "model.num_heads=2",
    "model.num_layers=2",
    "model.max_seq_len=96",
    "dataset.context_size=48",
    "dataset.batch_size=4",
    "piano_task.notes_per_record=12",
    "train.updates_per_epoch=2",
    "train.epochs=2",
    "eval_splits={}",
    "generate.num_samples=0",
    "dataset.augment.pitch_shift=5",
    "dataset.augment.tempo_stretch=0.15",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("midi_aug")
    make_fake_maestro(root / "src", pieces_per_composer=2, seconds=4.0, corrupt=False)
    prepare_midi(root / "src", root / "data")
    return root / "data"


def test_augmented_items_are_deterministic_and_well_formed(data) -> None:
    store, tok = MidiNotesStore(data), build_tokenizer(MidiTokenizerConfig())
    ids = store.select("train")
    counts = [len(tok.encode(store.notes(i))) + 2 for i in ids]
    windows = AugmentedWindows(store, ids, tok, 48, AUG, stream_tokens=counts)
    grammar = tok.grammar()
    seen = set()
    for key in [(i, 1000 + i) for i in range(20)]:
        a, b = windows[key], windows[key]
        assert torch.equal(a["tokens"], b["tokens"]) and torch.equal(a["mask"], b["mask"])
        real = a["tokens"][a["tokens"] != tok.pad_id].numpy()
        assert len(a["tokens"]) == 49 and int(a["mask"].sum()) == len(real) - 1
        first = real[0]
        after = tok.bos_id if first != tok.bos_id else first
        assert grammar.violations(real if first != tok.bos_id else real[1:], after=after) == 0
        seen.add(tuple(real[:8].tolist()))
    assert len(seen) > 10  # different keys, different windows
    cfg = PianoTaskConfig(tasks=["velocity", "high_from_low"], notes_per_record=12)
    plain = PianoTaskRecords(store, ids, tok, cfg, 96, train=True)
    augmented = PianoTaskRecords(store, ids, tok, cfg, 96, train=True, augment=AUG)
    evaluation = PianoTaskRecords(store, ids, tok, cfg, 96, train=False, augment=AUG)
    differ = 0
    for key in [(i, 7 + i) for i in range(len(plain))]:
        x, y = augmented.record(key), augmented.record(key)
        assert np.array_equal(x.tokens, y.tokens)
        differ += not np.array_equal(x.tokens, plain.record(key).tokens)
    assert differ >= len(plain) // 2
    assert evaluation.augment is None  # evaluation records are never augmented


def history(run_dir: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (Path(run_dir) / "history.jsonl").read_text().splitlines()]
    return {h["step"]: h["loss"] for h in lines if h["stage"] == "train_step"}


class Killed(Exception):
    pass


@pytest.mark.parametrize("stage", ["pretrain", "piano_task"])
def test_augmented_run_resumes_exactly(data, tmp_path, monkeypatch, stage) -> None:
    overrides = [*SMALL, f"data={data}", f"stage={stage}"]
    reference = build_solver("midi", "tiny", overrides, runs_dir=tmp_path / "a").fit()
    original = Solver.save_checkpoints

    def save_then_die(self, improved):
        original(self, improved)
        if self.epoch == 1:
            raise Killed

    monkeypatch.setattr(Solver, "save_checkpoints", save_then_die)
    with pytest.raises(Killed):
        build_solver("midi", "tiny", overrides, runs_dir=tmp_path / "b").fit()
    monkeypatch.setattr(Solver, "save_checkpoints", original)
    resumed = build_solver("midi", "tiny", overrides, runs_dir=tmp_path / "b").fit()
    assert history(resumed["run_dir"]) == history(reference["run_dir"])
    a = ckpt.load_weights(Path(reference["run_dir"]) / "checkpoints" / "last")
    b = ckpt.load_weights(Path(resumed["run_dir"]) / "checkpoints" / "last")
    assert all(torch.equal(a[k], b[k]) for k in a)
