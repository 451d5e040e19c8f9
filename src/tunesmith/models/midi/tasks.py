"""Piano tasks: records where the model predicts a target token sequence from a source.

A record is built from a slice of ``notes_per_record`` notes, times measured from its first onset:

    task_first:  BOS Task_x source... SEP target... EOS
    task_last:   BOS source... Task_x target... EOS

Only the target tokens and the closing EOS are trained on (``target_mask``); a velocity task trains on
its target's velocity tokens only. Tasks:

- ``velocity``: source = the notes without their velocity tokens; target = the velocities (layout below).
- ``velocity_denoise``: source = the notes with Gaussian noise (``noise_std``) on their velocities;
  target = the true velocities (layout below).
- ``loud_from_soft`` / ``soft_from_loud``: notes split at the slice's median velocity (above the
  median is "loud"); source = one half, target = the other half (all their tokens).
- ``high_from_low`` / ``low_from_high``: the same split by pitch.
- ``high_quartile`` / ``low_quartile`` / ``loud_quartile`` / ``soft_quartile``: target = the notes above the
  75th (below the 25th) percentile of pitch or velocity; source = the rest.
- ``infill_span``: target = the notes whose onset lies in a span of a quarter of the slice's duration
  (placed at random); source = the notes around it.
- ``pitch_denoise``: source = the notes with a share ``pitch_noise_fraction`` of them moved by 1 to
  ``pitch_noise`` semitones up or down (kept within the tokenizer's pitch range); target = the true notes
  (all their tokens).
- ``time_denoise``: source = the notes with Gaussian noise (``time_noise_std`` seconds) on their onsets
  (durations kept, onsets not before the slice's first true onset); target = the true notes.

A velocity task's target has one of two layouts (``velocity_layout``):

- ``interleaved`` (the default): the slice's notes written again with their true velocity tokens, each
  right after its note's pitch token. The note tokens are given (not trained on; at generation they are
  fed, not drawn), so the model writes each velocity right after the note it belongs to, with the whole
  source before it.
- ``appended``: the velocity tokens alone, in note order (runs made before the layout existed): the model
  must count along the source to know which note a velocity is for, and at generation it leans on
  copying its own earlier velocities (benchmarks/RESULTS.md, issue 19).

The tasks after the first six use the tokenizer's reserved tokens as task tokens
(:data:`~tunesmith.models.midi.tokenizer.RESERVED_TASKS`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal, TypeVar

import numpy as np

from tunesmith.errors import UserError
from tunesmith.models.midi.bpe import require_base_tokens
from tunesmith.models.midi.notes import Notes
from tunesmith.models.midi.tokenizer import ALL_TASKS, PITCH, VELOCITY, MidiTokenizer

Built = TypeVar("Built")

VELOCITY_TASKS: tuple[str, ...] = ("velocity", "velocity_denoise")
VELOCITY_LAYOUTS: tuple[str, ...] = ("interleaved", "appended")
NOTE_DENOISE_TASKS: tuple[str, ...] = ("pitch_denoise", "time_denoise")  # target: the true notes, all tokens
PARTITION_TASKS: tuple[str, ...] = (
    "loud_from_soft",
    "soft_from_loud",
    "high_from_low",
    "low_from_high",
    "infill_span",
    "high_quartile",
    "low_quartile",
    "loud_quartile",
    "soft_quartile",
)
INFILL_FRACTION = 0.25  # infill_span: the masked span's share of the slice's duration


@dataclasses.dataclass
class PianoTaskConfig:
    """The ``piano_task:`` section: which tasks, record size and prompt format."""

    tasks: list[str] = dataclasses.field(default_factory=lambda: ["velocity"])
    notes_per_record: int = 64
    prompt_format: Literal["task_first", "task_last"] = "task_first"
    velocity_layout: Literal["interleaved", "appended"] = "interleaved"  # a velocity task's target (above)
    noise_std: float = 12.0  # velocity_denoise: std of the Gaussian noise on velocities (velocity units)
    pitch_noise: int = 2  # pitch_denoise: a noisy note moves by 1..pitch_noise semitones, up or down
    pitch_noise_fraction: float = 0.25  # pitch_denoise: share of the notes whose pitch is moved
    time_noise_std: float = 0.03  # time_denoise: std of the Gaussian noise on onsets (s)
    min_notes: int = 8  # shorter slices (at the end of a piece) are not used


def check_task_config(cfg: PianoTaskConfig) -> None:
    """Raise ``UserError`` naming the key when the piano-task section is unusable."""
    if not cfg.tasks:
        raise UserError(f"piano_task.tasks is empty; choose from {', '.join(ALL_TASKS)}")
    unknown = [t for t in cfg.tasks if t not in ALL_TASKS]
    if unknown:
        raise UserError(f"piano_task.tasks: unknown task(s) {unknown}; choose from {', '.join(ALL_TASKS)}")
    if cfg.notes_per_record < 2 or cfg.min_notes < 1:
        raise UserError("piano_task.notes_per_record must be >= 2 and piano_task.min_notes >= 1")
    if cfg.velocity_layout not in VELOCITY_LAYOUTS:
        raise UserError(f"piano_task.velocity_layout={cfg.velocity_layout!r}: expected {' or '.join(VELOCITY_LAYOUTS)}")
    if cfg.noise_std < 0:
        raise UserError(f"piano_task.noise_std={cfg.noise_std}: must be >= 0")
    if cfg.pitch_noise < 1:
        raise UserError(f"piano_task.pitch_noise={cfg.pitch_noise}: must be >= 1 (semitones)")
    if not 0 <= cfg.pitch_noise_fraction <= 1:
        raise UserError(f"piano_task.pitch_noise_fraction={cfg.pitch_noise_fraction}: must be within [0, 1]")
    if cfg.time_noise_std < 0:
        raise UserError(f"piano_task.time_noise_std={cfg.time_noise_std}: must be >= 0 (seconds)")


@dataclasses.dataclass
class TaskRecord:
    """tokens ``[T]`` int64 and target_mask ``[T]`` bool (True where the token is a training target);
    the first ``prompt_len`` tokens are the prompt a model continues from (the target follows)."""

    tokens: np.ndarray
    target_mask: np.ndarray
    task: str
    prompt_len: int

    def __len__(self) -> int:
        return len(self.tokens)


def source_and_target(
    tok: MidiTokenizer, task: str, notes: Notes, cfg: PianoTaskConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The source and target token arrays of ``task`` on a slice of notes (sorted by onset, pitch)."""
    if not len(notes):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    origin = float(notes.start.min())
    if task in VELOCITY_TASKS:
        require_base_tokens(tok, task)  # a BPE tokenizer's merged tokens hide the velocity slots: refused
        full = tok.encode(notes, origin)
        is_velocity = tok.types_of(full) == VELOCITY
        target = full if cfg.velocity_layout == "interleaved" else full[is_velocity]
        if task == "velocity":
            return full[~is_velocity], target
        noisy = np.clip(np.round(notes.velocity + rng.normal(0.0, cfg.noise_std, len(notes))), 1, 127)
        return tok.encode(notes.with_velocity(noisy), origin), target
    if task in NOTE_DENOISE_TASKS:
        noisy = add_note_noise(task, notes, cfg, rng, tok.pitch_min, tok.pitch_max)
        return tok.encode(noisy, origin), tok.encode(notes, origin)
    target = partition_target(task, notes, rng)
    source_notes, target_notes = notes.take(~target), notes.take(target)
    return tok.encode(source_notes, origin), tok.encode(target_notes, origin)


