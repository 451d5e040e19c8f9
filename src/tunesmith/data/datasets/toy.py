"""The toy task's dataset: deterministic random token sequences that are mostly "previous + 1".

``ToySequences(...)[(index, seed)]`` is ``{"tokens": Long[crop], "mask": Bool[crop - 1]}``: a crop whose
start (and a few leading non-target positions) are drawn from the sample key's seed.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class ToySequences(Dataset):
    def __init__(self, num_items: int, length: int, crop: int, vocab: int, seed: int):
        gen = torch.Generator().manual_seed(seed)
        self.data = torch.randint(0, vocab, (num_items, length), generator=gen)
        # make it learnable: every token is mostly the previous one + 1
        for t in range(1, length):
            keep = torch.rand(num_items, generator=gen) < 0.8
            self.data[keep, t] = (self.data[keep, t - 1] + 1) % vocab
        self.crop = crop

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, seed = key
        gen = torch.Generator().manual_seed(seed)
        start = int(torch.randint(0, self.data.shape[1] - self.crop, (1,), generator=gen))
        tokens = self.data[index, start : start + self.crop]
        mask = torch.ones(self.crop - 1, dtype=torch.bool)
        mask[: int(torch.randint(0, 3, (1,), generator=gen))] = False  # variable target counts
        return {"tokens": tokens, "mask": mask}
