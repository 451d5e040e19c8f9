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
    NOTE_DENOISE_TASKS,
    PARTITION_TASKS,
    VELOCITY_TASKS,
    PianoTaskConfig,
    assemble,
    fit_notes,
    merge_velocities,
    source_and_target,
    velocity_frame,
)
from tunesmith.models.midi.tokenizer import VELOCITY, MidiTokenizer, SecondsTokenizer, TokenGrammar
from tunesmith.models.sampling import check_sampling, sample_next


@dataclasses.dataclass
class SamplingConfig:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.0
    seed: int = 0
    guidance: float = 1.0  # classifier-free guidance scale: 1 = plain conditional decoding (no second pass)


@torch.no_grad()
def generate_tokens(
    model: MidiGPT,
    prompt: torch.Tensor,
    num_tokens: int,
    sampling: SamplingConfig,
    *,
    allowed: torch.Tensor | None = None,
    stop_id: int | None = None,
    grammar: TokenGrammar | None = None,
    max_extra: int = 8,
    uncond_prompt: torch.Tensor | None = None,
) -> torch.Tensor:
    """Continue ``prompt`` (Long ``[T]``, non-empty) by up to ``num_tokens`` tokens → the new tokens ``[N]``.

    ``allowed`` (Bool ``[V]``) restricts which tokens may be drawn; decoding stops after ``stop_id``.
    With a ``grammar`` each step may only draw a token the grammar allows after the previous one (the
    last prompt token first), and a note group still open after ``num_tokens`` is finished with up to
    ``max_extra`` more tokens, so every group the decoder sees is complete.

    Classifier-free guidance (``sampling.guidance`` G != 1): ``uncond_prompt`` (Long ``[T]``) is the prompt
    with its conditioning tokens replaced by the unknown tokens training's dropout puts there; both run as
    one batch of 2 and each step draws from ``uncond + G · (cond − uncond)`` (logits), with the allowed
    tokens and the grammar applied after the mixing.
    """
    check_sampling(sampling.temperature, sampling.top_k, sampling.top_p)
    if prompt.numel() == 0:
        raise ValueError("generation needs a prompt of at least one token (e.g. BOS)")
    guided = sampling.guidance != 1.0
    if guided and (uncond_prompt is None or uncond_prompt.shape != prompt.shape):
        raise ValueError("guidance != 1 needs the unconditional prompt, of the prompt's length")
    model.eval()
    device = next(model.parameters()).device
    max_len = model.cfg.max_seq_len
    gen = torch.Generator(device=device).manual_seed(sampling.seed)
    history = (torch.stack([prompt, uncond_prompt]) if guided else prompt[None]).to(device).long()  # [R, T]
    mask = None
    if allowed is not None:
        mask = torch.where(allowed.to(device), 0.0, float("-inf"))
    follows = None
    if grammar is not None:
        follows = torch.where(torch.from_numpy(grammar.follows).to(device), 0.0, float("-inf"))
        token_class = torch.from_numpy(grammar.token_class).to(device)
        if mask is not None and bool(torch.isinf(follows + mask).all(-1).any()):
            raise ValueError("the allowed tokens and the grammar leave nothing to generate after some token")
    new: list[int] = []
    cache = model.make_cache(len(history), max_len)

    def next_logits(context: torch.Tensor) -> torch.Tensor:  # [R, t] → mixed logits [V] of the last position
        out = model(context, cache=cache)[:, -1].float()
        return out[1] + sampling.guidance * (out[0] - out[1]) if guided else out[0]

    logits = next_logits(history[:, -max_len:])
    last = int(history[0, -1])
    while True:
        if mask is not None:
            logits = logits + mask
        if follows is not None:
            logits = logits + follows[token_class[last]]
        token = int(sample_next(logits, sampling.temperature, sampling.top_k, sampling.top_p, generator=gen))
        new.append(token)
        last = token
        if token == stop_id:
            break
        if len(new) >= num_tokens and (
            grammar is None or not grammar.is_open(token) or len(new) >= num_tokens + max_extra
        ):
            break
        history = torch.cat([history, torch.full((len(history), 1), token, device=device)], dim=1)
        if cache.length >= max_len:  # slide: re-encode the recent half of the context
            cache.reset()
            logits = next_logits(history[:, -(max_len // 2) :])
        else:
            logits = next_logits(history[:, -1:])
    return torch.tensor(new, dtype=torch.long)


@torch.no_grad()
def generate_slots(
    model: MidiGPT,
    prompt: torch.Tensor,
    frame: torch.Tensor,
    slots: torch.Tensor,
    sampling: SamplingConfig,
    *,
    allowed: torch.Tensor | None = None,
    uncond_prompt: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fill the ``slots`` of ``frame`` after ``prompt``: the tokens drawn at the slots, Long ``[S]``.

    ``prompt`` Long ``[P]`` (non-empty); ``frame`` Long ``[F]``, the tokens that follow it, of which those
    where ``slots`` (Bool ``[F]``) is True are drawn (in order, each after every frame token before it; a
    slot's own value in ``frame`` is ignored) and the others are given: fed to the model as they are. So a
    velocity fill sees each note's tokens before writing its velocity. ``allowed`` (Bool ``[V]``) restricts
    the draws; guidance as in :func:`generate_tokens`. Prompt and frame must fit the model's context.
    """
    check_sampling(sampling.temperature, sampling.top_k, sampling.top_p)
    if prompt.numel() == 0:
        raise ValueError("generation needs a prompt of at least one token (e.g. BOS)")
    if frame.shape != slots.shape:
        raise ValueError(f"frame {tuple(frame.shape)} and slots {tuple(slots.shape)} differ in shape")
    if len(prompt) + len(frame) > model.cfg.max_seq_len:
        raise ValueError(
            f"{len(prompt)} prompt + {len(frame)} frame tokens exceed the model's context ({model.cfg.max_seq_len})"
        )
    guided = sampling.guidance != 1.0
    if guided and (uncond_prompt is None or uncond_prompt.shape != prompt.shape):
        raise ValueError("guidance != 1 needs the unconditional prompt, of the prompt's length")
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(sampling.seed)
    rows = torch.stack([prompt, uncond_prompt]) if guided else prompt[None]  # [R, P]
    rows = rows.to(device).long()
    filled = frame.to(device).long().clone()
    mask = None if allowed is None else torch.where(allowed.to(device), 0.0, float("-inf"))
    cache = model.make_cache(len(rows), len(prompt) + len(frame))
    drawn: list[int] = []
    pending = rows  # [R, t]: tokens to feed before the next draw
    done = 0  # frame tokens fed so far
    for slot in torch.nonzero(slots.to(device)).flatten().tolist():
        given = filled[done:slot][None].expand(len(rows), -1)
        out = model(torch.cat([pending, given], dim=1), cache=cache)[:, -1].float()
        logits = out[1] + sampling.guidance * (out[0] - out[1]) if guided else out[0]
        if mask is not None:
            logits = logits + mask
        token = int(sample_next(logits, sampling.temperature, sampling.top_k, sampling.top_p, generator=gen))
        drawn.append(token)
        filled[slot] = token
        pending = filled[slot : slot + 1][None].expand(len(rows), -1)
        done = slot + 1
    return torch.tensor(drawn, dtype=torch.long)


def continue_notes(
    model: MidiGPT,
    tok: MidiTokenizer,
    prompt: Notes,
    num_tokens: int,
    sampling: SamplingConfig,
    *,
    constrained: bool = True,
    prefix: np.ndarray | None = None,
    uncond_prefix: np.ndarray | None = None,
) -> tuple[Notes, int]:
    """Notes of ``prompt`` followed by the model's continuation (``num_tokens`` new tokens, a few more to
    finish the last note). ``constrained``: decode under the tokenizer's grammar (every note group well
    formed). ``prefix``: conditioning tokens before BOS (:mod:`tunesmith.models.midi.conditioning`);
    ``uncond_prefix``: the same positions dropped (unknown tokens), for guidance (``sampling.guidance``).
    Returns (notes, malformed note groups the decoder had to repair or drop: 0 when constrained).
    """
    head = np.concatenate([_prefix(prefix), [tok.bos_id]]).astype(np.int64)
    prompt_tokens = np.concatenate([head, tok.encode(prompt)]) if len(prompt) else head
    new = generate_tokens(
        model,
        torch.from_numpy(prompt_tokens.astype(np.int64)),
        num_tokens,
        sampling,
        stop_id=tok.eos_id,
        grammar=tok.grammar() if constrained else None,
        uncond_prompt=_as_tensor(_unconditional(prompt_tokens, prefix, uncond_prefix)),
    )
    return tok.decode_with_report(np.concatenate([prompt_tokens, new.numpy()]))


def generate_target(
    model: MidiGPT,
    tok: MidiTokenizer,
    task: str,
    prompt: np.ndarray,
    sampling: SamplingConfig,
    *,
    frame: np.ndarray | None = None,
    uncond_prompt: np.ndarray | None = None,
) -> np.ndarray:
    """The target tokens ``[N]`` (no EOS) a model generates for a piano-task ``prompt`` (a record's head).

    Velocity tasks: the velocity tokens ``[N]``, one per note in note order, written into ``frame`` (the
    target layout, :func:`~tunesmith.models.midi.tasks.velocity_frame` or a record's target: its velocity
    tokens are drawn, only from velocity tokens, and its other tokens are given). Partition and
    note-denoising tasks: notes under the tokenizer's grammar until EOS or the end of the context. This is
    the one decoding of a task, used by ``generate-midi`` and by the free-running evaluation alike.
    ``uncond_prompt``: the prompt with its conditioning prefix dropped, for guidance (``sampling.guidance``).
    """
    prompt_t = torch.from_numpy(np.asarray(prompt, np.int64))
    uncond_t = None if uncond_prompt is None else torch.from_numpy(np.asarray(uncond_prompt, np.int64))
    if task in VELOCITY_TASKS:
        if frame is None:
            raise ValueError("a velocity task needs the frame of its target (tasks.velocity_frame)")
        frame_t = torch.from_numpy(np.asarray(frame, np.int64))
        slots = torch.from_numpy(tok.types_of(np.asarray(frame, np.int64)) == VELOCITY)
        allowed = torch.from_numpy(tok.token_types == VELOCITY)
        return generate_slots(
            model, prompt_t, frame_t, slots, sampling, allowed=allowed, uncond_prompt=uncond_t
        ).numpy()
    budget = model.cfg.max_seq_len - len(prompt)
    if budget < 4:
        raise UserError(
            f"a prompt of {len(prompt)} tokens fills the model's context ({model.cfg.max_seq_len} tokens); "
            "lower piano_task.notes_per_record"
        )
    new = generate_tokens(
        model,
        prompt_t,
        budget,
        sampling,
        stop_id=tok.eos_id,
        grammar=tok.grammar(),
        max_extra=0,
        uncond_prompt=uncond_t,
    )
    new = new.numpy()
    if len(new) and new[-1] == tok.eos_id:
        new = new[:-1]
    return _complete_groups(tok, new)


def _complete_groups(tok: MidiTokenizer, tokens: np.ndarray) -> np.ndarray:
    """``tokens`` without a trailing unfinished note group (the context ran out in the middle of one):
    a pitch and a velocity are open classes, so dropping open tokens from the end removes the group."""
    grammar = tok.grammar()
    end = len(tokens)
    while end > 0 and grammar.is_open(int(tokens[end - 1])):
        end -= 1
    return tokens[:end]


def fill_velocities(
    model: MidiGPT,
    tok: MidiTokenizer,
    notes: Notes,
    task_cfg: PianoTaskConfig,
    sampling: SamplingConfig,
    task: str = "velocity",
    prefix: np.ndarray | None = None,
    uncond_prefix: np.ndarray | None = None,
) -> Notes:
    """New velocities for ``notes`` with a velocity piano task (``velocity``: from the notes without
    velocities; ``velocity_denoise``: from the notes with their current velocities), slice by slice of
    ``notes_per_record`` notes (fewer where a record would not fit the context, as in training). With the
    seconds tokenizer timing and pitches are kept exactly (notes outside its pitch range keep their
    velocity); with REMI the result is REMI's decoding (timing on its beat grid)."""
    if task not in VELOCITY_TASKS:
        raise ValueError(f"{task!r} is not a velocity task ({', '.join(VELOCITY_TASKS)})")
    notes = notes.sorted()
    velocity = notes.velocity.copy()
    value_of = velocity_values(tok)
    as_given = dataclasses.replace(task_cfg, noise_std=0.0)  # denoise what is there, add no noise
    rng = np.random.default_rng(sampling.seed)
    covered = np.nonzero(tok.in_range(notes))[0]
    decoded: list[Notes] = []
    begin, max_len = 0, model.cfg.max_seq_len
    while begin < len(covered):

        def build(n: int, begin: int = begin) -> tuple[int, tuple]:  # begin bound: this slice's start
            index = covered[begin : begin + n]
            part = notes.take(index)
            source, _ = source_and_target(tok, task, part, as_given, rng)
            prompt = assemble(tok, task, source, np.zeros(0, np.int64), task_cfg.prompt_format, with_target=False)
            head = np.concatenate([_prefix(prefix), prompt.tokens])
            frame = velocity_frame(tok, source, task_cfg.velocity_layout)
            return len(head) + len(frame), (index, part, source, head, frame)

        n, need, (index, part, source, head, frame) = fit_notes(
            min(task_cfg.notes_per_record, len(covered) - begin), max_len, build
        )
        if need > max_len:
            raise UserError(
                f"one note needs {need} tokens, more than the model's context ({max_len}); raise model.max_seq_len"
            )
        uncond = _unconditional(head, prefix, uncond_prefix)
        predicted = generate_target(model, tok, task, head, sampling, frame=frame, uncond_prompt=uncond)
        if isinstance(tok, SecondsTokenizer):
            velocity[index[note_order(tok, part)]] = value_of[predicted]
        else:
            bare = source[tok.types_of(source) != VELOCITY]
            decoded.append(tok.decode(merge_velocities(tok, bare, predicted)).shifted(float(part.start.min())))
        begin += n
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
    prefix: np.ndarray | None = None,
    uncond_prefix: np.ndarray | None = None,
) -> tuple[Notes, int]:
    """Run a partition task (``loud_from_soft``, ``soft_from_loud``, ``high_from_low``, ``low_from_high``):
    ``notes`` are the source half; returns them together with the generated other half, and the number of
    malformed note groups the decoder repaired (0: generation is grammar-constrained). The input is taken
    in slices of ``notes_per_record // 2`` notes, the size of a source in training."""
    if task not in PARTITION_TASKS:
        raise ValueError(f"{task!r} is not a partition task ({', '.join(PARTITION_TASKS)})")
    notes = notes.sorted()
    covered = np.nonzero(tok.in_range(notes))[0]
    step = max(task_cfg.notes_per_record // 2, 1)
    parts = [notes]
    repairs = 0
    for begin in range(0, len(covered), step):
        part = notes.take(covered[begin : begin + step])
        origin = float(part.start.min())
        source = tok.encode(part, origin)
        prompt = assemble(tok, task, source, np.zeros(0, np.int64), task_cfg.prompt_format, with_target=False)
        head = np.concatenate([_prefix(prefix), prompt.tokens])
        new = generate_target(
            model, tok, task, head, sampling, uncond_prompt=_unconditional(head, prefix, uncond_prefix)
        )
        decoded, malformed = tok.decode_with_report(new)
        repairs += malformed
        parts.append(decoded.shifted(origin))
    return _concat(parts), repairs


def denoise_notes(
    model: MidiGPT,
    tok: MidiTokenizer,
    task: str,
    notes: Notes,
    task_cfg: PianoTaskConfig,
    sampling: SamplingConfig,
    prefix: np.ndarray | None = None,
    uncond_prefix: np.ndarray | None = None,
) -> tuple[Notes, int]:
    """Run a note-denoising task (``pitch_denoise``, ``time_denoise``) on ``notes`` as given (no noise is
    added): slice by slice of at most ``notes_per_record`` notes (fewer when a record would not fit the
    context), the model writes the slice again, cleaned. Notes outside the tokenizer's pitch range are
    kept as they are. Returns (notes, malformed note groups repaired: 0 under the grammar)."""
    if task not in NOTE_DENOISE_TASKS:
        raise ValueError(f"{task!r} is not a note-denoising task ({', '.join(NOTE_DENOISE_TASKS)})")
    notes = notes.sorted()
    inside = tok.in_range(notes)
    covered = np.nonzero(inside)[0]
    parts = [notes.take(~inside)]
    repairs, begin, max_len = 0, 0, model.cfg.max_seq_len
    while begin < len(covered):

        def build(n: int, begin: int = begin) -> tuple[int, tuple]:  # begin bound: this slice's start
            part = notes.take(covered[begin : begin + n])
            origin = float(part.start.min())
            source = tok.encode(part, origin)
            prompt = assemble(tok, task, source, np.zeros(0, np.int64), task_cfg.prompt_format, with_target=False)
            head = np.concatenate([_prefix(prefix), prompt.tokens])
            return len(head) + len(source) + 1, (origin, head)  # the clean notes take about as many tokens

        n, _, (origin, head) = fit_notes(min(task_cfg.notes_per_record, len(covered) - begin), max_len, build)
        new = generate_target(
            model, tok, task, head, sampling, uncond_prompt=_unconditional(head, prefix, uncond_prefix)
        )
        decoded, malformed = tok.decode_with_report(new)
        repairs += malformed
        parts.append(decoded.shifted(origin))
        begin += n
    return _concat(parts), repairs


def _unconditional(head: np.ndarray, prefix: np.ndarray | None, uncond_prefix: np.ndarray | None) -> np.ndarray | None:
    """``head`` (which starts with ``prefix``) with the prefix replaced by ``uncond_prefix``; None without one."""
    if uncond_prefix is None:
        return None
    n = len(_prefix(prefix))
    if len(uncond_prefix) != n:
        raise ValueError(f"the unconditional prefix has {len(uncond_prefix)} tokens, the prefix {n}")
    return np.concatenate([np.asarray(uncond_prefix, np.int64), np.asarray(head, np.int64)[n:]])


def _as_tensor(tokens: np.ndarray | None) -> torch.Tensor | None:
    return None if tokens is None else torch.from_numpy(np.asarray(tokens, np.int64))


def _prefix(prefix: np.ndarray | None) -> np.ndarray:
    return np.zeros(0, np.int64) if prefix is None else np.asarray(prefix, np.int64)


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
