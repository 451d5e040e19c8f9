"""Tokenizers: the seconds tokenizer against a plain-Python reference encoder, round trips, REMI."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from tunesmith.models.midi.notes import Notes
from tunesmith.models.midi.tokenizer import (
    DURATION,
    PITCH,
    TIME,
    VELOCITY,
    MidiTokenizerConfig,
    SecondsTokenizer,
    build_tokenizer,
    tokenizer_from_desc,
)


def random_notes(n: int, seed: int = 0, *, chords: bool = True, long_gaps: bool = True) -> Notes:
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(0.12, n)
    if long_gaps:
        gaps[rng.integers(0, n, 3)] += [2.345, 1.0, 3.999]  # several TimeShift_max tokens in a row
    if chords:
        gaps[rng.random(n) < 0.3] = 0.0
    start = np.cumsum(gaps)
    duration = np.exp(rng.uniform(np.log(0.004), np.log(12.0), n))  # below one step to above max_duration
    return Notes(rng.integers(21, 109, n), start, start + duration, rng.integers(1, 128, n)).sorted()


def reference_encode(tok: SecondsTokenizer, notes: Notes, dt: float, max_shift: int, nb: int) -> list[int]:
    """Token by token, by name, the way the format is described in the module docstring."""
    events = []
    for p, s, e, v in zip(notes.pitch, notes.start, notes.end, notes.velocity, strict=True):
        events.append((round(s / dt), int(p), float(e - s), int(v)))
    events.sort(key=lambda ev: (ev[0], ev[1]))
    bins = [int(d) for d in tok.duration_steps]
    out, prev = [], 0
    for step, pitch, dur, vel in events:
        gap = step - prev
        prev = step
        while gap >= max_shift:
            out.append(tok.id(f"TimeShift_{max_shift}"))
            gap -= max_shift
        if gap:
            out.append(tok.id(f"TimeShift_{gap}"))
        out.append(tok.id(f"Pitch_{pitch}"))
        b = min(max(math.floor((vel - 0.5) * nb / 127), 0), nb - 1)
        center = round(0.5 + (b + 0.5) * 127 / nb)
        out.append(tok.id(f"Velocity_{center}"))
        steps = max(round(dur / dt), 1)
        best = min(bins, key=lambda d: (abs(math.log(steps) - math.log(d)), -d))
        out.append(tok.id(f"Duration_{best}"))
    return out


@pytest.mark.parametrize("velocity_bins", [32, 127])
def test_seconds_encoding_matches_reference(velocity_bins: int) -> None:
    cfg = MidiTokenizerConfig(velocity_bins=velocity_bins)
    tok = build_tokenizer(cfg)
    notes = random_notes(400, seed=velocity_bins)
    ids = tok.encode(notes)
    assert ids.tolist() == reference_encode(tok, notes, 0.01, 100, velocity_bins)


def test_seconds_round_trip() -> None:
    cfg = MidiTokenizerConfig()
    tok = build_tokenizer(cfg)
    notes = random_notes(500, seed=3)
    ids = tok.encode(notes)
    back = tok.decode(ids)
    assert len(back) == len(notes)
    # the order of decode is (quantised onset, pitch); compare note by note in that order
    onset = np.round(notes.start / 0.01).astype(int)
    order = np.lexsort((notes.pitch, onset))
    ref = notes.take(order)
    assert np.array_equal(back.pitch, ref.pitch)
    assert np.max(np.abs(back.start - ref.start)) <= 0.005 + 1e-9
    half_bin = 127 / 32 / 2 + 0.5
    assert np.max(np.abs(back.velocity - ref.velocity)) <= half_bin
    # durations: within one log-bin of the truth, clipped to [one step, max_duration]
    truth = np.clip(ref.duration, 0.01, 8.0)
    ratio = np.exp(np.max(np.diff(np.log(tok.duration_steps))))
    assert np.all(back.duration <= truth * ratio + 0.006) and np.all(back.duration >= truth / ratio - 0.006)
    # decoded notes are representable exactly: encode → decode is the identity on tokens
    assert np.array_equal(tok.encode(back), ids)


def test_velocity_127_bins_is_exact_and_types_follow_note_layout() -> None:
    tok = build_tokenizer(MidiTokenizerConfig(velocity_bins=127))
    notes = random_notes(200, seed=5, long_gaps=False)
    ids = tok.encode(notes)
    back = tok.decode(ids)
    assert sorted(back.velocity.tolist()) == sorted(notes.velocity.tolist())
    types = tok.types_of(ids)
    pitch_at = np.nonzero(types == PITCH)[0]
    assert len(pitch_at) == len(notes)
    assert np.all(types[pitch_at + 1] == VELOCITY) and np.all(types[pitch_at + 2] == DURATION)
    assert set(np.unique(types)) == {TIME, PITCH, VELOCITY, DURATION}


def test_pedal_tokens_round_trip() -> None:
    tok = build_tokenizer(MidiTokenizerConfig(pedal_tokens=True))
    notes = random_notes(100, seed=7, long_gaps=False)
    notes.pedals = np.array([[0.5, 1.25], [2.0, 3.5]])
    ids = tok.encode(notes)
    assert (ids == tok.id("Pedal_on")).sum() == 2 and (ids == tok.id("Pedal_off")).sum() == 2
    back = tok.decode(ids)
    np.testing.assert_allclose(back.pedals, notes.pedals, atol=0.005 + 1e-9)
    assert np.array_equal(tok.encode(back), ids)
    # a slice starting after a pedal press: the pedal is cut at the slice's origin, no error
    later = notes.take(notes.start > 1.0)
    origin = float(later.start.min())
    sliced = tok.decode(tok.encode(later, origin))
    assert sliced.pedals.min() >= 0.0


def test_origin_and_out_of_range_pitches() -> None:
    tok = build_tokenizer(MidiTokenizerConfig())
    notes = Notes([10, 60, 120, 64], [5.0, 5.0, 5.5, 6.0], [5.5, 5.5, 6.0, 6.5], [50, 60, 70, 80])
    ids = tok.encode(notes, origin=5.0)
    back = tok.decode(ids)
    assert back.pitch.tolist() == [60, 64]  # 10 and 120 are outside 21..108
    np.testing.assert_allclose(back.start, [0.0, 1.0])
    with pytest.raises(ValueError, match="origin"):
        tok.encode(notes, origin=5.5)


def test_decode_repairs_malformed_sequences() -> None:
    tok = build_tokenizer(MidiTokenizerConfig())
    ids = [
        tok.bos_id,
        tok.id("Velocity_66"),  # no pitch before it: dropped
        tok.id("Pitch_60"),  # no velocity/duration: completed with defaults
        tok.id("TimeShift_50"),
        tok.id("Pitch_62"),
        tok.id("Velocity_98"),
        tok.id("Duration_10"),
        tok.eos_id,
    ]
    notes, malformed = tok.decode_with_report(np.array(ids))
    assert malformed == 2
    assert notes.pitch.tolist() == [60, 62]
    assert notes.velocity.tolist() == [64, 98]
    np.testing.assert_allclose(notes.start, [0.0, 0.5])
    np.testing.assert_allclose(notes.duration, [0.1, 0.1])
    with pytest.raises(ValueError, match="outside"):
        tok.decode(np.array([tok.vocab_size]))


def test_description_is_plain_and_rebuilds_the_same_tokenizer() -> None:
    tok = build_tokenizer(MidiTokenizerConfig(velocity_bins=16, duration_bins=64, pedal_tokens=True))
    desc = json.loads(json.dumps(tok.describe()))  # plain data survives JSON
    again = tokenizer_from_desc(desc)
    assert again.vocab == tok.vocab
    notes = random_notes(50, seed=9)
    assert np.array_equal(again.encode(notes), tok.encode(notes))
    assert tok.task_id("loud_from_soft") == tok.id("Task_loud-from-soft")
    with pytest.raises(Exception, match="kind"):
        tokenizer_from_desc({"no": "kind"})


def test_remi_round_trip_and_description() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = build_tokenizer(MidiTokenizerConfig(kind="remi"))
        notes = random_notes(300, seed=11, long_gaps=False)
        ids = tok.encode(notes)
        back = tok.decode(ids)
        assert len(back) == len(notes)
        assert np.array_equal(tok.encode(back), ids)
        # REMI's grid at 120 qpm with 8 positions per beat: 62.5 ms
        assert np.max(np.abs(np.sort(back.start) - np.sort(notes.start))) <= 0.0625
        types = tok.types_of(ids)
        pitch_at = np.nonzero(types == PITCH)[0]
        assert np.all(types[pitch_at + 1] == VELOCITY)
        again = tokenizer_from_desc(json.loads(json.dumps(tok.describe())))
        assert again.vocab == tok.vocab and np.array_equal(again.encode(notes), ids)
        assert tok.pad_id == 0 and tok.bos_id == tok.id("BOS_None")
