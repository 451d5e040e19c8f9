"""`tunesmith grid` with the local launcher on real tiny trainings: dry run, launch, idempotent relaunch,
status, cancel and resume, clear, `train --from SIG`, `runs compare`, `runs info --tail`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.grids import ENV, LONG, status, step_losses, wait_for, write_grid
from tunesmith.cli import main

REFERENCE_LR = 0.01  # the long_reference fixture's (tests/launch/conftest.py)

SHORT = ["train.epochs=1", "train.updates_per_epoch=3"]


@pytest.fixture(scope="module")
def env():
    with pytest.MonkeyPatch.context() as mp:
        for key in ("TUNESMITH_NO_PROGRESS", "OMP_NUM_THREADS", "TUNESMITH_THREADS"):
            mp.setenv(key, ENV[key])
        mp.delenv("TUNESMITH_CONFIG", raising=False)
        yield


@pytest.fixture(scope="module")
def launched(tmp_path_factory, env):
    """A 2-run grid launched once with the local launcher (2 at once)."""
    tmp = tmp_path_factory.mktemp("grid")
    grid = write_grid(tmp / "lr.yaml", SHORT, [0.01, 0.03])
    runs = tmp / "runs"
    assert main(["grid", str(grid), "--runs-dir", str(runs), "--dry-run"]) == 0
    assert not runs.exists()  # a dry run creates nothing
    assert main(["grid", str(grid), "--runs-dir", str(runs), "--parallel", "2", "--gpus", "0,1"]) == 0
    return grid, runs


def run_dirs(runs: Path) -> list[Path]:
    return sorted(p.parent for p in runs.glob("toy/*/run.json"))


def grid_json(grid: Path, runs: Path, capsys, *flags: str) -> list[dict]:
    capsys.readouterr()
    assert main(["grid", str(grid), "--runs-dir", str(runs), "--json", *flags]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_dry_run_table_lists_signatures_overrides_and_states(tmp_path, capsys, env) -> None:
    grid = write_grid(tmp_path / "lr.yaml", SHORT, [0.01, 0.03])
    assert main(["grid", str(grid), "--runs-dir", str(tmp_path / "runs"), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["#", "signature", "state", "overrides"]
    assert out[1].split()[2:] == ["pending", "optim.lr=0.01"] and out[2].split()[2:] == ["pending", "optim.lr=0.03"]
    assert "2 would be launched" in out[-1]


def test_launch_runs_every_run_to_the_end_with_its_logs(launched, capsys) -> None:
    grid, runs = launched
    dirs = run_dirs(runs)
    assert len(dirs) == 2
    gpus: set[str] = set()
    for d in dirs:
        assert status(d)["state"] == "finished" and status(d)["step"] == 3
        record = json.loads((d / "launch.json").read_text())
        assert record["launcher"] == "local" and record["exit_code"] == 0 and Path(record["stdout"]).is_file()
        gpus.add(record["gpu"])  # CUDA_VISIBLE_DEVICES of the job: one GPU each
        log = (d / "train.log").read_text()
        assert "epoch 1 step 3" in log and not (d / "worker_1.log").exists()
    assert gpus == {"0", "1"}
    rows = grid_json(grid, runs, capsys, "--status")
    assert [r["state"] for r in rows] == ["done", "done"] and {Path(r["run_dir"]) for r in rows} == set(dirs)
    assert all(r["epoch"] == 1 and r["best"]["metric"] == "loss" and "epoch 1 step 3" in r["last_line"] for r in rows)


def test_launching_again_starts_nothing(launched, capsys) -> None:
    grid, runs = launched
    before = {d: json.loads((d / "launch.json").read_text())["started_at"] for d in run_dirs(runs)}
    capsys.readouterr()
    assert main(["grid", str(grid), "--runs-dir", str(runs)]) == 0
    assert "launching 0 of 2 runs (2 done or running)" in capsys.readouterr().out
    assert {d: json.loads((d / "launch.json").read_text())["started_at"] for d in run_dirs(runs)} == before


def test_status_table(launched, capsys) -> None:
    grid, runs = launched
    capsys.readouterr()
    assert main(["grid", str(grid), "--runs-dir", str(runs), "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:8] == ["#", "signature", "state", "epoch", "step", "best", "job", "overrides"]
    assert lines[1].split()[2:5] == ["done", "1", "3"] and lines[1].split()[6].startswith("local:")
    assert lines[-1] == "2 done"


def test_train_from_a_signature_adds_changes_to_its_stored_config(launched, capsys) -> None:
    _, runs = launched
    source = run_dirs(runs)[0]
    lr = json.loads((source / "run.json").read_text())["config"]["optim"]["lr"]

    def printed(*args: str) -> dict:
        capsys.readouterr()
        assert main(["train", *args, "--runs-dir", str(runs), "--print-config"]) == 0
        return json.loads(capsys.readouterr().out)

    same = printed("--from", source.name)
    assert Path(same["run_dir"]) == source  # no change: that very run
    changed = printed("--from", source.name, "optim.lr=0.5", "model.dim=16")
    direct = printed("toy", "default", *SHORT, f"optim.lr={lr}", "optim.lr=0.5", "model.dim=16")
    assert changed["run_dir"] == direct["run_dir"] != str(source)
    assert changed["delta"] == {"optim.lr": 0.5, "model.dim": 16, "train.epochs": 1, "train.updates_per_epoch": 3}


def test_runs_compare_prints_the_delta_and_writes_overlaid_curves(launched, capsys, tmp_path) -> None:
    _, runs = launched
    a, b = run_dirs(runs)
    page = tmp_path / "cmp.html"
    capsys.readouterr()
    assert main(["runs", "compare", a.name, b.name, "--runs-dir", str(runs), "--html", str(page)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [a.name, b.name]
    assert "optim.lr" in out and "final valid loss" in out and "best" in out
    html = page.read_text()
    assert html.count("<svg") >= 2 and a.name in html and b.name in html and "train loss per update" in html


def test_runs_info_tail_prints_the_log(launched, capsys) -> None:
    _, runs = launched
    d = run_dirs(runs)[0]
    capsys.readouterr()
    assert main(["runs", "info", d.name, "--runs-dir", str(runs), "--tail"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == (d / "train.log").read_text().strip().splitlines()[-1]


def test_clear_deletes_and_relaunches(tmp_path, capsys, env) -> None:
    grid = write_grid(tmp_path / "one.yaml", SHORT, [0.02])
    runs = tmp_path / "runs"
    (row,) = grid_json(grid, runs, capsys, "--dry-run")
    d = Path(row["run_dir"])
    d.mkdir(parents=True)
    (d / "status.json").write_text('{"state": "failed"}')
    (d / "marker").write_text("old")
    capsys.readouterr()
    assert main(["grid", str(grid), "--runs-dir", str(runs), "--clear"]) == 2  # no tty, no --yes: refused
    assert "pass --yes" in capsys.readouterr().err and (d / "marker").exists()
    assert main(["grid", str(grid), "--runs-dir", str(runs), "--clear", "--yes"]) == 0
    assert not (d / "marker").exists() and status(d)["state"] == "finished"


def test_cancel_stops_a_running_grid_and_launching_again_resumes_exactly(tmp_path, capsys, env, long_reference) -> None:
    reference = long_reference
    grid = write_grid(tmp_path / "long.yaml", LONG, [REFERENCE_LR])
    runs = tmp_path / "runs"
    background = subprocess.Popen(
        [sys.executable, "-m", "tunesmith", "grid", str(grid), "--runs-dir", str(runs)],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    run_dir = runs / "toy" / reference.name
    wait_for(lambda: len(step_losses(run_dir)) >= 10, 300, "the run to reach update 10")
    rows = grid_json(grid, runs, capsys, "--status")
    assert rows[0]["state"] == "running" and rows[0]["job"].startswith("local:")
    capsys.readouterr()
    assert main(["grid", str(grid), "--runs-dir", str(runs), "--cancel"]) == 0
    assert "1 job(s) cancelled" in capsys.readouterr().out
    out, _ = background.communicate(timeout=300)
    assert "stopped (checkpoint written)" in out, out
    stopped_at = status(run_dir)["step"]
    assert status(run_dir)["state"] == "interrupted" and 0 < stopped_at < 200, "stopped too late: make the run longer"
    assert grid_json(grid, runs, capsys, "--status")[0]["state"] == "interrupted"
    assert main(["grid", str(grid), "--runs-dir", str(runs)]) == 0  # resumes
    assert status(run_dir)["state"] == "finished"
    assert step_losses(run_dir) == step_losses(reference) and len(step_losses(reference)) == 200
    assert os.path.getsize(run_dir / "train.log") > 0
