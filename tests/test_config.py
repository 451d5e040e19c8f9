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
