"""End to end on a fake MAESTRO: pretrain, exact resume, accumulation, piano-task fine-tuning with
per-composer evaluation, and generate-midi from the CLI."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.cli import main
from tunesmith.data.midi_prepare import prepare_midi
from tunesmith.engine.solver import Solver
from tunesmith.errors import UserError
from tunesmith.models.export import export_tunesmith
from tunesmith.models.midi.loading import load_midi_model
from tunesmith.models.midi.notes import read_midi, write_midi
from tunesmith.models.midi.render import find_renderer
from tunesmith.models.midi.synthetic import make_fake_maestro, synth_piece
from tunesmith.tasks import build_solver

SMALL = [
    "model.dim=32",
    "model.num_heads=2",
    "model.num_layers=2",
    "model.max_seq_len=160",
    "dataset.context_size=64",
    "dataset.batch_size=4",
    "piano_task.notes_per_record=16",
    "train.updates_per_epoch=3",
    "train.epochs=2",
    "train.checkpoint.keep_last=0",
    "generate.tokens=24",
    "generate.prompt_tokens=16",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("midi_train")
    make_fake_maestro(root / "src", pieces_per_composer=3, seconds=6.0)
    prepare_midi(root / "src", root / "data")
    return root / "data"


def train(runs: Path, *overrides: str, preset: str = "tiny") -> dict:
    solver = build_solver("midi", preset, [*SMALL, *overrides], runs_dir=runs)
    return solver.fit() | {"solver": solver}


def history(run_dir: Path, stage: str) -> list[dict]:
    lines = [json.loads(line) for line in (Path(run_dir) / "history.jsonl").read_text().splitlines()]
    return [line for line in lines if line["stage"] == stage]


@pytest.fixture(scope="module")
def pretrained(data, tmp_path_factory) -> dict:
    return train(tmp_path_factory.mktemp("runs"), f"data={data}")


def test_pretrain_evaluates_every_composer_split(pretrained) -> None:
    evaluated = history(pretrained["run_dir"], "evaluate")[-1]
    for split in ("valid", "bach", "chopin", "mozart"):
        for key in ("loss", "loss_time", "loss_pitch", "loss_velocity", "loss_duration", "accuracy"):
            assert f"{split}/{key}" in evaluated, f"{split}/{key}"
    # the composer splits partition the valid split: their target counts add up (one unpredicted
    # first token per stream)
    parts = sum(evaluated[f"{c}/targets"] for c in ("bach", "chopin", "mozart"))
    assert parts + 2 == evaluated["valid/targets"]
    weighted = sum(evaluated[f"{c}/loss"] * evaluated[f"{c}/targets"] for c in ("bach", "chopin", "mozart"))
    assert weighted / parts == pytest.approx(evaluated["valid/loss"], rel=0.05)
    # checkpoint: plain config, tokenizer description in the training state
    last = Path(pretrained["run_dir"]) / "checkpoints" / "last"
    state = ckpt.load_state(last)  # weights_only=True
    assert state["extra"]["tokenizer_desc"]["kind"] == "seconds"
    # pretraining windows are full: every update trains on batch × context input tokens
    assert state["extra"]["tokens_seen"] == 6 * 4 * 64
    assert ckpt.read_config(last)["config"]["stage"] == "pretrain"
    assert list((Path(pretrained["run_dir"]) / "samples" / "epoch_0002").glob("*.mid"))


class Killed(Exception):
    pass


def test_resume_after_a_kill_reproduces_the_run(data, tmp_path, monkeypatch, pretrained) -> None:
    original = Solver.save_checkpoints

    def save_then_die(self, improved):
        original(self, improved)
        if self.epoch == 1:
            raise Killed

    monkeypatch.setattr(Solver, "save_checkpoints", save_then_die)
    with pytest.raises(Killed):
        train(tmp_path, f"data={data}")
    monkeypatch.setattr(Solver, "save_checkpoints", original)
    resumed = train(tmp_path, f"data={data}")
    ref_dir, run_dir = Path(pretrained["run_dir"]), Path(resumed["run_dir"])
    assert ref_dir.name == run_dir.name  # same config, same signature
    ref_steps = {h["step"]: h["loss"] for h in history(ref_dir, "train_step")}
    got_steps = {h["step"]: h["loss"] for h in history(run_dir, "train_step")}
    assert got_steps == ref_steps
    a = ckpt.load_weights(ref_dir / "checkpoints" / "last")
    b = ckpt.load_weights(run_dir / "checkpoints" / "last")
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_accumulation_normalises_by_target_count(data, tmp_path) -> None:
    common = [f"data={data}", "stage=piano_task", "piano_task.tasks=[loud_from_soft,velocity]", "train.epochs=1"]
    common += ["train.updates_per_epoch=1", "optim.warmup_steps=0", "optim.lr=0.05", "eval_splits={}"]
    common += ["task_eval.max_records=2"]  # the free-running evaluation is not what this test is about
    big = train(tmp_path / "big", *common, "dataset.batch_size=8", "train.grad_accum=1")
    small = train(tmp_path / "small", *common, "dataset.batch_size=4", "train.grad_accum=2")
    # the loss of the update is the mean over all its target tokens, not a mean of micro-batch means
    loss_big = history(big["run_dir"], "train_step")[0]["loss"]
    loss_small = history(small["run_dir"], "train_step")[0]["loss"]
    assert loss_small == pytest.approx(loss_big, rel=1e-6)
    # and so is the gradient: Adam's first step moves each weight by about ±lr along the gradient's sign
    # (less where |grad| is near eps), so a differently weighted gradient would flip some weights by 2·lr = 0.1
    a = ckpt.load_weights(Path(big["run_dir"]) / "checkpoints" / "last")
    b = ckpt.load_weights(Path(small["run_dir"]) / "checkpoints" / "last")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0.01)
    ds = small["solver"].datasets["train"]
    from tunesmith.engine.sampler import TrainStream

    stream = TrainStream(len(ds), 4, seed=0)
    counts = [sum(int(ds[k]["mask"].sum()) for k in stream.keys(m)) for m in (0, 1)]
    assert counts[0] != counts[1], "make the micro-batches differ in target count"
    # the generate stage ran the first task on a validation piece
    assert (Path(small["run_dir"]) / "samples" / "epoch_0001" / "00_loud_from_soft.mid").is_file()


def test_piano_task_fine_tuning_and_generation(data, pretrained, tmp_path, capsys, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="tunesmith.midi"):
        tuned = train(
            tmp_path,
            f"data={data}",
            f"init_from={pretrained['run_dir']}",
            "task_eval.max_records=2",
            preset="velocity-tiny",
        )
    evaluated = history(tuned["run_dir"], "evaluate")[-1]
    for split in ("valid", "bach", "chopin", "mozart"):
        assert 0 < evaluated[f"{split}/tf_velocity_mae"] < 127
        # free-running task metrics with their baselines, per split (teacher-forced ones are tf_*)
        assert 0 <= evaluated[f"{split}/velocity/velocity_mae"] < 127
        assert -1 <= evaluated[f"{split}/velocity/velocity_corr"] <= 1
        assert 0 < evaluated[f"{split}/velocity/baseline_mean_velocity_mae"] < 127
        assert 0 <= evaluated[f"{split}/velocity_denoise/baseline_copy_velocity_mae"] < 127
        assert evaluated[f"{split}/velocity/records"] == 2
        assert f"{split}: loss" in caplog.text  # the console summary line of the split
        assert f"{split}/velocity/loss" in evaluated and f"{split}/velocity_denoise/loss" in evaluated
        assert set(k.split("/")[1] for k in evaluated if k.startswith(split + "/loss_")) == {
            "loss_velocity",
            "loss_special",
        }
    state = ckpt.load_state(Path(tuned["run_dir"]) / "checkpoints" / "last")
    assert state["extra"]["piano_task"]["tasks"] == ["velocity", "velocity_denoise"]
    capsys.readouterr()
    assert main(["runs", "info", str(tuned["run_dir"])]) == 0  # per-split results of the last evaluation
    info = capsys.readouterr().out
    assert "evaluate   epoch 2 valid: loss" in info and "evaluate   epoch 2 mozart: loss" in info
    assert "velocity: mae" in info and "vs mean" in info

    prompt = write_midi(synth_piece("chopin", 3.0, seed=5), tmp_path / "prompt.mid")
    out = tmp_path / "filled.mid"
    code = main(["generate-midi", tuned["run_dir"], "--prompt", str(prompt), "--task", "velocity", "--out", str(out)])
    assert code == 0
    before, after = read_midi(prompt), read_midi(out)
    assert len(after) == len(before) and torch.equal(torch.from_numpy(after.pitch), torch.from_numpy(before.pitch))
    args = ["generate-midi", tuned["run_dir"], "--prompt", str(prompt), "--task", "velocity_denoise", "--json"]
    capsys.readouterr()
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["notes"] == len(before)
    assert main(["generate-midi", tuned["run_dir"], "--prompt", str(prompt), "--task", "loud_from_soft"]) == 2
    assert "not fine-tuned on the loud_from_soft task" in capsys.readouterr().err
    cont = tmp_path / "cont.mid"
    args = ["generate-midi", pretrained["run_dir"], "--prompt", str(prompt), "--tokens", "40", "--out", str(cont)]
    assert main([*args, "--render"]) == 0 and cont.is_file()
    # a run signature under --runs-dir; the continuation is grammar-constrained: 0 repairs
    runs_dir = Path(pretrained["run_dir"]).parent.parent
    signature = Path(pretrained["run_dir"]).name
    capsys.readouterr()
    args = ["generate-midi", signature, "--runs-dir", str(runs_dir), "--prompt", str(prompt), "--tokens", "41"]
    assert main([*args, "--out", str(tmp_path / "c2.mid"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["repairs"] == 0
    assert cont.with_suffix(".wav").is_file() == (find_renderer() is not None)
    # an exported model dir (no training state) decodes on its own too
    exported = export_tunesmith(tuned["run_dir"], tmp_path / "export")
    loaded = load_midi_model(exported)
    assert loaded.stage == "piano_task" and loaded.tokenizer.vocab == tuned["solver"].tokenizer.vocab
    meta = json.loads((exported / "config.json").read_text())["meta"]
    assert meta["tokenizer_desc"] == tuned["solver"].tokenizer.describe()  # the description travels with it
    out2 = tmp_path / "filled2.mid"
    args = ["generate-midi", str(exported), "--prompt", str(prompt), "--task", "velocity", "--out", str(out2)]
    assert main(args) == 0
    assert np.array_equal(read_midi(out2).velocity, after.velocity)  # same weights, same seed
    # a model saved before piano_task.velocity_layout existed is decoded with the layout it trained with
    config = json.loads((exported / "config.json").read_text())
    del config["meta"]["piano_task"]["velocity_layout"]
    (exported / "config.json").write_text(json.dumps(config))
    ckpt.write_manifest(exported)  # as that older version wrote it
    assert load_midi_model(exported).piano_task.velocity_layout == "appended"
    assert load_midi_model(tuned["run_dir"]).piano_task.velocity_layout == "interleaved"
    capsys.readouterr()
    # a pretrained-only run cannot fill velocities: clear error, exit 2
    assert main(["generate-midi", pretrained["run_dir"], "--prompt", str(prompt), "--task", "velocity"]) == 2
    assert "not fine-tuned on the velocity task" in capsys.readouterr().err


def test_resuming_a_run_from_before_velocity_layout_keeps_its_layout(data, pretrained, tmp_path, caplog) -> None:
    """A checkpoint whose piano_task has no velocity_layout trained with the appended one: a resume goes on
    with it (the training records change layout), a checkpoint of today's runs changes nothing."""
    from tunesmith.models.midi.tokenizer import VELOCITY

    solver = build_solver(
        "midi", "velocity-tiny", [*SMALL, f"data={data}", f"init_from={pretrained['run_dir']}"], runs_dir=tmp_path
    )
    train_set = solver.build_datasets()["train"]
    stored = {"tasks": ["velocity", "velocity_denoise"], "notes_per_record": 16}

    def target_types(dataset) -> set[int]:
        record = next(r for r in (dataset.record((i, 0)) for i in range(len(dataset))) if r.task == "velocity")
        return set(solver.tokenizer.types_of(record.tokens[record.prompt_len : -1]).tolist())

    assert target_types(train_set) != {VELOCITY}  # interleaved: the notes are in the target too
    solver._resume_piano_task({**stored, "velocity_layout": "interleaved"})
    assert solver.cfg.piano_task.velocity_layout == "interleaved"
    with caplog.at_level(logging.INFO, logger="tunesmith.midi"):
        solver._resume_piano_task(stored)
    assert solver.cfg.piano_task.velocity_layout == "appended" and "velocity_layout=appended" in caplog.text
    assert target_types(train_set) == {VELOCITY}  # the records already built follow it


