"""MIDI tokenizers: a seconds-based expressive tokenizer (default) and MidiTok's REMI (option).

Both map :class:`~tunesmith.models.midi.notes.Notes` to a 1-D int64 token array and back, give
each token a type (special, time, pitch, velocity, duration, pedal) and describe themselves as a
plain dict (``describe()``) from which :func:`tokenizer_from_desc` rebuilds the same tokenizer, so
a checkpoint decodes on its own.

Seconds tokenizer, per note in (onset, pitch) order::

    [TimeShift_k ...] Pitch_p Velocity_b Duration_d

Onsets are quantised on a ``time_step`` grid (10 ms by default) from an origin; a gap of ``g``
steps is written as ``g // M`` tokens ``TimeShift_M`` and one ``TimeShift_{g % M}`` when non-zero
(``M = max_time_shift / time_step``). Velocities fall in ``velocity_bins`` equal bins over 1..127,
decoded to bin centres; durations are quantised to ``duration_bins`` log-spaced step counts up to
``max_duration``. With ``pedal_tokens`` the sustain pedal's presses and releases are events too
(``Pedal_on``/``Pedal_off``). Both tokenizers put a note's velocity right after its pitch, which
the piano tasks rely on.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from tunesmith.errors import UserError
from tunesmith.models.midi.notes import Notes

# "merged": a learned BPE token standing for several base tokens (tunesmith.models.midi.bpe)
TOKEN_TYPES: tuple[str, ...] = ("special", "time", "pitch", "velocity", "duration", "pedal", "merged")
SPECIAL, TIME, PITCH, VELOCITY, DURATION, PEDAL, MERGED = range(len(TOKEN_TYPES))

# One task token per built-in piano task, reserved in every tokenizer so that a pretrained model's
# vocabulary already covers fine-tuning on any of them.
TASK_NAMES: tuple[str, ...] = (
    "velocity",
    "velocity_denoise",
    "loud_from_soft",
    "soft_from_loud",
    "high_from_low",
    "low_from_high",
)
# Tasks added after the vocabulary was fixed take the reserved tokens in this order (task → Reserved_<k>),
# so every tokenizer, and every model pretrained with one, already covers them.
RESERVED_TASKS: tuple[str, ...] = (
    "infill_span",
    "high_quartile",
    "low_quartile",
    "loud_quartile",
    "soft_quartile",
    "pitch_denoise",
    "time_denoise",
)
ALL_TASKS: tuple[str, ...] = TASK_NAMES + RESERVED_TASKS
BASE_SPECIALS: tuple[str, ...] = ("PAD", "BOS", "EOS", "SEP")
DESC_VERSION = 1


@dataclasses.dataclass
class MidiTokenizerConfig:
    """Tokenizer settings (the ``tokenizer:`` section of a midi config)."""

    kind: Literal["seconds", "remi"] = "seconds"
    time_step: float = 0.01  # s, onset grid of the seconds tokenizer
    max_time_shift: float = 1.0  # s, the longest single TimeShift token
    max_duration: float = 8.0  # s, longer notes are clipped to this
    duration_bins: int = 128
    velocity_bins: int = 32  # 1..127; 127 keeps every velocity exact
    pitch_min: int = 21  # piano range; notes outside are dropped (and counted)
    pitch_max: int = 108
    pedal_tokens: bool = False  # seconds tokenizer: sustain pedal presses/releases as tokens
    reserved_tokens: int = 8  # spare special tokens for future tasks
    remi_beat_res: dict[str, int] = dataclasses.field(default_factory=lambda: {"0_4": 8, "4_12": 4})
    remi_tempo_qpm: float = 120.0  # seconds → beats for REMI (performances carry no reliable tempo)
    conditioning: list[str] = dataclasses.field(default_factory=list)  # composer, density, dataset, key, tempo
    composers: list[str] = dataclasses.field(default_factory=list)  # Composer_<name> tokens (others: _other)
    density_bins: list[float] = dataclasses.field(default_factory=lambda: [2.0, 4.0, 8.0, 16.0])  # notes/s edges
    datasets: list[str] = dataclasses.field(default_factory=list)  # Dataset_<name> tokens (others: _other)
    tempo_bins: list[float] = dataclasses.field(default_factory=lambda: [70.0, 95.0, 120.0, 150.0])  # qpm edges
    bpe_vocab_size: int = 0  # > 0: learned BPE merges on top, this many tokens in all (tunesmith.models.midi.bpe)


def task_token_name(task: str) -> str:
    """``"loud_from_soft"`` → ``"Task_loud-from-soft"`` (MidiTok allows one underscore per token)."""
    return "Task_" + task.replace("_", "-")


def special_token_names(reserved: int, cfg: MidiTokenizerConfig | None = None) -> list[str]:
    """Specials, task tokens, reserved tokens and (with ``cfg.conditioning``) the conditioning tokens."""
    from tunesmith.models.midi.conditioning import config_token_names

    conditioning = config_token_names(cfg) if cfg else []
    return [
        *BASE_SPECIALS,
        *(task_token_name(name) for name in TASK_NAMES),
        *(f"Reserved_{i}" for i in range(reserved)),
        *conditioning,
    ]


class MidiTokenizer:
    """Common interface. ``token_types[id]`` is an index into :data:`TOKEN_TYPES`."""

    vocab: list[str]
    token_types: np.ndarray  # int8 [vocab_size]
    pitch_min: int
    pitch_max: int

    def __init__(self, vocab: list[str], token_types: np.ndarray) -> None:
        self.vocab = vocab
        self.token_types = token_types.astype(np.int8)
        self._ids = {name: i for i, name in enumerate(vocab)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def id(self, name: str) -> int:
        """Token id of a vocabulary entry such as ``"BOS"`` or ``"Pitch_60"``."""
        try:
            return self._ids[name]
        except KeyError:
            raise KeyError(f"token {name!r} is not in this {type(self).__name__}'s vocabulary") from None

    @property
    def pad_id(self) -> int:
        return self.id("PAD")

    @property
    def bos_id(self) -> int:
        return self.id("BOS")

    @property
    def eos_id(self) -> int:
        return self.id("EOS")

    @property
    def sep_id(self) -> int:
        return self.id("SEP")

    def task_id(self, task: str) -> int:
        """The token that names ``task`` in a record (a reserved token for :data:`RESERVED_TASKS`)."""
        if task in RESERVED_TASKS:
            slot = RESERVED_TASKS.index(task)
            if f"Reserved_{slot}" not in self._ids:
                raise UserError(f"task {task!r} needs tokenizer.reserved_tokens >= {slot + 1} (its task token)")
            return self.id(f"Reserved_{slot}")
        return self.id(task_token_name(task))

    def in_range(self, notes: Notes) -> np.ndarray:
        """Boolean mask ``[N]`` of the notes whose pitch this tokenizer covers."""
        return (notes.pitch >= self.pitch_min) & (notes.pitch <= self.pitch_max)

    def types_of(self, tokens: np.ndarray) -> np.ndarray:
        """Token types ``[T]`` (int8) of a token array ``[T]``."""
        return self.token_types[np.asarray(tokens, np.int64)]

    def encode(self, notes: Notes, origin: float = 0.0) -> np.ndarray:
        """Notes → tokens ``[T]`` (int64), times measured from ``origin`` seconds; no BOS/EOS."""
        raise NotImplementedError

    def decode(self, tokens: np.ndarray) -> Notes:
        """Tokens → notes (special tokens ignored, incomplete notes completed; see decode_with_report)."""
        return self.decode_with_report(tokens)[0]

    def decode_with_report(self, tokens: np.ndarray) -> tuple[Notes, int]:
        """Tokens → (notes, number of malformed note groups that were completed or dropped)."""
        raise NotImplementedError

    def quantize(self, notes: Notes, origin: float = 0.0) -> Notes:
        """What ``decode(encode(notes))`` gives: the notes as this tokenizer can represent them."""
        return self.decode(self.encode(notes, origin)).shifted(origin)

    def describe(self) -> dict:
        """A plain dict that :func:`tokenizer_from_desc` turns back into this tokenizer."""
        raise NotImplementedError

    def grammar(self) -> TokenGrammar:
        """Which token may follow which (see :class:`TokenGrammar`); built once per tokenizer."""
        cached = getattr(self, "_grammar", None)
        if cached is None:
            cached = self._grammar = build_grammar(self.vocab, self.token_types)
        return cached


# --------------------------------------------------------------------------- seconds tokenizer


def velocity_bin_values(bins: int) -> list[int]:
    """Decoded velocity of each of ``bins`` equal bins over 1..127 (bin centres, rounded)."""
    edges = np.linspace(0.5, 127.5, bins + 1)
    return [int(v) for v in np.round((edges[:-1] + edges[1:]) / 2)]


def duration_bin_steps(max_steps: int, bins: int) -> list[int]:
    """Duration bins as step counts: log-spaced over 1..max_steps, consecutive at the short end."""
    steps = np.unique(np.round(np.geomspace(1, max_steps, bins)).astype(np.int64))
    return [int(s) for s in steps]


class SecondsTokenizer(MidiTokenizer):
    """Expressive-performance tokenizer on a fixed seconds grid (see the module docstring)."""

    def __init__(
        self,
        *,
        time_step: float,
        max_shift_steps: int,
        pitch_min: int,
        pitch_max: int,
        velocity_values: list[int],
        duration_steps: list[int],
        pedal_tokens: bool,
        special_tokens: list[str],
    ) -> None:
        if not (0 <= pitch_min <= pitch_max <= 127):
            raise UserError(f"tokenizer.pitch_min/pitch_max = {pitch_min}/{pitch_max}: need 0 <= min <= max <= 127")
        if max_shift_steps < 1 or not velocity_values or not duration_steps:
            raise UserError("tokenizer: max_time_shift, velocity_bins and duration_bins must be positive")
        self.time_step = float(time_step)
        self.max_shift_steps = int(max_shift_steps)
        self.pitch_min, self.pitch_max = int(pitch_min), int(pitch_max)
        self.velocity_values = np.asarray(velocity_values, np.int64)
        self.duration_steps = np.asarray(duration_steps, np.int64)
        self.pedal_tokens = bool(pedal_tokens)
        self.special_tokens = list(special_tokens)

        vocab: list[str] = list(special_tokens)
        types: list[int] = [SPECIAL] * len(vocab)
        self.time_offset = len(vocab) - 1  # TimeShift_k has id time_offset + k, k = 1..M
        vocab += [f"TimeShift_{k}" for k in range(1, self.max_shift_steps + 1)]
        types += [TIME] * self.max_shift_steps
        self.pitch_offset = len(vocab) - self.pitch_min
        vocab += [f"Pitch_{p}" for p in range(self.pitch_min, self.pitch_max + 1)]
        types += [PITCH] * (self.pitch_max - self.pitch_min + 1)
        self.velocity_offset = len(vocab)
        vocab += [f"Velocity_{v}" for v in velocity_values]
        types += [VELOCITY] * len(velocity_values)
        self.duration_offset = len(vocab)
        vocab += [f"Duration_{d}" for d in duration_steps]
        types += [DURATION] * len(duration_steps)
        if self.pedal_tokens:
            vocab += ["Pedal_on", "Pedal_off"]
            types += [PEDAL, PEDAL]
        super().__init__(vocab, np.asarray(types))
        self._velocity_bins = len(velocity_values)
        # Boundaries between duration bins, in log-steps (nearest bin in log domain).
        log_steps = np.log(self.duration_steps.astype(np.float64))
        self._duration_bounds = (log_steps[1:] + log_steps[:-1]) / 2

    @classmethod
    def from_config(cls, cfg: MidiTokenizerConfig) -> SecondsTokenizer:
        if cfg.time_step <= 0 or cfg.max_time_shift < cfg.time_step or cfg.max_duration < cfg.time_step:
            raise UserError(
                f"tokenizer: need 0 < time_step <= max_time_shift and time_step <= max_duration "
                f"(got {cfg.time_step}, {cfg.max_time_shift}, {cfg.max_duration})"
            )
        if not 1 <= cfg.velocity_bins <= 127:
            raise UserError(f"tokenizer.velocity_bins={cfg.velocity_bins}: expected 1..127")
        return cls(
            time_step=cfg.time_step,
            max_shift_steps=round(cfg.max_time_shift / cfg.time_step),
            pitch_min=cfg.pitch_min,
            pitch_max=cfg.pitch_max,
            velocity_values=velocity_bin_values(cfg.velocity_bins),
            duration_steps=duration_bin_steps(round(cfg.max_duration / cfg.time_step), max(cfg.duration_bins, 1)),
            pedal_tokens=cfg.pedal_tokens,
            special_tokens=special_token_names(cfg.reserved_tokens, cfg),
        )

    def describe(self) -> dict:
        return {
            "kind": "seconds",
            "version": DESC_VERSION,
            "time_step": self.time_step,
            "max_shift_steps": self.max_shift_steps,
            "pitch_min": self.pitch_min,
            "pitch_max": self.pitch_max,
            "velocity_values": [int(v) for v in self.velocity_values],
            "duration_steps": [int(d) for d in self.duration_steps],
            "pedal_tokens": self.pedal_tokens,
            "special_tokens": list(self.special_tokens),
            "vocab_size": self.vocab_size,
        }

    # -- quantisation
    def velocity_bin(self, velocity: np.ndarray) -> np.ndarray:
        """Velocities (1..127) → bin index (equal-width bins over [0.5, 127.5))."""
        v = np.asarray(velocity, np.float64)
        return np.clip(np.floor((v - 0.5) * self._velocity_bins / 127.0), 0, self._velocity_bins - 1).astype(np.int64)

    def duration_bin(self, seconds: np.ndarray) -> np.ndarray:
        """Durations (s) → bin index: nearest bin in log steps, at least one step, clipped at the top."""
        steps = np.maximum(np.round(np.asarray(seconds, np.float64) / self.time_step), 1.0)
        return np.searchsorted(self._duration_bounds, np.log(steps), side="right").astype(np.int64)

    # -- encode
    def encode(self, notes: Notes, origin: float = 0.0) -> np.ndarray:
        notes = notes.take(self.in_range(notes))
        onset = np.round((notes.start - origin) / self.time_step).astype(np.int64)
        n = len(notes)
        # Events: notes (3 body tokens) then pedal presses/releases (1 token); ordered by time, then
        # pedal releases before notes before presses at the same step, then pitch.
        ev_step = onset
        ev_rank = np.ones(n, np.int64)
        ev_pitch = notes.pitch.astype(np.int64)
        body_len = np.full(n, 3, np.int64)
        pedals = notes.pedals
        if self.pedal_tokens and len(pedals) and n:
            # only the pedal within the notes' span, cut at the origin (a slice of a piece keeps all pedals)
            pedals = pedals[(pedals[:, 1] > origin) & (pedals[:, 0] <= notes.end.max())]
            pedals = np.stack([np.maximum(pedals[:, 0], origin), pedals[:, 1]], axis=1)
        if self.pedal_tokens and len(pedals) and n:
            ped = np.round((pedals - origin) / self.time_step).astype(np.int64)
            ev_step = np.concatenate([ev_step, ped[:, 0], ped[:, 1]])
            p = len(ped)
            ev_rank = np.concatenate([ev_rank, np.full(p, 2), np.zeros(p, np.int64)])
            ev_pitch = np.concatenate([ev_pitch, np.zeros(2 * p, np.int64)])
            body_len = np.concatenate([body_len, np.ones(2 * p, np.int64)])
        if np.any(ev_step < 0):
            raise ValueError(f"note or pedal before the origin {origin:.3f} s: pass the first onset as origin")
        order = np.lexsort((ev_pitch, ev_rank, ev_step))
        ev_step, ev_rank, body_len = ev_step[order], ev_rank[order], body_len[order]
        note_index = order[ev_rank == 1]  # position in `notes` of each note event, in event order

        gaps = np.diff(ev_step, prepend=0)
        m = self.max_shift_steps
        n_full, rem = gaps // m, gaps % m
        n_shift = n_full + (rem > 0)
        per_event = n_shift + body_len
        starts = np.cumsum(per_event) - per_event
        out = np.empty(int(per_event.sum()), np.int64)

        shift_event = np.repeat(np.arange(len(ev_step)), n_shift)
        k = np.arange(len(shift_event)) - np.repeat(np.cumsum(n_shift) - n_shift, n_shift)
        shift_value = np.where(k < n_full[shift_event], m, rem[shift_event])
        out[starts[shift_event] + k] = self.time_offset + shift_value

        body = starts + n_shift
        is_note = ev_rank == 1
        nb = body[is_note]
        out[nb] = self.pitch_offset + notes.pitch[note_index].astype(np.int64)
        out[nb + 1] = self.velocity_offset + self.velocity_bin(notes.velocity[note_index])
        out[nb + 2] = self.duration_offset + self.duration_bin(notes.duration[note_index])
        if self.pedal_tokens:
            out[body[ev_rank == 2]] = self.id("Pedal_on")
            out[body[ev_rank == 0]] = self.id("Pedal_off")
        return out

    # -- decode
    def decode_with_report(self, tokens: np.ndarray) -> tuple[Notes, int]:
        tokens = np.asarray(tokens, np.int64)
        if len(tokens) and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"token ids outside 0..{self.vocab_size - 1}")
        types = self.token_types[tokens].tolist()
        step = 0
        pitch: list[int] = []
        start: list[int] = []
        velocity: list[int] = []
        duration: list[int] = []
        presses: list[int] = []
        releases: list[int] = []
        malformed = 0
        pedal_on, pedal_off = (self.id("Pedal_on"), self.id("Pedal_off")) if self.pedal_tokens else (-1, -1)
        i, n = 0, len(tokens)
        toks = tokens.tolist()
        default_steps = max(1, round(0.1 / self.time_step))  # 100 ms for a note missing its duration
        while i < n:
            tok, typ = toks[i], types[i]
            if typ == TIME:
                step += tok - self.time_offset
            elif typ == PITCH:
                vel = dur = None
                j = i + 1
                if j < n and types[j] == VELOCITY:
                    vel = int(self.velocity_values[toks[j] - self.velocity_offset])
                    j += 1
                if j < n and types[j] == DURATION:
                    dur = int(self.duration_steps[toks[j] - self.duration_offset])
                    j += 1
                if vel is None or dur is None:
                    malformed += 1
                pitch.append(tok - self.pitch_offset)
                start.append(step)
                velocity.append(64 if vel is None else vel)
                duration.append(default_steps if dur is None else dur)
                i = j
                continue
            elif typ in (VELOCITY, DURATION):
                malformed += 1  # a velocity/duration without its pitch: dropped
            elif tok == pedal_on:
                presses.append(step)
            elif tok == pedal_off:
                releases.append(step)
            i += 1
        dt = self.time_step
        start_s = np.asarray(start, np.float64) * dt
        notes = Notes(pitch, start_s, start_s + np.asarray(duration, np.float64) * dt, velocity)
        if presses:
            notes.pedals = _pair_pedals(np.asarray(presses) * dt, np.asarray(releases) * dt, notes)
        return notes.sorted(), malformed


def _pair_pedals(presses: np.ndarray, releases: np.ndarray, notes: Notes) -> np.ndarray:
    """Pair each press with the first release after it; an open press ends with the last note."""
    out = []
    end = float(notes.end.max()) if len(notes) else float(presses.max())
    for p in presses:
        later = releases[releases >= p]
        out.append([p, float(later[0]) if len(later) else max(end, p)])
    return np.asarray(out, np.float64)


# --------------------------------------------------------------------------- REMI (MidiTok)


class RemiTokenizer(MidiTokenizer):
    """MidiTok's REMI over notes converted to beats at a fixed tempo (``tempo_qpm``)."""

    def __init__(
        self,
        *,
        pitch_min: int,
        pitch_max: int,
        num_velocities: int,
        beat_res: dict[str, int],
        tempo_qpm: float,
        special_tokens: list[str],
        vocab: list[str] | None = None,
    ) -> None:
        try:
            from miditok import REMI, TokenizerConfig
        except ImportError:
            raise UserError("tokenizer.kind=remi needs MidiTok: pip install 'tunesmith[midi]'") from None
        try:
            res = {tuple(int(x) for x in key.split("_")): int(v) for key, v in beat_res.items()}
        except ValueError:
            raise UserError(f"tokenizer.remi_beat_res={beat_res!r}: keys must look like '0_4' (beats)") from None
        config = TokenizerConfig(
            pitch_range=(pitch_min, pitch_max + 1),
            num_velocities=num_velocities,
            beat_res=res,
            special_tokens=list(special_tokens),
            use_velocities=True,
        )
        self._miditok = REMI(config)
        names = [name for name, _ in sorted(self._miditok.vocab.items(), key=lambda kv: kv[1])]
        if vocab is not None and names != vocab:
            raise UserError(
                "this MidiTok version builds a different REMI vocabulary than the one the checkpoint was "
                "trained with; install the MidiTok version named in its tokenizer description"
            )
        types = np.asarray([_remi_type(name) for name in names])
        super().__init__(names, types)
        self._aliases = {name.split("_")[0]: name for name in names if name.endswith("_None")}
        self.pitch_min, self.pitch_max = pitch_min, pitch_max
        self.num_velocities = num_velocities
        self.beat_res = dict(beat_res)
        self.tempo_qpm = float(tempo_qpm)
        self.special_tokens = list(special_tokens)

    def id(self, name: str) -> int:  # MidiTok names specials "PAD_None", ...
        return super().id(self._aliases.get(name, name))

    @classmethod
    def from_config(cls, cfg: MidiTokenizerConfig) -> RemiTokenizer:
        return cls(
            pitch_min=cfg.pitch_min,
            pitch_max=cfg.pitch_max,
            num_velocities=cfg.velocity_bins,
            beat_res=cfg.remi_beat_res,
            tempo_qpm=cfg.remi_tempo_qpm,
            special_tokens=special_token_names(cfg.reserved_tokens, cfg),
        )

    def describe(self) -> dict:
        from importlib.metadata import version

        return {
            "kind": "remi",
            "version": DESC_VERSION,
            "miditok_version": version("miditok"),
            "pitch_min": self.pitch_min,
            "pitch_max": self.pitch_max,
            "num_velocities": self.num_velocities,
            "beat_res": dict(self.beat_res),
            "tempo_qpm": self.tempo_qpm,
            "special_tokens": list(self.special_tokens),
            "vocab": list(self.vocab),
            "vocab_size": self.vocab_size,
        }

    def encode(self, notes: Notes, origin: float = 0.0) -> np.ndarray:
        from symusic import Note, Score, Tempo, Track

        tpq = 480
        ticks_per_second = tpq * self.tempo_qpm / 60.0
        notes = notes.take(self.in_range(notes))
        score = Score(tpq)
        score.tempos.append(Tempo(0, self.tempo_qpm))
        track = Track("piano", 0, False)
        start = np.round((notes.start - origin) * ticks_per_second).astype(np.int64)
        length = np.maximum(np.round(notes.duration * ticks_per_second).astype(np.int64), 1)
        for s, d, p, v in zip(
            start.tolist(), length.tolist(), notes.pitch.tolist(), notes.velocity.tolist(), strict=True
        ):
            track.notes.append(Note(s, d, int(p), int(v)))
        score.tracks.append(track)
        if not len(notes):
            return np.zeros(0, np.int64)
        # MidiTok keeps the input order of notes that land on one position: quantise first, then order them
        # by (position, pitch), so encoding is canonical and re-encoding decoded notes gives the same tokens.
        score = self._miditok.preprocess_score(score)
        for trk in score.tracks:
            trk.notes.sort(key=lambda note: (note.time, note.pitch, note.duration))
        seqs = self._miditok.encode(score, no_preprocess_score=True)
        ids = seqs[0].ids if isinstance(seqs, list) else seqs.ids
        return np.asarray(ids, np.int64)

    def decode_with_report(self, tokens: np.ndarray) -> tuple[Notes, int]:
        tokens = np.asarray(tokens, np.int64)
        types = self.token_types[tokens]
        keep = tokens[types != SPECIAL]
        if not len(keep):
            return Notes.empty(), 0
        pitches = int((types == PITCH).sum())
        score = self._miditok.decode([keep.tolist()])
        # MidiTok writes its own tempo; rescale so one beat is 60 / tempo_qpm seconds.
        arrays = [t.notes.numpy() for t in score.tracks]
        if not arrays:  # time tokens only: MidiTok writes no track
            return Notes.empty(), pitches
        tpq = score.tpq
        seconds_per_tick = 60.0 / (self.tempo_qpm * tpq)
        start = np.concatenate([a["time"] for a in arrays]).astype(np.float64) * seconds_per_tick
        dur = np.concatenate([a["duration"] for a in arrays]).astype(np.float64) * seconds_per_tick
        notes = Notes(
            np.concatenate([a["pitch"] for a in arrays]).astype(np.uint8),
            start,
            start + dur,
            np.concatenate([a["velocity"] for a in arrays]).astype(np.uint8),
        ).sorted()
        return notes, max(pitches - len(notes), 0)


