"""tunesmith.audio.chroma against independent references: librosa's chroma filterbank, and transformers'
MusicgenMelodyFeatureExtractor outputs stored in tests/fixtures/melody_chroma/reference.npz (made by the
script next to it; torchaudio is never imported here).

Tolerances: filterbank ≤ 1e-10 absolute vs librosa (both float64); normalised chroma ≤ 1e-5 absolute vs
transformers (measured: 6e-7; float32 STFTs differ in rounding); the one-hot chroma identical in every frame
whose top two bins differ by more than 1e-3 (no such near-ties occur in the fixture: all frames are compared).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from support.melody import NOTE_CLASSES, melody_signal
from tunesmith.audio.chroma import (
    ChromaSettings,
    chroma_cosine,
    chroma_energy,
    chroma_features,
    chroma_filterbank,
    melody_chroma,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "melody_chroma" / "reference.npz"
CASES = {"melody32k": (32000, 3.0), "melody16k": (16000, 3.0), "short": (32000, 0.2)}


@pytest.mark.parametrize(("sample_rate", "n_fft"), [(32000, 16384), (8000, 4096), (22050, 2048)])
def test_filterbank_equals_librosa(sample_rate, n_fft):
    librosa = pytest.importorskip("librosa")
    ours = chroma_filterbank(sample_rate, n_fft).numpy()
    theirs = librosa.filters.chroma(sr=sample_rate, n_fft=n_fft, tuning=0.0, dtype=np.float64)
    assert ours.shape == theirs.shape == (12, n_fft // 2 + 1)
    assert np.abs(ours - theirs).max() < 1e-10


@pytest.mark.parametrize("case", sorted(CASES))
def test_chroma_equals_transformers_feature_extractor(case):
    ref = np.load(FIXTURE)
    sample_rate, seconds = CASES[case]
    wav = melody_signal(sample_rate, seconds)
    checksum = [wav.astype(np.float64).sum(), np.abs(wav).astype(np.float64).sum()]
    assert np.allclose(checksum, ref[f"{case}/wav_checksum"], atol=1e-3), "the test signal changed"
    rate, n_fft, hop = (int(v) for v in ref[f"{case}/settings"])
    settings = ChromaSettings(sample_rate=rate, n_fft=n_fft, hop_length=hop)
    energy = chroma_energy(torch.from_numpy(wav), settings).numpy()
    assert energy.shape == ref[f"{case}/energy"].shape
    assert np.abs(energy - ref[f"{case}/energy"]).max() < 1e-5
    top2 = np.sort(ref[f"{case}/energy"], axis=-1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0] > 1e-3).all()  # no near-ties: every frame's argmax is well defined
    one_hot = chroma_features(torch.from_numpy(wav), settings).numpy()
    assert np.array_equal(one_hot, ref[f"{case}/one_hot"])


def test_chroma_follows_the_notes():
    """Independent of any reference: each tone's frames name its pitch class."""
    settings = ChromaSettings.scaled_to(16000)
    wav = melody_signal(16000, 4.0)
    classes = chroma_features(torch.from_numpy(wav), settings).argmax(dim=-1).numpy()
    per_note = len(classes) / len(NOTE_CLASSES)
    middles = [classes[int((i + 0.5) * per_note)] for i in range(len(NOTE_CLASSES))]
    assert middles == NOTE_CLASSES


def test_melody_file_and_cosine(tmp_path):
    from tunesmith.audio.io import save_audio

    settings = ChromaSettings.scaled_to(16000)
    wav = melody_signal(16000, 2.0)
    save_audio(tmp_path / "m.wav", np.stack([wav, wav]), 16000)
    from_file = melody_chroma(tmp_path / "m.wav", settings)
    direct = chroma_features(torch.from_numpy(wav), settings)
    assert from_file.shape == direct.shape and chroma_cosine(from_file, direct) > 0.95
    shuffled = direct[torch.randperm(len(direct), generator=torch.Generator().manual_seed(0))]
    assert chroma_cosine(direct, direct) == pytest.approx(1.0)
    assert chroma_cosine(direct, shuffled) < 0.6