def test_init_from_a_different_shape_is_refused(data, pretrained, tmp_path) -> None:
    with pytest.raises(UserError, match="model.dim: 32 there, 48 here"):
        train(tmp_path, f"data={data}", f"init_from={pretrained['run_dir']}", "model.dim=48", preset="velocity-tiny")


def test_empty_eval_split_is_logged_and_skipped(data, tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="tunesmith.midi"):
        result = train(tmp_path, f"data={data}", "eval_splits={liszt: composer~Liszt}", "train.epochs=1")
    assert "eval_splits.liszt" in caplog.text
    assert not [k for k in history(result["run_dir"], "evaluate")[-1] if k.startswith("liszt/")]
    with pytest.raises(UserError, match="unknown field"):
        train(tmp_path / "bad", f"data={data}", "eval_splits={x: compose~Bach}", "train.epochs=1")


def test_remi_tokenizer_pretrains_and_fine_tunes(data, tmp_path) -> None:
    short = ["tokenizer.kind=remi", "train.epochs=1", "train.updates_per_epoch=2", "eval_splits={}"]
    base = train(tmp_path, f"data={data}", *short)
    state = ckpt.load_state(Path(base["run_dir"]) / "checkpoints" / "last")
    assert state["extra"]["tokenizer_desc"]["kind"] == "remi"
    tuned = train(tmp_path, f"data={data}", *short, f"init_from={base['run_dir']}", preset="velocity-tiny")
    evaluated = history(tuned["run_dir"], "evaluate")[-1]
    assert 0 < evaluated["valid/tf_velocity_mae"] < 127
