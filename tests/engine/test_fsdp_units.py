"""FSDP with per-block units (the task hook ``fsdp_units``). Slow: real 2-process gloo runs (torchrun) of the tts
task (a tiny HiggsAudio v2, full fine-tune and peft LoRA) and of the LM task (full and LoRA) shard every decoder
layer as an FSDP unit of its own before the root, gather one layer at a time, train to the 1-process run's losses
and weights, and resume from a checkpoint written by such a run. Fast: the blocks found, the sharding order, the
refusals and skips of main-rank-only stages."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from support.evalmodels import make_eval_data
from support.higgs import make_lm_config, make_text_tokenizer
from support.tts import make_higgs_dir, make_speech_data
from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.engine.distributed import DistInfo
from tunesmith.engine.solver import _deepest_first
from tunesmith.models.hf.blocks import no_split_blocks
from tunesmith.models.higgs.model import HiggsFinetuneConfig, HiggsLoraSettings, prepare_for_training
from tunesmith.tasks import build_solver

pytestmark = pytest.mark.usefixtures("one_thread")

WORKER = Path(__file__).resolve().parents[1] / "support" / "fsdp_worker.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TUNESMITH_THREADS": "1", "TUNESMITH_NO_PROGRESS": "1"}
LOGS = ["train.log.progress=false", "train.log.tensorboard=false", "train.log.every_steps=1"]
# Adam's eps raised: a near-zero gradient would otherwise turn a last-bit reduction difference into a ±lr step
TTS = ["optim.eps=1e-4", "train.epochs=2", "train.updates_per_epoch=2", "generate.num_samples=0",
       "finetune.lora.dropout=0", *LOGS]  # fmt: skip
LM = ["model.transformer.dim=32", "model.transformer.num_layers=3", "model.transformer.num_heads=4",
      "model.transformer.ffn_dim=64", "model.conditioner.text_dim=16", "model.conditioner.text_layers=1",
      "model.conditioner.cfg_dropout=0", "dataset.segment_seconds=0.2", "optim.warmup_steps=1", "optim.eps=1e-4",
      "train.epochs=2", "train.updates_per_epoch=2", "generate.num_samples=0", "finetune.lora.r=4",
      "finetune.lora.dropout=0", *LOGS]  # fmt: skip


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def two_processes(report: Path, runs: Path, task: str, preset: str, *overrides: str) -> dict:
    """``task preset overrides`` trained by 2 gloo processes with train.fsdp=true; the worker's report."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", free_port()]
    command = [str(WORKER), str(report), str(runs), task, preset, *overrides, "train.fsdp=true"]
    proc = subprocess.run([*launch, *command], env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(report.read_text())


def one_process(runs: Path, task: str, preset: str, *overrides: str) -> Path:
    return Path(build_solver(task, preset, list(overrides), runs_dir=runs).fit()["run_dir"])


def step_losses(run_dir: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return {line["step"]: line["loss"] for line in lines if line["stage"] == "train_step"}


def valid_losses(run_dir: Path) -> list[float]:
    lines = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return [line["loss"] for line in lines if line["stage"] == "valid"]


def assert_same_training(one: Path, two: Path, trained: str) -> None:
    """Per-update and valid losses within 1e-5 (relative) and final weights within 1e-5 of each other; some
    tensor whose name contains ``trained`` changed in the second epoch (so the comparison means something)."""
    a, b = step_losses(one), step_losses(two)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-5), step
    assert valid_losses(two) == pytest.approx(valid_losses(one), rel=1e-5)
    wa = ckpt.load_weights(one / "checkpoints" / "last", ema=False)
    wb = ckpt.load_weights(two / "checkpoints" / "last", ema=False)
    assert sorted(wa) == sorted(wb)
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-5, atol=1e-5, msg=name)
    first = ckpt.load_weights(one / "checkpoints" / "epoch_0001", ema=False)
    moved = [n for n in wa if trained in n and not torch.equal(first[n], wa[n])]
    assert moved, f"no {trained} tensor changed in the second epoch: the comparison would mean nothing"


def resume_from_first_epoch(report: dict, tmp: Path, task: str, preset: str, *overrides: str) -> None:
    """A copy of the 2-process run with every checkpoint after epoch 1 removed resumes (2 processes, FSDP units)
    and ends with the uninterrupted run's losses and weights."""
    runs = Path(report["run_dir"]).parents[1]
    copy = tmp / "resumed_runs"
    shutil.copytree(runs, copy)
    run_dir = copy / task / Path(report["run_dir"]).name
    for folder in (run_dir / "checkpoints").iterdir():
        if folder.name != "epoch_0001":
            shutil.rmtree(folder)
    again = two_processes(tmp / "resumed.json", copy, task, preset, *overrides)
    assert Path(again["run_dir"]) == run_dir and again["step"] == 4
    assert "resumed from" in (run_dir / "train.log").read_text()
    assert step_losses(run_dir) == pytest.approx(step_losses(Path(report["run_dir"])), rel=1e-6)
    wa = ckpt.load_weights(Path(report["run_dir"]) / "checkpoints" / "last", ema=False)
    wb = ckpt.load_weights(run_dir / "checkpoints" / "last", ema=False)
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-6, atol=1e-7, msg=name)


# --------------------------------------------------------------------------- tts (HiggsAudio v2)


