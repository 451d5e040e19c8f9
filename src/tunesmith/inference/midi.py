"""Generation with a MIDI GPT: continue a piece, or run a piano task (velocities, the other half) on its notes.

:func:`generate_notes` works on a loaded model (:func:`tunesmith.models.midi.loading.load_midi_model`);
:func:`generate_midi` goes from a run and a .mid prompt to a written .mid (and optionally a .wav).
The decoding itself is :mod:`tunesmith.models.midi.generation`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tunesmith.models.midi.tasks import NOTE_DENOISE_TASKS, PARTITION_TASKS, VELOCITY_TASKS

CONTINUE = "continue"
TASKS = (*VELOCITY_TASKS, *PARTITION_TASKS, *NOTE_DENOISE_TASKS)  # every piano task generate-midi can do


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


def conditioning_prefix(
    loaded: Any,
    prompt: Any,
    composer: str | None = None,
    *,
    dataset: str | None = None,
    key: str | None = None,
    tempo: float | None = None,
) -> Any:
    """The conditioning tokens for a LoadedMidiModel trained with them (None otherwise): ``composer``,
    ``dataset`` (one of the names it was trained with, or 'other'), ``key`` ("Eb major", "f# minor"),
    ``tempo`` (quarter notes per minute) — None: that field's unknown token — and the prompt's note density
    (unknown without two notes). UserError for a condition the model was not trained with."""
    from tunesmith.errors import UserError
    from tunesmith.models.midi.conditioning import parse_key

    given = {"composer": composer, "dataset": dataset, "key": key, "tempo": tempo}
    given = {field: value for field, value in given.items() if value not in (None, "")}
    cond = loaded.conditioner
    if cond is None:
        if given:
            flags = ", ".join(f"--{field}" for field in given)
            raise UserError(f"{loaded.folder} was trained without conditioning tokens: {flags} does not apply")
        return None
    for field in given:
        if field not in cond.fields:
            raise UserError(f"{loaded.folder} is conditioned on {', '.join(cond.fields)}, not on the {field}")
    tok = loaded.tokenizer
    if composer and composer.strip().lower() != "other" and cond.composer_token(composer) == tok.id("Composer_other"):
        known = ", ".join(cond.composer_names()) or "none"
        raise UserError(f"--composer {composer!r}: the model knows {known} (or 'other' for anyone else)")
    if dataset and dataset.strip().lower() != "other" and cond.dataset_token(dataset) == tok.id("Dataset_other"):
        known = ", ".join(cond.dataset_names()) or "none"
        raise UserError(f"--dataset {dataset!r}: the model knows {known} (or 'other' for any other source)")
    if key and parse_key(key) is None:
        raise UserError(f"--key {key!r}: expected a key such as 'C major', 'Eb major' or 'f# minor'")
    if tempo is not None and not tempo > 0:
        raise UserError(f"--tempo {tempo}: expected quarter notes per minute (> 0)")
    density = None
    if len(prompt) >= 2 and float(prompt.end.max() - prompt.start.min()) > 0:
        density = len(prompt) / float(prompt.end.max() - prompt.start.min())
    return cond.prefix(composer or None, density, dataset=dataset or None, key=key or None, tempo=tempo)


def generate_notes(
    loaded: Any,
    prompt: Any,
    task: str,
    tokens: int,
    sampling: Any,
    *,
    composer: str | None = None,
    dataset: str | None = None,
    key: str | None = None,
    tempo: float | None = None,
) -> tuple[Any, int]:
    """(notes, note groups the decoder repaired) of ``task`` on ``prompt`` (Notes) with a LoadedMidiModel.
    Continuations and partition tasks decode under the tokenizer's grammar, so the count is 0. A model
    trained with conditioning tokens gets them first (:func:`conditioning_prefix`); ``sampling.guidance``
    != 1 mixes in the unconditional prediction (every prefix token dropped), classifier-free guidance."""
    from tunesmith.errors import UserError
    from tunesmith.models.midi.generation import complete_notes, continue_notes, denoise_notes, fill_velocities

    check_task(loaded, task)
    prefix = conditioning_prefix(loaded, prompt, composer, dataset=dataset, key=key, tempo=tempo)
    uncond = None
    if getattr(sampling, "guidance", 1.0) != 1.0:
        if prefix is None:
            raise UserError(f"{loaded.folder} was trained without conditioning tokens: --guidance does not apply")
        uncond = loaded.conditioner.unconditional()
    model, tok, cfg = loaded.model, loaded.tokenizer, loaded.piano_task
    if task in ("velocity", "velocity_denoise"):
        return fill_velocities(model, tok, prompt, cfg, sampling, task=task, prefix=prefix, uncond_prefix=uncond), 0
    if task in NOTE_DENOISE_TASKS:
        return denoise_notes(model, tok, task, prompt, cfg, sampling, prefix=prefix, uncond_prefix=uncond)
    if task != CONTINUE:
        return complete_notes(model, tok, task, prompt, cfg, sampling, prefix=prefix, uncond_prefix=uncond)
    return continue_notes(model, tok, prompt, tokens, sampling, prefix=prefix, uncond_prefix=uncond)


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
    dataset: str | None = None,
    key: str | None = None,
    tempo: float | None = None,
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
    notes, malformed = generate_notes(
        loaded,
        notes_in,
        task,
        tokens,
        sampling or SamplingConfig(),
        composer=composer,
        dataset=dataset,
        key=key,
        tempo=tempo,
    )
    out = out or default_out(prompt, task)
    write_midi(notes, out)
    wav = render_wav(out) if render else None
    return MidiOutput(out, wav, len(notes), len(notes_in), malformed, loaded.folder)
