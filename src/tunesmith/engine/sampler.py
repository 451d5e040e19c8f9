"""Deterministic sample keys: data order is a pure function of (seed, position).

The training stream is an endless sequence of passes over the dataset, each a
permutation seeded by (seed, pass). Global micro-batch ``m`` holds stream positions
``[m*B*W, (m+1)*B*W)`` and rank ``r`` takes its ``r``-th slice of ``B``, so one process
with batch ``B*W`` sees exactly the samples that ``W`` ranks with batch ``B`` see together,
and resuming at micro-batch ``m`` continues the very same order. Every key carries a
per-position seed for the dataset's random choices (crops), never the global RNG.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

SampleKey = tuple[int, int]  # (index into the dataset, seed for its random choices)
VALID_SEED = 1234


def position_seed(seed: int, position: int) -> int:
    return (seed * 0x9E3779B1 + position * 0x85EBCA77 + 0x2545F491) % (2**31 - 1)


class TrainStream:
    def __init__(self, num_items: int, batch_size: int, *, world_size: int = 1, rank: int = 0, seed: int = 0):
        if num_items <= 0:
            raise ValueError("the training split is empty")
        self.num_items = num_items
        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self._pass = -1
        self._perm: torch.Tensor | None = None

    def _permutation(self, pass_index: int) -> torch.Tensor:
        if pass_index != self._pass:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + pass_index)
            self._perm = torch.randperm(self.num_items, generator=gen)
            self._pass = pass_index
        return self._perm

    def keys(self, micro_step: int) -> list[SampleKey]:
        """This rank's keys for global micro-batch ``micro_step``."""
        start = (micro_step * self.world_size + self.rank) * self.batch_size
        out = []
        for position in range(start, start + self.batch_size):
            perm = self._permutation(position // self.num_items)
            out.append((int(perm[position % self.num_items]), position_seed(self.seed, position)))
        return out


class MicroBatchSampler:
    """Batch sampler over micro-steps ``[start, stop)`` of a :class:`TrainStream` (for DataLoader)."""

    def __init__(self, stream: TrainStream, start: int, stop: int):
        self.stream, self.start, self.stop = stream, start, stop

    def __iter__(self) -> Iterator[list[SampleKey]]:
        for micro_step in range(self.start, self.stop):
            yield self.stream.keys(micro_step)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def valid_batches(
    num_items: int, batch_size: int, *, world_size: int = 1, rank: int = 0, max_batches: int = 0
) -> list[list[SampleKey]]:
    """Every valid item once (no replacement), sharded across ranks, in fixed batches.

    With ``max_batches`` the first items of the split are used, always the same ones. A
    rank may receive no batch at all; metrics are reduced once at the end, so no rank waits.
    """
    limit = num_items if max_batches <= 0 else min(num_items, max_batches * batch_size * world_size)
    mine = list(range(rank, limit, world_size))
    return [[(i, VALID_SEED) for i in mine[j : j + batch_size]] for j in range(0, len(mine), batch_size)]
