"""Augmentation: pitch shift and tempo stretch round trips, range safety, and the token-level effect."""

from __future__ import annotations

import numpy as np
import pytest

from tunesmith.models.midi.augment import MidiAugmentConfig, augment, shift_bounds, stretch, transpose
from tunesmith.models.midi.notes import Notes
from tunesmith.models.midi.synthetic import synth_piece
from tunesmith.models.midi.tokenizer import PITCH, MidiTokenizerConfig, build_tokenizer

TOK = build_tokenizer(MidiTokenizerConfig())


def notes() -> Notes:
    n = synth_piece("chopin", 4.0, seed=7)
    n.pedals = np.array([[0.2, 1.0], [1.5, 2.5]])
    return n


def same(a: Notes, b: Notes, atol: float = 0.0) -> None:
    np.testing.assert_array_equal(a.pitch, b.pitch)
    np.testing.assert_array_equal(a.velocity, b.velocity)
    for name in ("start", "end", "pedals"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=0, atol=atol)


def test_round_trips() -> None:
    n = notes()
    for k in (-5, 0, 7):
        same(transpose(transpose(n, k), -k), n)
    for f in (0.8, 1.0, 1.25):
        back = stretch(stretch(n, f, 0.3), 1 / f, 0.3)
        same(back, n, atol=1e-12)
    stretched = stretch(n, 2.0, float(n.start.min()))
    np.testing.assert_allclose(stretched.duration, 2 * n.duration)  # durations scale too
    np.testing.assert_array_equal(stretched.velocity, n.velocity)


def test_transposition_shifts_exactly_the_pitch_tokens() -> None:
    n = notes()
    base, up = TOK.encode(n), TOK.encode(transpose(n, 3))
    is_pitch = TOK.types_of(base) == PITCH
    np.testing.assert_array_equal(up[is_pitch], base[is_pitch] + 3)  # Pitch_p ids are consecutive
    np.testing.assert_array_equal(up[~is_pitch], base[~is_pitch])
    # a stretch by 2 doubles every onset on the token grid (within one step of rounding)
    dec = TOK.decode(TOK.encode(stretch(n, 2.0, float(n.start.min())), float(n.start.min())))
    ref = TOK.decode(TOK.encode(n, float(n.start.min())))
    assert np.max(np.abs(dec.start - 2 * ref.start)) <= TOK.time_step + 1e-9


def test_draws_stay_in_range_cover_both_ways_and_repeat_under_the_seed() -> None:
    cfg = MidiAugmentConfig(pitch_shift=6, tempo_stretch=0.2)
    n = notes()
    shifts, factors = [], []
    for seed in range(300):
        out, k, f = augment(n, np.random.default_rng(seed), cfg, pitch_min=21, pitch_max=108)
        again = augment(n, np.random.default_rng(seed), cfg, pitch_min=21, pitch_max=108)
        assert (k, f) == (again[1], again[2]) and np.array_equal(out.start, again[0].start)
        assert out.pitch.min() >= 21 and out.pitch.max() <= 108 and abs(k) <= 6
        assert 1 / 1.2 - 1e-12 <= f <= 1.2 + 1e-12
        shifts.append(k)
        factors.append(f)
    assert set(shifts) == set(range(-6, 7))
    assert min(factors) < 0.9 and max(factors) > 1.1
    # near the top of the keyboard only downward shifts are allowed; a slice wider than the range: none
    high = Notes([100, 105], [0.0, 0.5], [0.4, 0.9], [60, 60])
    assert shift_bounds(high, 6, 21, 108) == (-6, 3)
    assert shift_bounds(Notes([10, 120], [0, 0], [1, 1], [64, 64]), 6, 21, 108) == (0, 0)
    off = augment(n, np.random.default_rng(0), MidiAugmentConfig(), pitch_min=21, pitch_max=108)
    assert off[1:] == (0, 1.0) and off[0] is n


@pytest.mark.parametrize("cfg", [MidiAugmentConfig(pitch_shift=0, tempo_stretch=0.0)])
def test_disabled_config(cfg) -> None:
    assert not cfg.enabled and MidiAugmentConfig(pitch_shift=1).enabled
