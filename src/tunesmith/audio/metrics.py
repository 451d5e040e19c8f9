"""Reconstruction metrics between a reference and an estimate, one value per batch item.

Every function takes ``ref`` and ``est`` of the same shape ``[B, C, T]`` (or ``[B, T]``) and returns a
float tensor ``[B]``.

SI-SNR convention: **positive decibels, higher is better** (a perfect copy scores about
+80 dB or more, white noise about -inf). AudioCraft logs the *negated* value as a loss
(``sisnr`` in its metrics is ``-SI-SNR``); tunesmith reports the metric itself.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from tunesmith.audio.mel import MelSpectrogram


def _flat(ref: Tensor, est: Tensor) -> tuple[Tensor, Tensor]:
    if ref.shape != est.shape:
        raise ValueError(f"reference {tuple(ref.shape)} and estimate {tuple(est.shape)} must have the same shape")
    if ref.dim() < 2:
        raise ValueError(f"expected [B, C, T] or [B, T] audio, got shape {tuple(ref.shape)}")
    return ref.reshape(ref.shape[0], -1).double(), est.reshape(est.shape[0], -1).double()


def si_snr(ref: Tensor, est: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale-invariant signal-to-noise ratio in dB, ``[B]`` (channels and samples of an item pooled).

    Both signals are made zero-mean; the estimate is split into its projection on the reference
    (target) and the rest (noise): ``10 log10(|target|^2 / |noise|^2)``. Invariant to scaling the estimate.
    """
    r, e = _flat(ref, est)
    r = r - r.mean(dim=1, keepdim=True)
    e = e - e.mean(dim=1, keepdim=True)
    scale = (e * r).sum(1, keepdim=True) / (r.pow(2).sum(1, keepdim=True) + eps)
    target = scale * r
    noise = e - target
    ratio = (target.pow(2).sum(1) + eps) / (noise.pow(2).sum(1) + eps)
    return (10 * torch.log10(ratio)).float()


def l1(ref: Tensor, est: Tensor) -> Tensor:
    """Mean absolute sample difference, ``[B]``."""
    r, e = _flat(ref, est)
    return (r - e).abs().mean(1).float()


def mse(ref: Tensor, est: Tensor) -> Tensor:
    """Mean squared sample difference, ``[B]``."""
    r, e = _flat(ref, est)
    return (r - e).pow(2).mean(1).float()


@lru_cache(maxsize=8)
def _mel(sample_rate: int, n_fft: int, hop_length: int, n_mels: int, f_min: float) -> MelSpectrogram:
    return MelSpectrogram(
        sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, f_min=f_min, log=True, floor_level=1e-5
    )


def mel_distance(
    ref: Tensor,
    est: Tensor,
    sample_rate: int,
    n_fft: int = 1024,
    hop_length: int = 256,
    n_mels: int = 64,
    f_min: float = 64.0,
) -> Tensor:
    """Mean absolute difference of log10 mel power spectrograms (floor 1e-5), ``[B]``.

    Defaults follow AudioCraft's ``mel`` metric (1024-point STFT, hop 256, 64 HTK mels from 64 Hz).
    """
    if ref.shape != est.shape:
        raise ValueError(f"reference {tuple(ref.shape)} and estimate {tuple(est.shape)} must have the same shape")
    mel = _mel(int(sample_rate), n_fft, hop_length, n_mels, float(f_min)).to(ref.device)
    with torch.no_grad():
        diff = (mel(ref.float()) - mel(est.float())).abs()
    return diff.reshape(diff.shape[0], -1).mean(1)


def reconstruction_metrics(ref: Tensor, est: Tensor, sample_rate: int) -> dict[str, Tensor]:
    """All four metrics at once: ``{"sisnr", "mel", "l1", "mse"}``, each ``[B]``."""
    return {
        "sisnr": si_snr(ref, est),
        "mel": mel_distance(ref, est, sample_rate),
        "l1": l1(ref, est),
        "mse": mse(ref, est),
    }
