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
from tunesmith.errors import UserError
from tunesmith.models.midi.augment import MidiAugmentConfig, augment, augment_with
from tunesmith.models.midi.tasks import PianoTaskConfig, TaskRecord, build_record, slice_starts
from tunesmith.models.midi.tokenizer import ALL_TASKS, MidiTokenizer

log = logging.getLogger("tunesmith.midi")
NO_TASK = -1


def token_stream(store: MidiNotesStore, piece_ids: list[int], tok: MidiTokenizer) -> np.ndarray:
    """``BOS tokens EOS`` of every piece, joined: int32 ``[L]``. Logs notes outside the tokenizer's range."""
    return token_stream_with_offsets(store, piece_ids, tok)[0]


def token_stream_with_offsets(
    store: MidiNotesStore, piece_ids: list[int], tok: MidiTokenizer
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`token_stream` and where each piece starts in it: int64 ``[len(piece_ids)]``."""
    start = time.perf_counter()
    parts = []
    dropped = 0
    for i in piece_ids:
        notes = store.notes(i)
        dropped += int(len(notes) - tok.in_range(notes).sum())
        parts.append(np.concatenate([[tok.bos_id], tok.encode(notes), [tok.eos_id]]).astype(np.int32))
    stream = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    offsets = np.cumsum([0] + [len(p) for p in parts[:-1]]).astype(np.int64) if parts else np.zeros(0, np.int64)
    log.info("tokenized %d pieces: %d tokens in %.1f s", len(piece_ids), len(stream), time.perf_counter() - start)
    if dropped:
        log.warning("%d notes outside the tokenizer's pitch range were left out", dropped)
    return stream, offsets


def pack(prefix: np.ndarray, body: np.ndarray, context: int, pad_id: int) -> dict[str, torch.Tensor]:
    """A window item: ``prefix + body`` cut to ``context + 1`` tokens and padded; every body token is a
    target (the first one predicted from the prefix), prefix tokens are not. Without a prefix the first
    token is the context of the rest, as in :class:`TokenWindows`."""
    real = np.concatenate([prefix, body]).astype(np.int64)[: context + 1]
    tokens = torch.full((context + 1,), pad_id, dtype=torch.long)
    tokens[: len(real)] = torch.from_numpy(real)
    mask = torch.zeros(context, dtype=torch.bool)
    mask[max(len(prefix) - 1, 0) : max(len(real) - 1, 0)] = True
    return {"tokens": tokens, "mask": mask, "task": torch.tensor(NO_TASK)}


class ConditionedWindows(Dataset):
    """Next-token windows with a conditioning prefix (:mod:`tunesmith.models.midi.conditioning`): each
    window is the prefix of the piece it starts in, then ``context + 1 - P`` stream tokens, all of them
    targets. Training draws the start (and the prefix dropout) from the key's seed; evaluation uses
    consecutive windows of ``context + 1 - P`` tokens that predict every stream token once."""

    def __init__(
        self,
        stream: np.ndarray,
        offsets: np.ndarray,
        prefixes: list[np.ndarray],
        conditioner,
        context: int,
        *,
        random_crop: bool,
        pad_id: int,
        dropout: float = 0.0,
    ) -> None:
        self.stream, self.offsets, self.prefixes = stream, np.asarray(offsets, np.int64), prefixes
        self.conditioner, self.context, self.random_crop, self.pad_id = conditioner, context, random_crop, pad_id
        self.dropout = dropout if random_crop else 0.0
        self.body = context + 1 - len(conditioner)
        if self.body < 2:
            raise UserError(f"dataset.context_size={context} is too short for {len(conditioner)} conditioning tokens")

    def __len__(self) -> int:
        n = len(self.stream)
        if n <= 1:
            return 0
        return max(1, (n - 1) // self.context) if self.random_crop else -(-n // self.body)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, seed = key
        rng = np.random.default_rng([int(seed), int(index)])
        if self.random_crop:
            start = int(rng.integers(0, max(len(self.stream) - self.body, 0) + 1))
        else:
            start = index * self.body
        piece = int(np.searchsorted(self.offsets, start, side="right")) - 1
        prefix = self.conditioner.drop(self.prefixes[piece], rng, self.dropout)
        return pack(prefix, self.stream[start : start + self.body], self.context, self.pad_id)


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


class AugmentedWindows(Dataset):
    """Training windows of ``context + 1`` tokens re-encoded from augmented notes (pretraining with
    ``dataset.augment``): the key's seed picks a piece (weighted by its token count), a start note, a pitch
    shift and a tempo stretch; enough notes are encoded to fill the window (BOS before a piece's first
    note, EOS after its last), padded when the piece ends first. ``len`` is that of :class:`TokenWindows`."""

    def __init__(
        self,
        store: MidiNotesStore,
        piece_ids: list[int],
        tok: MidiTokenizer,
        context: int,
        augment_cfg: MidiAugmentConfig,
        *,
        stream_tokens: list[int],
        conditioner=None,
        condition_dropout: float = 0.0,
    ) -> None:
        self.conditioner = conditioner if conditioner is not None and len(conditioner) else None
        self.condition_dropout = condition_dropout
        self.store, self.piece_ids, self.tok, self.context, self.cfg = store, list(piece_ids), tok, context, augment_cfg
        self.tokens = np.asarray(stream_tokens, np.float64)  # tokens of each piece as stored (BOS + notes + EOS)
        self.weights = self.tokens / max(self.tokens.sum(), 1.0)

    def __len__(self) -> int:
        n = int(self.tokens.sum()) - 1
        return max(1, n // self.context) if n > 0 else 0

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, seed = key
        rng = np.random.default_rng([int(seed), int(index)])
        k = int(rng.choice(len(self.piece_ids), p=self.weights))
        notes = self.store.notes(self.piece_ids[k])
        start = int(rng.integers(0, len(notes)))
        shift_u, stretch_u = rng.random(2)
        per_note = max(self.tokens[k] / max(len(notes), 1), 1.0)
        count = int(self.context / per_note * 1.5) + 2  # notes expected to fill the window, with a margin
        tok = self.tok
        while True:
            part = notes.take(slice(start, start + count))
            part = augment_with(part, self.cfg, shift_u, stretch_u, pitch_min=tok.pitch_min, pitch_max=tok.pitch_max)[0]
            head = [tok.bos_id] if start == 0 else []
            tail = [tok.eos_id] if start + count >= len(notes) else []
            window = np.concatenate([head, tok.encode(part, float(part.start.min())), tail]).astype(np.int64)
            if len(window) >= self.context + 1 or start + count >= len(notes):
                break
            count *= 2
        prefix = np.zeros(0, np.int64)
        if self.conditioner is not None:
            prefix = self.conditioner.piece_prefix(self.store.pieces[self.piece_ids[k]])
            prefix = self.conditioner.drop(prefix, rng, self.condition_dropout)
        return pack(prefix, window, self.context, tok.pad_id)


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
        augment: MidiAugmentConfig | None = None,
        conditioner=None,
        condition_dropout: float = 0.0,
    ) -> None:
        self.store, self.tok, self.cfg, self.max_tokens, self.train = store, tok, cfg, max_tokens, train
        self.augment = augment if train and augment is not None and augment.enabled else None
        self.conditioner = conditioner if conditioner is not None and len(conditioner) else None
        self.condition_dropout = condition_dropout if train else 0.0
        slices = [(i, s) for i in piece_ids for s in slice_starts(store.pieces[i]["note_count"], cfg)]
        if train:
            self.items = [(piece, start, "") for piece, start in slices]
        else:
            self.items = [(piece, start, task) for piece, start in slices for task in cfg.tasks]

    def __len__(self) -> int:
        return len(self.items)

    def task_indices(self, task: str) -> list[int]:
        """Indices of the evaluation records of ``task`` (in piece, slice order); empty for training sets."""
        return [i for i, (_, _, t) in enumerate(self.items) if t == task]

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
        if self.augment is not None:
            notes = augment(notes, rng, self.augment, pitch_min=self.tok.pitch_min, pitch_max=self.tok.pitch_max)[0]
        if self.conditioner is None:
            return build_record(self.tok, task, notes, self.cfg, rng, self.max_tokens)
        prefix = self.conditioner.piece_prefix(self.store.pieces[piece])
        prefix = self.conditioner.drop(prefix, rng, self.condition_dropout)
        rec = build_record(self.tok, task, notes, self.cfg, rng, self.max_tokens - len(prefix))
        tokens, mask = (
            np.concatenate([prefix, rec.tokens]),
            np.concatenate([np.zeros(len(prefix), bool), rec.target_mask]),
        )
        return TaskRecord(tokens, mask, task, len(prefix) + rec.prompt_len)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        rec = self.record(key)
        return {
            "tokens": torch.from_numpy(rec.tokens),
            "mask": torch.from_numpy(rec.target_mask[1:].copy()),
            "task": torch.tensor(ALL_TASKS.index(rec.task)),
        }


def mean_velocity(store: MidiNotesStore, piece_ids: list[int]) -> float:
    """Mean MIDI velocity (1..127) over every note of the given pieces (64.0 when there are none)."""
    total = count = 0
    for i in piece_ids:
        velocity = store.notes(i).velocity
        total += int(velocity.astype(np.int64).sum())
        count += len(velocity)
    return total / count if count else 64.0


def collate(items: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest item: tokens ``Long[B, T]``, mask ``Bool[B, T - 1]``, task ``Long[B]``."""
    longest = max(len(it["tokens"]) for it in items)
    tokens = torch.full((len(items), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), longest - 1), dtype=torch.bool)
    for row, it in enumerate(items):
        tokens[row, : len(it["tokens"])] = it["tokens"]
        mask[row, : len(it["mask"])] = it["mask"]
    return {"tokens": tokens, "mask": mask, "task": torch.stack([it["task"] for it in items])}
