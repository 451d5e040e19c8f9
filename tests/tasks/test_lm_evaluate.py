"""The LM task's evaluate stage: generation metrics on a fixed subset every N epochs, logged like other
metrics, and ``best`` chosen by any logged metric with its direction."""

from __future__ import annotations

import json

import pytest

from support.evalmodels import TINY_LM_OVERRIDES, make_ast_dir, make_eval_data
from tunesmith.errors import UserError
from tunesmith.tasks import build_solver

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_evaluate")
    dataset, codec = make_eval_data(root)
    return {"data": dataset, "codec": codec, "root": root}


def _solver(data, runs, *extra):
    overrides = [f"data={data['data']}", f"codec={data['codec']}", *TINY_LM_OVERRIDES, *extra]
    return build_solver("lm", "tiny", overrides, runs_dir=runs)


def _history(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def test_evaluate_stage_logs_generation_metrics_and_picks_best_by_fad(data, tmp_path):
    solver = _solver(
        data,
        tmp_path / "runs",
        "train.epochs=3",
        "train.evaluate_every=1",
        "evaluate.metrics=[fad,chroma,clap]",
        "evaluate.num_samples=3",
        "evaluate.duration=0.1",
        "train.best_metric=fad",
    )
    assert solver.cfg.evaluate.num_samples == 3
    result = solver.fit()
    run_dir = solver.run.dir
    assert solver.best_metric == "fad" and solver.best_mode == "min"
    evaluated = [r["evaluate"] for r in result["history"]]
    assert len(evaluated) == 3 and all({"fad", "fad_inf", "chroma"} <= set(e) for e in evaluated)
    assert "clap" not in evaluated[0]  # no CLAP dir: skipped, with the reason in the report
    best_epoch = min(range(3), key=lambda i: evaluated[i]["fad"]) + 1
    assert result["best"] == {"metric": "fad", "value": evaluated[best_epoch - 1]["fad"], "epoch": best_epoch}
    lines = [line for line in _history(run_dir) if line["stage"] == "evaluate"]
    assert [line["epoch"] for line in lines] == [1, 2, 3] and lines[0]["fad"] == evaluated[0]["fad"]
    report = json.loads((run_dir / "evaluate" / "epoch_0002.json").read_text())
    by_name = {r["name"]: r for r in report["results"]}
    assert by_name["fad"]["clips"] == 3 and by_name["fad"]["details"]["frames"] == 3 * 20  # 0.1 s at 200 Hz
    assert "--clap-dir" in by_name["clap"]["skipped"] and "evaluate.clap_dir" in by_name["clap"]["skipped"]
    assert by_name["fad"]["details"]["reference_cached"]  # the fixed subset's statistics: computed once
    first = json.loads((run_dir / "evaluate" / "epoch_0001.json").read_text())
    assert not {r["name"]: r for r in first["results"]}["fad"]["details"]["reference_cached"]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["best"]["metric"] == "fad"


def test_best_metric_direction_and_defaults(data, tmp_path):
    solver = _solver(data, tmp_path / "a", "train.best_metric=clap")
    solver._choose_best_metric()
    assert (solver.best_metric, solver.best_mode) == ("clap", "max")
    solver = _solver(data, tmp_path / "b")
    solver._choose_best_metric()
    assert (solver.best_metric, solver.best_mode) == ("loss", "min")
    solver = _solver(data, tmp_path / "c", "train.best_metric=my_score", "train.best_mode=max")
    solver._choose_best_metric()
    assert (solver.best_metric, solver.best_mode) == ("my_score", "max")
    solver = _solver(data, tmp_path / "d", "train.best_metric=my_score")
    with pytest.raises(UserError, match="train.best_mode=min or max"):
        solver._choose_best_metric()


def test_bad_evaluate_settings_are_refused_before_training(data, tmp_path):
    solver = _solver(data, tmp_path / "e", "evaluate.metrics=[fad,bleu]")
    with pytest.raises(UserError, match="unknown metric"):
        solver.fit()
    ast = make_ast_dir(tmp_path / "ast")
    solver = _solver(data, tmp_path / "f", "evaluate.metrics=[clap]", f"evaluate.clap_dir={ast}")
    with pytest.raises(UserError, match="evaluate.clap: .*'audio-spectrogram-transformer'.*ClapModel"):
        solver.fit()


def test_evaluate_settings_do_not_change_the_run_folder(data, tmp_path):
    plain = _solver(data, tmp_path / "g")
    with_metrics = _solver(data, tmp_path / "g", "evaluate.metrics=[fad]", "train.best_metric=fad")
    assert plain.run.dir == with_metrics.run.dir
