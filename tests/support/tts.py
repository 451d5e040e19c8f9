"""Helpers for the tts task tests (no tests here): a tiny transformers HiggsAudio v2 folder with its audio
tokenizer inside, and a tiny prepared multi-speaker speech dataset with known transcripts.

The speech is synthetic (a per-speaker pitch and a per-clip syllable rhythm, 24 kHz): what matters to the
training tests is that every clip has a transcript and a speaker, and that the clips encode to codes.
Speakers are recorded in each clip's JSON sidecar (``{"transcript": ..., "speaker": ...}``, kept by
``prepare`` under the segment's ``extra``; the DATA engineer's speaker field also works, see
``tunesmith.data.datasets.speech_prompts.speaker_of``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from support.higgs import TOKENIZER_DIR, processor_config, save_tiny_lm

SAMPLE_RATE = 24000
TRANSCRIPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "Audio is recorded from a quiet room.",
    "It was the night before my birthday.",
    "Café déjà vu in the rain.",
    "Generate audio following instruction.",
]


def make_higgs_dir(out: Path, use_text_head: bool = False, seed: int = 0) -> Path:
    """A tiny transformers HiggsAudio v2 folder: model + text tokenizer + processor_config.json + the fixture
    audio tokenizer copied in as ``audio_tokenizer/``."""
    out = Path(out)
    save_tiny_lm(out, use_text_head=use_text_head, seed=seed)
    shutil.copytree(TOKENIZER_DIR, out / "audio_tokenizer")
    (out / "processor_config.json").write_text(json.dumps(processor_config(), indent=2) + "\n")
    return out


def _clip(seconds: float, pitch: float, seed: int) -> np.ndarray:
    """A voiced-sounding clip: harmonics of ``pitch`` under a syllable envelope, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    voice = sum(np.sin(2 * np.pi * pitch * h * t) / h for h in (1, 2, 3))
    rate = rng.uniform(3.0, 6.0)
    envelope = 0.5 * (1 - np.cos(2 * np.pi * rate * t)) ** 2
    return (0.25 * voice * envelope + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


def make_speech_source(
    root: Path, speakers: int = 2, clips: int = 4, seconds: tuple[float, float] = (0.4, 0.9)
) -> Path:
    """``root/<speaker>/<clip>.wav`` + ``<clip>.json`` sidecars with transcript and speaker."""
    import soundfile as sf

    root = Path(root)
    rng = np.random.default_rng(0)
    for s in range(speakers):
        folder = root / f"spk{s}"
        folder.mkdir(parents=True, exist_ok=True)
        for c in range(clips):
            length = float(rng.uniform(*seconds))
            sf.write(folder / f"clip{c}.wav", _clip(length, 110.0 + 70.0 * s, 10 * s + c), SAMPLE_RATE)
            sidecar = {"transcript": TRANSCRIPTS[(s + c) % len(TRANSCRIPTS)], "speaker": f"spk{s}"}
            (folder / f"clip{c}.json").write_text(json.dumps(sidecar, ensure_ascii=False))
    return root


def make_speech_data(root: Path, speakers: int = 2, clips: int = 4, valid_fraction: float = 0.25) -> Path:
    """A prepared 24 kHz speech dataset (``tunesmith prepare`` of :func:`make_speech_source`) in ``root/data``."""
    from tunesmith.data.prepare import prepare_dataset

    source = make_speech_source(Path(root) / "source", speakers, clips)
    out = Path(root) / "data"
    prepare_dataset(
        [source], out, source="folder", sample_rate=SAMPLE_RATE, segment=5.0, min_segment=0.1,
        valid_fraction=valid_fraction, progress=False,
    )  # fmt: skip
    return out
