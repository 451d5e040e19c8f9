"""A tiny task that exercises every engine feature in seconds: used by the engine's tests.

A small MLP predicts the next value class of a deterministic random sequence: items are
crops drawn with the sample key's seed (as real tasks crop audio or tokens), the model has
dropout (so RNG state matters for exact resume), and the loss is summed over targets.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from tunesmith.config import OptimConfig, TrainConfig
from tunesmith.engine.solver import LossOutput, Solver


@dataclasses.dataclass
class ToyDatasetConfig:
    batch_size: int = 4
    num_items: int = 64
    valid_items: int = 10
    length: int = 64  # tokens per item
    crop: int = 16  # tokens per training crop
    vocab: int = 16


@dataclasses.dataclass
class ToyModelConfig:
    dim: int = 32
    dropout: float = 0.1
    frozen_layer: bool = False  # a parameter block without grads (scaler edge case)


@dataclasses.dataclass
class ToyConfig:
    dataset: ToyDatasetConfig = dataclasses.field(default_factory=ToyDatasetConfig)
    model: ToyModelConfig = dataclasses.field(default_factory=ToyModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    init_from: str = ""
    nan_at_step: int = 0  # inject a non-finite loss at this update (stability tests); 0 = never


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


class ToyModel(nn.Module):
    def __init__(self, vocab: int, dim: int, dropout: float, frozen_layer: bool):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.hidden = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, vocab)
        self.frozen = nn.Linear(dim, dim) if frozen_layer else None
        if self.frozen is not None:
            self.frozen.requires_grad_(False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: Long[B, T] → logits [B, T, vocab]."""
        h = self.embed(tokens)
        if self.frozen is not None:
            h = h + self.frozen(h)
        return self.head(self.drop(torch.tanh(self.hidden(h))))


class ToySolver(Solver):
    task = "toy"
    config_class = ToyConfig

    def build_model(self) -> nn.Module:
        d, m = self.cfg.dataset, self.cfg.model
        return ToyModel(d.vocab, m.dim, m.dropout, m.frozen_layer)

    def build_datasets(self) -> dict[str, Dataset]:
        d = self.cfg.dataset
        return {
            "train": ToySequences(d.num_items, d.length, d.crop, d.vocab, seed=1),
            "valid": ToySequences(d.valid_items, d.length, d.crop, d.vocab, seed=2),
        }

    def count_targets(self, batch) -> int:
        return int(batch["mask"].sum())

    def loss(self, model: nn.Module, batch) -> LossOutput:
        tokens, mask = batch["tokens"], batch["mask"]
        logits = model(tokens[:, :-1])
        ce = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="none")
        loss_sum = (ce * mask.flatten()).sum()
        if self.cfg.nan_at_step and self.step + 1 == self.cfg.nan_at_step and model.training:
            loss_sum = loss_sum * float("nan")
        correct = ((logits.argmax(-1) == tokens[:, 1:]) & mask).sum()
        return LossOutput(loss_sum, {"accuracy": correct.float()})

    def flops_per_target(self) -> float:
        m, d = self.cfg.model, self.cfg.dataset
        return 6.0 * (m.dim * m.dim + m.dim * d.vocab)
