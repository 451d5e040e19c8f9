"""Generation with a MIDI GPT: continue a piece, or fill in velocities for given notes.

Decoding uses the shared KV cache and :mod:`tunesmith.sampling`. A continuation longer than the
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
from tunesmith.models.midi.tasks import PianoTaskConfig, assemble, merge_velocities, source_and_target
from tunesmith.models.midi.tokenizer import PITCH, VELOCITY, MidiTokenizer, SecondsTokenizer
from tunesmith.sampling import check_sampling, sample_next


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
    model: MidiGPT, tok: MidiTokenizer, notes: Notes, task_cfg: PianoTaskConfig, sampling: SamplingConfig
) -> Notes:
    """New velocities for ``notes`` with the ``velocity`` piano task, slice by slice of
    ``notes_per_record`` notes. With the seconds tokenizer timing and pitches are kept exactly (notes
    outside its pitch range keep their velocity); with REMI the result is REMI's decoding (timing on
    its beat grid)."""
    notes = notes.sorted()
    velocity = notes.velocity.copy()
    allowed = torch.from_numpy(tok.token_types == VELOCITY)
    value_of = velocity_values(tok)
    npr = task_cfg.notes_per_record
    rng = np.random.default_rng(sampling.seed)
    covered = np.nonzero(tok.in_range(notes))[0]
    decoded: list[Notes] = []
    for begin in range(0, len(covered), npr):
        index = covered[begin : begin + npr]
        part = notes.take(index)
        source, _ = source_and_target(tok, "velocity", part, task_cfg, rng)
        prompt = assemble(tok, "velocity", source, np.zeros(0, np.int64), task_cfg.prompt_format, with_target=False)
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
            origin = float(part.start.min())
            decoded.append(tok.decode(merge_velocities(tok, source, predicted)).shifted(origin))
    if isinstance(tok, SecondsTokenizer):
        return notes.with_velocity(velocity)
    merged = Notes(*(np.concatenate([getattr(d, k) for d in decoded]) for k in ("pitch", "start", "end", "velocity")))
    return merged.sorted()


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
