"""Generation metrics of the evaluate stage (FAD, CLAP, ...) in `runs info` and `runs compare` (issue 17)."""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.cli import main
from tunesmith.launch.compare import compare_text, load_runs


def fake_run(root: Path, sig: str, lr: float, evaluations: list[dict]) -> Path:
    """A run folder as the engine leaves it: run.json, status.json and history.jsonl with evaluate records."""
    run = root / "lm" / sig
    run.mkdir(parents=True)
    config = {"optim": {"lr": lr}}
    meta = {"task": "lm", "preset": "tiny", "signature": sig, "config": config, "delta": {"optim.lr": lr}}
    (run / "run.json").write_text(json.dumps(meta))
    status = {"state": "done", "epoch": 2, "step": 4, "best": {"metric": "fad", "value": 1.0, "epoch": 2}}
    (run / "status.json").write_text(json.dumps(status))
    lines = [{"stage": "valid", "epoch": 1, "step": 2, "time": 1.0, "loss": 5.0}]
    lines += [
        {"stage": "evaluate", "epoch": e + 1, "step": 2 * (e + 1), "time": 2.0, **m} for e, m in enumerate(evaluations)
    ]
    (run / "history.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return run


def test_compare_shows_the_last_evaluate_metrics(tmp_path) -> None:
    fake_run(tmp_path, "aaaa1111", 1e-3, [{"fad": 9.0, "clap": 0.1}, {"fad": 4.5, "clap": 0.25}])
    fake_run(tmp_path, "bbbb2222", 3e-4, [{"fad": 7.25}])
    text = compare_text(load_runs(["aaaa1111", "bbbb2222"], tmp_path))
    rows = {line.split("  ")[0]: line.split() for line in text.splitlines()}
    assert rows["final evaluate fad"][-2:] == ["4.5", "7.25"]  # the last record of each run
    assert rows["final evaluate clap"][-2:] == ["0.25", "-"]  # a metric one run never logged
    assert not any(name.startswith("final evaluate epoch") or "time" in name for name in rows)


def test_runs_info_prints_an_audio_runs_generation_metrics(tmp_path, capsys) -> None:
    run = fake_run(tmp_path, "cccc3333", 1e-3, [{"fad": 3.0, "fad_inf": 2.5, "clap": 0.3}])
    assert main(["runs", "info", str(run)]) == 0
    out = capsys.readouterr().out
    assert "evaluate   epoch 1: fad=3 fad_inf=2.5 clap=0.3" in out
