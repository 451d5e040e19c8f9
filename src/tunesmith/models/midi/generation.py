"""Generation with a MIDI GPT: continue a piece, or fill in velocities for given notes.

Decoding uses the shared KV cache and :mod:`tunesmith.models.sampling`. A continuation longer than the
model's context slides: when the cache is full, the last ``max_seq_len // 2`` tokens are encoded
again and decoding goes on from there.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from tunesmith.errors import UserError
from tunesmith.models.midi.gpt import MidiGPT
from tunesmith.models.midi.notes import Notes
from tunesmith.models.midi.tasks import (
    PARTITION_TASKS,
    VELOCITY_TASKS,
    PianoTaskConfig,
    assemble,
    merge_velocities,
    source_and_target,
)
from tunesmith.models.midi.tokenizer import PITCH, VELOCITY, MidiTokenizer, SecondsTokenizer
from tunesmith.models.sampling import check_sampling, sample_next


@dataclasses.dataclass
class SamplingConfig:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.0
    seed: int = 0


@torch.no_grad()
def generate_tokens(
    model: MidiGPT,
    prompt: torch.Tensor,
    num_tokens: int,
    sampling: SamplingConfig,
    *,
    allowed: torch.Tensor | None = None,
    stop_id: int | None = None,
) -> torch.Tensor:
    """Continue ``prompt`` (Long ``[T]``, non-empty) by up to ``num_tokens`` tokens → the new tokens ``[N]``.

    ``allowed`` (Bool ``[V]``) restricts which tokens may be drawn; decoding stops after ``stop_id``.
    """
    check_sampling(sampling.temperature, sampling.top_k, sampling.top_p)
    if prompt.numel() == 0:
        raise ValueError("generation needs a prompt of at least one token (e.g. BOS)")
    model.eval()
    device = next(model.parameters()).device
    max_len = model.cfg.max_seq_len
    gen = torch.Generator(device=device).manual_seed(sampling.seed)
    history = prompt.to(device).long()
    mask = None
    if allowed is not None:
        mask = torch.where(allowed.to(device), 0.0, float("-inf"))
    new: list[int] = []
    cache = model.make_cache(1, max_len)
    context = history[-max_len:]
    logits = model(context[None], cache=cache)[0, -1]
    while len(new) < num_tokens:
        if mask is not None:
            logits = logits.float() + mask
        token = int(sample_next(logits, sampling.temperature, sampling.top_k, sampling.top_p, generator=gen))
        new.append(token)
        if token == stop_id or len(new) == num_tokens:
            break
        history = torch.cat([history, torch.tensor([token], device=device)])
        if cache.length >= max_len:  # slide: re-encode the recent half of the context
            cache.reset()
            logits = model(history[-(max_len // 2) :][None], cache=cache)[0, -1]
        else:
            logits = model(history[-1:][None], cache=cache)[0, -1]
    return torch.tensor(new, dtype=torch.long)


def continue_notes(
    model: MidiGPT, tok: MidiTokenizer, prompt: Notes, num_tokens: int, sampling: SamplingConfig
) -> tuple[Notes, int]:
    """Notes of ``prompt`` followed by the model's continuation (``num_tokens`` new tokens at most).

    Returns (notes, malformed note groups in the generated tokens).
    """
    prompt_tokens = np.concatenate([[tok.bos_id], tok.encode(prompt)]) if len(prompt) else np.asarray([tok.bos_id])
    new = generate_tokens(
        model, torch.from_numpy(prompt_tokens.astype(np.int64)), num_tokens, sampling, stop_id=tok.eos_id
    )
    return tok.decode_with_report(np.concatenate([prompt_tokens, new.numpy()]))


def fill_velocities(
    model: MidiGPT,
    tok: MidiTokenizer,
    notes: Notes,
    task_cfg: PianoTaskConfig,
    sampling: SamplingConfig,
    task: str = "velocity",
) -> Notes:
    """New velocities for ``notes`` with a velocity piano task (``velocity``: from the notes without
    velocities; ``velocity_denoise``: from the notes with their current velocities), slice by slice of
    ``notes_per_record`` notes. With the seconds tokenizer timing and pitches are kept exactly (notes
    outside its pitch range keep their velocity); with REMI the result is REMI's decoding (timing on
    its beat grid)."""
    if task not in VELOCITY_TASKS:
        raise ValueError(f"{task!r} is not a velocity task ({', '.join(VELOCITY_TASKS)})")
    notes = notes.sorted()
    velocity = notes.velocity.copy()
    allowed = torch.from_numpy(tok.token_types == VELOCITY)
    value_of = velocity_values(tok)
    npr = task_cfg.notes_per_record
    as_given = dataclasses.replace(task_cfg, noise_std=0.0)  # denoise what is there, add no noise
    rng = np.random.default_rng(sampling.seed)
    covered = np.nonzero(tok.in_range(notes))[0]
    decoded: list[Notes] = []
    for begin in range(0, len(covered), npr):
        index = covered[begin : begin + npr]
        part = notes.take(index)
        source, _ = source_and_target(tok, task, part, as_given, rng)
        prompt = assemble(tok, task, source, np.zeros(0, np.int64), task_cfg.prompt_format, with_target=False)
        n_pitch = int((tok.types_of(source) == PITCH).sum())
        if len(prompt.tokens) + n_pitch > model.cfg.max_seq_len:
            raise UserError(
                f"{len(part)} notes need {len(prompt.tokens) + n_pitch} tokens, more than the model's context "
                f"({model.cfg.max_seq_len}); lower piano_task.notes_per_record"
            )
        predicted = generate_tokens(model, torch.from_numpy(prompt.tokens), n_pitch, sampling, allowed=allowed).numpy()
        if isinstance(tok, SecondsTokenizer):
            velocity[index[note_order(tok, part)]] = value_of[predicted]
        else:
            bare = source[tok.types_of(source) != VELOCITY]
            decoded.append(tok.decode(merge_velocities(tok, bare, predicted)).shifted(float(part.start.min())))
    if isinstance(tok, SecondsTokenizer):
        return notes.with_velocity(velocity)
    return _concat(decoded)


def complete_notes(
    model: MidiGPT,
    tok: MidiTokenizer,
    task: str,
    notes: Notes,
    task_cfg: PianoTaskConfig,
    sampling: SamplingConfig,
) -> Notes:
    """Run a partition task (``loud_from_soft``, ``soft_from_loud``, ``high_from_low``, ``low_from_high``):
    ``notes`` are the source half; returns them together with the generated other half. The input is
    taken in slices of ``notes_per_record // 2`` notes, the size of a source in training."""
    if task not in PARTITION_TASKS:
        raise ValueError(f"{task!r} is not a partition task ({', '.join(PARTITION_TASKS)})")
    notes = notes.sorted()
    covered = np.nonzero(tok.in_range(notes))[0]
    step = max(task_cfg.notes_per_record // 2, 1)
    parts = [notes]
    for begin in range(0, len(covered), step):
        part = notes.take(covered[begin : begin + step])
        origin = float(part.start.min())
        source = tok.encode(part, origin)
        prompt = assemble(tok, task, source, np.zeros(0, np.int64), task_cfg.prompt_format, with_target=False)
        budget = model.cfg.max_seq_len - len(prompt.tokens)
        if budget < 4:
            raise UserError(
                f"{len(part)} source notes fill the model's context ({model.cfg.max_seq_len} tokens); "
                "lower piano_task.notes_per_record"
            )
        new = generate_tokens(model, torch.from_numpy(prompt.tokens), budget, sampling, stop_id=tok.eos_id).numpy()
        parts.append(tok.decode(new[new != tok.eos_id]).shifted(origin))
    return _concat(parts)


def _concat(parts: list[Notes]) -> Notes:
    if not parts:
        return Notes.empty()
    fields = ("pitch", "start", "end", "velocity")
    return Notes(*(np.concatenate([getattr(p, k) for p in parts]) for k in fields), parts[0].pedals).sorted()


def velocity_values(tok: MidiTokenizer) -> np.ndarray:
    """Velocity (1..127) of each velocity token id, 0 for other tokens: int64 ``[V]``."""
    out = np.zeros(tok.vocab_size, np.int64)
    for i, name in enumerate(tok.vocab):
        if tok.token_types[i] == VELOCITY:
            out[i] = int(name.split("_", 1)[1])
    return out


def note_order(tok: SecondsTokenizer, notes: Notes) -> np.ndarray:
    """Indices of ``notes`` (all within the pitch range) in the order the seconds tokenizer writes them."""
    origin = float(notes.start.min()) if len(notes) else 0.0
    onset = np.round((notes.start - origin) / tok.time_step).astype(np.int64)
    return np.lexsort((notes.pitch, onset))