def add_note_noise(
    task: str, notes: Notes, cfg: PianoTaskConfig, rng: np.random.Generator, pitch_min: int, pitch_max: int
) -> Notes:
    """The noisy source notes of a note-denoising task, sorted by (onset, pitch).

    ``pitch_denoise``: each note is picked with probability ``pitch_noise_fraction`` and moved by
    ``±k`` semitones, ``k`` uniform in 1..``pitch_noise`` and the sign uniform; a move that would leave
    ``[pitch_min, pitch_max]`` goes the other way (and is dropped when that leaves it too).
    ``time_denoise``: every onset moves by ``N(0, time_noise_std)`` seconds, the note keeps its duration,
    and no onset moves before the slice's first true onset (the encoding's origin). Draws come from
    ``rng`` only, so a record is a function of its seed.
    """
    n = len(notes)
    if task == "pitch_denoise":
        picked = rng.random(n) < cfg.pitch_noise_fraction
        step = rng.integers(1, cfg.pitch_noise + 1, n) * rng.choice(np.array([-1, 1]), n)
        pitch = notes.pitch.astype(np.int64)
        up = pitch + step
        down = pitch - step
        moved = np.where((up >= pitch_min) & (up <= pitch_max), up, down)
        inside = (pitch >= pitch_min) & (pitch <= pitch_max)  # others are not encoded: leave them be
        ok = picked & inside & (moved >= pitch_min) & (moved <= pitch_max)
        return Notes(np.where(ok, moved, pitch), notes.start, notes.end, notes.velocity, notes.pedals).sorted()
    if task == "time_denoise":
        origin = float(notes.start.min()) if n else 0.0
        start = np.maximum(notes.start + rng.normal(0.0, cfg.time_noise_std, n), origin)
        shift = start - notes.start
        return Notes(notes.pitch, start, notes.end + shift, notes.velocity, notes.pedals).sorted()
    raise ValueError(f"{task!r} is not a note-denoising task ({', '.join(NOTE_DENOISE_TASKS)})")


