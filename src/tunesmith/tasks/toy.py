"""The worked example of the task contract (engine.task.Task), and the engine tests' task.

A task is a config dataclass plus a ``Solver`` subclass that says *what* to train; the engine does
the rest (accumulation, precision, DDP, checkpoints, resume, EMA, logging):

- ``task`` and ``config_class``: the run folder ``runs/toy/<signature>/`` and the presets
  ``configs/toy/*.yaml``. The config has ``train`` (TrainConfig), ``optim`` (OptimConfig) and a
  ``dataset`` section with ``batch_size``.
- ``build_model`` and ``build_datasets``: datasets live in ``tunesmith.data.datasets`` and are indexed
  by ``(index, seed)`` sample keys; random choices draw from ``torch.Generator().manual_seed(seed)``.
- ``loss`` returns the loss *summed* over the batch's targets and ``count_targets`` says how many
  (here: masked next-token targets); metrics are sums too.
- Optional: ``prepare``, ``extra_modules``, ``train_loss``, ``register_extra_state``,
  ``derived_metrics``, ``evaluate``, ``generate``, ``preflight``, ``flops_per_target``,
  ``init_weights_from``, ``checkpoint_meta``, ``after_checkpoint`` (see engine/task.py).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from tunesmith.config import OptimConfig, TrainConfig, ranged
from tunesmith.data.datasets.toy import ToySequences
from tunesmith.engine.solver import LossOutput, Solver

__all__ = ["ToyConfig", "ToyModel", "ToySequences", "ToySolver"]


@dataclasses.dataclass
class ToyDatasetConfig:
    batch_size: int = ranged(4, ge=1)
    num_items: int = ranged(64, ge=1)
    valid_items: int = ranged(10, ge=0)
    length: int = ranged(64, ge=2)  # tokens per item
    crop: int = ranged(16, ge=2)  # tokens per training crop
    vocab: int = ranged(16, ge=2)


@dataclasses.dataclass
class ToyModelConfig:
    dim: int = ranged(32, ge=1)
    dropout: float = ranged(0.1, ge=0, lt=1)  # so RNG state matters for exact resume
    frozen_layer: bool = False  # a parameter block without grads (scaler edge case)


@dataclasses.dataclass
class ToyConfig:
    dataset: ToyDatasetConfig = dataclasses.field(default_factory=ToyDatasetConfig)
    model: ToyModelConfig = dataclasses.field(default_factory=ToyModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    init_from: str = ""
    nan_at_step: int = ranged(0, ge=0)  # inject a non-finite loss at this update (stability tests); 0 = never


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
    target_unit = "tokens"

    def build_model(self) -> nn.Module:
        d, m = self.cfg.dataset, self.cfg.model
        return ToyModel(d.vocab, m.dim, m.dropout, m.frozen_layer)

    def build_datasets(self) -> dict[str, Dataset]:
        d = self.cfg.dataset
        return {
            "train": ToySequences(d.num_items, d.length, d.crop, d.vocab, seed=1),
            "valid": ToySequences(d.valid_items, d.length, d.crop, d.vocab, seed=2),
        }

    def count_targets(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["mask"].sum())

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
        """Masked next-token cross-entropy of ``tokens`` Long[B, T], summed over targets; ``accuracy`` too."""
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
