"""Codec training: the shared-forward update against a plain reference, overfitting, CLI train/resume/check/encode."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from tunesmith.models.codec.balancer import GradientBalancer
from tunesmith.models.codec.losses import discriminator_loss, feature_matching_loss, generator_adversarial_loss

SMALL = [
    "model.sample_rate=8000",
    "model.n_filters=4",
    "model.dimension=8",
    "model.ratios=[4,2]",
    "model.lstm=1",
    "model.n_q=2",
    "model.bins=16",
    "model.q_dropout=false",
    "model.kmeans_iters=2",
    "dataset.batch_size=3",
    "dataset.segment_seconds=0.25",
    "dataset.valid_duration=0.5",
    "loss.mel_range_start=5",
    "loss.mel_range_end=8",
    "loss.mel_n_mels=16",
    "loss.adversarial_start=0",
    "discriminator.filters=4",
    "discriminator.n_ffts=[128,64]",
    "discriminator.hop_lengths=[32,16]",
    "check.num_samples=2",
    "check.max_seconds=0.5",
    "train.log.progress=false",
    "train.log.tensorboard=false",
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run faster on one thread, and far faster than two on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from tunesmith.data.prepare import prepare_dataset

    out = tmp_path_factory.mktemp("codec-data") / "ds"
    prepare_dataset(
        [],
        out,
        source="synthetic",
        num_tracks=6,
        track_duration=1.5,
        sample_rate=8000,
        segment=0.75,
        min_segment=0.5,
        valid_fraction=0.34,
        progress=False,
    )
    return out


def _solver(dataset: Path, runs: Path, extra: list[str] = ()):
    from tunesmith.tasks import build_solver

    return build_solver("codec", "tiny", [f"data={dataset}", *SMALL, *extra], runs_dir=runs)


def test_shared_discriminator_pass_gives_the_reference_gradients(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    solver = _solver(dataset, tmp_path / "runs")
    solver.setup()
    x = torch.stack([solver.datasets["train"][(i, 7)] for i in range(3)])
    model, disc = copy.deepcopy(solver.model), copy.deepcopy(solver.extras["discriminator"])
    lc = solver.cfg.loss
    # reference: separate passes as AudioCraft does them, frozen discriminator for the generator's losses
    torch.manual_seed(1)
    out = model(x)
    y = out.wav
    losses = solver._reconstruction_losses(x, y)
    disc.requires_grad_(False)
    fake_logits, fake_maps = disc(y)
    with torch.no_grad():
        _, real_maps = disc(x)
    disc.requires_grad_(True)
    losses["adv"] = generator_adversarial_loss(fake_logits, lc.adv_loss)
    losses["feat"] = feature_matching_loss(fake_maps, real_maps)
    balancer = GradientBalancer(solver.loss_weights, lc.balancer_total_norm, lc.balancer_ema_decay)
    grad, _ = balancer.gradient(losses, y)
    ((y * grad).sum() + lc.commit * out.commit_loss).backward()
    ref_model_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    fake_l, _ = disc(y.detach())
    real_l, _ = disc(x)
    discriminator_loss(fake_l, real_l, lc.adv_loss).backward()
    ref_disc_grads = {n: p.grad.clone() for n, p in disc.named_parameters()}

    captured: dict[str, dict[str, torch.Tensor]] = {}
    real_step = solver.step_optimizer

    def spy(opt: str = "model", loss_finite: bool = True):
        module = solver.model if opt == "model" else solver.extras["discriminator"]
        captured[opt] = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
        return real_step(opt, loss_finite=loss_finite)

    monkeypatch.setattr(solver, "step_optimizer", spy)
    torch.manual_seed(1)
    metrics = solver.train_update([x])
    assert set(captured) == {"model", "discriminator"}
    assert captured["model"].keys() == ref_model_grads.keys()
    for name, ref in ref_model_grads.items():
        torch.testing.assert_close(captured["model"][name], ref, rtol=1e-4, atol=1e-6, msg=name)
    for name, ref in ref_disc_grads.items():
        torch.testing.assert_close(captured["discriminator"][name], ref, rtol=1e-4, atol=1e-6, msg=name)
    assert {"loss", "l1", "mel", "adv", "feat", "d_loss", "commit", "grad_norm", "d_grad_norm"} <= set(metrics)
    assert metrics["targets"] == 3


def test_tiny_codec_overfits_a_few_clips(dataset: Path, tmp_path: Path) -> None:
    """Random init vs 120 updates on the same clips: SI-SNR must rise clearly."""
    from tunesmith.eval.codec import check_codec, select_clips
    from tunesmith.models.codec import CodecModel

    solver = _solver(
        dataset,
        tmp_path / "runs",
        [
            "model.ratios=[4,4,2]",
            "model.n_filters=8",
            "model.n_q=4",
            "model.bins=64",
            "model.dimension=16",
            "loss.adv=0",
            "loss.feat=0",
            "loss.l1=1.0",
            "loss.sisnr=1.0",
            "loss.mel=0",
            "optim.lr=3e-3",
            "optim.warmup_steps=5",
            "train.epochs=1",
            "train.updates_per_epoch=120",
            "dataset.batch_size=4",
            "check.num_samples=0",
        ],
    )
    clips = select_clips(dataset, 3, 8000, 1, split="train", max_seconds=0.75)
    torch.manual_seed(solver.cfg.train.seed)  # the solver seeds the same way before building its model
    before = check_codec(CodecModel(solver.cfg.model).eval(), clips).mean["sisnr"]
    result = solver.fit()
    after = check_codec(solver.model.eval(), clips).mean["sisnr"]
    assert result["step"] == 120
    assert before < -10.0  # random weights: the output is unrelated to the input
    assert after > 1.0, (before, after)  # more signal than error in the reconstruction


def test_cli_train_resume_check_encode(dataset: Path, tmp_path: Path, capsys) -> None:
    from tunesmith.cli import main
    from tunesmith.data.token_cache import TokenShards
    from tunesmith.models.codec import codec_fingerprint, load_codec

    runs = tmp_path / "runs"
    args = ["train", "codec", "tiny", f"data={dataset}", *SMALL, "train.updates_per_epoch=2", "--runs-dir", str(runs)]
    assert main([*args[:4], *args[4:-2], "train.epochs=1", *args[-2:], "--json"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run_dir = Path(first["run_dir"])
    assert first["step"] == 2
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    valid = [h for h in history if h.get("stage") == "valid"]
    assert valid and {"sisnr", "mel", "l1"} <= set(valid[-1].get("metrics", valid[-1]))
    samples = run_dir / "samples" / "epoch_0001"
    assert len(list(samples.glob("*.original.wav"))) == 2 and len(list(samples.glob("*.reconstructed.wav"))) == 2
    # the same command with more epochs resumes the same run (a new signature would start at step 0)
    assert main([*args[:4], *args[4:-2], "train.epochs=2", *args[-2:], "--json"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["step"] == 4 and second["epoch"] == 2
    assert (run_dir / "checkpoints" / "last" / "discriminator.safetensors").is_file()

    out = tmp_path / "check"
    assert main(["check", "codec", str(run_dir), "--num-samples", "2", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["clips"]) == 2 and set(report["mean"]) == {"sisnr", "mel", "l1", "mse"}
    assert "higher is better" in report["convention"]
    for clip in report["clips"]:
        assert (out / clip["original"]).is_file() and (out / clip["reconstructed"]).is_file()
    assert (out / "report.md").is_file() and "codes used" in (out / "report.md").read_text()
    # codebook usage: the distinct codes of the same clips, encoded here directly
    from tunesmith.eval.codec import select_clips

    codec = load_codec(run_dir)
    clips = select_clips(dataset, 2, codec.sample_rate, codec.channels)
    codes = torch.cat([codec.encode(torch.from_numpy(c.wav)[None]) for c in clips], dim=-1)[0]  # [K, F]
    assert [u["used"] for u in report["codebooks"]] == [len(torch.unique(row)) for row in codes]
    assert all(1.0 <= u["perplexity"] <= u["used"] + 1e-6 and u["bins"] == codec.bins for u in report["codebooks"])
    assert main(["check", "codec", str(run_dir), "--num-samples", "2", "--out", str(out)]) == 0
    assert "codes used per codebook" in capsys.readouterr().out
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    evaluated = [h for h in history if h.get("stage") == "evaluate"]
    assert evaluated and "code_ppl_q0" in evaluated[-1].get("metrics", evaluated[-1])

    # an exported model directory loads as the same codec (the check runs from it too)
    from tunesmith.models.export import export_tunesmith

    exported = export_tunesmith(run_dir, tmp_path / "exported")
    wav = torch.randn(1, 1, 2000) * 0.1
    assert torch.equal(load_codec(exported).encode(wav), load_codec(run_dir).encode(wav))
    assert main(["check", "codec", str(exported), "--data", str(dataset), "--num-samples", "1", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["clips"]) == 1

    assert main(["encode", str(dataset), "--codec", str(run_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    codec = load_codec(run_dir)
    assert summary["fingerprint"] == codec_fingerprint(codec)
    shards = TokenShards(summary["cache"], "train", fingerprint=codec_fingerprint(codec))
    assert len(shards) > 0 and shards.codes(0).shape[0] == 2
    assert main(["check", "codec", str(run_dir), "--bandwidth", "9"]) == 2  # unsupported: clear error
    assert "supported" in capsys.readouterr().err


def test_preflight_names_the_bad_setting(dataset: Path, tmp_path: Path, capsys) -> None:
    from tunesmith.cli import main

    runs = ["--runs-dir", str(tmp_path / "runs")]
    assert main(["train", "codec", "tiny", f"data={dataset}", *SMALL, "dataset.segment_seconds=0.01", *runs]) == 2
    assert "dataset.segment_seconds=0.01" in capsys.readouterr().err
    assert main(["train", "codec", "tiny", f"data={tmp_path / 'missing'}", *runs]) == 2
    assert "tunesmith prepare" in capsys.readouterr().err
