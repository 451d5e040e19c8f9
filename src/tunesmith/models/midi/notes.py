"""Piano notes as columnar arrays in seconds; MIDI reading/writing (symusic) and the sustain pedal.

A :class:`Notes` holds ``N`` notes sorted by (start, pitch): ``pitch`` int16 (MIDI 0..127),
``start``/``end`` float64 seconds, ``velocity`` int16 (1..127). ``pedals`` holds sustain-pedal
intervals as float64 seconds, shape ``[P, 2]`` (down, up).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from tunesmith.errors import UserError

SUSTAIN_CC = 64
PEDAL_DOWN_THRESHOLD = 64  # CC64 value >= 64 means the pedal is down (General MIDI convention)
WRITE_TPQ = 480
WRITE_TEMPO_QPM = 120.0  # ticks are 1/960 s at this tempo: far below the 10 ms token grid


@dataclasses.dataclass
class Notes:
    """Notes of one performance (or a slice of it). Arrays share the length N."""

    pitch: np.ndarray
    start: np.ndarray
    end: np.ndarray
    velocity: np.ndarray
    pedals: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 2), np.float64))

    def __post_init__(self) -> None:
        self.pitch = np.asarray(self.pitch, np.int16)
        self.start = np.asarray(self.start, np.float64)
        self.end = np.asarray(self.end, np.float64)
        self.velocity = np.asarray(self.velocity, np.int16)
        self.pedals = np.asarray(self.pedals, np.float64).reshape(-1, 2)
        n = len(self.pitch)
        if not (len(self.start) == len(self.end) == len(self.velocity) == n):
            raise ValueError("Notes arrays must have the same length")

    def __len__(self) -> int:
        return len(self.pitch)

    @property
    def duration(self) -> np.ndarray:
        return self.end - self.start

    @classmethod
    def empty(cls) -> Notes:
        return cls(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0))

    def sorted(self) -> Notes:
        """Sorted by (start, pitch), the order every tokenizer uses."""
        order = np.lexsort((self.pitch, self.start))
        return self.take(order)

    def take(self, index: np.ndarray | slice) -> Notes:
        """A subset of the notes (pedals kept as they are)."""
        return Notes(self.pitch[index], self.start[index], self.end[index], self.velocity[index], self.pedals)

    def shifted(self, offset: float) -> Notes:
        """All times moved by ``offset`` seconds (pedals too)."""
        return Notes(self.pitch, self.start + offset, self.end + offset, self.velocity, self.pedals + offset)

    def with_velocity(self, velocity: np.ndarray) -> Notes:
        return Notes(self.pitch, self.start, self.end, velocity, self.pedals)


def pedal_intervals(times: np.ndarray, values: np.ndarray, end_time: float) -> np.ndarray:
    """CC64 events (times in s, values 0..127, time-sorted) → pedal-down intervals ``[P, 2]`` in s.

    A press is a value >= 64 after a release; a pedal still down at the end is released at ``end_time``.
    """
    down = np.asarray(values) >= PEDAL_DOWN_THRESHOLD
    times = np.asarray(times, np.float64)
    if not len(down):
        return np.zeros((0, 2), np.float64)
    prev = np.concatenate([[False], down[:-1]])
    presses = times[down & ~prev]
    releases = times[~down & prev]
    if len(releases) < len(presses):
        releases = np.concatenate([releases, [max(end_time, presses[-1])]])
    return np.stack([presses, releases], axis=1)


def apply_sustain(notes: Notes) -> Notes:
    """Extend notes held by the sustain pedal: a note released while the pedal is down lasts until
    the pedal comes up, or until the same pitch is struck again, whichever is first (never shorter
    than the key press). Pedal intervals are kept on the result."""
    if not len(notes) or not len(notes.pedals):
        return notes
    down, up = notes.pedals[:, 0], notes.pedals[:, 1]
    idx = np.searchsorted(down, notes.end, side="right") - 1
    held = idx >= 0
    held[held] = notes.end[held] < up[idx[held]]
    extended = notes.end.copy()
    extended[held] = up[idx[held]]
    # Next onset of the same pitch cuts the sustained tail.
    order = np.lexsort((notes.start, notes.pitch))
    next_start = np.full(len(notes), np.inf)
    same = notes.pitch[order][1:] == notes.pitch[order][:-1]
    next_start[order[:-1][same]] = notes.start[order][1:][same]
    end = np.maximum(notes.end, np.minimum(extended, next_start))
    return Notes(notes.pitch, notes.start, end, notes.velocity, notes.pedals)


def read_midi(source: str | Path | bytes, *, sustain: str = "apply") -> Notes:
    """Read the notes of every non-drum track of a MIDI file (path or bytes), in seconds.

    ``sustain``: "apply" extends notes by each track's pedal (:func:`apply_sustain`), "events"
    keeps note ends as played and the pedal intervals alongside, "ignore" drops the pedal.
    Raises ``UserError`` for a file symusic cannot parse.
    """
    from symusic import Score

    if sustain not in ("apply", "events", "ignore"):
        raise UserError(f"sustain={sustain!r}: expected one of 'apply', 'events', 'ignore'")
    try:
        score = Score.from_midi(source) if isinstance(source, bytes) else Score.from_file(str(source))
        score = score.to("second")
    except Exception as err:  # symusic raises RuntimeError/ValueError for damaged files
        name = "<bytes>" if isinstance(source, bytes) else str(source)
        raise UserError(f"{name}: not a readable MIDI file ({err})") from None
    parts: list[Notes] = []
    pedals: list[np.ndarray] = []
    for track in score.tracks:
        if track.is_drum:
            continue
        arr = track.notes.numpy()
        # symusic gives int8 pitch/velocity: go through uint8 so values 0..127 stay exact.
        start = arr["time"].astype(np.float64)
        notes = Notes(
            arr["pitch"].astype(np.uint8).astype(np.int16),
            start,
            start + arr["duration"].astype(np.float64),
            arr["velocity"].astype(np.uint8).astype(np.int16),
        )
        ctl = track.controls.numpy()
        is_sustain = ctl["number"] == SUSTAIN_CC
        end_time = float(notes.end.max()) if len(notes) else 0.0
        notes.pedals = pedal_intervals(ctl["time"][is_sustain], ctl["value"][is_sustain], end_time)
        if sustain == "apply":
            notes = apply_sustain(notes)
        pedals.append(notes.pedals)
        parts.append(notes)
    if not parts:
        return Notes.empty()
    merged = Notes(
        np.concatenate([p.pitch for p in parts]),
        np.concatenate([p.start for p in parts]),
        np.concatenate([p.end for p in parts]),
        np.concatenate([p.velocity for p in parts]),
    )
    merged = merged.sorted()
    keep = merged.velocity > 0  # velocity-0 note-ons are note-offs; symusic already pairs them
    merged = merged.take(keep)
    if sustain != "ignore":
        merged.pedals = _merge_intervals(np.concatenate(pedals)) if pedals else merged.pedals
    return merged


KEY_TONICS: tuple[str, ...] = ("c", "db", "d", "eb", "e", "f", "gb", "g", "ab", "a", "bb", "b")


def read_midi_meta(source: str | Path | bytes) -> dict:
    """What a MIDI file says about its key and tempo: ``{"key": "eb major" | "c minor" | "", "tempo": qpm}``
    from its first key signature and first tempo event ("" and 0.0 when it has none). Raises
    ``UserError`` for a file symusic cannot parse."""
    from symusic import Score

    try:
        score = Score.from_midi(source) if isinstance(source, bytes) else Score.from_file(str(source))
    except Exception as err:  # symusic raises RuntimeError/ValueError for damaged files
        name = "<bytes>" if isinstance(source, bytes) else str(source)
        raise UserError(f"{name}: not a readable MIDI file ({err})") from None
    key = ""
    if len(score.key_signatures):
        sig = score.key_signatures[0]
        minor = int(sig.tonality) == 1
        tonic = (7 * int(sig.key) + (9 if minor else 0)) % 12  # sharps (+) / flats (-) → the tonic's pitch class
        key = f"{KEY_TONICS[tonic]} {'minor' if minor else 'major'}"
    tempo = round(float(score.tempos[0].qpm), 3) if len(score.tempos) else 0.0
    return {"key": key, "tempo": tempo}


def _merge_intervals(intervals: np.ndarray) -> np.ndarray:
    """Union of possibly overlapping intervals ``[P, 2]`` → sorted disjoint intervals."""
    if not len(intervals):
        return np.zeros((0, 2), np.float64)
    intervals = intervals[np.argsort(intervals[:, 0], kind="stable")]
    out = [list(intervals[0])]
    for lo, hi in intervals[1:]:
        if lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return np.asarray(out, np.float64)


def to_midi_bytes(notes: Notes, *, program: int = 0, write_pedals: bool = True) -> bytes:
    """Notes (seconds) → a type-1 MIDI file with one piano track at 120 qpm, 480 ticks per quarter."""
    from symusic import ControlChange, Note, Score, Tempo, Track

    ticks_per_second = WRITE_TPQ * WRITE_TEMPO_QPM / 60.0
    score = Score(WRITE_TPQ)
    score.tempos.append(Tempo(0, WRITE_TEMPO_QPM))
    track = Track("piano", program, False)
    start = np.round(notes.start * ticks_per_second).astype(np.int64)
    end = np.maximum(np.round(notes.end * ticks_per_second).astype(np.int64), start + 1)
    for s, e, p, v in zip(start.tolist(), end.tolist(), notes.pitch.tolist(), notes.velocity.tolist(), strict=True):
        track.notes.append(Note(s, e - s, int(p), int(min(max(v, 1), 127))))
    if write_pedals:
        for down, up in np.round(notes.pedals * ticks_per_second).astype(np.int64).tolist():
            track.controls.append(ControlChange(down, SUSTAIN_CC, 127))
            track.controls.append(ControlChange(max(up, down + 1), SUSTAIN_CC, 0))
    score.tracks.append(track)
    return bytes(score.dumps_midi())


def write_midi(notes: Notes, path: str | Path, **kwargs: object) -> Path:
    """Write :func:`to_midi_bytes` to ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_midi_bytes(notes, **kwargs))  # type: ignore[arg-type]
    return path
