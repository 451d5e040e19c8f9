"""Load a trained MIDI GPT for inference from a run, checkpoint folder or exported model dir.

The tokenizer comes from the description the run trained with, stored in config.json's ``meta`` of every
checkpoint and exported model (older checkpoints: the training state's ``extra``); failing both it is
rebuilt from the stored config's ``tokenizer`` section. The embedding size is checked against it either way.
The piano-task settings are the checkpoint's own (:func:`stored_piano_task`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from tunesmith.config import from_dict
from tunesmith.errors import UserError
from tunesmith.models.midi.conditioning import Conditioner
from tunesmith.models.midi.gpt import MidiGPT, MidiGPTConfig
from tunesmith.models.midi.tasks import PianoTaskConfig
from tunesmith.models.midi.tokenizer import MidiTokenizer, MidiTokenizerConfig, build_tokenizer, tokenizer_from_desc


@dataclasses.dataclass
class LoadedMidiModel:
    model: MidiGPT
    tokenizer: MidiTokenizer
    stage: str
    piano_task: PianoTaskConfig
    folder: Path
    conditioner: Conditioner | None = None  # the conditioning prefix the model was trained with, if any


def stored_piano_task(stored: dict | None) -> dict:
    """A checkpoint's ``piano_task`` section as it trained: one saved before ``velocity_layout`` existed
    trained its velocity tasks with the ``appended`` layout."""
    section = dict(stored or {})
    if section:
        section.setdefault("velocity_layout", "appended")
    return section


def resolve_checkpoint(ref: str | Path, which: str = "best", runs_dir: str | Path | None = None) -> Path:
    """A checkpoint folder from a path (run, checkpoint, model dir) or a run reference (``midi/SIG``, SIG
    prefix) under ``runs_dir`` (default: the configured runs folder)."""
    from tunesmith.artifacts import checkpoint as ckpt
    from tunesmith.artifacts.runs import find_run

    path = Path(ref)
    if not path.exists():
        path = find_run(str(ref), Path(runs_dir) if runs_dir else None)
    return ckpt.find_checkpoint(path, which=which)


def load_midi_model(
    ref: str | Path, *, which: str = "best", device: str | torch.device = "cpu", runs_dir: str | Path | None = None
) -> LoadedMidiModel:
    from tunesmith.artifacts import checkpoint as ckpt

    folder = resolve_checkpoint(ref, which, runs_dir)
    stored = ckpt.read_config(folder)
    config = stored.get("config") or {}
    task = (stored.get("meta") or {}).get("task") or stored.get("model_type", "").removeprefix("tunesmith-")
    if task != "midi" or "model" not in config:
        raise UserError(
            f"{folder}: a {task or 'unknown'} model, not a MIDI GPT (train one with `tunesmith train midi`)"
        )
    extra: dict = dict(stored.get("meta") or {})  # tokenizer_desc etc. (exported dirs carry it too)
    if not extra.get("tokenizer_desc") and (folder / ckpt.STATE).is_file():
        extra = ckpt.load_state(folder).get("extra") or {}
    if extra.get("tokenizer_desc"):
        tokenizer = tokenizer_from_desc(extra["tokenizer_desc"])
    else:
        tokenizer = build_tokenizer(from_dict(MidiTokenizerConfig, config.get("tokenizer") or {}))
    model_cfg = from_dict(MidiGPTConfig, config["model"])
    model = MidiGPT(model_cfg, tokenizer.vocab_size)
    weights = ckpt.load_weights(folder, "model")
    embed = weights.get("embed.weight")
    if embed is not None and embed.shape[0] != tokenizer.vocab_size:
        raise UserError(
            f"{folder}: the model has {embed.shape[0]} tokens but its tokenizer {tokenizer.vocab_size}; "
            "the checkpoint and its config do not belong together"
        )
    model.load_state_dict(weights)
    model.to(device).eval()
    piano_task = from_dict(PianoTaskConfig, stored_piano_task(extra.get("piano_task") or config.get("piano_task")))
    stage = extra.get("stage") or config.get("stage", "pretrain")
    cond = extra.get("conditioning") or {}
    conditioner = None
    if cond.get("fields"):
        conditioner = Conditioner.from_meta(tokenizer, cond)
    return LoadedMidiModel(model, tokenizer, stage, piano_task, folder, conditioner)
