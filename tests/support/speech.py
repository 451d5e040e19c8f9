"""Real speech with known transcripts, synthesised by the ``espeak-ng`` binary (Debian package ``espeak-ng``).

:func:`make_speech_folder` writes a small multi-speaker speech dataset in one of the two layouts
``tunesmith prepare`` reads:

``layout="folder"``    ``ROOT/<speaker>/<clip>.wav`` + ``ROOT/<speaker>/<clip>.txt`` (the transcript)
                       — prepared with ``--source folder --speech``;
``layout="ljspeech"``  ``ROOT/metadata.csv`` (``id|text|normalized_text|speaker``, the speaker column only
                       when ``speaker_column``) + ``ROOT/wavs/<id>.wav`` — ``--source ljspeech``.

A speaker is an espeak-ng voice at a pitch and speed (:class:`Speaker`), so speakers really sound different.
espeak-ng writes 22050 Hz 16-bit mono; another ``sample_rate`` is made with :func:`scipy.signal.resample_poly`
(independent of tunesmith's resampler). The output is deterministic (same bytes for the same arguments).
Transcripts are written exactly as given (an NFD string stays NFD in the file); espeak-ng reads their NFC form.

Tests that need the binary use the :data:`requires_espeak` marker, which skips with the reason.
:func:`prepare_speech_dataset` also runs ``tunesmith prepare`` on it (24 kHz, transcripts and speakers in the sidecars).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ESPEAK = shutil.which("espeak-ng")
ESPEAK_RATE = 22050  # espeak-ng's output sample rate (Hz)
ESPEAK_REASON = "needs the espeak-ng binary on PATH (Debian/Ubuntu: apt-get install espeak-ng)"
requires_espeak = pytest.mark.skipif(ESPEAK is None, reason=ESPEAK_REASON)


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: espeak-ng ``voice`` (``-v``), ``pitch`` 0-99 (``-p``), ``speed`` in words/min (``-s``)."""

    name: str
    voice: str = "en-us"
    pitch: int = 50
    speed: int = 175


DEFAULT_SPEAKERS: tuple[Speaker, ...] = (
    Speaker("anna", "en-us", pitch=80, speed=180),
    Speaker("bert", "en-gb", pitch=20, speed=160),
)
DEFAULT_SENTENCES: tuple[str, ...] = (
    "The cat sat on the mat.",
    "A quick brown fox.",
    "Hello world, once again.",
)


@dataclass(frozen=True)
class SpeechClip:
    """One written clip: ``audio`` (wav at ``sample_rate`` Hz, ``samples`` long) and its ``text`` as written."""

    clip_id: str
    speaker: str
    text: str
    audio: Path
    sample_rate: int
    samples: int

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate


@dataclass
class SpeechFolder:
    """What :func:`make_speech_folder` wrote: the dataset ``root``, its ``layout`` and every clip."""

    root: Path
    layout: str
    sample_rate: int
    clips: list[SpeechClip] = field(default_factory=list)

    def clip(self, clip_id: str) -> SpeechClip:
        return next(c for c in self.clips if c.clip_id == clip_id)


def _as_speaker(spec: Speaker | str) -> Speaker:
    if isinstance(spec, Speaker):
        return spec
    return Speaker(re.sub(r"[^A-Za-z0-9_-]+", "_", spec), voice=spec)


