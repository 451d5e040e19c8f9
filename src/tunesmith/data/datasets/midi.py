"""Datasets of the MIDI solver, indexed by engine sample keys ``(index, seed)``.

- :class:`TokenWindows`: windows of ``context + 1`` tokens over a split's token stream (pieces
  tokenized and joined as ``BOS notes EOS``). Training draws a random window start from the key's
  seed; evaluation uses fixed non-overlapping windows that together predict every token once.
- :class:`PianoTaskRecords`: piano-task records (see :mod:`tunesmith.models.midi.tasks`) over fixed
  note slices of each piece; training jitters the slice start and picks the task from the seed,
  evaluation uses every (slice, task) pair with a fixed seed per record.

Items are dicts ``{"tokens": Long[T], "mask": Bool[T - 1], "task": Long[]}``: ``mask[t]`` says
whether ``tokens[t + 1]`` is a training target. :func:`collate` pads a batch to its longest item.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch.utils.data import Dataset

from tunesmith.data.midi_prepare import MidiNotesStore
from tunesmith.models.midi.tasks import PianoTaskConfig, build_record, slice_starts
from tunesmith.models.midi.tokenizer import TASK_NAMES, MidiTokenizer

log = logging.getLogger("tunesmith.midi")
NO_TASK = -1


def token_stream(store: MidiNotesStore, piece_ids: list[int], tok: MidiTokenizer) -> np.ndarray:
    """``BOS tokens EOS`` of every piece, joined: int32 ``[L]``. Logs notes outside the tokenizer's range."""
    start = time.perf_counter()
    parts = []
    dropped = 0
    for i in piece_ids:
        notes = store.notes(i)
        dropped += int(len(notes) - tok.in_range(notes).sum())
        parts.append(np.concatenate([[tok.bos_id], tok.encode(notes), [tok.eos_id]]).astype(np.int32))
    stream = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    log.info("tokenized %d pieces: %d tokens in %.1f s", len(piece_ids), len(stream), time.perf_counter() - start)
    if dropped:
        log.warning("%d notes outside the tokenizer's pitch range were left out", dropped)
    return stream


class TokenWindows(Dataset):
    """Next-token windows over a token stream ``[L]``; ``random_crop`` for training, else fixed."""

    def __init__(self, stream: np.ndarray, context: int, *, random_crop: bool, pad_id: int) -> None:
        if context < 1:
            raise ValueError("context must be >= 1")
        self.stream = stream
        self.context = context
        self.random_crop = random_crop
        self.pad_id = pad_id

    def __len__(self) -> int:
        n = len(self.stream) - 1
        if n <= 0:
            return 0
        return max(1, n // self.context) if self.random_crop else -(-n // self.context)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, seed = key
        ctx = self.context
        if self.random_crop:
            high = max(len(self.stream) - ctx - 1, 0)
            gen = torch.Generator().manual_seed(int(seed))
            start = int(torch.randint(0, high + 1, (1,), generator=gen))
        else:
            start = index * ctx
        window = torch.from_numpy(self.stream[start : start + ctx + 1].astype(np.int64))
        tokens = torch.full((ctx + 1,), self.pad_id, dtype=torch.long)
        tokens[: len(window)] = window
        mask = torch.zeros(ctx, dtype=torch.bool)
        mask[: len(window) - 1] = True
        return {"tokens": tokens, "mask": mask, "task": torch.tensor(NO_TASK)}


class PianoTaskRecords(Dataset):
    """Piano-task records over fixed note slices of the given pieces."""

    def __init__(
        self,
        store: MidiNotesStore,
        piece_ids: list[int],
        tok: MidiTokenizer,
        cfg: PianoTaskConfig,
        max_tokens: int,
        *,
        train: bool,
    ) -> None:
        self.store, self.tok, self.cfg, self.max_tokens, self.train = store, tok, cfg, max_tokens, train
        slices = [(i, s) for i in piece_ids for s in slice_starts(store.pieces[i]["note_count"], cfg)]
        if train:
            self.items = [(piece, start, "") for piece, start in slices]
        else:
            self.items = [(piece, start, task) for piece, start in slices for task in cfg.tasks]

    def __len__(self) -> int:
        return len(self.items)

    def record(self, key: tuple[int, int]):
        """The :class:`~tunesmith.models.midi.tasks.TaskRecord` of a key (and its notes' slice)."""
        index, seed = key
        piece, start, task = self.items[index]
        rng = np.random.default_rng([int(seed), int(index)])
        n_notes = self.store.pieces[piece]["note_count"]
        npr = self.cfg.notes_per_record
        if self.train:
            jitter = int(rng.integers(-(npr // 2), npr // 2 + 1))
            start = int(np.clip(start + jitter, 0, max(n_notes - self.cfg.min_notes, 0)))
            task = self.cfg.tasks[int(rng.integers(len(self.cfg.tasks)))]
        notes = self.store.notes(piece).take(slice(start, start + npr))
        return build_record(self.tok, task, notes, self.cfg, rng, self.max_tokens)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        rec = self.record(key)
        return {
            "tokens": torch.from_numpy(rec.tokens),
            "mask": torch.from_numpy(rec.target_mask[1:].copy()),
            "task": torch.tensor(TASK_NAMES.index(rec.task)),
        }


def collate(items: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest item: tokens ``Long[B, T]``, mask ``Bool[B, T - 1]``, task ``Long[B]``."""
    longest = max(len(it["tokens"]) for it in items)
    tokens = torch.full((len(items), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), longest - 1), dtype=torch.bool)
    for row, it in enumerate(items):
        tokens[row, : len(it["tokens"])] = it["tokens"]
        mask[row, : len(it["mask"])] = it["mask"]
    return {"tokens": tokens, "mask": mask, "task": torch.stack([it["task"] for it in items])}
