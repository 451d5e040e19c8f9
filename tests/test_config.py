"""Typed configs, presets, overrides and run signatures."""

from __future__ import annotations

import pytest

from tunesmith.artifacts.runs import signature
from tunesmith.config import ConfigError, parse_value, resolve
from tunesmith.tasks.toy import ToyConfig


def r(*overrides: str):
    return resolve("toy", ToyConfig, "default", list(overrides))


def test_overrides_are_typed():
    cfg = r("optim.lr=3e-4", "dataset.batch_size=8", "optim.betas=[0.8,0.9]", "train.ema.enabled=true").config
    assert cfg.optim.lr == 3e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.dataset.batch_size == 8 and cfg.optim.betas == [0.8, 0.9] and cfg.train.ema.enabled is True
    assert parse_value("3e-4") == 3e-4 and parse_value("null") is None and parse_value("abc") == "abc"


def test_unknown_key_names_the_closest_valid_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.lrr'; did you mean 'optim\.lr'"):
        r("optim.lrr=1")
    with pytest.raises(ConfigError, match="dataset.batch_size"):
        r("batch_size=4")
    with pytest.raises(ConfigError, match="train.grad_accum"):
        r("train.grad_acum=2")


def test_wrong_type_names_key_value_and_expected_type():
    with pytest.raises(ConfigError, match=r"optim\.lr='fast': expected float"):
        r("optim.lr=fast")
    with pytest.raises(ConfigError, match=r"dataset\.batch_size=2\.5: expected int"):
        r("dataset.batch_size=2.5")
    with pytest.raises(ConfigError, match=r"train\.precision='bf61'.*did you mean 'bf16'"):
        r("train.precision=bf61")
    with pytest.raises(ConfigError, match="is a section"):
        r("optim=3")
    with pytest.raises(ConfigError, match="key=value"):
        r("optim.lr")


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(ConfigError, match="no preset 'defualt'.*did you mean 'default'"):
        resolve("toy", ToyConfig, "defualt", [])


def test_signature_is_stable_and_ignores_non_math_keys():
    base = signature(r())
    assert signature(r()) == base
    assert signature(r("optim.lr=0.1", "dataset.batch_size=8")) == signature(r("dataset.batch_size=8", "optim.lr=0.1"))
    assert signature(r("train.log.every_steps=5", "train.num_workers=2", "train.checkpoint.keep_last=9")) == base
    assert signature(r("optim.lr=0.02")) != base
    assert signature(r("optim.lr=0.01")) == base  # setting a value to its preset default is no change
    assert len(base) == 8


def test_nothing_is_mutated_behind_the_users_back():
    cfg = r("train.grad_accum=4").config
    assert cfg.train.grad_accum == 4  # never divided by the world size


# --------------------------------------------------------------------------- the crop length's one name

# computed with the code before the rename (dataset.segment_duration was the codec's field then)
CODEC_SIGNATURE_SEGMENT_2 = "45cd0422"  # codec tiny data=data/mine dataset.segment_duration=2
CODEC_SIGNATURE_DEFAULT = "74367fad"  # codec tiny data=data/mine


def codec(*overrides: str, preset: str = "tiny"):
    from tunesmith.tasks.codec import CodecConfig

    return resolve("codec", CodecConfig, preset, ["data=data/mine", *overrides])


@pytest.fixture
def fresh_warnings(monkeypatch):
    import tunesmith.config as config

    monkeypatch.setattr(config, "_warned", set())


def test_old_crop_key_is_accepted_with_one_deprecation_message(fresh_warnings, caplog):
    with caplog.at_level("WARNING", logger="tunesmith.config"):
        old = codec("dataset.segment_duration=2")
        codec("dataset.segment_duration=3")
    assert old.config.dataset.segment_seconds == 2.0 and "segment_duration" not in old.data["dataset"]
    messages = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert len(messages) == 1 and "dataset.segment_duration" in messages[0] and "dataset.segment_seconds" in messages[0]
    with pytest.raises(ConfigError, match="same setting"):
        codec("dataset.segment_duration=2", "dataset.segment_seconds=2")


def test_both_crop_key_names_keep_the_signature_of_before_the_rename():
    assert signature(codec("dataset.segment_duration=2")) == CODEC_SIGNATURE_SEGMENT_2
    assert signature(codec("dataset.segment_seconds=2")) == CODEC_SIGNATURE_SEGMENT_2
    assert signature(codec()) == CODEC_SIGNATURE_DEFAULT
    assert signature(codec("dataset.segment_seconds=0.5")) == CODEC_SIGNATURE_DEFAULT  # the preset's value


def test_old_crop_key_in_a_yaml_preset_and_in_a_stored_run(tmp_path, fresh_warnings, caplog):
    import json

    from tunesmith.artifacts.runs import open_run

    preset = tmp_path / "mine.yaml"
    preset.write_text("extends: tiny\ndataset:\n  segment_duration: 2.0\n")
    resolved = codec(preset=str(preset))
    assert resolved.config.dataset.segment_seconds == 2.0
    run = open_run(codec("dataset.segment_seconds=0.75"), tmp_path / "runs")
    run_file = run.dir / "run.json"
    stored = json.loads(run_file.read_text())
    dataset = stored["config"]["dataset"]
    dataset["segment_duration"] = dataset.pop("segment_seconds")  # as the previous version wrote it
    run_file.write_text(json.dumps(stored))
    caplog.clear()
    with caplog.at_level("INFO"):
        again = open_run(codec("dataset.segment_duration=0.75"), tmp_path / "runs")
    assert again.dir == run.dir
    assert not any("new or gone" in r.getMessage() for r in caplog.records)  # the same key, not a new one
    dataset["segment_duration"] = 0.6  # a stored value that differs (a preset default moved) is still caught
    run_file.write_text(json.dumps(stored))
    with pytest.raises(ConfigError, match="dataset.segment_seconds: run has 0.6, now 0.75"):
        open_run(codec("dataset.segment_seconds=0.75"), tmp_path / "runs")