def _remi_type(name: str) -> int:
    kind = name.split("_", 1)[0]
    if kind in ("Pitch", "PitchDrum"):
        return PITCH
    if kind == "Velocity":
        return VELOCITY
    if kind == "Duration":
        return DURATION
    if kind in ("Bar", "Position", "TimeShift", "Rest", "TimeSig", "Tempo"):
        return TIME
    if kind == "Pedal":
        return PEDAL
    return SPECIAL


# --------------------------------------------------------------------------- grammar

# Token classes of the grammar. BOUNDARY: tokens after which a note sequence starts (BOS, SEP, task
# tokens, other specials); NEVER: tokens generation must not emit (MidiTok's PitchDrum and TimeSig).
GRAMMAR_CLASSES: tuple[str, ...] = (
    "boundary",
    "eos",
    "bar",
    "timesig",
    "time",
    "pitch",
    "velocity",
    "duration",
    "pedal",
    "never",
)
_G = {name: i for i, name in enumerate(GRAMMAR_CLASSES)}


@dataclasses.dataclass(frozen=True)
class TokenGrammar:
    """Which token may follow which, so that generated note groups are always complete.

    ``token_class`` int64 ``[V]`` (index into :data:`GRAMMAR_CLASSES`); ``follows`` bool ``[C, V]``: the
    tokens allowed after a token of each class; ``open`` bool ``[C]``: the class leaves a note group
    unfinished (a pitch waits for its velocity, a velocity for its duration). Between notes any time
    token, pitch, pedal event or EOS may come; a pitch is followed by exactly one velocity and that by
    exactly one duration. REMI's time signature may only follow a bar (as MidiTok writes it); tokens of
    class ``never`` (REMI's drum pitches, tempos, rests: a piano stream here never holds them) are never
    allowed.
    """

    token_class: np.ndarray
    follows: np.ndarray
    open: np.ndarray

    def allowed_after(self, token: int) -> np.ndarray:
        """Bool ``[V]``: the tokens that may follow ``token``."""
        return self.follows[self.token_class[int(token)]]

    def is_open(self, token: int) -> bool:
        """Whether a sequence ending with ``token`` has an unfinished note group."""
        return bool(self.open[self.token_class[int(token)]])

    def violations(self, tokens: np.ndarray, after: int) -> int:
        """How many tokens of ``tokens`` [T] break the grammar, starting after the token ``after``."""
        seq = np.concatenate([[after], np.asarray(tokens, np.int64)])
        return int((~self.follows[self.token_class[seq[:-1]], seq[1:]]).sum())


