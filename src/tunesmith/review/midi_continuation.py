"""Continuation rows of a pretrain-stage MIDI run's review page: for a few fixed pieces of the eval split,
the prompt (the piece's first ``generate.prompt_tokens`` tokens, as the run's generate stage takes it) and
each checkpoint's sampled continuation (``generate.tokens`` new tokens under the tokenizer's grammar, the
run's ``generate`` temperature / top-k / top-p, seeded by the piece id so every checkpoint and every
review draws the same random numbers), drawn as piano rolls: prompt grey, continuation coloured by velocity.

A generated continuation is cached in ``pianoroll.json`` as plain note arrays (the prompt and the new
notes together, as :func:`~tunesmith.models.midi.generation.continue_notes` decodes them) with its repair
count, and written as ``piece<N>_continuation.mid`` beside it.
"""

from __future__ import annotations

import dataclasses
import html
from collections import Counter
from typing import Any

import numpy as np

from tunesmith.models.midi.notes import Notes
from tunesmith.review.pianoroll import pianoroll_svg

CONTINUATION = "continuation"  # the row "task" of a pretrain-stage run (file stem piece<N>_continuation)


@dataclasses.dataclass
class ContinuationRow:
    """One fixed piece of a pretrain-stage run: its prompt notes and the generation settings."""

    key: str
    piece: int
    name: str
    prompt: Notes
    prefix: np.ndarray | None  # conditioning tokens before BOS (None: the model has none)
    tokens: int  # new tokens per continuation
    temperature: float
    top_k: int
    top_p: float

    task = CONTINUATION

    @property
    def seed(self) -> int:
        return int(self.piece)


def generate_settings(config: dict) -> dict[str, Any]:
    """The run's ``generate`` section (prompt_tokens, tokens, temperature, top_k, top_p) with the defaults
    of the midi config for keys it does not hold."""
    from tunesmith.tasks.midi import MidiGenerateConfig

    defaults = dataclasses.asdict(MidiGenerateConfig())
    given = config.get("generate") if isinstance(config.get("generate"), dict) else {}
    return {k: type(defaults[k])(given.get(k, defaults[k])) for k in defaults}


def continuation_rows(store, loaded, pieces: list[int], settings: dict[str, Any]) -> list[ContinuationRow]:
    """A row per piece id of ``pieces``: its first ``prompt_tokens`` tokens decoded (the prompt, as the model
    reads it back: quantized to the tokenizer's grid)."""
    tok = loaded.tokenizer
    rows = []
    for piece in pieces:
        opening = tok.decode(tok.encode(store.notes(piece))[: settings["prompt_tokens"]])
        prompt = tok.quantize(opening)  # as continue_notes re-encodes it (a cut last note gets default values)
        meta = store.pieces[piece]
        cond = loaded.conditioner
        prefix = cond.piece_prefix(meta) if cond is not None and len(cond) else None
        rows.append(
            ContinuationRow(
                key=f"{piece}:{CONTINUATION}:{settings['prompt_tokens']}:{settings['tokens']}",
                piece=piece,
                name=str(meta.get("title") or meta.get("midi_filename") or piece),
                prompt=prompt,
                prefix=prefix,
                tokens=settings["tokens"],
                temperature=settings["temperature"],
                top_k=settings["top_k"],
                top_p=settings["top_p"],
            )
        )
    return rows


def generate_continuation(loaded, row: ContinuationRow) -> dict[str, Any]:
    """The cache entry of ``row`` for ``loaded``'s weights: the notes (prompt + continuation) and repairs."""
    from tunesmith.models.midi.generation import SamplingConfig, continue_notes

    sampling = SamplingConfig(row.temperature, row.top_k, row.top_p, seed=row.seed)
    notes, repairs = continue_notes(loaded.model, loaded.tokenizer, row.prompt, row.tokens, sampling, prefix=row.prefix)
    return {**notes_to_json(notes), "repairs": int(repairs)}


def notes_to_json(notes: Notes) -> dict[str, list]:
    """Plain lists of a Notes' arrays (pitch, start s, end s, velocity); pedals are not kept."""
    return {
        "pitch": notes.pitch.tolist(),
        "start": notes.start.tolist(),
        "end": notes.end.tolist(),
        "velocity": notes.velocity.tolist(),
    }


def notes_from_json(entry: dict) -> Notes:
    return Notes(entry["pitch"], entry["start"], entry["end"], entry["velocity"])


def new_notes(full: Notes, prompt: Notes) -> Notes:
    """The notes of ``full`` (prompt + continuation, sorted) that are not the prompt's: the multiset
    difference on (pitch, start, end, velocity), so a generated note equal to a prompt note still counts."""

    def key(n: Notes, i: int) -> tuple:
        return (int(n.pitch[i]), round(float(n.start[i]), 6), round(float(n.end[i]), 6), int(n.velocity[i]))

    left = Counter(key(prompt, i) for i in range(len(prompt)))
    keep = []
    for i in range(len(full)):
        k = key(full, i)
        if left[k]:
            left[k] -= 1
        else:
            keep.append(i)
    return full.take(np.asarray(keep, np.int64))


def continuation_svg(prompt: Notes, made: Notes, extent, title: str) -> str:
    """A roll of the prompt (grey) followed by the generated notes (velocity colours)."""
    return pianoroll_svg(made, extent, role="generated", title=title, context=prompt)


def continuation_caption(row: ContinuationRow, made: Notes, repairs: int) -> str:
    top = f", top-k {row.top_k}" if row.top_k else ""
    return (
        f"continuation ({len(made)} new notes, {row.tokens} tokens sampled at T={row.temperature:g}{top}, "
        f"top-p {row.top_p:g}, seed {row.seed}; {repairs} repairs)"
    )


def samples_note(rows: list[ContinuationRow], split: str, prompt_tokens: int) -> str:
    if not rows:
        return ""
    r = rows[0]
    return (
        f"The first {prompt_tokens} tokens of {len(rows)} pieces of the {split} split (grey: the prompt, as the run's "
        f"generate stage takes it), continued by each checkpoint for {r.tokens} tokens, sampled with the run's "
        f"generate settings (temperature {r.temperature:g}, top-k {r.top_k}, top-p {r.top_p:g}), seeded by the piece "
        "so every checkpoint draws the same random numbers. Colour and opacity of the continuation: velocity "
        "(soft pale blue → loud dark red). Each continuation is also saved as piece<N>_continuation.mid."
    )


def prompt_figure_caption(row: ContinuationRow, prompt_tokens: int) -> str:
    return html.escape(f"prompt ({len(row.prompt)} notes, the first {prompt_tokens} tokens)")