@pytest.fixture(scope="module")
def tts_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tts_fsdp")
    higgs = make_higgs_dir(root / "higgs")
    layers = json.loads((higgs / "config.json").read_text())["num_hidden_layers"]
    assert layers >= 2
    return make_speech_data(root, speakers=2, clips=6), higgs, layers


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["full", "lora"])
def test_tts_decoder_layers_are_units_and_train_like_one_process(tts_setup, tmp_path, mode):
    data, higgs, layers = tts_setup
    args = [f"data={data}", f"init_from=hf:{higgs}", f"finetune.mode={mode}", *TTS]
    single = one_process(tmp_path / "one", "tts", "tiny", *args, "dataset.batch_size=4")
    report = two_processes(tmp_path / "two.json", tmp_path / "two", "tts", "tiny", *args, "dataset.batch_size=2")
    # the root and each decoder layer are FSDP units; peft's LoraModel and PeftModel wrappers are not
    prefix = "model." if mode == "full" else "base_model.model.model."
    assert report["units"] == {
        "": report["units"][""],
        **{f"{prefix}layers.{i}": "FSDPHiggsAudioV2DecoderLayer" for i in range(layers)},
    }, report["units"]
    assert report["units"][""].startswith("FSDP")
    assert report["peak_gathered"] == 1  # one decoder layer's parameters gathered at a time, never all of them
    assert_same_training(single, Path(report["run_dir"]), "layers." if mode == "full" else "lora_")
    if mode == "full":  # the 3B case: resume from a checkpoint gathered from nested units
        resume_from_first_epoch(report, tmp_path, "tts", "tiny", *args, "dataset.batch_size=2")


# --------------------------------------------------------------------------- lm (tunesmith's own LM)


@pytest.fixture(scope="module")
def lm_setup(tmp_path_factory):
    return make_eval_data(tmp_path_factory.mktemp("lm_fsdp"))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["full", "lora"])
def test_lm_transformer_layers_are_units_and_train_like_one_process(lm_setup, tmp_path, mode):
    data, codec = lm_setup
    args = [f"data={data}", f"codec={codec}", f"finetune.mode={mode}", *LM]
    single = one_process(tmp_path / "one", "lm", "tiny", *args, "dataset.batch_size=4")
    report = two_processes(tmp_path / "two.json", tmp_path / "two", "lm", "tiny", *args, "dataset.batch_size=2")
    units = report["units"]
    assert units.pop("").startswith("FSDP")
    # each layer, and inside it the cross-attention's key/value projection (called outside the layer's forward)
    kv = "FSDPLinear"  # nn.Linear, or peft's LoRA Linear
    assert units == {
        **{f"transformer.layers.{i}": "FSDPBlock" for i in range(3)},
        **{f"transformer.layers.{i}.cross_attn.kv": kv for i in range(3)},
    }, units
    assert report["peak_gathered"] == 1
    assert_same_training(single, Path(report["run_dir"]), "transformer." if mode == "full" else "lora_")
    if mode == "lora":  # adapters inside the units: the resume restores them and their Adam moments
        resume_from_first_epoch(report, tmp_path, "lm", "tiny", *args, "dataset.batch_size=2")


# --------------------------------------------------------------------------- fast: blocks, order, stages


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_no_split_blocks_are_the_higgs_decoder_layers_inside_peft(mode):
    from transformers import HiggsAudioV2ForConditionalGeneration

    model = HiggsAudioV2ForConditionalGeneration(make_lm_config(make_text_tokenizer(), num_hidden_layers=3))
    layers = list(model.model.layers)
    finetune = HiggsFinetuneConfig(mode=mode, lora=HiggsLoraSettings(r=2))
    wrapped = prepare_for_training(model, finetune, text_loss=False)
    assert (type(wrapped).__name__ == "PeftModel") == (mode == "lora")
    blocks = no_split_blocks(wrapped)
    assert len(blocks) == 3 and all(a is b for a, b in zip(blocks, layers, strict=True))


def test_no_split_blocks_refuses_a_model_without_declared_blocks():
    with pytest.raises(ValueError, match="_no_split_modules"):
        no_split_blocks(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_units_are_sharded_deepest_first_and_must_be_submodules():
    inner = torch.nn.Linear(2, 2)
    block = torch.nn.Sequential(inner, torch.nn.ReLU())
    other = torch.nn.Linear(2, 2)
    root = torch.nn.Sequential(block, other)
    assert _deepest_first(root, [block, other, inner]) == [inner, block, other]
    with pytest.raises(ValueError, match="not a submodule"):
        _deepest_first(root, [torch.nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="not a submodule"):
        _deepest_first(root, [root])
    with pytest.raises(ValueError, match="twice"):
        _deepest_first(root, [block, block])


def test_generate_stage_is_skipped_on_a_sharded_model(tmp_path, monkeypatch, caplog):
    solver = build_solver("toy", "default", ["train.fsdp=true"], runs_dir=tmp_path)
    calls = []
    monkeypatch.setattr(solver, "_on_main_model", lambda fn: calls.append(fn))
    solver._generate_stage()
    assert calls == [solver.generate]  # one process: nothing is sharded
    solver.dist = DistInfo(rank=0, world_size=2)
    with caplog.at_level("INFO", logger="tunesmith.train"):
        solver._generate_stage()
        solver._generate_stage()
    assert len(calls) == 1
    assert caplog.text.count("generate stage skipped") == 1


def test_lm_evaluate_metrics_with_fsdp_are_refused_before_training(tmp_path):
    solver = build_solver("lm", "tiny", ["train.fsdp=true", "evaluate.metrics=[fad]"], runs_dir=tmp_path)
    assert not any("train.fsdp=true" in p for p in solver.preflight())  # one process: nothing is sharded
    solver.dist = DistInfo(rank=0, world_size=2)
    assert any("evaluate.metrics=['fad'] with train.fsdp=true" in p for p in solver.preflight())
