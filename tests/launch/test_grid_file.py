"""Grid files (tunesmith.launch.grid) and their runs' signatures (tunesmith.launch.plan)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.artifacts.runs import signature
from tunesmith.config import resolve
from tunesmith.errors import UserError
from tunesmith.launch.grid import load_grid
from tunesmith.launch.plan import plan
from tunesmith.tasks.toy import ToyConfig

YAML = """\
# a grid of toy runs
command: train toy default train.epochs=1
slurm: {time_min: 5}
grid:
  - product:
      optim.lr: [0.01, 0.02]
      model.dim: [8, 16]
  - zip:
      optim.lr: [0.1, 0.2]
      train.seed: [1, 2]
  - set: {model.dim: 4}
    runs:
      - {optim.lr: 0.3}
      - {optim.warmup_steps: 0, dataset.crop: 8}
"""


def write(tmp_path: Path, text: str, name: str = "grid.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_grid_expands_products_zips_and_explicit_runs(tmp_path: Path) -> None:
    grid = load_grid(write(tmp_path, YAML))
    assert (grid.task, grid.preset, grid.base_overrides) == ("toy", "default", ["train.epochs=1"])
    assert grid.slurm == {"time_min": 5}
    assert [e.overrides for e in grid.entries] == [
        {"optim.lr": 0.01, "model.dim": 8},
        {"optim.lr": 0.01, "model.dim": 16},
        {"optim.lr": 0.02, "model.dim": 8},
        {"optim.lr": 0.02, "model.dim": 16},
        {"optim.lr": 0.1, "train.seed": 1},
        {"optim.lr": 0.2, "train.seed": 2},
        {"model.dim": 4, "optim.lr": 0.3},
        {"model.dim": 4, "optim.warmup_steps": 0, "dataset.crop": 8},
    ]


def test_signatures_are_the_ones_train_computes(tmp_path: Path) -> None:
    runs = plan(load_grid(write(tmp_path, YAML)), tmp_path / "runs")
    assert len({r.signature for r in runs}) == len(runs) == 8
    for run in runs:
        expected = signature(resolve("toy", ToyConfig, "default", run.overrides))
        assert run.signature == expected
        assert run.run_dir == tmp_path / "runs" / "toy" / expected
        assert run.train_args()[:2] == ["toy", "default"] and run.train_args()[-2:] == [
            "--runs-dir",
            str(tmp_path / "runs"),
        ]


def test_python_grid_with_a_function_and_with_blocks(tmp_path: Path) -> None:
    func = write(tmp_path, (
        "COMMAND = 'train toy default train.epochs=1'\n"
        "LRS = [0.01, 0.02, 0.03]\n"
        "def grid():\n"
        "    for lr in LRS:\n"
        "        yield {'optim.lr': lr}\n"
    ), "g1.py")  # fmt: skip
    assert [e.overrides for e in load_grid(func).entries] == [{"optim.lr": x} for x in (0.01, 0.02, 0.03)]
    blocks = write(
        tmp_path, "command = 'toy default'\ngrid = [{'zip': {'optim.lr': [0.1, 0.2], 'model.dim': [4, 8]}}]\n", "g2.py"
    )
    assert [e.overrides for e in load_grid(blocks).entries] == [
        {"optim.lr": 0.1, "model.dim": 4},
        {"optim.lr": 0.2, "model.dim": 8},
    ]


def test_a_typo_in_a_grid_key_names_the_closest_key_and_the_line(tmp_path: Path) -> None:
    bad_override = YAML.replace("      model.dim: [8, 16]", "      model.dimm: [8, 16]")
    with pytest.raises(UserError, match=r"grid.yaml line 7: unknown config key 'model.dimm'; did you mean 'model.dim'"):
        plan(load_grid(write(tmp_path, bad_override)), tmp_path)
    bad_block = YAML.replace("  - zip:", "  - zipp:")
    with pytest.raises(UserError, match=r"grid.yaml line 8: unknown block key 'zipp'; did you mean 'zip'"):
        load_grid(write(tmp_path, bad_block))
    bad_top = YAML.replace("command:", "comand:")
    with pytest.raises(UserError, match=r"grid.yaml line 2: unknown grid key 'comand'; did you mean 'command'"):
        load_grid(write(tmp_path, bad_top))
    py = write(tmp_path, "comand = 'toy default'\n\n\ngrid = [{'runs': [{'optim.lrr': 1}]}]\n", "g.py")
    with pytest.raises(UserError, match=r"g.py line 1: unknown grid key 'comand'; did you mean 'command'"):
        load_grid(py)
    py.write_text("command = 'toy default'\n\n\ngrid = [{'runs': [{'optim.lrr': 1}]}]\n")
    with pytest.raises(UserError, match=r"g.py line 4: unknown config key 'optim.lrr'; did you mean 'optim.lr'"):
        plan(load_grid(py), tmp_path)


def test_two_entries_with_one_signature_are_refused_with_the_reason(tmp_path: Path) -> None:
    runs = "  - runs:\n    - {optim.lr: 0.1}\n    - {optim.lr: 0.1, train.log.every_steps: 5}\n"
    non_math = "command: toy default\ngrid:\n" + runs
    why = r"line 5: run 2 .* same signature .* as run 1 .*train.log.every_steps does not change what the run computes"
    with pytest.raises(UserError, match=why):
        plan(load_grid(write(tmp_path, non_math)), tmp_path)
    default = "command: toy default\ngrid:\n  - product: {optim.lr: [0.01, 0.02]}\n"  # 0.01 is the preset's lr
    plan(load_grid(write(tmp_path, default)), tmp_path)  # different signatures: fine
    same = "command: toy default optim.lr=0.05\ngrid:\n  - runs: [{model.dim: 32}, {model.dropout: 0.1}]\n"
    with pytest.raises(UserError, match=r"model.(dim|dropout) is set to the preset's default value"):
        plan(load_grid(write(tmp_path, same)), tmp_path)


def test_bad_structure_is_a_user_error(tmp_path: Path) -> None:
    cases = {
        "command: toy\n": "command must be `train TASK PRESET",
        "grid: []\n": "no `command:`",
        "command: toy default\ngrid:\n  - zip: {optim.lr: [1, 2], model.dim: [4]}\n": "zip lists must have the same",
        "command: toy default\ngrid:\n  - product: {optim.lr: 0.1}\n": "needs a non-empty list",
        "command: toy default --fresh\n": "key=value overrides only",
        "command: toy default\nslurm: {partion: x}\n": "did you mean 'partition'",
    }
    for text, message in cases.items():
        with pytest.raises(UserError, match=message):
            load_grid(write(tmp_path, text))
