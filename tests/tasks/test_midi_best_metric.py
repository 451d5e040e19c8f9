"""The `best` checkpoint of a piano-task run can be chosen by a free-running task metric (issue 19), with the
direction known from its name (MAE lower, F1 higher), through the engine's generic train.best_metric."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tunesmith.data.midi_prepare import prepare_midi
from tunesmith.models.midi.synthetic import make_fake_maestro
from tunesmith.tasks import build_solver

SMALL = [
    "model.dim=32",
    "model.num_heads=2",
    "model.num_layers=2",
    "model.max_seq_len=128",
    "dataset.batch_size=4",
    "piano_task.notes_per_record=10",
    "piano_task.tasks=[velocity]",
    "stage=piano_task",
    "task_eval.max_records=2",
    "train.updates_per_epoch=1",
    "train.epochs=3",
    "train.evaluate_every=1",
    "train.checkpoint.keep_last=0",
    "train.log.tensorboard=false",
    "generate.num_samples=0",
]


def test_best_is_chosen_by_the_free_running_velocity_mae(tmp_path: Path) -> None:
    make_fake_maestro(tmp_path / "src", pieces_per_composer=2, seconds=4.0, corrupt=False)
    prepare_midi(tmp_path / "src", tmp_path / "data")
    metric = "valid/velocity/velocity_mae"
    solver = build_solver(
        "midi", "tiny", [*SMALL, f"data={tmp_path / 'data'}", f"train.best_metric={metric}"], runs_dir=tmp_path / "r"
    )
    result = solver.fit()
    run = Path(result["run_dir"])
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    values = {r["epoch"]: r[metric] for r in history if r.get("stage") == "evaluate" and metric in r}
    assert len(values) == 3 and all(math.isfinite(v) for v in values.values())
    best = json.loads((run / "status.json").read_text())["best"]
    expected = min(values, key=lambda e: (values[e], e))  # the first epoch reaching the lowest MAE
    assert best["metric"] == metric and best["epoch"] == expected and best["value"] == values[expected]
    assert solver.best_mode == "min"
