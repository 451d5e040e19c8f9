"""On-the-fly augmentation of piano notes: pitch shift within the piano range and tempo stretch.

Both are drawn from a ``numpy.random.Generator`` that the dataset seeds from the engine's sample key, so a
training item is a pure function of its key (deterministic under the seed, exact on resume).

- pitch shift: ``k`` semitones, uniform over ``-max..max`` cut to the shifts that keep every note of the
  slice inside ``[pitch_min, pitch_max]`` (0 when the slice spans more than the range);
- tempo stretch: every time (onsets, ends, pedals) measured from the slice's first onset is multiplied by
  ``f = exp(u)``, ``u`` uniform over ``[-log(1 + s), log(1 + s)]`` (``s = max_stretch``): ``f < 1`` plays faster.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from tunesmith.models.midi.notes import Notes


@dataclasses.dataclass
class MidiAugmentConfig:
    """The ``dataset.augment`` section (training items only; evaluation never augments)."""

    pitch_shift: int = 0  # largest shift in semitones (0: off)
    tempo_stretch: float = 0.0  # largest relative stretch, e.g. 0.1 → factors in [1/1.1, 1.1] (0: off)

    @property
    def enabled(self) -> bool:
        return self.pitch_shift > 0 or self.tempo_stretch > 0


def transpose(notes: Notes, semitones: int) -> Notes:
    """The notes ``semitones`` higher (pedals and times unchanged)."""
    return Notes(notes.pitch + int(semitones), notes.start, notes.end, notes.velocity, notes.pedals)


def stretch(notes: Notes, factor: float, origin: float) -> Notes:
    """Every time measured from ``origin`` seconds multiplied by ``factor`` (> 0)."""
    f = float(factor)
    return Notes(
        notes.pitch,
        origin + (notes.start - origin) * f,
        origin + (notes.end - origin) * f,
        notes.velocity,
        origin + (notes.pedals - origin) * f,
    )


def shift_bounds(notes: Notes, limit: int, pitch_min: int, pitch_max: int) -> tuple[int, int]:
    """The allowed shifts ``(lo, hi)`` (inclusive) within ``±limit`` that keep the notes in range."""
    if not len(notes) or limit <= 0:
        return 0, 0
    lo = max(-limit, pitch_min - int(notes.pitch.min()))
    hi = min(limit, pitch_max - int(notes.pitch.max()))
    return (lo, hi) if lo <= hi else (0, 0)


def augment(
    notes: Notes, rng: np.random.Generator, cfg: MidiAugmentConfig, *, pitch_min: int, pitch_max: int
) -> tuple[Notes, int, float]:
    """(augmented notes, semitones, stretch factor) for one training item; draws two uniforms from ``rng``."""
    shift_u, stretch_u = rng.random(2)
    return augment_with(notes, cfg, float(shift_u), float(stretch_u), pitch_min=pitch_min, pitch_max=pitch_max)


def augment_with(
    notes: Notes, cfg: MidiAugmentConfig, shift_u: float, stretch_u: float, *, pitch_min: int, pitch_max: int
) -> tuple[Notes, int, float]:
    """:func:`augment` from two uniforms in [0, 1): the shift is the ``shift_u`` quantile of the allowed
    shifts, the stretch ``(1 + s) ** (2 * stretch_u - 1)``."""
    lo, hi = shift_bounds(notes, cfg.pitch_shift, pitch_min, pitch_max)
    semitones = lo + min(int(shift_u * (hi - lo + 1)), hi - lo)
    factor = math.exp((2.0 * stretch_u - 1.0) * math.log1p(cfg.tempo_stretch)) if cfg.tempo_stretch > 0 else 1.0
    out = transpose(notes, semitones) if semitones else notes
    if factor != 1.0 and len(notes):
        out = stretch(out, factor, float(notes.start.min()))
    return out, semitones, factor
