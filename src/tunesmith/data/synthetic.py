"""Built-in synthetic music: deterministic short pieces with captions from their parameters.

Six clearly distinct styles (tempo range, register, timbre, drums or none) so that a codec and a
text-conditioned LM learn something visible in a few CPU minutes. Each track is drawn from
``(seed, index)`` alone: style (balanced over blocks of tracks), key, mode, tempo, progression,
a melodic motif repeated over the chords, bass line and drum pattern; instruments are additive,
subtractive, FM and noise synthesis in numpy. Same parameters → bit-identical audio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MODES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "harmonic minor": (0, 2, 3, 5, 7, 8, 11),
}


@dataclass(frozen=True)
class Style:
    """A style: the ranges its tracks are drawn from and the instruments that play them."""

    genre: str
    substyle: str
    tempo: tuple[int, int]  # bpm range, inclusive
    modes: tuple[str, ...]
    progressions: tuple[tuple[int, ...], ...]  # scale degrees (0-based), one chord per bar
    lead: str | None  # instrument names below; None = no such part
    chords: str | None
    bass: str | None
    drums: str | None  # drum pattern name
    lead_octave: int  # MIDI note of the tonic the melody sits on
    lead_grid: int  # melody steps per beat
    rest_prob: float
    swing: float  # 0 = straight; delay of off-beat steps as a fraction of a step
    moods: tuple[str, ...]
    bars_per_chord: int = 1


STYLES: tuple[Style, ...] = (
    Style(
        "electronic",
        "techno",
        (122, 130),
        ("minor", "dorian"),
        ((0, 0, 5, 6), (0, 3, 4, 0), (0, 5, 3, 4)),
        "saw lead",
        "synth pad",
        "synth bass",
        "four on the floor",
        72,
        2,
        0.25,
        0.0,
        ("energetic", "driving", "dark"),
    ),
    Style(
        "ambient",
        "drone",
        (60, 72),
        ("lydian", "major"),
        ((0, 4, 5, 3), (0, 3, 0, 4), (0, 5, 3, 0)),
        "bell",
        "warm pad",
        "sub drone",
        None,
        79,
        1,
        0.45,
        0.0,
        ("calm", "dreamy", "peaceful"),
        2,
    ),
    Style(
        "rock",
        "hard rock",
        (112, 140),
        ("mixolydian", "minor"),
        ((0, 6, 3, 0), (0, 3, 4, 3), (0, 5, 6, 4)),
        None,
        "distorted guitar",
        "electric bass",
        "rock beat",
        64,
        2,
        0.0,
        0.0,
        ("powerful", "aggressive", "energetic"),
    ),
    Style(
        "classical",
        "piano solo",
        (76, 100),
        ("major", "harmonic minor"),
        ((0, 3, 4, 0), (0, 5, 1, 4), (0, 3, 1, 4)),
        "piano",
        "piano arpeggio",
        None,
        None,
        72,
        2,
        0.15,
        0.0,
        ("elegant", "gentle", "romantic"),
    ),
    Style(
        "jazz",
        "swing",
        (100, 140),
        ("dorian", "major"),
        ((1, 4, 0, 0), (0, 5, 1, 4), (1, 4, 0, 5)),
        "vibraphone",
        "electric piano",
        "upright bass",
        "swing ride",
        72,
        2,
        0.35,
        0.33,
        ("relaxed", "smooth", "sophisticated"),
    ),
    Style(
        "chiptune",
        "8-bit video game",
        (140, 170),
        ("major", "minor"),
        ((0, 5, 3, 4), (0, 4, 5, 3), (0, 3, 4, 4)),
        "square lead",
        "pulse arpeggio",
        "triangle bass",
        "noise drums",
        76,
        4,
        0.2,
        0.0,
        ("playful", "upbeat", "happy"),
    ),
)


def midi_to_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69.0) / 12.0)


def _track_rng(seed: int, index: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index), salt, 0x7E5])


def style_of(index: int, seed: int) -> int:
    """Style index of track ``index``: every block of len(STYLES) tracks holds each style once."""
    block, pos = divmod(int(index), len(STYLES))
    order = np.random.default_rng([int(seed) & 0xFFFFFFFF, block, 0x57]).permutation(len(STYLES))
    return int(order[pos])


def track_params(index: int, seed: int, duration: float) -> dict[str, Any]:
    """Plain-dict parameters of synthetic track ``index`` (deterministic in ``seed, index``)."""
    style = STYLES[style_of(index, seed)]
    rng = _track_rng(seed, index)
    tonic = int(rng.integers(0, 12))
    mode = style.modes[int(rng.integers(0, len(style.modes)))]
    bpm = int(rng.integers(style.tempo[0], style.tempo[1] + 1))
    progression = list(style.progressions[int(rng.integers(0, len(style.progressions)))])
    mood_idx = sorted(rng.choice(len(style.moods), size=2, replace=False).tolist())
    return {
        "index": int(index),
        "seed": int(seed),
        "duration": float(duration),
        "style": STYLES.index(style),
        "tonic": tonic,
        "mode": mode,
        "bpm": bpm,
        "progression": progression,
        "moods": [style.moods[i] for i in mood_idx],
    }


def track_metadata(params: dict[str, Any]) -> dict[str, Any]:
    """AudioCraft music fields for a synthetic track, with a caption built from its parameters."""
    style = STYLES[params["style"]]
    instruments = [p for p in (style.lead, style.chords, style.bass) if p]
    if style.drums:
        instruments.append("drums")
    key = f"{NOTE_NAMES[params['tonic']]} {params['mode']}"
    description = ", ".join([style.genre, style.substyle, *instruments, f"{params['bpm']} bpm", key, *params["moods"]])
    return {
        "title": f"synthetic {style.genre} {params['index']}",
        "artist": "tunesmith synthetic",
        "key": key,
        "bpm": float(params["bpm"]),
        "genre": style.genre,
        "moods": list(params["moods"]),
        "description": description,
        "name": f"synthetic_{params['index']:06d}",
        "instrument": ", ".join(instruments),
        "keywords": [style.substyle, *instruments] + ([] if style.drums else ["no drums"]),
    }


# --------------------------------------------------------------------------- instruments


def _env(n: int, sr: int, attack: float, decay: float, release: float = 0.01) -> np.ndarray:
    """Linear attack, exponential decay with time constant ``decay`` s, linear release at the end."""
    t = np.arange(n, dtype=np.float32) / sr
    env = np.exp(-t / max(decay, 1e-4), dtype=np.float32)
    a = max(1, int(attack * sr))
    env[:a] *= np.linspace(0.0, 1.0, min(a, n), dtype=np.float32)[: min(a, n)]
    r = min(n, max(1, int(release * sr)))
    env[n - r :] *= np.linspace(1.0, 0.0, r, dtype=np.float32)
    return env


def _phase(freq: float, n: int, sr: int) -> np.ndarray:
    return (np.arange(n, dtype=np.float64) * (freq / sr)) % 1.0


def _additive(freq: float, n: int, sr: int, amps: list[float], decays: list[float], stretch: float = 0.0) -> np.ndarray:
    t = np.arange(n, dtype=np.float32) / sr
    out = np.zeros(n, np.float32)
    for k, (amp, dec) in enumerate(zip(amps, decays, strict=True), 1):
        f = freq * k * math.sqrt(1.0 + stretch * k * k)
        if f >= sr / 2 * 0.9:
            break
        out += amp * np.sin(2 * np.pi * f * t, dtype=np.float32) * np.exp(-t / dec, dtype=np.float32)
    return out


def _note(instrument: str, freq: float, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One note of ``n`` samples (float32, peak about 1) of the named instrument."""
    if instrument in ("saw lead", "synth bass"):
        ph = _phase(freq, n, sr)
        ph2 = _phase(freq * 1.006, n, sr)
        x = (2 * ph - 1 + 2 * ph2 - 1).astype(np.float32) * 0.5
        return x * _env(n, sr, 0.005, 0.35 if instrument == "saw lead" else 0.18, 0.02)
    if instrument == "synth pad":
        x = np.zeros(n, np.float32)
        for det in (0.994, 1.0, 1.006):
            x += (2 * _phase(freq * det, n, sr) - 1).astype(np.float32)
        return x / 3 * _env(n, sr, 0.25, 8.0, min(0.4, n / sr / 3))
    if instrument == "warm pad":  # soft additive tone, two detuned voices, slow swell
        amps, decays = [1.0, 0.4, 0.15, 0.06], [30.0] * 4
        x = _additive(freq * 0.997, n, sr, amps, decays) + _additive(freq * 1.003, n, sr, amps, decays)
        return x * 0.4 * _env(n, sr, min(0.8, n / sr / 3), 30.0, min(0.6, n / sr / 3))
    if instrument == "bell":
        amps, decays = [1.0, 0.5, 0.35, 0.2], [1.6, 0.9, 0.5, 0.3]
        t = np.arange(n, dtype=np.float32) / sr
        x = sum(
            a * np.sin(2 * np.pi * freq * r * t, dtype=np.float32) * np.exp(-t / d, dtype=np.float32)
            for a, d, r in zip(amps, decays, (1.0, 2.76, 5.4, 8.93), strict=True)
        )
        return x.astype(np.float32) * _env(n, sr, 0.002, 10.0, 0.05)
    if instrument == "sub drone":
        t = np.arange(n, dtype=np.float32) / sr
        x = np.sin(2 * np.pi * freq * t, dtype=np.float32) + 0.2 * np.sin(4 * np.pi * freq * t, dtype=np.float32)
        return x * _env(n, sr, min(1.0, n / sr / 3), 20.0, min(1.0, n / sr / 3))
    if instrument == "distorted guitar":
        ph = _phase(freq, n, sr)
        ph5 = _phase(freq * 1.4983, n, sr)
        x = (2 * ph - 1 + 0.8 * (2 * ph5 - 1)).astype(np.float32)
        return np.tanh(3.0 * x).astype(np.float32) * 0.7 * _env(n, sr, 0.004, 1.2, 0.02)
    if instrument in ("electric bass", "upright bass"):
        dec = 0.5 if instrument == "electric bass" else 0.3
        return _additive(freq, n, sr, [1.0, 0.5, 0.3, 0.15], [dec, dec * 0.6, dec * 0.4, dec * 0.3]) * _env(
            n, sr, 0.004, 10.0, 0.02
        )
    if instrument in ("piano", "piano arpeggio"):
        amps = [1.0 / k for k in range(1, 9)]
        decays = [1.4 / (1 + 0.5 * k) for k in range(8)]
        return _additive(freq, n, sr, amps, decays, stretch=0.0004) * 0.8 * _env(n, sr, 0.003, 10.0, 0.03)
    if instrument in ("electric piano", "vibraphone"):
        t = np.arange(n, dtype=np.float32) / sr
        ratio, index0, dec = (1.0, 1.8, 1.0) if instrument == "electric piano" else (4.0, 1.2, 0.35)
        mod = index0 * np.exp(-t / dec, dtype=np.float32) * np.sin(2 * np.pi * freq * ratio * t, dtype=np.float32)
        x = np.sin(2 * np.pi * freq * t + mod, dtype=np.float32)
        trem = 1.0 + (0.25 * np.sin(2 * np.pi * 5.5 * t, dtype=np.float32) if instrument == "vibraphone" else 0.0)
        return x * trem * _env(n, sr, 0.003, 1.2 if instrument == "vibraphone" else 0.9, 0.03)
    if instrument in ("square lead", "pulse arpeggio"):
        duty = 0.5 if instrument == "square lead" else 0.25
        x = np.where(_phase(freq, n, sr) < duty, 1.0, -1.0).astype(np.float32) * 0.5
        return x * _env(n, sr, 0.001, 0.6 if instrument == "square lead" else 0.15, 0.005)
    if instrument == "triangle bass":
        ph = _phase(freq, n, sr)
        x = (2 * np.abs(2 * ph - 1) - 1).astype(np.float32)
        return x * _env(n, sr, 0.001, 10.0, 0.01)
    raise ValueError(f"unknown synthetic instrument {instrument!r}")


