"""MIDI reading/writing checked against pretty_midi, and the sustain pedal against a plain reference."""

from __future__ import annotations

import io

import numpy as np
import pretty_midi
import pytest

from tunesmith.errors import UserError
from tunesmith.models.midi.notes import Notes, apply_sustain, pedal_intervals, read_midi, to_midi_bytes


def pretty_midi_file(tmp_path) -> tuple[str, pretty_midi.PrettyMIDI]:
    """Two piano tracks (one with a sustain pedal), a drum track, a tempo change."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=100.0)
    right, left = pretty_midi.Instrument(0, name="right"), pretty_midi.Instrument(0, name="left")
    drums = pretty_midi.Instrument(0, is_drum=True)
    rng = np.random.default_rng(1)
    t = 0.0
    for i in range(40):  # no pitch repeats while sounding: overlapping same-pitch notes pair up ambiguously
        t += float(rng.uniform(0.05, 0.4))
        right.notes.append(pretty_midi.Note(int(rng.integers(1, 128)), 60 + i % 36, t, t + 0.3))
        left.notes.append(pretty_midi.Note(int(rng.integers(1, 128)), 30 + i % 29, t, t + 0.2))
        drums.notes.append(pretty_midi.Note(100, 36, t, t + 0.1))
    for time, value in [(1.0, 127), (2.5, 0), (3.0, 90), (3.1, 100), (4.0, 10), (6.0, 64)]:
        left.control_changes.append(pretty_midi.ControlChange(64, value, time))
    pm.instruments += [right, left, drums]
    path = str(tmp_path / "ref.mid")
    pm.write(path)
    return path, pretty_midi.PrettyMIDI(path)


def test_read_midi_matches_pretty_midi(tmp_path) -> None:
    path, pm = pretty_midi_file(tmp_path)
    notes = read_midi(path, sustain="events")
    ref = sorted(
        (n.start, n.pitch, n.end, n.velocity) for inst in pm.instruments if not inst.is_drum for n in inst.notes
    )
    assert len(notes) == len(ref)
    ref_arr = np.array(ref)
    np.testing.assert_allclose(notes.start, ref_arr[:, 0], atol=1e-4)
    np.testing.assert_array_equal(notes.pitch, ref_arr[:, 1])
    np.testing.assert_allclose(notes.end, ref_arr[:, 2], atol=1e-4)
    np.testing.assert_array_equal(notes.velocity, ref_arr[:, 3])
    # pedal: down at 1.0 (127) up at 2.5, down at 3.0 (90; 100 keeps it down), up at 4.0, down at 6.0 until
    # the end of its track
    end = max(n.end for n in pm.instruments[1].notes)
    cc = [c.time for c in pm.instruments[1].control_changes]  # as written on pretty_midi's tick grid
    np.testing.assert_allclose(notes.pedals, [[cc[0], cc[1]], [cc[2], cc[4]], [cc[5], end]], atol=1e-4)
    assert len(read_midi(path, sustain="ignore").pedals) == 0


def reference_sustain(notes: Notes) -> np.ndarray:
    """Note by note: a release inside a pedal interval waits for the pedal to lift or the next strike."""
    ends = []
    for i in range(len(notes)):
        end = notes.end[i]
        for down, up in notes.pedals:
            if down <= end < up:
                end = up
                break
        later = [
            notes.start[j]
            for j in range(len(notes))
            if notes.pitch[j] == notes.pitch[i] and notes.start[j] > notes.start[i]
        ]
        if later:
            end = min(end, min(later))
        ends.append(max(end, notes.end[i]))
    return np.array(ends)


def test_apply_sustain_matches_reference() -> None:
    rng = np.random.default_rng(4)
    start = np.sort(rng.uniform(0, 20, 300))
    notes = Notes(rng.integers(55, 67, 300), start, start + rng.uniform(0.05, 1.0, 300), rng.integers(1, 128, 300))
    notes.pedals = np.array([[1.0, 3.0], [3.5, 7.25], [10.0, 10.5], [12.0, 19.0]])
    np.testing.assert_allclose(apply_sustain(notes).end, reference_sustain(notes))
    # a file read with sustain="apply" equals the events reading with the pedal applied per track
    assert np.all(apply_sustain(notes).end >= notes.end)


def test_pedal_intervals_thresholds() -> None:
    np.testing.assert_allclose(
        pedal_intervals(np.array([0.0, 1.0, 2.0, 3.0]), np.array([63, 64, 127, 0]), 5.0), [[1.0, 3.0]]
    )
    assert pedal_intervals(np.zeros(0), np.zeros(0), 1.0).shape == (0, 2)


def test_written_midi_reads_back_in_pretty_midi() -> None:
    notes = Notes([60, 64, 67, 60], [0.0, 0.0, 0.51, 1.0], [0.5, 0.25, 1.5, 1.001], [1, 64, 127, 90], [[0.2, 0.9]])
    pm = pretty_midi.PrettyMIDI(io.BytesIO(to_midi_bytes(notes)))
    got = sorted((n.start, n.pitch, n.end, n.velocity) for n in pm.instruments[0].notes)
    want = sorted(zip(notes.start, notes.pitch, notes.end, notes.velocity, strict=True))
    np.testing.assert_allclose(np.array(got), np.array(want, dtype=float), atol=1.1e-3)
    ccs = [(c.number, c.value, round(c.time, 3)) for c in pm.instruments[0].control_changes]
    assert ccs == [(64, 127, 0.2), (64, 0, 0.9)]
    back = read_midi(to_midi_bytes(notes), sustain="apply")
    assert back.end[back.pitch == 64][0] == pytest.approx(0.9, abs=1e-3)  # released under the pedal


def test_unreadable_midi_is_a_user_error(tmp_path) -> None:
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd\x00\x00\x00\x06garbage")
    with pytest.raises(UserError, match="bad.mid"):
        read_midi(bad)
    with pytest.raises(UserError, match="sustain"):
        read_midi(bad, sustain="maybe")
