"""The shared training engine, exercised through the tiny `toy` task."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from support.resume import assert_resumes_to, kill_mid_epoch, step_losses
from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.config import ConfigError
from tunesmith.engine.ema import EMA
from tunesmith.engine.precision import SafeScaler
from tunesmith.engine.sampler import TrainStream, valid_batches
from tunesmith.engine.schedule import lr_at
from tunesmith.errors import UserError
from tunesmith.tasks import build_solver

ENV = {**os.environ, "TUNESMITH_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}


def train(tmp: Path, *overrides: str, fresh: bool = False) -> dict:
    solver = build_solver("toy", "default", list(overrides), runs_dir=tmp, fresh=fresh)
    return solver.fit() | {"solver": solver}


def final_weights(result: dict) -> dict[str, torch.Tensor]:
    return ckpt.load_weights(Path(result["run_dir"]) / "checkpoints" / "last", ema=False)


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tunesmith", *args], env=ENV, capture_output=True, text=True, **kwargs)


# --------------------------------------------------------------------------- equivalences


def test_grad_accumulation_equals_one_big_batch(tmp_path):
    common = ("model.dropout=0", "train.epochs=1", "train.updates_per_epoch=3")
    big = train(tmp_path, "dataset.batch_size=8", "train.grad_accum=1", *common)
    small = train(tmp_path, "dataset.batch_size=2", "train.grad_accum=4", *common)
    assert big["run_dir"] != small["run_dir"]
    a, b = final_weights(big), final_weights(small)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
    # and the weights did move, so the comparison means something
    init = build_solver("toy", "default", ["model.dropout=0"], runs_dir=tmp_path / "x").build_model().state_dict()
    assert any(not torch.allclose(init[n], a[n]) for n in a)


@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_ddp_two_processes_equal_one_process(tmp_path, sharding):
    """A real 2-process gloo run (DDP, or FSDP's fully_shard) equals one process with the same global batch."""
    common = ["model.dropout=0", "train.epochs=2", "train.updates_per_epoch=3", "train.grad_accum=2"]
    single = train(tmp_path / "single", "dataset.batch_size=4", *common)
    port = "29531" if sharding == "ddp" else "29532"
    extra = ["train.fsdp=true"] if sharding == "fsdp" else []
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port]
    command = ["-m", "tunesmith", "train", "toy", "default", "dataset.batch_size=2", *common, *extra]
    proc = subprocess.run(
        [*launch, *command, "--runs-dir", str(tmp_path / "ddp"), "--json"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = Path(json.loads(proc.stdout.strip().splitlines()[-1])["run_dir"])
    a = final_weights(single)
    b = ckpt.load_weights(run_dir / "checkpoints" / "last")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
    # validation metrics are reduced across ranks: the same as one process
    hist_single = [json.loads(x) for x in (Path(single["run_dir"]) / "history.jsonl").read_text().splitlines()]
    hist_ddp = [json.loads(x) for x in (run_dir / "history.jsonl").read_text().splitlines()]
    v1 = [h["loss"] for h in hist_single if h["stage"] == "valid"]
    v2 = [h["loss"] for h in hist_ddp if h["stage"] == "valid"]
    assert v1 == pytest.approx(v2, rel=1e-5)


def test_sampler_shards_are_one_big_batch():
    one = TrainStream(10, 4, seed=3)
    two = [TrainStream(10, 2, world_size=2, rank=r, seed=3) for r in range(2)]
    for step in range(7):
        assert one.keys(step) == two[0].keys(step) + two[1].keys(step)
    # every item once per pass
    seen = [k[0] for s in range(5) for k in TrainStream(8, 2, seed=0).keys(s)][:8]
    assert sorted(seen) == list(range(8))


def test_valid_batches_cover_each_item_once_and_tolerate_tiny_splits():
    shards = [valid_batches(5, 2, world_size=3, rank=r) for r in range(3)]
    items = sorted(k[0] for shard in shards for batch in shard for k in batch)
    assert items == [0, 1, 2, 3, 4]
    assert valid_batches(1, 2, world_size=2, rank=1) == []  # a rank with no batch does not hang


# --------------------------------------------------------------------------- resume


def test_kill_and_resume_reproduces_uninterrupted_losses(tmp_path):
    args = [
        "train",
        "toy",
        "default",
        "train.epochs=6",
        "train.updates_per_epoch=40",
        "dataset.num_items=400",
        "model.dim=256",
        "dataset.crop=48",
    ]
    ref = cli(*args, "--runs-dir", str(tmp_path / "ref"), "--json", timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    ref_dir = Path(json.loads(ref.stdout.strip().splitlines()[-1])["run_dir"])
    expected = step_losses(ref_dir)
    assert len(expected) == 240

    runs = tmp_path / "killed"
    run_dir = runs / "toy" / ref_dir.name
    # mid-epoch: past the first checkpoint, not on an epoch boundary
    killed_at = kill_mid_epoch(args, runs, run_dir, ENV, past_step=45, steps_per_epoch=40)
    assert killed_at is not None, "the run finished before it could be killed; make it longer"
    assert_resumes_to(args, runs, run_dir, ENV, expected)


def test_same_command_twice_resumes_and_finished_run_is_a_no_op(tmp_path):
    first = train(tmp_path)
    again = train(tmp_path)
    assert again["run_dir"] == first["run_dir"] and again["step"] == first["step"] == 15


def test_fresh_restarts(tmp_path):
    first = train(tmp_path)
    marker = Path(first["run_dir"]) / "marker"
    marker.write_text("x")
    train(tmp_path, fresh=True)
    assert not marker.exists()


def test_resume_refuses_when_preset_defaults_changed(tmp_path):
    first = train(tmp_path)
    run_file = Path(first["run_dir"]) / "run.json"
    meta = json.loads(run_file.read_text())
    meta["config"]["optim"]["lr"] = 0.5  # as if the preset's default changed since
    run_file.write_text(json.dumps(meta))
    with pytest.raises(ConfigError) as info:
        build_solver("toy", "default", [], runs_dir=tmp_path)
    assert "optim.lr" in str(info.value) and "--force" in str(info.value)
    build_solver("toy", "default", [], runs_dir=tmp_path, force=True)
    # a key that a newer tunesmith added (absent from the stored config) does not block a resume
    meta = json.loads(run_file.read_text())
    del meta["config"]["train"]["max_steps"]
    run_file.write_text(json.dumps(meta))
    build_solver("toy", "default", [], runs_dir=tmp_path)
    # non-math keys never block a resume
    build_solver("toy", "default", ["train.log.every_steps=3"], runs_dir=tmp_path, force=True)


def test_init_from_loads_weights_into_a_new_run(tmp_path):
    first = train(tmp_path)
    second = train(tmp_path, f"init_from={first['run_dir']}", "train.epochs=1", "optim.lr=0")
    assert second["run_dir"] != first["run_dir"]
    a = ckpt.load_weights(Path(first["run_dir"]) / "checkpoints" / "best")
    b = final_weights(second)
    for name in a:
        torch.testing.assert_close(a[name], b[name])


# --------------------------------------------------------------------------- checkpoints


def test_corrupted_checkpoint_is_detected_and_previous_good_one_used(tmp_path, caplog):
    result = train(tmp_path, "train.checkpoint.every_epochs=1")
    run_dir = Path(result["run_dir"])
    last = run_dir / "checkpoints" / "last" / "model.safetensors"
    data = bytearray(last.read_bytes())
    data[-5] ^= 0xFF
    os.unlink(last)  # hard-linked with epoch_0003: write a new file, do not alter the shared inode
    last.write_bytes(bytes(data))
    problems = ckpt.verify_folder(last.parent)
    assert problems and "checksum mismatch" in problems[0]
    good = ckpt.latest_good_checkpoint(run_dir)
    assert good is not None and good.name == "epoch_0003"
    with pytest.raises(ckpt.CheckpointError, match="checksum mismatch"):
        ckpt.load_weights(last.parent)
    # truncated state file
    state = run_dir / "checkpoints" / "epoch_0003" / "state.pt"
    content = state.read_bytes()
    os.unlink(state)
    state.write_bytes(content[: len(content) // 2])
    assert "truncated" in ckpt.verify_folder(state.parent)[0]
    assert ckpt.latest_good_checkpoint(run_dir).name == "best" or ckpt.latest_good_checkpoint(run_dir).name.startswith(
        "epoch_"
    )
    resumed = train(tmp_path, "train.checkpoint.every_epochs=1")
    assert resumed["step"] == 15


def test_keep_last_really_prunes(tmp_path):
    result = train(tmp_path, "train.epochs=5", "train.updates_per_epoch=2", "train.checkpoint.keep_last=2")
    names = sorted(p.name for p in (Path(result["run_dir"]) / "checkpoints").iterdir())
    assert names == ["best", "epoch_0004", "epoch_0005", "last"]


def test_state_loads_with_weights_only(tmp_path):
    result = train(tmp_path, "train.ema.enabled=true")
    folder = Path(result["run_dir"]) / "checkpoints" / "last"
    state = torch.load(folder / "state.pt", weights_only=True)
    assert state["step"] == 15 and state["ema"]["num_updates"] == 15
    assert (folder / "model_ema.safetensors").is_file()
    assert json.loads((folder / "config.json").read_text())["config"]["train"]["ema"]["enabled"] is True


def test_tied_weights_are_saved_once_and_restored(tmp_path):
    w = torch.randn(4, 3)
    path = tmp_path / "t.safetensors"
    ckpt.save_tensors(path, {"a.weight": w, "b.weight": w, "c": torch.ones(2)})
    out = ckpt.load_tensors(path)
    torch.testing.assert_close(out["b.weight"], w)
    assert set(out) == {"a.weight", "b.weight", "c"}


# --------------------------------------------------------------------------- precision and stability


def test_fp16_with_frozen_parameters_runs(tmp_path):
    result = train(tmp_path, "train.precision=fp16", "model.frozen_layer=true", "train.epochs=2")
    assert result["step"] == 10
    state = torch.load(Path(result["run_dir"]) / "checkpoints" / "last" / "state.pt", weights_only=True)
    assert state["scalers"]["model"]["scale"] > 0  # the scaler state is checkpointed


def test_scaler_never_raises_no_inf_checks():
    param = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([param], lr=0.1)
    scaler = SafeScaler("fp16", torch.device("cpu"))
    scaler.scale(torch.tensor(1.0))  # a backward of a loss that reached none of this optimizer's parameters
    assert scaler.unscale_(opt) is False  # no grads at all: skip, do not raise
    assert scaler.step(opt) is False
    param.grad = torch.full((3,), float("inf"))
    assert scaler.unscale_(opt) is True
    scale = scaler.get_scale()
    assert scaler.step(opt) is False and scaler.get_scale() < scale  # overflow: skipped, scale backed off
    torch.testing.assert_close(param.detach(), torch.ones(3))


def test_non_finite_update_is_skipped_and_counted(tmp_path):
    result = train(tmp_path, "nan_at_step=3", "train.stability.max_nan_ratio_per_epoch=0.5")
    first_epoch = result["history"][0]["train"]
    assert first_epoch["nan_skips"] == 1
    assert all(math.isfinite(v) for v in final_weights(result)["head.weight"].flatten().tolist())


def test_too_many_non_finite_updates_abort_with_a_clear_message(tmp_path):
    with pytest.raises(UserError, match="max_nan_ratio_per_epoch"):
        train(tmp_path, "nan_at_step=2", "train.stability.max_nan_ratio_per_epoch=0.1")


def test_adaptive_lr_backs_off(tmp_path):
    result = train(
        tmp_path, "nan_at_step=2", "train.stability.max_nan_ratio_per_epoch=0.5", "train.stability.adaptive_lr=true"
    )
    assert result["history"][0]["train"]["lr_factor"] == 0.5


# --------------------------------------------------------------------------- pieces


def test_ema_is_bias_corrected():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.99)
    ema.update(model)
    for name, value in ema.averaged().items():
        torch.testing.assert_close(value, dict(model.named_parameters())[name].detach())


def test_lr_warmup_then_cosine_to_min():
    kw = dict(lr=1.0, warmup_steps=10, total_steps=110, schedule="cosine", min_lr=0.1)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.55)
    assert lr_at(110, **kw) == pytest.approx(0.1)
    assert lr_at(50, **{**kw, "schedule": "constant"}) == 1.0


def test_history_tensorboard_and_status_written(tmp_path):
    result = train(tmp_path)
    run_dir = Path(result["run_dir"])
    stages = {json.loads(x)["stage"] for x in (run_dir / "history.jsonl").read_text().splitlines()}
    assert {"train_step", "train", "valid"} <= stages
    assert list((run_dir / "tensorboard").glob("events.*"))
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished" and status["best"]["metric"] == "loss"
    summary = result["history"][-1]["train"]
    assert summary["targets_per_s"] > 0 and 0 <= summary["data_wait_share"] <= 1 and summary["gflops_per_s"] > 0


def test_preflight_reports_missing_disk_space(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    solver = build_solver("toy", "default", [], runs_dir=tmp_path)
    solver.setup()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6, 10))
    with pytest.raises(UserError, match="GB free"):
        solver.run_preflight()


def test_wandb_offline_logging_goes_through_the_tracker(tmp_path, monkeypatch):
    """wandb is optional; with train.log.wandb=offline the tracker initialises it offline and logs scalars."""
    import types

    calls: dict = {"init": [], "log": [], "finish": 0}

    class FakeRun:
        def log(self, data, step):
            calls["log"].append((step, data))

        def finish(self):
            calls["finish"] += 1

    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls["init"].append(kw) or FakeRun()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    train(tmp_path, "train.log.wandb=offline")
    assert calls["init"][0]["mode"] == "offline" and calls["finish"] == 1
    assert any("valid/loss" in data for _, data in calls["log"])


def test_metrics_with_their_own_count_are_normalised_by_it():
    from tunesmith.engine.solver import normalise_metrics

    out = normalise_metrics({"loss": 10.0, "loss_pitch": 3.0, "loss_pitch/count": 2.0, "empty/count": 0.0}, 5.0)
    assert out == {"loss": 2.0, "loss_pitch": 1.5}


def test_task_preflight_runs_before_anything_is_built(tmp_path):
    from tunesmith.engine.solver import PreflightError

    solver = build_solver("toy", "default", [], runs_dir=tmp_path)

    class Checked(type(solver)):
        def preflight(self):
            return ["data=/nowhere: not a folder; pass data=DIR"]

        def build_model(self):
            raise AssertionError("built before the preflight reported its problems")

    solver.__class__ = Checked
    with pytest.raises(PreflightError, match="data=/nowhere"):
        solver.fit()


def test_bf16_on_a_gpu_without_it_is_refused_for_every_task(tmp_path, monkeypatch):
    """The engine checks the precision the device can run before anything is built (not one task's preflight)."""
    from tunesmith.engine.preflight import PreflightError

    monkeypatch.setattr("tunesmith.engine.precision.bf16_supported", lambda device: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    solver = build_solver("toy", "default", ["train.precision=bf16"], runs_dir=tmp_path)
    solver.device = torch.device("cuda:0")  # as on a GPU without bf16 (e.g. a T4)
    with pytest.raises(PreflightError, match="does not support bfloat16; use train.precision=fp16"):
        solver.fit()
    assert not (solver.run.dir / "checkpoints").exists()
