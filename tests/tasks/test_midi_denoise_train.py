"""Fine-tuning on the pitch and time denoising tasks: the evaluate stage reports their free-running
metrics next to the copy baselines, the generate stage writes samples, and generate-midi runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.data.midi_prepare import prepare_midi
from tunesmith.inference.midi import generate_notes
from tunesmith.models.midi.generation import SamplingConfig
from tunesmith.models.midi.loading import load_midi_model
from tunesmith.models.midi.synthetic import make_fake_maestro, synth_piece
from tunesmith.tasks import build_solver

TASKS = ["pitch_denoise", "time_denoise"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("denoise_train")
    make_fake_maestro(root / "src", pieces_per_composer=2, seconds=4.0, corrupt=False)
    prepare_midi(root / "src", root / "data")
    return root / "data"


def test_fine_tuning_and_generate_midi_on_denoise_tasks(data, tmp_path) -> None:
    overrides = [
        f"data={data}",
        "stage=piano_task",
        "piano_task.tasks=[pitch_denoise,time_denoise]",
        "piano_task.notes_per_record=8",
        "piano_task.min_notes=4",
        "piano_task.pitch_noise=3",
        "piano_task.time_noise_std=0.02",
        "model.dim=32",
        "model.max_seq_len=80",
        "generate.num_samples=1",
        "dataset.batch_size=4",
        "train.epochs=1",
        "train.updates_per_epoch=2",
        "task_eval.max_records=1",
        "eval_splits={}",
    ]
    result = build_solver("midi", "tiny", overrides, runs_dir=tmp_path / "runs").fit()
    run_dir = Path(result["run_dir"])
    lines = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    evaluated = [h for h in lines if h["stage"] == "evaluate"][-1]
    for task in TASKS:
        assert 0 <= evaluated[f"valid/{task}/note_f1"] <= 1 and evaluated[f"valid/{task}/repairs"] == 0
        assert 0 < evaluated[f"valid/{task}/baseline_copy_note_f1"] <= 1
    assert 0 < evaluated["valid/pitch_denoise/baseline_copy_pitch_accuracy"] < 1
    assert evaluated["valid/time_denoise/baseline_copy_onset_mae"] > 0
    assert (run_dir / "samples" / "epoch_0001" / "00_pitch_denoise.mid").is_file()

    loaded = load_midi_model(run_dir, which="last")
    prompt = synth_piece("bach", 3.0, seed=5).take(slice(0, 10))
    notes, repairs = generate_notes(loaded, prompt, "time_denoise", 0, SamplingConfig(temperature=0.0))
    assert repairs == 0 and len(notes) > 0
    assert notes.start.min() >= prompt.start.min() - 1e-6
