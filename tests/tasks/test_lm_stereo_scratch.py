"""A stereo LM trained from scratch (model.channels=2: a mono codec per channel, codebooks interleaved).

End to end on prepared data: `prepare --channels 2` audio → a stereo token cache (both channels encoded by the
mono codec, interleaved). On token data whose channels differ, the trained LM's generations have channels that
differ; on data whose channels are identical, they are identical (measured on greedy continuations of each
clip's first frames as the share of frames whose left and right codes agree)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from support.lm import CODEC_BINS, FakeTokenShards, make_codec_dir
from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.data.prepare import prepare_dataset
from tunesmith.models.lm import build_lm
from tunesmith.models.lm.generation import generate_codes
from tunesmith.tasks import build_solver
from tunesmith.tasks import lm as lm_task

pytestmark = pytest.mark.usefixtures("one_thread")

OVERRIDES = [
    "model.channels=2",
    "model.conditioner.text=none",
    "model.transformer.dim=48",
    "model.transformer.num_layers=2",
    "model.transformer.num_heads=4",
    "model.transformer.ffn_dim=96",
    "dataset.batch_size=4",
    "dataset.segment_seconds=0.06",  # 12 frames at 200 Hz
    "optim.lr=3e-3",
    "optim.warmup_steps=5",
    "train.updates_per_epoch=80",
    "train.epochs=1",
    "train.log.progress=false",
    "train.log.tensorboard=false",
    "generate.num_samples=1",
    "generate.duration=0.05",
]


def test_prepare_two_channels_builds_a_stereo_token_cache(tmp_path):
    from tunesmith.data.token_cache import TokenShards, ensure_token_cache
    from tunesmith.models.codec import load_codec
    from tunesmith.models.codec.stereo import InterleavedStereoCodec

    data = tmp_path / "data"
    prepare_dataset(
        [], data, source="synthetic", num_tracks=2, track_duration=0.5, sample_rate=8000, segment=0.5,
        channels=2, valid_fraction=0.0, progress=False,
    )  # fmt: skip
    assert json.loads((data / "dataset.json").read_text())["settings"]["channels"] == 2
    codec = InterleavedStereoCodec(load_codec(make_codec_dir(tmp_path)))
    cache = ensure_token_cache(data, codec, progress=False, splits=("train",))
    shards = TokenShards(cache, "train")
    assert len(shards) == 2 and shards.codes(0).shape == (4, 100)  # 2 levels × 2 channels, interleaved
    assert json.loads((cache / "codec.json").read_text())["channels"] == 2


def _clips(distinct: bool, n: int = 4, frames: int = 60) -> list[np.ndarray]:
    """Clips of interleaved stereo codes [4, frames]: each channel cycles through its own 3 columns; the right
    channel's columns come from the upper half of the codebook (distinct) or copy the left's."""
    gen = np.random.default_rng(0)
    clips = []
    for _ in range(n):
        left = gen.integers(0, CODEC_BINS // 2, size=(2, 3))
        right = gen.integers(CODEC_BINS // 2, CODEC_BINS, size=(2, 3)) if distinct else left
        cols = np.arange(frames) % 3
        clips.append(np.stack([left[0, cols], right[0, cols], left[1, cols], right[1, cols]]).astype(np.int16))
    return clips


def _train_and_agreement(tmp_path, monkeypatch, distinct: bool) -> float:
    clips = _clips(distinct)
    shards = FakeTokenShards(clips, [{} for _ in clips])
    monkeypatch.setattr(lm_task, "open_token_cache", lambda data, codec, device, progress: {"train": shards})
    codec = make_codec_dir(tmp_path)
    overrides = [f"data={tmp_path / 'data'}", f"codec={codec}", *OVERRIDES]
    solver = build_solver("lm", "tiny", overrides, runs_dir=tmp_path / "runs")
    result = solver.fit()
    model = build_lm(solver.lm_config, ckpt.load_weights(ckpt.find_checkpoint(result["run_dir"]))).eval()
    assert model.pattern.delays == [0, 0, 1, 1]
    prompt = torch.from_numpy(np.stack([c[:, :4] for c in clips]).astype(np.int64))  # each clip's first frames
    codes = generate_codes(model, None, 24, temperature=0.0, prompt_codes=prompt)[:, :, 4:]  # greedy continuations
    left, right = codes[:, 0::2], codes[:, 1::2]
    return float((left == right).all(dim=1).float().mean())


def test_stereo_generations_differ_when_the_training_channels_differ(tmp_path, monkeypatch):
    distinct = _train_and_agreement(tmp_path / "distinct", monkeypatch, distinct=True)
    same = _train_and_agreement(tmp_path / "same", monkeypatch, distinct=False)
    print(f"left/right code agreement: distinct channels {distinct:.3f}, identical channels {same:.3f}")
    assert distinct < 0.1, distinct  # left and right codes agree in under 10% of the frames
    assert same > 0.8, same  # ... and in most frames when the training channels were identical
