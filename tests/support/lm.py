"""Helpers for the LM and generation tests (no tests here): a tiny codec folder, token shards, an LM folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.config import to_dict
from tunesmith.models.codec import CodecModelConfig, build_codec_model
from tunesmith.models.lm import ConditionerConfig, LMConfig, LMModel, build_vocabularies
from tunesmith.models.transformer import TransformerConfig

CODEC_BINS, CODEC_NQ, CODEC_RATE = 32, 2, 8000  # 200 frames per second


def make_codec_dir(root: Path) -> Path:
    """A tiny untrained codec saved as a tunesmith codec checkpoint (8 kHz mono, 2 × 32 codes at 200 Hz)."""
    torch.manual_seed(0)
    cfg = CodecModelConfig(
        sample_rate=CODEC_RATE, n_filters=4, dimension=16, ratios=[8, 5], lstm=0, n_q=CODEC_NQ, bins=CODEC_BINS
    )
    model = build_codec_model(cfg)
    folder = Path(root) / "codec"
    ckpt.save_checkpoint(
        folder,
        weights={"model": {k: v.detach().clone() for k, v in model.state_dict().items()}},
        state={"step": 0, "epoch": 0},
        config={"meta": {"task": "codec"}, "config": {"model": to_dict(cfg)}},
    )
    return folder


class FakeTokenShards:
    """The TokenShards interface over in-memory arrays: codes(i) [K, F], num_frames(i), info(i)."""

    def __init__(self, codes: list[np.ndarray], infos: list[dict]) -> None:
        self._codes, self._infos = codes, infos

    def __len__(self) -> int:
        return len(self._codes)

    def codes(self, i: int) -> np.ndarray:
        return self._codes[i]

    def num_frames(self, i: int) -> int:
        return int(self._codes[i].shape[1])

    def info(self, i: int) -> dict:
        return self._infos[i]

    def crop(self, i: int, num_frames: int, generator: torch.Generator) -> tuple[np.ndarray, int]:
        spare = self.num_frames(i) - num_frames
        start = int(torch.randint(0, spare + 1, (1,), generator=generator)) if spare > 0 else 0
        return self._codes[i][:, start : start + num_frames], start


DESCRIPTIONS = ["bright fast melody", "dark slow drone", "noisy busy drums", "calm soft pad"]


def synthetic_clips(num_frames: int = 60, seed: int = 1) -> tuple[list[np.ndarray], list[dict]]:
    """One clip per description; each clip cycles through its own three code columns."""
    gen = np.random.default_rng(seed)
    clips, infos = [], []
    for i, text in enumerate(DESCRIPTIONS):
        columns = gen.integers(0, CODEC_BINS, size=(CODEC_NQ, 3))
        clips.append(columns[:, np.arange(num_frames) % 3].astype(np.int16))
        infos.append({"description": text, "genre": ["pop", "ambient", "rock", "ambient"][i], "bpm": 90 + 10 * i})
    return clips, infos


def tiny_lm_config(**conditioner) -> LMConfig:
    cond = ConditionerConfig(text_dim=32, text_layers=1, text_max_len=16, **conditioner)
    return LMConfig(
        card=CODEC_BINS,
        num_codebooks=CODEC_NQ,
        transformer=TransformerConfig(dim=32, num_layers=2, num_heads=4, max_seq_len=256),
        conditioner=cond,
    )


def make_lm_dir(root: Path, codec_dir: Path, **conditioner) -> Path:
    """An untrained tiny LM saved as an LM checkpoint whose config points at ``codec_dir``."""
    torch.manual_seed(0)
    cfg = tiny_lm_config(**conditioner)
    _, infos = synthetic_clips()
    model = LMModel(cfg, build_vocabularies(infos, cfg.conditioner))
    folder = Path(root) / "lm"
    run_cfg = {"data": "", "codec": str(codec_dir), "codec_bandwidth": 0.0, "model": to_dict(cfg)}
    ckpt.save_checkpoint(
        folder,
        weights={"model": {k: v.detach().clone() for k, v in model.state_dict().items()}},
        state={"step": 0, "epoch": 0},
        config={"meta": {"task": "lm"}, "config": run_cfg},
    )
    return folder


def replace_conditioner(cfg: LMConfig, **changes) -> LMConfig:
    return dataclasses.replace(cfg, conditioner=dataclasses.replace(cfg.conditioner, **changes))