def synthesize(text: str, speaker: Speaker | str = DEFAULT_SPEAKERS[0], sample_rate: int = ESPEAK_RATE) -> np.ndarray:
    """Speak ``text`` (its NFC form) with espeak-ng → float32 mono ``[samples]`` at ``sample_rate`` Hz in [-1, 1]."""
    if ESPEAK is None:
        pytest.skip(ESPEAK_REASON)
    spk = _as_speaker(speaker)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        command = [ESPEAK, "-v", spk.voice, "-p", str(spk.pitch), "-s", str(spk.speed), "--stdin", "-w", str(out)]
        spoken = unicodedata.normalize("NFC", text).encode("utf-8")
        subprocess.run(command, input=spoken, check=True, capture_output=True)
        wav, rate = sf.read(str(out), dtype="float32", always_2d=True)
    wav = wav.mean(axis=1)
    if rate != sample_rate:
        from scipy.signal import resample_poly

        g = gcd(int(rate), int(sample_rate))
        wav = resample_poly(wav, sample_rate // g, rate // g).astype(np.float32)
    return np.clip(wav, -1.0, 1.0)


def make_speech_folder(
    root: str | Path,
    speakers: Sequence[Speaker | str] = DEFAULT_SPEAKERS,
    sentences: Sequence[str] = DEFAULT_SENTENCES,
    layout: str = "folder",
    sample_rate: int = ESPEAK_RATE,
    *,
    speaker_column: bool = True,
) -> SpeechFolder:
    """Every speaker says every sentence: clip ``<speaker>_<NNN>`` (NNN = the sentence's index).

    ``speakers``: :class:`Speaker` objects or espeak-ng voice names (``"en-gb"``: a speaker of that name).
    ``layout``: ``"folder"`` (``ROOT/<speaker>/<clip>.wav`` + ``.txt``) or ``"ljspeech"`` (``metadata.csv`` +
    ``wavs/``; ``speaker_column`` adds the fourth, speaker, column). Wavs are 16-bit PCM at ``sample_rate`` Hz.
    Skips the calling test when espeak-ng is not installed.
    """
    if layout not in ("folder", "ljspeech"):
        raise ValueError(f"layout must be 'folder' or 'ljspeech', got {layout!r}")
    root = Path(root)
    result = SpeechFolder(root, layout, int(sample_rate))
    rows: list[str] = []
    for spec in speakers:
        spk = _as_speaker(spec)
        for index, text in enumerate(sentences):
            clip_id = f"{spk.name}_{index:03d}"
            wav = synthesize(text, spk, sample_rate)
            if layout == "folder":
                audio = root / spk.name / f"{clip_id}.wav"
                audio.parent.mkdir(parents=True, exist_ok=True)
                audio.with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
            else:
                audio = root / "wavs" / f"{clip_id}.wav"
                audio.parent.mkdir(parents=True, exist_ok=True)
                rows.append("|".join([clip_id, text, text] + ([spk.name] if speaker_column else [])))
            sf.write(str(audio), wav, int(sample_rate), subtype="PCM_16")
            result.clips.append(SpeechClip(clip_id, spk.name, text, audio, int(sample_rate), int(wav.shape[0])))
    if layout == "ljspeech":
        root.mkdir(parents=True, exist_ok=True)
        (root / "metadata.csv").write_text("".join(row + "\n" for row in rows), encoding="utf-8")
    return result


def prepare_speech_dataset(
    root: str | Path,
    speakers: Sequence[Speaker | str] = DEFAULT_SPEAKERS,
    sentences: Sequence[str] = DEFAULT_SENTENCES,
    layout: str = "folder",
    *,
    sample_rate: int = 24000,
    valid_fraction: float = 0.0,
    max_seconds: float = 30.0,
) -> tuple[SpeechFolder, Path]:
    """:func:`make_speech_folder` under ``ROOT/src`` (22050 Hz), prepared by ``tunesmith prepare`` into ``ROOT/data``
    at ``sample_rate`` (``--speech`` for the folder layout) → (what was written, the dataset folder). Each segment's
    sidecar has ``transcript`` and ``speaker``."""
    from tunesmith.data.prepare import prepare_dataset

    root = Path(root)
    src = make_speech_folder(root / "src", speakers, sentences, layout)
    data = root / "data"
    prepare_dataset(
        [src.root],
        data,
        source=layout,
        speech=layout == "folder",
        sample_rate=sample_rate,
        valid_fraction=valid_fraction,
        max_seconds=max_seconds,
        progress=False,
    )
    return src, data
