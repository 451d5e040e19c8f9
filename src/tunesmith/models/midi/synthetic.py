"""Synthetic piano performances and a fake MAESTRO folder, for tests, the demo and benchmarks.

Each "composer" has a recognisable texture so per-composer metrics differ: "Bach" plays running
sixteenth-note scales, "Chopin" a melody over wide left-hand arpeggios with rubato, "Mozart" a melody
over an Alberti bass. Velocities follow a phrase-level swell plus an accent pattern and louder
melody notes, so a model can learn to predict them from the notes.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from tunesmith.models.midi.notes import Notes, write_midi

COMPOSERS: tuple[str, ...] = ("Johann Sebastian Bach", "Frédéric Chopin", "Wolfgang Amadeus Mozart")
MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])


def _scale_pitch(root: int, degree: np.ndarray) -> np.ndarray:
    octave, step = np.divmod(degree, 7)
    return root + 12 * octave + MAJOR[step]


def synth_piece(style: str, seconds: float, seed: int) -> Notes:
    """A performance of about ``seconds`` seconds in the given style ("bach", "chopin", "mozart")."""
    rng = np.random.default_rng(seed)
    root = int(rng.integers(48, 60))
    beat = float(rng.uniform(0.35, 0.55))  # seconds per beat
    pitch: list[np.ndarray] = []
    start: list[np.ndarray] = []
    dur: list[np.ndarray] = []
    accent: list[np.ndarray] = []
    n_beats = max(int(seconds / beat), 4)
    t = np.arange(n_beats * 4) * beat / 4  # sixteenth grid
    if style == "bach":
        walk = np.cumsum(rng.choice([-1, 1], size=len(t), p=[0.45, 0.55]))
        pitch.append(_scale_pitch(root + 12, np.clip(walk, -6, 14)))
        start.append(t)
        dur.append(np.full(len(t), beat / 4 * 0.9))
        accent.append((np.arange(len(t)) % 4 == 0).astype(float))
        bass = t[::4]
        pitch.append(_scale_pitch(root - 12, rng.integers(0, 7, len(bass))))
        start.append(bass)
        dur.append(np.full(len(bass), beat * 0.95))
        accent.append(np.zeros(len(bass)))
    elif style == "chopin":
        rubato = 1 + 0.08 * np.sin(np.arange(len(t)) / 7.0)
        tt = np.cumsum(np.full(len(t), beat / 4) * rubato)
        arp = np.array([0, 4, 7, 11, 14, 11, 7, 4])
        pitch.append(root - 12 + arp[np.arange(len(tt)) % len(arp)] + 5 * ((np.arange(len(tt)) // 16) % 3))
        start.append(tt)
        dur.append(np.full(len(tt), beat * 1.5))
        accent.append(np.zeros(len(tt)))
        mel = tt[::6]
        pitch.append(_scale_pitch(root + 24, np.cumsum(rng.integers(-2, 3, len(mel))) % 10))
        start.append(mel)
        dur.append(np.full(len(mel), beat * 1.4))
        accent.append(np.ones(len(mel)))
    elif style == "mozart":
        alberti = np.array([0, 7, 4, 7])
        chord = 5 * ((np.arange(len(t)) // 16) % 2)
        pitch.append(root + chord + alberti[np.arange(len(t)) % 4])
        start.append(t)
        dur.append(np.full(len(t), beat / 4 * 0.8))
        accent.append(np.zeros(len(t)))
        mel = t[::2]
        pitch.append(_scale_pitch(root + 12, 7 + np.cumsum(rng.choice([-1, 0, 1], len(mel))) % 8))
        start.append(mel)
        dur.append(np.full(len(mel), beat / 2 * 0.9))
        accent.append(0.6 * np.ones(len(mel)) + 0.4 * (np.arange(len(mel)) % 4 == 0))
    else:
        raise ValueError(f"unknown style {style!r}")
    p = np.concatenate(pitch)
    s = np.concatenate(start) + 0.5 + rng.normal(0, 0.004, sum(len(x) for x in start)).clip(-0.01, 0.01)
    d = np.concatenate(dur)
    a = np.concatenate(accent)
    swell = 0.5 + 0.5 * np.sin(2 * np.pi * s / (beat * 16))  # phrase-level crescendo/diminuendo
    velocity = 40 + 35 * swell + 25 * a + rng.normal(0, 3, len(p))
    pedals = np.zeros((0, 2))
    if style == "chopin":  # pedal down through each bar, lifted just before the next
        bars = 0.5 + np.arange(0, n_beats, 4) * beat
        pedals = np.stack([bars + 0.03, bars + 4 * beat - 0.05], axis=1)
    notes = Notes(np.clip(p, 21, 108), s, s + d, np.clip(np.round(velocity), 1, 127), pedals).sorted()
    return notes.take(notes.start < seconds + 0.5)


def style_of(composer: str) -> str:
    return composer.split()[-1].lower()


def make_fake_maestro(
    root: str | Path,
    *,
    pieces_per_composer: int = 4,
    seconds: float = 20.0,
    seed: int = 0,
    corrupt: bool = True,
) -> Path:
    """Write a MAESTRO-layout folder: ``<year>/<name>.midi`` files and ``maestro-v3.0.0.csv``.

    Each composer gets ``pieces_per_composer`` pieces: the first ones in train, one in validation and
    (from 4 pieces on) one in test. With ``corrupt`` two extra rows point at a damaged and an
    empty MIDI file. Returns the CSV path.
    """
    root = Path(root)
    rows = []
    for c, composer in enumerate(COMPOSERS):
        for i in range(pieces_per_composer):
            split = (
                "validation"
                if i == pieces_per_composer - 1
                else "test"
                if i == pieces_per_composer - 2 and (pieces_per_composer >= 4)
                else "train"
            )
            year = str(2004 + (c + i) % 5)
            name = f"{year}/MIDI-Unprocessed_{c:02d}_{i:02d}_R1_{year}_wav.midi"
            piece_seed = seed * 1000 + c * 100 + i
            notes = synth_piece(style_of(composer), seconds, piece_seed)
            write_midi(notes, root / name)
            title = f"{['Prelude', 'Etude', 'Sonata'][c]} No. {i + 1} in {'CDEFGAB'[piece_seed % 7]} major"
            rows.append((composer, title, split, year, name, float(notes.end.max())))
    if corrupt:
        (root / "2009").mkdir(parents=True, exist_ok=True)
        (root / "2009/corrupt.midi").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\xff\xff")
        write_midi(Notes.empty(), root / "2009/empty.midi")
        rows.append(("Johann Sebastian Bach", "Broken", "train", "2009", "2009/corrupt.midi", 1.0))
        rows.append(("Frédéric Chopin", "Silent", "train", "2009", "2009/empty.midi", 1.0))
    csv_path = root / "maestro-v3.0.0.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            ["canonical_composer", "canonical_title", "split", "year", "midi_filename", "audio_filename", "duration"]
        )
        for composer, title, split, year, name, duration in rows:
            w.writerow([composer, title, split, year, name, name.replace(".midi", ".wav"), f"{duration:.3f}"])
    return csv_path


def make_midi_folder(root: str | Path, *, pieces: int = 6, seconds: float = 10.0, seed: int = 0) -> Path:
    """A plain folder of ``pieces`` .mid files in nested folders (no metadata). Returns the folder."""
    root = Path(root)
    styles = ("bach", "chopin", "mozart")
    for i in range(pieces):
        write_midi(synth_piece(styles[i % 3], seconds, seed * 1000 + i), root / f"set{i % 2}" / f"piece_{i:02d}.mid")
    return root
