"""The LM solver end to end on synthetic token data: it learns, text matters, samples are written, it resumes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from support.lm import DESCRIPTIONS, FakeTokenShards, make_codec_dir, synthetic_clips
from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.data.datasets.tokens import TokenCrops, collate_crops
from tunesmith.errors import UserError
from tunesmith.models.lm import ConditionerConfig, LMConfig, build_lm
from tunesmith.models.transformer import TransformerConfig
from tunesmith.tasks import build_solver
from tunesmith.tasks import lm as lm_task
from tunesmith.tasks.lm import LMSolver

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread

OVERRIDES = [
    "model.transformer.dim=48",
    "model.transformer.num_layers=2",
    "model.transformer.num_heads=4",
    "model.transformer.ffn_dim=96",
    "model.conditioner.text_dim=32",
    "model.conditioner.text_layers=1",
    "model.conditioner.cfg_dropout=0.1",
    "dataset.batch_size=4",
    "dataset.segment_seconds=0.06",  # 12 frames at 200 Hz
    "optim.lr=3e-3",
    "optim.warmup_steps=5",
    "train.updates_per_epoch=40",
    "train.log.progress=false",
    "train.log.tensorboard=false",
    "generate.num_samples=2",
    "generate.duration=0.05",
    "generate.top_k=5",
]


@pytest.fixture
def token_data(tmp_path, monkeypatch):
    codec = make_codec_dir(tmp_path)
    clips, infos = synthetic_clips(num_frames=60)
    splits = {"train": FakeTokenShards(clips, infos), "valid": FakeTokenShards(clips, infos)}
    calls = []

    def fake_cache(data, codec, device, progress):
        calls.append((data, codec.bins, device))
        return splits

    monkeypatch.setattr(lm_task, "open_token_cache", fake_cache)
    return {"codec": codec, "data": str(tmp_path / "data"), "runs": tmp_path / "runs", "calls": calls}


def _solver(token_data, *extra):
    overrides = [f"data={token_data['data']}", f"codec={token_data['codec']}", *OVERRIDES, *extra]
    return build_solver("lm", "tiny", overrides, runs_dir=token_data["runs"])


def test_trains_learns_text_and_writes_samples(token_data):
    solver = _solver(token_data, "train.epochs=3")
    result = solver.fit()
    assert result["step"] == 120
    valid = result["history"][-1]["valid"]
    clips, _ = synthetic_clips(60)
    counts = np.bincount(np.concatenate([c.ravel() for c in clips]), minlength=32) / sum(c.size for c in clips)
    unigram = float(-(counts[counts > 0] * np.log(counts[counts > 0])).sum())
    assert valid["loss"] < 0.3 * unigram, (valid, unigram)
    assert {"ce_q0", "ce_q1", "ppl", "ppl_q0", "ppl_q1"} <= set(valid)
    assert valid["ppl_q0"] == pytest.approx(math.exp(valid["ce_q0"]))
    assert (valid["ce_q0"] + valid["ce_q1"]) / 2 == pytest.approx(valid["loss"], rel=1e-5)
    assert result["history"][0]["valid"]["loss"] > valid["loss"]

    # text conditioning matters: the best weights score the right descriptions better than shuffled ones
    folder = ckpt.find_checkpoint(result["run_dir"])
    model = build_lm(solver.lm_config, ckpt.load_weights(folder)).eval()
    frames = torch.from_numpy(np.stack([c[:, :12] for c in clips]).astype(np.int64))
    right = [{"description": d} for d in DESCRIPTIONS]
    shuffled = right[1:] + right[:1]
    with torch.no_grad():
        ce_right = model.loss(frames, right)
        ce_shuffled = model.loss(frames, shuffled)
    assert float(ce_shuffled[0]) > 1.5 * float(ce_right[0]), (ce_right[0], ce_shuffled[0])

    samples = sorted((solver.run.samples_dir / "epoch_0003").glob("*.wav"))
    assert [p.name for p in samples] == ["00.wav", "01.wav"]
    meta = json.loads((solver.run.samples_dir / "epoch_0003" / "samples.json").read_text())
    assert meta["samples"][0]["condition"]["description"] in DESCRIPTIONS

    # the same command again resumes (nothing left to do); more epochs continue from step 120
    again = _solver(token_data, "train.epochs=3").fit()
    assert again["step"] == 120


def test_dataset_crops_are_seeded_and_padding_is_masked(token_data):
    clips, infos = synthetic_clips(60)
    short = [clips[0][:, :7], clips[1]]
    ds = TokenCrops(FakeTokenShards(short, infos[:2]), 12, 2, ConditionerConfig(cfg_dropout=0.5), True)
    a, b = ds[(1, 123)], ds[(1, 123)]
    assert torch.equal(a["codes"], b["codes"]) and a["condition"] == b["condition"]
    assert a["codes"].shape == (2, 12)
    batch = collate_crops([ds[(0, 1)], ds[(1, 2)]])
    assert batch["codes"].shape == (2, 2, 12) and batch["lengths"].tolist() == [7, 12]
    model = build_lm(
        LMConfig(
            card=32,
            num_codebooks=2,
            transformer=TransformerConfig(dim=32, num_layers=1, num_heads=4),
            conditioner=ConditionerConfig(text="none"),
        )
    )
    loss, per_codebook, counts = model.loss(batch["codes"], None, batch["lengths"])
    assert counts.tolist() == [19.0, 19.0]
    padded = batch["codes"].clone()
    padded[0, :, 7:] = 5  # whatever sits past an item's length changes nothing
    torch.testing.assert_close(model.loss(padded, None, batch["lengths"])[0], loss)


def test_clear_errors(token_data, tmp_path):
    with pytest.raises(UserError, match="data= is required"):
        build_solver("lm", "tiny", [f"codec={token_data['codec']}"], runs_dir=tmp_path / "r1").setup()
    with pytest.raises(UserError, match="model.card=64"):
        _solver(token_data, "model.card=64").setup()
    with pytest.raises(UserError, match="num_codebooks=3"):
        _solver(token_data, "model.num_codebooks=3").setup()
    with pytest.raises(UserError, match="no training segment has a 'transcript'"):
        _solver(token_data, "model.conditioner.text_field=transcript").setup()


def test_solver_class_is_registered():
    from tunesmith.tasks import solver_class

    assert solver_class("lm") is LMSolver
