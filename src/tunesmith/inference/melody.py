"""Melody conditioning at inference: an item's ``melody`` (a wav path, or an uploaded file's bytes) → its chroma.

A melody-conditioned LM (``model.conditioner.chroma``, e.g. an imported MusicGen-melody) reads a one-hot chroma
``[frames, bins]`` from the condition's ``chroma`` field; :func:`resolve_melodies` computes it with the model's
own analysis settings (:mod:`tunesmith.audio.chroma`), reading each distinct melody once.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from tunesmith.errors import UserError

MELODY = "melody"


def melody_to_chroma(melody: str | Path | bytes, settings: Any, max_seconds: float = 30.0) -> torch.Tensor:
    """A wav path or a wav file's bytes → one-hot chroma float [frames, bins] (mono, resampled, ≤ 30 s)."""
    from tunesmith.audio.chroma import melody_chroma, waveform_chroma

    if isinstance(melody, (str, Path)):
        path = Path(melody).expanduser()
        if not path.is_file():
            raise UserError(f"melody={melody}: no such audio file")
        return melody_chroma(path, settings, max_seconds)
    import soundfile as sf

    try:
        data, rate = sf.read(io.BytesIO(melody), dtype="float32", always_2d=True)
    except (RuntimeError, ValueError, TypeError) as err:  # soundfile raises LibsndfileError (a RuntimeError)
        raise UserError(f"melody: not a readable audio file ({err})") from None
    if data.shape[0] == 0:
        raise UserError("melody: the audio file holds no samples")
    return waveform_chroma(data.T, int(rate), settings, max_seconds)


def resolve_melodies(conditions: list[dict], cond_cfg: Any) -> list[dict]:
    """Conditions with each ``melody`` replaced by its ``chroma``; UserError when the model is not
    melody-conditioned (it would silently ignore the melody)."""
    if not any(MELODY in c for c in conditions):
        return conditions
    if not getattr(cond_cfg, "chroma", False):
        raise UserError("this model is not melody-conditioned (model.conditioner.chroma is off): drop the melody")
    from tunesmith.models.lm.conditioners import chroma_settings

    settings = chroma_settings(cond_cfg)
    cache: dict[Any, torch.Tensor] = {}
    out = []
    for condition in conditions:
        condition = dict(condition)
        melody = condition.pop(MELODY, None)
        if melody is not None:
            key = melody if isinstance(melody, bytes) else str(melody)
            if key not in cache:
                cache[key] = melody_to_chroma(melody, settings)
            condition["chroma"] = cache[key]
        out.append(condition)
    return out
