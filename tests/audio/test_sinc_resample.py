"""tunesmith's windowed-sinc resampler against torchaudio's outputs stored in the HiggsAudio fixture."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tunesmith.audio.sinc_resample import sinc_resample

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "higgs_tokenizer" / "reference.npz"


@pytest.fixture(scope="module")
def ref():
    return np.load(REFERENCE)


def test_matches_torchaudio_24k_to_16k_inside_the_tokenizer(ref):
    out = sinc_resample(torch.from_numpy(ref["wav"]), 24000, 16000)
    assert out.shape == ref["wav16"].shape
    np.testing.assert_allclose(out.numpy(), ref["wav16"], rtol=0, atol=1e-6)


@pytest.mark.parametrize(("orig", "new"), [(44100, 32000), (16000, 24000)])
def test_matches_torchaudio_other_ratios(ref, orig, new):
    out = sinc_resample(torch.from_numpy(ref["rs_in"]), orig, new)
    expected = ref[f"rs_{orig}_{new}"]
    assert out.shape == expected.shape == (2, math.ceil(441 * new / orig))
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-6)


def test_band_limited_sine_survives_and_same_rate_is_identity():
    t = torch.arange(24000, dtype=torch.float64) / 24000
    wav = torch.sin(2 * torch.pi * 440 * t)[None]
    out = sinc_resample(wav, 24000, 16000)
    expected = torch.sin(2 * torch.pi * 440 * torch.arange(16000, dtype=torch.float64) / 16000)[None]
    # away from the zero-padded edges the 440 Hz tone is reproduced
    assert (out[:, 200:-200] - expected[:, 200:-200]).abs().max() < 1e-3
    assert sinc_resample(wav, 16000, 16000) is wav


def test_rejects_integer_waveforms_and_bad_rates():
    with pytest.raises(TypeError):
        sinc_resample(torch.zeros(10, dtype=torch.int16), 24000, 16000)
    with pytest.raises(ValueError):
        sinc_resample(torch.zeros(10), 24000, 0)