def build_grammar(vocab: list[str], token_types: np.ndarray) -> TokenGrammar:
    """The note-group grammar of a vocabulary (seconds tokenizer or REMI), from token names and types."""
    cls = np.empty(len(vocab), np.int64)
    for i, (name, typ) in enumerate(zip(vocab, token_types.tolist(), strict=True)):
        kind = name.split("_", 1)[0]
        if kind in ("PitchDrum", "Tempo", "Rest"):
            cls[i] = _G["never"]
        elif kind == "TimeSig":
            cls[i] = _G["timesig"]
        elif name in ("EOS", "EOS_None"):
            cls[i] = _G["eos"]
        elif kind == "Bar":
            cls[i] = _G["bar"]
        elif typ == SPECIAL:
            cls[i] = _G["boundary"]
        else:
            cls[i] = _G[TOKEN_TYPES[typ]]
    is_ = {name: cls == k for name, k in _G.items()}
    free = is_["bar"] | is_["time"] | is_["pitch"] | is_["pedal"] | is_["eos"]
    follows = np.zeros((len(GRAMMAR_CLASSES), len(vocab)), bool)
    for name in ("boundary", "eos", "bar", "timesig", "time", "duration", "pedal"):
        follows[_G[name]] = free
    follows[_G["bar"]] |= is_["timesig"]
    follows[_G["pitch"]] = is_["velocity"]
    follows[_G["velocity"]] = is_["duration"]
    follows[_G["never"]] = free  # a prompt may end with one: generation goes on from a clean state
    open_ = np.zeros(len(GRAMMAR_CLASSES), bool)
    open_[[_G["pitch"], _G["velocity"]]] = True
    return TokenGrammar(cls, follows, open_)


