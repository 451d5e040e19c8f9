"""Generation with a MIDI GPT: continue a piece, or run a piano task (velocities, the other half) on its notes.

:func:`generate_notes` works on a loaded model (:func:`tunesmith.models.midi.loading.load_midi_model`);
:func:`generate_midi` goes from a run and a .mid prompt to a written .mid (and optionally a .wav).
The decoding itself is :mod:`tunesmith.models.midi.generation`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tunesmith.models.midi.tasks import PARTITION_TASKS, VELOCITY_TASKS

CONTINUE = "continue"
TASKS = (*VELOCITY_TASKS, *PARTITION_TASKS)  # every piano task generate-midi can do


@dataclasses.dataclass
class MidiOutput:
    """A written piece: ``out`` (.mid), ``wav`` when rendered, note counts and the checkpoint used."""

    out: Path
    wav: Path | None
    notes: int
    prompt_notes: int
    malformed: int  # note groups the decoder repaired or dropped (0 under grammar-constrained decoding)
    checkpoint: Path

    def summary(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "wav": str(self.wav) if self.wav else None,
            "notes": self.notes,
            "prompt_notes": self.prompt_notes,
            "malformed": self.malformed,
            "repairs": self.malformed,
            "checkpoint": str(self.checkpoint),
        }


def check_task(loaded: Any, task: str) -> None:
    """UserError unless ``loaded`` (a LoadedMidiModel) can run ``task`` (continue: any model)."""
    from tunesmith.errors import UserError

    if task != CONTINUE and (loaded.stage != "piano_task" or task not in loaded.piano_task.tasks):
        tasks = ", ".join(loaded.piano_task.tasks) if loaded.stage == "piano_task" else "none"
        raise UserError(
            f"{loaded.folder} was not fine-tuned on the {task} task (stage={loaded.stage}, tasks: {tasks}); "
            f"train one with `tunesmith train midi velocity-tiny data=DIR init_from=RUN piano_task.tasks=[{task}]`"
        )


def conditioning_prefix(loaded: Any, prompt: Any, composer: str | None) -> Any:
    """The conditioning tokens for a LoadedMidiModel trained with them (None otherwise): ``composer``
    (None: unknown) and the prompt's note density (unknown without two notes)."""
    from tunesmith.errors import UserError

    cond = loaded.conditioner
    if cond is None:
        if composer:
            raise UserError(f"{loaded.folder} was trained without conditioning tokens: --composer does not apply")
        return None
    if composer and "composer" not in cond.fields:
        raise UserError(f"{loaded.folder} is conditioned on {', '.join(cond.fields)}, not on the composer")
    other = loaded.tokenizer.id("Composer_other") if "composer" in cond.fields else -1
    if composer and composer.strip().lower() != "other" and cond.composer_token(composer) == other:
        known = ", ".join(cond.composer_names()) or "none"
        raise UserError(f"--composer {composer!r}: the model knows {known} (or 'other' for anyone else)")
    density = None
    if len(prompt) >= 2 and float(prompt.end.max() - prompt.start.min()) > 0:
        density = len(prompt) / float(prompt.end.max() - prompt.start.min())
    return cond.prefix(composer or None, density)


def generate_notes(
    loaded: Any, prompt: Any, task: str, tokens: int, sampling: Any, *, composer: str | None = None
) -> tuple[Any, int]:
    """(notes, note groups the decoder repaired) of ``task`` on ``prompt`` (Notes) with a LoadedMidiModel.
    Continuations and partition tasks decode under the tokenizer's grammar, so the count is 0. A model
    trained with conditioning tokens gets them first (``composer``: one of the names it was trained with)."""
    from tunesmith.models.midi.generation import complete_notes, continue_notes, fill_velocities

    check_task(loaded, task)
    prefix = conditioning_prefix(loaded, prompt, composer)
    model, tok, cfg = loaded.model, loaded.tokenizer, loaded.piano_task
    if task in ("velocity", "velocity_denoise"):
        return fill_velocities(model, tok, prompt, cfg, sampling, task=task, prefix=prefix), 0
    if task != CONTINUE:
        return complete_notes(model, tok, task, prompt, cfg, sampling, prefix=prefix)
    return continue_notes(model, tok, prompt, tokens, sampling, prefix=prefix)


def default_out(prompt: Path | None, task: str) -> Path:
    """``<prompt>_<task>.mid`` next to the prompt, else ``sample.mid``."""
    return prompt.with_name(f"{prompt.stem}_{task}.mid") if prompt is not None else Path("sample.mid")


def generate_midi(
    run: str | Path,
    prompt: Path | None = None,
    out: Path | None = None,
    *,
    task: str = CONTINUE,
    tokens: int = 512,
    sampling: Any = None,
    prompt_seconds: float = 0.0,
    which: str = "best",
    device: str = "cpu",
    render: bool = False,
    runs_dir: Path | None = None,
    composer: str | None = None,
) -> MidiOutput:
    """Load the MIDI GPT of ``run``, generate from ``prompt`` (a .mid; None = from nothing), write ``out``."""
    import torch

    from tunesmith.errors import UserError
    from tunesmith.models.midi.generation import SamplingConfig
    from tunesmith.models.midi.loading import load_midi_model
    from tunesmith.models.midi.notes import Notes, read_midi, write_midi
    from tunesmith.models.midi.render import render_wav

    loaded = load_midi_model(run, which=which, device=torch.device(device), runs_dir=runs_dir)
    notes_in = read_midi(prompt) if prompt is not None else Notes.empty()
    if prompt is not None and not len(notes_in):
        raise UserError(f"--prompt {prompt}: the file holds no notes")
    if prompt_seconds > 0:
        notes_in = notes_in.take(notes_in.start < prompt_seconds)
    notes, malformed = generate_notes(loaded, notes_in, task, tokens, sampling or SamplingConfig(), composer=composer)
    out = out or default_out(prompt, task)
    write_midi(notes, out)
    wav = render_wav(out) if render else None
    return MidiOutput(out, wav, len(notes), len(notes_in), malformed, loaded.folder)
