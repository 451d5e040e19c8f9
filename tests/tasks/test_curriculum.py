"""Curriculum: stage parsing, the plan, stage chaining through init_from, auto-detection of the current stage."""

from __future__ import annotations

import json
import logging

import pytest

from support.lm import FakeTokenShards, make_codec_dir, synthetic_clips
from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.errors import UserError
from tunesmith.tasks import lm as lm_task
from tunesmith.tasks.curriculum import Stage, current_stage, format_plan, parse_stages, plan, run_curriculum

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread

STAGES = [Stage("short", 0.03, 4, 1), Stage("long", 0.06, 2, 1)]


def test_parse_stages(tmp_path):
    stages = parse_stages("short=10:128:50, 20:64:50")
    assert stages == [Stage("short", 10.0, 128, 50), Stage("stage2", 20.0, 64, 50)]
    spec = tmp_path / "stages.yaml"
    spec.write_text(
        "- {name: a, segment_seconds: 5, batch_size: 8, epochs: 2}\n- {segment_seconds: 9, batch_size: 4, epochs: 1}\n"
    )
    assert parse_stages(str(spec)) == [Stage("a", 5.0, 8, 2), Stage("stage2", 9.0, 4, 1)]
    for bad in ("10:128", "ten:1:1", "10:0:5", ""):
        with pytest.raises(UserError):
            parse_stages(bad)


@pytest.fixture
def setup(tmp_path, monkeypatch):
    codec = make_codec_dir(tmp_path)
    clips, infos = synthetic_clips(num_frames=30)
    shards = FakeTokenShards(clips, infos)
    monkeypatch.setattr(lm_task, "open_token_cache", lambda *a, **k: {"train": shards, "valid": shards})
    overrides = [
        f"data={tmp_path / 'data'}",
        f"codec={codec}",
        "model.transformer.dim=32",
        "model.transformer.num_layers=1",
        "model.conditioner.text_dim=32",
        "model.conditioner.text_layers=1",
        "train.updates_per_epoch=3",
        "train.log.progress=false",
        "train.log.tensorboard=false",
        "generate.num_samples=0",
    ]
    return {"overrides": overrides, "runs": tmp_path / "runs"}


def test_plan_chain_and_auto(setup, capsys, caplog):
    caplog.set_level(logging.INFO)
    from tunesmith.commands.curriculum import add_parser, run

    overrides, runs = setup["overrides"], setup["runs"]
    planned = plan("lm", "tiny", overrides, STAGES, runs)
    assert [p.state for p in planned] == ["pending", "pending"]
    assert f"init_from={planned[0].run_dir}" in planned[1].overrides
    assert "dataset.segment_seconds=0.06" in planned[1].overrides and "dataset.batch_size=2" in planned[1].overrides
    assert planned[0].run_dir != planned[1].run_dir
    assert current_stage(planned) == 1
    assert "pending" in format_plan(planned)

    with pytest.raises(UserError, match="starts from stage 1"):
        run_curriculum("lm", "tiny", overrides, STAGES, runs_dir=runs, start=2)
    run_curriculum("lm", "tiny", overrides, STAGES, runs_dir=runs, stop=1)
    planned = plan("lm", "tiny", overrides, STAGES, runs)
    assert [p.state for p in planned] == ["finished", "pending"]
    assert current_stage(planned) == 2

    import argparse

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["curriculum", "lm", "tiny", *overrides, "--stages", "short=0.03:4:1,long=0.06:2:1", "--runs-dir", str(runs)]
        + ["--dry-run", "--json"]
    )
    assert run(args) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["current"] == 2 and [s["state"] for s in shown["stages"]] == ["finished", "pending"]

    results = run_curriculum("lm", "tiny", overrides, STAGES, runs_dir=runs, auto=True)
    assert len(results) == 1 and results[0]["run_dir"] == str(planned[1].run_dir)
    assert current_stage(plan("lm", "tiny", overrides, STAGES, runs)) is None
    assert run_curriculum("lm", "tiny", overrides, STAGES, runs_dir=runs, auto=True) == []

    # stage 2 started from stage 1's best weights
    second_config = json.loads((planned[1].run_dir / "run.json").read_text())["config"]
    assert second_config["init_from"] == str(planned[0].run_dir)
    loaded = [r.getMessage() for r in caplog.records if r.getMessage().startswith("init_from")]
    assert len(loaded) == 1 and str(ckpt.find_checkpoint(planned[0].run_dir)) in loaded[0]


def test_the_crop_length_has_one_name_for_every_audio_task(tmp_path):
    """The codec's crop is dataset.segment_seconds too (formerly segment_duration); MIDI counts tokens."""
    planned = plan("codec", "tiny", ["data=data/mine"], STAGES, tmp_path)
    assert "dataset.segment_seconds=0.03" in planned[0].overrides
    assert planned[0].run_dir != planned[1].run_dir
    with pytest.raises(UserError, match="dataset.segment_seconds"):
        plan("midi", "tiny", ["data=data/midi"], STAGES, tmp_path)