def partition_target(task: str, notes: Notes, rng: np.random.Generator) -> np.ndarray:
    """Bool ``[N]``: the notes a partition task asks for (the rest is its source). Halves split at the
    median (``loud_from_soft``: velocity above it …), quartiles at the 25th/75th percentile
    (``high_quartile``: pitch above the 75th …), ``infill_span``: onsets inside a span of
    :data:`INFILL_FRACTION` of the slice's duration at a position drawn from ``rng``."""
    if task == "infill_span":
        lo, hi = float(notes.start.min()), float(notes.start.max())
        width = (hi - lo) * INFILL_FRACTION
        begin = lo + float(rng.uniform(0.0, 1.0)) * (hi - lo - width)
        return (notes.start >= begin) & (notes.start < begin + width) if width > 0 else np.zeros(len(notes), bool)
    attribute = "velocity" if ("loud" in task or "soft" in task) else "pitch"
    values = getattr(notes, attribute).astype(np.float64)
    if task.endswith("_quartile"):
        if task in ("high_quartile", "loud_quartile"):
            return values > np.percentile(values, 75)
        return values < np.percentile(values, 25)
    upper = values > np.median(values)
    return upper if task in ("loud_from_soft", "high_from_low") else ~upper


def assemble(
    tok: MidiTokenizer, task: str, source: np.ndarray, target: np.ndarray, fmt: str, *, with_target: bool = True
) -> TaskRecord:
    """Lay out a record in ``fmt``; without the target it is the prompt a model continues from. The mask
    covers the target and the EOS; for a velocity task only the target's velocity tokens and the EOS."""
    task_id = tok.task_id(task)
    if fmt == "task_first":
        head = [tok.bos_id, task_id, *source.tolist(), tok.sep_id]
    elif fmt == "task_last":
        head = [tok.bos_id, *source.tolist(), task_id]
    else:
        raise UserError(f"piano_task.prompt_format={fmt!r}: expected task_first or task_last")
    tail = [*target.tolist(), tok.eos_id] if with_target else []
    tokens = np.asarray(head + tail, np.int64)
    mask = np.zeros(len(tokens), bool)
    mask[len(head) :] = True
    if task in VELOCITY_TASKS and with_target:
        mask[len(head) : -1] = tok.types_of(np.asarray(target, np.int64)) == VELOCITY
    return TaskRecord(tokens, mask, task, len(head))


def build_record(
    tok: MidiTokenizer,
    task: str,
    notes: Notes,
    cfg: PianoTaskConfig,
    rng: np.random.Generator,
    max_tokens: int,
) -> TaskRecord:
    """A training/eval record of at most ``max_tokens`` tokens: trailing notes are dropped until it fits."""

    def build(n: int) -> tuple[int, TaskRecord]:
        source, target = source_and_target(tok, task, notes.take(slice(0, n)), cfg, rng)
        record = assemble(tok, task, source, target, cfg.prompt_format)
        return len(record), record

    _, need, record = fit_notes(len(notes), max_tokens, build)
    if need > max_tokens:
        raise UserError(
            f"a single note of task {task!r} takes {need} tokens, more than the model's "
            f"context ({max_tokens}); raise model.max_seq_len"
        )
    return record


def fit_notes(n: int, max_tokens: int, build: Callable[[int], tuple[int, Built]]) -> tuple[int, int, Built]:
    """The most notes, ``n`` at most, whose record fits: ``build(k)`` → (tokens needed, record) for the first
    ``k`` notes; each retry shrinks ``k`` in proportion to the overshoot. Returns (k, tokens needed, record);
    at ``k`` <= 1 it stops even when the record does not fit (the caller says what to do then)."""
    while True:
        need, built = build(n)
        if need <= max_tokens or n <= 1:
            return n, need, built
        n = max(1, min(n - 1, int(n * max_tokens / need)))


def merge_velocities(tok: MidiTokenizer, source: np.ndarray, velocities: np.ndarray) -> np.ndarray:
    """Put velocity tokens back after each pitch token of a velocity-free source.

    ``velocities`` holds one velocity token per pitch token, in order; missing ones (fewer given)
    leave the note without a velocity token (the decoder then uses its default).
    """
    pitch_positions = np.nonzero(tok.types_of(source) == PITCH)[0]
    k = min(len(pitch_positions), len(velocities))
    return np.insert(source, pitch_positions[:k] + 1, velocities[:k])


def velocity_frame(tok: MidiTokenizer, source: np.ndarray, layout: str) -> np.ndarray:
    """The target layout of a velocity task on ``source`` with every velocity still to be written: Long
    ``[F]`` whose velocity tokens are the slots (a placeholder value) and whose other tokens are given.
    ``interleaved``: the source's notes with a slot after each pitch token; ``appended``: one slot per note."""
    bare = source[tok.types_of(source) != VELOCITY]
    slot = int(np.nonzero(tok.token_types == VELOCITY)[0][0])
    slots = np.full(int((tok.types_of(bare) == PITCH).sum()), slot, np.int64)
    if layout == "appended":
        return slots
    if layout != "interleaved":
        raise ValueError(f"velocity layout {layout!r}: expected {' or '.join(VELOCITY_LAYOUTS)}")
    return merge_velocities(tok, bare, slots)


def slice_starts(n_notes: int, cfg: PianoTaskConfig) -> list[int]:
    """Fixed, non-overlapping slice starts over a piece of ``n_notes`` notes (short tails skipped)."""
    step = cfg.notes_per_record
    return [s for s in range(0, n_notes, step) if min(step, n_notes - s) >= cfg.min_notes]
