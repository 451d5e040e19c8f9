"""Mel filterbanks/spectrograms against librosa; SI-SNR, L1, MSE and mel distance on known signals."""

from __future__ import annotations

import math

import librosa
import numpy as np
import pytest
import torch

from tunesmith.audio.mel import MelSpectrogram, mel_filterbank
from tunesmith.audio.metrics import l1, mel_distance, mse, reconstruction_metrics, si_snr


@pytest.mark.parametrize("htk", [True, False])
@pytest.mark.parametrize("norm", [None, "slaney"])
def test_filterbank_matches_librosa(htk: bool, norm: str | None) -> None:
    ours = mel_filterbank(22050, 1024, 40, f_min=30.0, f_max=9000.0, mel_scale="htk" if htk else "slaney", norm=norm)
    ref = librosa.filters.mel(sr=22050, n_fft=1024, n_mels=40, fmin=30.0, fmax=9000.0, htk=htk, norm=norm)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-4, atol=1e-7)


def test_mel_spectrogram_matches_librosa() -> None:
    rng = np.random.default_rng(0)
    sr, n_fft, hop = 16000, 512, 128
    wav = rng.standard_normal(sr).astype(np.float32) * 0.3
    mel = MelSpectrogram(sr, n_fft=n_fft, hop_length=hop, n_mels=32, power=2.0)
    ours = mel(torch.from_numpy(wav)).numpy()
    # the same padding done by hand: reflect (n_fft - hop) // 2, zeros to whole frames, no centring
    side = (n_fft - hop) // 2
    padded = np.pad(wav, (side, side), mode="reflect")
    frames = math.ceil(len(wav) / hop)
    padded = np.pad(padded, (0, max(0, (frames - 1) * hop + n_fft - len(padded))))
    ref = librosa.feature.melspectrogram(
        y=padded, sr=sr, n_fft=n_fft, hop_length=hop, center=False, n_mels=32, htk=True, norm=None, power=2.0
    )[:, :frames]
    assert ours.shape == (32, frames)
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-5)


def test_mel_spectrogram_frames_and_batch_shape() -> None:
    mel = MelSpectrogram(16000, n_fft=256, hop_length=64, n_mels=16, log=True)
    out = mel(torch.randn(3, 2, 1000))
    assert out.shape == (3, 2, 16, math.ceil(1000 / 64))


def _orthogonal_noise(ref: torch.Tensor, snr_db: float, seed: int = 0) -> torch.Tensor:
    """Zero-mean noise orthogonal to (zero-mean) ``ref`` with energy ``|ref|^2 / 10^(snr/10)``."""
    gen = torch.Generator().manual_seed(seed)
    r = ref.double() - ref.double().mean()
    noise = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    noise -= noise.mean()
    noise -= (noise * r).sum() / (r * r).sum() * r
    noise -= noise.mean()
    noise *= torch.sqrt((r * r).sum() / (noise * noise).sum() / 10 ** (snr_db / 10))
    return noise


def test_si_snr_known_values() -> None:
    t = torch.linspace(0, 1, 16000)
    ref = torch.sin(2 * math.pi * 440 * t) + 0.3 * torch.sin(2 * math.pi * 97 * t)
    batch = ref.reshape(1, 1, -1)
    assert float(si_snr(batch, batch)[0]) > 80.0
    assert float(si_snr(batch, 0.25 * batch)[0]) > 80.0  # scaled copy: same as identical
    for snr in (-5.0, 0.0, 10.0, 20.0):
        noisy = (ref.double() + _orthogonal_noise(ref, snr)).float().reshape(1, 1, -1)
        assert float(si_snr(batch, noisy)[0]) == pytest.approx(snr, abs=0.02)
        assert float(si_snr(batch, 3.0 * noisy)[0]) == pytest.approx(snr, abs=0.02)  # scale invariance


def test_si_snr_independent_numpy_reference() -> None:
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((4, 2, 800))
    est = ref * 0.7 + rng.standard_normal((4, 2, 800)) * 0.5 + 0.1
    expected = []
    for r, e in zip(ref.reshape(4, -1), est.reshape(4, -1), strict=True):
        r, e = r - r.mean(), e - e.mean()
        s = np.dot(e, r) / np.dot(r, r) * r
        expected.append(10 * np.log10(np.sum(s**2) / np.sum((e - s) ** 2)))
    ours = si_snr(torch.from_numpy(ref).float(), torch.from_numpy(est).float()).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-4)


def test_l1_mse_mel_distance() -> None:
    ref = torch.zeros(2, 1, 4000)
    est = torch.full((2, 1, 4000), 0.5)
    est[1] = 0.0
    np.testing.assert_allclose(l1(ref, est).numpy(), [0.5, 0.0])
    np.testing.assert_allclose(mse(ref, est).numpy(), [0.25, 0.0])
    noise = torch.randn(2, 1, 4000) * 0.1
    dist = mel_distance(noise, noise.clone(), 16000)
    assert torch.all(dist == 0)
    louder = mel_distance(noise, noise * 10, 16000)  # 20 dB more power: 2 log10 units where above the floor
    assert torch.all((louder > 1.5) & (louder <= 2.0 + 1e-4))
    metrics = reconstruction_metrics(noise, noise * 0.5, 16000)
    assert set(metrics) == {"sisnr", "mel", "l1", "mse"} and all(v.shape == (2,) for v in metrics.values())
    with pytest.raises(ValueError, match="same shape"):
        si_snr(ref, est[..., :100])


def test_codebook_usage_of_known_counts():
    import numpy as np

    from tunesmith.eval.codec import CheckReport, codebook_usage

    counts = np.array([[5, 5, 5, 5], [20, 0, 0, 0], [0, 0, 0, 0], [9, 1, 0, 0]])
    uniform, single, empty, skewed = codebook_usage(counts)
    assert (uniform.used, uniform.bins) == (4, 4) and abs(uniform.perplexity - 4.0) < 1e-9
    assert single.used == 1 and abs(single.perplexity - 1.0) < 1e-9
    assert empty.used == 0 and empty.perplexity == 0.0
    entropy = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1))
    assert skewed.used == 2 and abs(skewed.perplexity - np.exp(entropy)) < 1e-9
    wide = np.zeros((2, 256), dtype=np.int64)
    wide[0, :200] = 3  # perplexity 200 of 256 bins: healthy
    wide[1, :10] = 60  # perplexity 10 < 10 % of 256: collapsed
    report = CheckReport(16000, 0.8, 2, codebooks=codebook_usage(wide))
    assert report.collapsed() == [1]
