"""Config values are range-checked at parse time (key, value, allowed range); Literal choices accept
their own spelling; `train --list-presets`; prepare's numeric flags are range-checked (issue 13)."""

from __future__ import annotations

import pytest

from tunesmith.cli import main
from tunesmith.config import ConfigError, from_dict, resolve, to_dict
from tunesmith.tasks.lm import LMTaskConfig
from tunesmith.tasks.midi import MidiConfig
from tunesmith.tasks.toy import ToyConfig


def toy(*overrides: str):
    return resolve("toy", ToyConfig, "default", list(overrides))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=nan", r"optim\.lr=nan: must be a finite number \(>= 0\)"),
        ("optim.lr=inf", r"optim\.lr=inf: must be a finite number"),
        ("optim.lr=-1e-3", r"optim\.lr=-0\.001: must be >= 0"),
        ("dataset.batch_size=0", r"dataset\.batch_size=0: must be >= 1"),
        ("train.epochs=-1", r"train\.epochs=-1: must be >= 0"),
        ("train.seed=9223372036854775808", r"train\.seed=9223372036854775808: must be in \[0, "),
        ("train.seed=-1", r"train\.seed=-1: must be in \[0, "),
        ("model.dropout=1.0", r"model\.dropout=1\.0: must be in \[0, 1\)"),
        ("optim.betas=[0.9,1.5]", r"optim\.betas\[1\]=1\.5: must be in \[0, 1\)"),
        ("train.grad_accum=0", r"train\.grad_accum=0: must be >= 1"),
    ],
)
def test_out_of_range_overrides_name_key_value_and_range(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        toy(override)


def test_model_sections_defined_elsewhere_are_range_checked() -> None:
    with pytest.raises(ConfigError, match=r"model\.transformer\.dropout=1\.5: must be in \[0, 1\)"):
        resolve("lm", LMTaskConfig, "tiny", ["model.transformer.dropout=1.5"])
    with pytest.raises(ConfigError, match=r"model\.num_heads=0: must be >= 1"):
        resolve("midi", MidiConfig, "tiny", ["model.num_heads=0"])


def test_in_range_values_and_every_preset_still_resolve() -> None:
    cfg = toy("train.epochs=0", "train.seed=4611686018427387904", "optim.lr=0").config
    assert cfg.train.epochs == 0 and cfg.optim.lr == 0.0


def test_stored_configs_get_the_same_checks() -> None:
    data = to_dict(ToyConfig())
    data["dataset"]["batch_size"] = 0
    with pytest.raises(ConfigError, match=r"dataset\.batch_size=0: must be >= 1"):
        from_dict(ToyConfig, data)
    data = to_dict(LMTaskConfig())
    data["model"]["conditioner"]["cfg_dropout"] = float("nan")
    with pytest.raises(ConfigError, match=r"model\.conditioner\.cfg_dropout=nan"):
        from_dict(LMTaskConfig, data)


def test_a_literal_choice_accepts_its_own_spelling() -> None:
    for spelled in ("none", "None", "NONE"):
        cfg = resolve("lm", LMTaskConfig, "tiny", [f"model.conditioner.text={spelled}"]).config
        assert cfg.model.conditioner.text == "none"
    with pytest.raises(ConfigError, match="expected one of 'builtin', 't5', 'none'"):
        resolve("lm", LMTaskConfig, "tiny", ["model.conditioner.text=null5"])


def test_train_cli_refuses_bad_values_with_one_line(tmp_path, capsys) -> None:
    for override, key in (("train.epochs=-1", "train.epochs=-1"), ("train.seed=9223372036854775808", "train.seed")):
        assert main(["train", "toy", "default", override, "--runs-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert key in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing was started


def test_train_list_presets(capsys) -> None:
    assert main(["train", "--list-presets"]) == 0
    out = capsys.readouterr().out
    for task in ("codec:", "lm:", "midi:"):
        assert task in out
    assert "tiny" in out and "A tiny piano GPT for tests" in out and "velocity-tiny" in out
    assert main(["train", "midi", "--list-presets"]) == 0
    out = capsys.readouterr().out
    assert "midi:" in out and "lm:" not in out and "gpt2-small" in out
    assert main(["train"]) == 2
    assert "--list-presets" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--num-tracks", "-1", "-1: must be >= 1"),
        ("--num-tracks", "0", "0: must be >= 1"),
        ("--segment", "nan", "must be a finite number"),
        ("--seed", "9223372036854775808", "must be in [0, "),
        ("--sample-rate", "0", "must be in [1000, 384000]"),
        ("--valid-fraction", "1.5", "must be in [0, 1)"),
    ],
)
def test_prepare_flags_are_range_checked(tmp_path, capsys, flag: str, value: str, message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--source", "synthetic", "--out", str(tmp_path / "d"), flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and message in err
    assert not (tmp_path / "d").exists()


def test_prepare_midi_fractions_are_range_checked(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["prepare-midi", str(tmp_path), "--out", str(tmp_path / "o"), "--valid-fraction", "-0.1"])
    assert "must be in [0, 1)" in capsys.readouterr().err
