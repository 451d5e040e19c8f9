"""Eval-only for MIDI runs (`evaluate_midi_run`, the API `tunesmith eval` calls) and train.epochs=0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.data.midi_prepare import prepare_midi
from tunesmith.errors import UserError
from tunesmith.inference.midi_eval import evaluate_midi_run
from tunesmith.models.midi.synthetic import make_fake_maestro
from tunesmith.tasks import build_solver

SMALL = [
    "model.dim=32",
    "model.num_heads=2",
    "model.num_layers=2",
    "model.max_seq_len=128",
    "dataset.batch_size=4",
    "piano_task.notes_per_record=12",
    "piano_task.tasks=[velocity,velocity_denoise,loud_from_soft]",
    "stage=piano_task",
    "task_eval.max_records=2",
    "train.updates_per_epoch=2",
    "train.epochs=2",
    "generate.num_samples=0",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("midi_eval")
    make_fake_maestro(root / "src", pieces_per_composer=4, seconds=5.0, corrupt=False)
    prepare_midi(root / "src", root / "data")
    runs = root / "runs"
    solver = build_solver("midi", "tiny", [*SMALL, f"data={root / 'data'}"], runs_dir=runs)
    result = solver.fit()
    lines = [json.loads(line) for line in (Path(result["run_dir"]) / "history.jsonl").read_text().splitlines()]
    return {"root": root, "runs": runs, "dir": Path(result["run_dir"]), "history": lines}


def test_eval_reproduces_the_training_evaluation_of_the_same_checkpoint(run) -> None:
    last_eval = [h for h in run["history"] if h["stage"] == "evaluate"][-1]
    signature = run["dir"].name
    report = evaluate_midi_run(signature, split=None, checkpoint="last", num_samples=None, seed=0, runs_dir=run["runs"])
    assert report.epoch == 2 and report.stage == "piano_task"
    assert set(report.splits) == {"valid", "bach", "chopin", "mozart"}
    for split, metrics in report.splits.items():
        for key, value in metrics.items():
            assert value == pytest.approx(last_eval[f"{split}/{key}"], rel=1e-6, abs=1e-9), f"{split}/{key}"
        assert "velocity/velocity_mae" in metrics and "velocity/baseline_mean_velocity_mae" in metrics
        assert "loud_from_soft/note_f1" in metrics and metrics["loud_from_soft/repairs"] == 0
    table = report.table()
    for text in ("velocity_mae", "baseline", "mean ", "note_f1", "mozart", "loss (teacher-forced)"):
        assert text in table
    assert json.loads(json.dumps(report.to_dict()))["splits"]["valid"]["loss"] == report.splits["valid"]["loss"]
    # a numbered checkpoint by epoch, the same weights as last at the end
    by_epoch = evaluate_midi_run(run["dir"], split="valid", checkpoint=2, num_samples=None, seed=0, runs_dir=None)
    assert by_epoch.splits["valid"] == report.splits["valid"]


def test_eval_on_any_split_filter_and_sample_cap(run) -> None:
    common = {"checkpoint": "best", "seed": 0, "runs_dir": run["runs"]}
    test = evaluate_midi_run(run["dir"], split="test", num_samples=None, **common)
    assert list(test.splits) == ["test"] and test.pieces["test"] == 3  # one test piece per composer
    train = evaluate_midi_run(run["dir"], split="train", num_samples=2, **common)
    assert train.pieces["train"] == 2
    chopin = evaluate_midi_run(run["dir"], split="composer~chopin&split=train", num_samples=None, **common)
    assert chopin.pieces["composer~chopin&split=train"] == 2
    sampled = evaluate_midi_run(run["dir"], split="valid", num_samples=1, sampled=True, **common)
    again = evaluate_midi_run(run["dir"], split="valid", num_samples=1, sampled=True, **common)
    assert "velocity/sampled_velocity_mae" in sampled.splits["valid"]
    assert sampled.splits == again.splits  # seeded
    with pytest.raises(UserError, match="not an eval split"):
        evaluate_midi_run(run["dir"], split="liszt", num_samples=None, **common)
    with pytest.raises(UserError, match="no checkpoint of epoch 7"):
        evaluate_midi_run(run["dir"], split=None, checkpoint=7, num_samples=None, seed=0, runs_dir=None)
    with pytest.raises(UserError, match="not there"):
        evaluate_midi_run(run["dir"], split=None, num_samples=None, data=run["root"] / "nope", **common)


def test_zero_epochs_evaluates_the_starting_weights(run, tmp_path) -> None:
    overrides = [*SMALL, f"data={run['root'] / 'data'}", "train.epochs=0", f"init_from={run['dir']}"]
    result = build_solver("midi", "tiny", overrides, runs_dir=tmp_path).fit()
    lines = [json.loads(line) for line in (Path(result["run_dir"]) / "history.jsonl").read_text().splitlines()]
    evaluated = [h for h in lines if h["stage"] == "evaluate"]
    assert len(evaluated) == 1 and evaluated[0]["epoch"] == 0 and result["step"] == 0
    # the weights of init_from's best checkpoint, evaluated as they are
    best = evaluate_midi_run(run["dir"], split="valid", checkpoint="best", num_samples=None, seed=0, runs_dir=None)
    assert evaluated[0]["valid/loss"] == pytest.approx(best.splits["valid"]["loss"], rel=1e-6)
    assert evaluated[0]["valid/velocity/velocity_mae"] == pytest.approx(best.splits["valid"]["velocity/velocity_mae"])