# --------------------------------------------------------------------------- factory


def build_tokenizer(cfg: MidiTokenizerConfig) -> MidiTokenizer:
    """A tokenizer from the ``tokenizer:`` config section: the base tokenizer (``bpe_vocab_size`` merges are
    learned on a corpus, :func:`tunesmith.models.midi.bpe.learn_bpe`)."""
    if cfg.kind == "seconds":
        return SecondsTokenizer.from_config(cfg)
    if cfg.kind == "remi":
        return RemiTokenizer.from_config(cfg)
    raise UserError(f"tokenizer.kind={cfg.kind!r}: expected 'seconds' or 'remi'")


def tokenizer_from_desc(desc: dict) -> MidiTokenizer:
    """Rebuild a tokenizer from :meth:`MidiTokenizer.describe` (e.g. as stored in a checkpoint)."""
    if not isinstance(desc, dict) or "kind" not in desc:
        raise UserError("tokenizer description missing or not a mapping with a 'kind' (checkpoint too old?)")
    if desc.get("version", 0) > DESC_VERSION:
        raise UserError(f"tokenizer description version {desc['version']} is newer than this tunesmith supports")
    if desc["kind"] == "seconds":
        tok: MidiTokenizer = SecondsTokenizer(
            time_step=desc["time_step"],
            max_shift_steps=desc["max_shift_steps"],
            pitch_min=desc["pitch_min"],
            pitch_max=desc["pitch_max"],
            velocity_values=desc["velocity_values"],
            duration_steps=desc["duration_steps"],
            pedal_tokens=desc["pedal_tokens"],
            special_tokens=desc["special_tokens"],
        )
    elif desc["kind"] == "bpe":
        from tunesmith.models.midi.bpe import bpe_from_desc

        tok = bpe_from_desc(desc, tokenizer_from_desc(desc.get("base") or {}))
    elif desc["kind"] == "remi":
        tok = RemiTokenizer(
            pitch_min=desc["pitch_min"],
            pitch_max=desc["pitch_max"],
            num_velocities=desc["num_velocities"],
            beat_res=desc["beat_res"],
            tempo_qpm=desc["tempo_qpm"],
            special_tokens=desc["special_tokens"],
            vocab=desc.get("vocab"),
        )
    else:
        raise UserError(f"tokenizer description kind {desc['kind']!r}: expected 'seconds', 'remi' or 'bpe'")
    if "vocab_size" in desc and desc["vocab_size"] != tok.vocab_size:
        raise UserError(f"tokenizer description says {desc['vocab_size']} tokens, rebuilt {tok.vocab_size}")
    return tok