def _drum(name: str, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One drum hit (float32)."""
    if name in ("kick", "chip kick"):
        n = int(0.35 * sr)
        t = np.arange(n, dtype=np.float32) / sr
        freq = 45.0 + 110.0 * np.exp(-t / 0.04, dtype=np.float32)
        phase = 2 * np.pi * np.cumsum(freq, dtype=np.float64) / sr
        x = np.sin(phase).astype(np.float32) * np.exp(-t / 0.12, dtype=np.float32)
        return np.sign(x) * 0.8 if name == "chip kick" else x
    if name in ("snare", "clap", "chip snare"):
        n = int(0.25 * sr)
        t = np.arange(n, dtype=np.float32) / sr
        noise = rng.standard_normal(n).astype(np.float32)
        noise = np.diff(noise, prepend=0.0).astype(np.float32) * 0.5  # tilt up: brighter
        body = 0.0 if name == "clap" else np.sin(2 * np.pi * 185.0 * t, dtype=np.float32) * np.exp(-t / 0.03)
        x = 0.6 * noise * np.exp(-t / (0.06 if name != "clap" else 0.04), dtype=np.float32) + 0.5 * body
        if name == "chip snare":
            x = np.sign(x) * np.abs(x) ** 0.5 * 0.6
        return x.astype(np.float32)
    if name in ("hat", "open hat", "ride"):
        dur, dec = {"hat": (0.06, 0.015), "open hat": (0.25, 0.08), "ride": (0.6, 0.25)}[name]
        n = int(dur * sr)
        t = np.arange(n, dtype=np.float32) / sr
        noise = np.diff(np.diff(rng.standard_normal(n + 2))).astype(np.float32) * 0.25  # high-passed
        metal = sum(np.sign(np.sin(2 * np.pi * f * t, dtype=np.float32)) for f in (3140.0, 4270.0, 5410.0)) / 3
        mix = noise * (0.7 if name != "ride" else 0.3) + metal * (0.15 if name != "ride" else 0.25)
        return (mix * np.exp(-t / dec, dtype=np.float32) * 0.5).astype(np.float32)
    raise ValueError(f"unknown drum {name!r}")


# One bar of 16 steps (sixteenth notes) per drum voice.
DRUM_PATTERNS: dict[str, dict[str, str]] = {
    "four on the floor": {
        "kick": "x...x...x...x...",
        "clap": "....x.......x...",
        "hat": "x.x.x.x.x.x.x.x.",
        "open hat": "..x...x...x...x.",
    },
    "rock beat": {"kick": "x.....x.x.......", "snare": "....x.......x...", "hat": "x.x.x.x.x.x.x.x."},
    "swing ride": {"ride": "x...x.x.x...x.x.", "hat": "....x.......x...", "kick": "x...........x..."},
    "noise drums": {"chip kick": "x.......x.x.....", "chip snare": "....x.......x...", "hat": "x.xxx.xxx.xxx.xx"},
}
_DRUM_GAIN = {"kick": 1.0, "chip kick": 0.6, "snare": 0.7, "clap": 0.6, "chip snare": 0.5}
_DRUM_GAIN.update({"hat": 0.35, "open hat": 0.25, "ride": 0.35})


# --------------------------------------------------------------------------- composition


def _degree_to_midi(degree: int, tonic_midi: int, scale: tuple[int, ...]) -> int:
    octave, step = divmod(degree, len(scale))
    return tonic_midi + 12 * octave + scale[step]


class _Layer:
    """A mono buffer that notes are mixed into."""

    def __init__(self, n: int) -> None:
        self.buf = np.zeros(n, np.float32)

    def add(self, start: int, sound: np.ndarray, gain: float) -> None:
        if start >= len(self.buf) or start < 0:
            return
        end = min(len(self.buf), start + len(sound))
        self.buf[start:end] += gain * sound[: end - start]


def render_track(params: dict[str, Any], sample_rate: int, channels: int = 1) -> np.ndarray:
    """Audio of a synthetic track: float32 ``[channels, round(duration * sample_rate)]``, RMS about -18 dBFS."""
    style = STYLES[params["style"]]
    sr = int(sample_rate)
    n_total = int(round(params["duration"] * sr))
    rng = _track_rng(params["seed"], params["index"], salt=1)
    scale = MODES[params["mode"]]
    beat = 60.0 / params["bpm"]
    step16 = beat / 4
    bar = 4 * beat
    n_bars = int(math.ceil(params["duration"] / bar)) + 1
    progression = [d for d in params["progression"] for _ in range(style.bars_per_chord)]
    tonic_lead = style.lead_octave + params["tonic"] - (12 if params["tonic"] > 6 else 0)
    tonic_low = tonic_lead - 24
    layers: dict[str, tuple[_Layer, float]] = {}  # name → (layer, pan in [-1, 1])

    def layer(name: str, pan: float) -> _Layer:
        if name not in layers:
            layers[name] = (_Layer(n_total), pan)
        return layers[name][0]

    # melodic motif: degrees relative to the chord root, one per grid step of a bar; None = rest
    steps_per_bar = 4 * style.lead_grid
    motif: list[int | None] = []
    degree = 0
    for i in range(steps_per_bar):
        strong = i % style.lead_grid == 0
        if not strong and rng.random() < style.rest_prob:
            motif.append(None)
            continue
        degree = int(np.clip(degree + rng.choice([-2, -1, 1, 2, 0, 4 if strong else -1]), -3, 7))
        motif.append(degree)
    answer = [d if d is None or rng.random() < 0.7 else d + int(rng.choice([-1, 1])) for d in motif]

    for b in range(n_bars):
        t_bar = b * bar
        root = progression[b % len(progression)]
        chord = [root, root + 2, root + 4] + ([root + 6] if style.genre == "jazz" else [])
        if style.lead:
            lead = layer("lead", -0.2)
            phrase = motif if (b // 2) % 2 == 0 else answer
            step = beat / style.lead_grid
            for i, d in enumerate(phrase):
                if d is None:
                    continue
                length = 1
                while i + length < len(phrase) and phrase[i + length] is None:
                    length += 1
                offset = step * style.swing if (i % 2 == 1 and style.swing) else 0.0
                midi = _degree_to_midi(d + root, tonic_lead, scale)
                dur = step * length * 0.95
                note = _note(style.lead, midi_to_hz(midi), int(dur * sr), sr, rng)
                lead.add(int((t_bar + i * step + offset) * sr), note, 0.55 * (1.0 if i % style.lead_grid == 0 else 0.8))
        if style.chords in ("synth pad", "warm pad", "distorted guitar", "electric piano"):
            chords = layer("chords", 0.25)
            voicing = [_degree_to_midi(d, tonic_lead - 12, scale) for d in chord]
            if style.chords == "distorted guitar":  # power chord on eighths
                for i in range(8):
                    note = _note(style.chords, midi_to_hz(voicing[0] - 12), int(beat / 2 * 0.9 * sr), sr, rng)
                    chords.add(int((t_bar + i * beat / 2) * sr), note, 0.45)
            elif style.chords == "electric piano":  # comping on 2 and 4 (swung "and")
                for pos in (1.0, 2.66, 3.0):
                    for m in voicing:
                        note = _note(style.chords, midi_to_hz(m), int(beat * 0.8 * sr), sr, rng)
                        chords.add(int((t_bar + pos * beat) * sr), note, 0.18)
            elif b % style.bars_per_chord == 0:
                length = bar * style.bars_per_chord
                for m in voicing:
                    note = _note(style.chords, midi_to_hz(m), int(length * sr), sr, rng)
                    chords.add(int(t_bar * sr), note, 0.22)
        elif style.chords in ("piano arpeggio", "pulse arpeggio"):
            arp = layer("chords", 0.2)
            base = tonic_lead - (24 if style.chords == "piano arpeggio" else 12)
            tones = [_degree_to_midi(d, base, scale) for d in chord + [chord[0] + 7, chord[2]]]
            order = [0, 1, 2, 3, 4, 2, 1, 0] if style.chords == "piano arpeggio" else [0, 1, 2, 3]
            for i in range(16):
                m = tones[order[i % len(order)]]
                note = _note(style.chords, midi_to_hz(m), int(step16 * 1.8 * sr), sr, rng)
                arp.add(int((t_bar + i * step16) * sr), note, 0.3 if style.chords == "piano arpeggio" else 0.2)
        if style.bass:
            bass = layer("bass", 0.0)
            root_midi = _degree_to_midi(root, tonic_low, scale)
            if style.bass == "sub drone":
                if b % style.bars_per_chord == 0:
                    note = _note(style.bass, midi_to_hz(root_midi), int(bar * style.bars_per_chord * sr), sr, rng)
                    bass.add(int(t_bar * sr), note, 0.45)
            elif style.bass == "upright bass":  # walking quarters toward the next root
                nxt = progression[(b + 1) % len(progression)]
                walk = [root, root + 2, root + 4, nxt + 1 if nxt < root else nxt - 1]
                for i, d in enumerate(walk):
                    note = _note(style.bass, midi_to_hz(_degree_to_midi(d, tonic_low, scale)), int(beat * sr), sr, rng)
                    bass.add(int((t_bar + i * beat) * sr), note, 0.7)
            else:
                pattern = "..x...x...x...x." if style.bass == "synth bass" else "x.x.x.x.x.x.x.x."
                for i, ch in enumerate(pattern):
                    if ch == "x":
                        note = _note(style.bass, midi_to_hz(root_midi), int(step16 * 1.8 * sr), sr, rng)
                        bass.add(int((t_bar + i * step16) * sr), note, 0.6)
        if style.drums:
            drums = layer("drums", 0.1)
            for voice, pattern in DRUM_PATTERNS[style.drums].items():
                for i, ch in enumerate(pattern):
                    if ch == "x":
                        offset = step16 * 2 * style.swing if (style.swing and i % 4 == 2) else 0.0
                        drums.add(int((t_bar + i * step16 + offset) * sr), _drum(voice, sr, rng), _DRUM_GAIN[voice])

    out = np.zeros((channels, n_total), np.float32)
    for lay, pan in layers.values():
        if channels == 1:
            out[0] += lay.buf
        else:
            gains = (math.cos((pan + 1) * math.pi / 4), math.sin((pan + 1) * math.pi / 4))
            out[0] += gains[0] * math.sqrt(2) * lay.buf
            out[1] += gains[1] * math.sqrt(2) * lay.buf
            for c in range(2, channels):
                out[c] += lay.buf
    fade = min(n_total, int(0.05 * sr))
    if fade:
        out[:, n_total - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    rms = float(np.sqrt(np.mean(out**2))) if n_total else 0.0
    peak = float(np.max(np.abs(out))) if n_total else 0.0
    if rms > 0:
        out *= min(10 ** (-18 / 20) / rms, 0.95 / peak)
    return out
