"""Token-cache datasets of the audio LM: crops of cached codec tokens with their conditions.

``TokenCrops(shards, num_frames, num_codebooks, cond_cfg, training)[(index, seed)]`` is
``{"codes": Long[K, n], "condition": dict}`` with ``n <= num_frames`` frames (a short segment comes
whole); :func:`collate_crops` pads a batch to ``Long[B, K, F]`` with the lengths ``Long[B]``. With a
``chroma`` track (melody-conditioned LMs, :mod:`tunesmith.data.token_cache.chroma`) the condition also
holds ``chroma``: the one-hot chroma float [n_chroma_frames, bins] under the crop (before CFG dropout).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from tunesmith.errors import UserError
from tunesmith.models.lm.conditioners import ConditionerConfig, drop_conditions

log = logging.getLogger("tunesmith.lm")

CONDITION_FIELDS = ("description", "transcript", "genre", "bpm", "key", "instrument", "moods", "keywords", "title")


def open_token_cache(data: str, codec: Any, device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Token shards per split for (dataset, codec object); encodes what is not cached yet first."""
    import json

    from tunesmith.data.token_cache import TokenShards, ensure_token_cache

    cache_dir = ensure_token_cache(data, codec, progress=progress, device=device)
    # the fingerprint ensure_token_cache just computed and checked (hashing every codec weight again costs seconds)
    fingerprint = json.loads((cache_dir / "codec.json").read_text(encoding="utf-8"))["fingerprint"]
    splits = {}
    for split in ("train", "valid"):
        try:
            splits[split] = TokenShards(cache_dir, split, fingerprint)
        except UserError as err:
            if split == "train":
                raise
            log.info("no valid split in the token cache (%s)", err)
    return splits


def condition_of(info: dict, cfg: ConditionerConfig) -> dict:
    """The condition dict of a segment: its text field and configured attributes (plain values)."""
    keep = {cfg.text_field, *cfg.attributes}
    return {k: v for k, v in info.items() if k in keep and v not in (None, "", [])}


class TokenCrops(Dataset):
    """Keyed by (index, seed): a crop of ``num_frames`` frames (Long[K, n]) and its condition."""

    def __init__(
        self,
        shards: Any,
        num_frames: int,
        num_codebooks: int,
        cond_cfg: ConditionerConfig,
        training: bool,
        chroma: Any = None,
        frame_rate: float = 0.0,
    ) -> None:
        self.shards = shards
        self.chroma, self.frame_rate = chroma, frame_rate
        self.num_frames = num_frames
        self.num_codebooks = num_codebooks
        self.cond_cfg = cond_cfg
        self.training = training
        self._conditions: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.shards)

    def condition(self, index: int) -> dict:
        if index not in self._conditions:
            self._conditions[index] = condition_of(self.shards.info(index) or {}, self.cond_cfg)
        return self._conditions[index]

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, seed = key
        gen = torch.Generator().manual_seed(int(seed))
        codes, start = self.shards.crop(index, self.num_frames, gen)  # [K, n]; a short segment comes whole
        codes = np.asarray(codes[: self.num_codebooks])
        if codes.shape[0] < self.num_codebooks:
            raise UserError(
                f"token cache item {index} has {codes.shape[0]} codebooks, the LM needs {self.num_codebooks}"
            )
        condition = self.condition(index)
        if self.chroma is not None:
            chroma = self.chroma.window(index, start, codes.shape[1], self.frame_rate)
            condition = {**condition, "chroma": chroma}
        condition = drop_conditions(condition, self.cond_cfg, gen, training=self.training)
        return {"codes": torch.from_numpy(codes.astype(np.int64)), "condition": condition}


def collate_crops(items: list[dict]) -> dict[str, Any]:
    """Pad crops to the longest: codes Long[B, K, F] (zeros past each length), lengths Long[B], conditions."""
    longest = max(it["codes"].shape[1] for it in items)
    k = items[0]["codes"].shape[0]
    codes = torch.zeros(len(items), k, longest, dtype=torch.long)
    for i, it in enumerate(items):
        codes[i, :, : it["codes"].shape[1]] = it["codes"]
    lengths = torch.tensor([it["codes"].shape[1] for it in items], dtype=torch.long)
    return {"codes": codes, "lengths": lengths, "conditions": [it["condition"] for it in items]}
