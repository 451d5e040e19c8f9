"""Chroma features as MusicGen-melody computes them, in plain torch (no torchaudio, no librosa at run time).

    waveform float [..., T] at ``settings.sample_rate`` Hz
      ──STFT power──▶ [..., n_fft // 2 + 1, frames]   periodic Hann window of n_fft, hop ``hop_length``,
                                                      centred (reflect padding), scaled by 1/sqrt(Σ window²)
      ──chroma filterbank──▶ [..., n_chroma, frames]  librosa.filters.chroma(tuning=0, ctroct=5, octwidth=2,
                                                      norm=2, base_c=True), written here from its definition
      ──÷ max over bins (eps 1e-6)──▶ normalised chroma   (:func:`chroma_energy`)
      ──argmax one-hot──▶ [..., frames, n_chroma]     (:func:`chroma_features`: MusicGen-melody's condition)

This is transformers' ``MusicgenMelodyFeatureExtractor`` (which needs torchaudio) step for step; a signal
shorter than ``n_fft`` is zero-padded on both sides to ``n_fft`` first, as there. Frames: ``1 + T // hop``
(a chroma frame every ``hop_length / sample_rate`` seconds: 7.8 per second with MusicGen's settings). What
MusicGen does and this does not: AudioCraft first separates the drums and bass out with Demucs and keeps the
rest ("dominant stem"); no source separation is available here, so the chroma is of the whole mix, which is
also what transformers does with a plain waveform.

:func:`chroma_cosine` compares two chroma sequences (the melody-following metric).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


@dataclasses.dataclass(frozen=True)
class ChromaSettings:
    """The analysis: ``sample_rate`` Hz, STFT ``n_fft`` and ``hop_length`` in samples, ``n_chroma`` bins."""

    sample_rate: int = 32000
    n_fft: int = 16384
    hop_length: int = 4096
    n_chroma: int = 12

    @property
    def frame_rate(self) -> float:
        """Chroma frames per second."""
        return self.sample_rate / self.hop_length

    @classmethod
    def scaled_to(cls, sample_rate: int) -> ChromaSettings:
        """MusicGen's analysis (0.512 s window, 0.128 s hop) at another sample rate (power-of-two sizes)."""
        n_fft = 2 ** round(math.log2(16384 * sample_rate / 32000))
        return cls(sample_rate=sample_rate, n_fft=n_fft, hop_length=n_fft // 4)


def chroma_filterbank(
    sample_rate: int,
    n_fft: int,
    n_chroma: int = 12,
    tuning: float = 0.0,
    center_octave: float = 5.0,
    octave_width: float | None = 2.0,
    base_c: bool = True,
) -> Tensor:
    """Float64 [n_chroma, n_fft // 2 + 1]: weight of each STFT bin in each pitch class.

    Each bin's frequency is placed on a continuous pitch-class axis (``n_chroma`` per octave, A440 at
    ``tuning`` fractions of a bin); a Gaussian bump of one bin's width (at least one pitch class) maps it to
    the classes, each bin's weights have unit L2 norm, and a Gaussian over octaves centred at
    ``center_octave`` (width ``octave_width``) favours the middle of the keyboard. Row 0 is C when ``base_c``.
    Bin 0 (0 Hz) is placed 1.5 octaves below bin 1.
    """
    freqs = torch.arange(1, n_fft, dtype=torch.float64) * (sample_rate / n_fft)
    a440 = 440.0 * 2.0 ** (tuning / n_chroma)
    bins = n_chroma * torch.log2(freqs / (a440 / 16.0))  # pitch position in chroma bins (octave 0 = A0/2)
    bins = torch.cat([bins[:1] - 1.5 * n_chroma, bins])
    widths = torch.cat([torch.clamp(bins[1:] - bins[:-1], min=1.0), torch.ones(1, dtype=torch.float64)])
    half = float(round(n_chroma / 2))
    dist = bins[None, :] - torch.arange(n_chroma, dtype=torch.float64)[:, None]
    dist = torch.remainder(dist + half + 10 * n_chroma, n_chroma) - half  # to [-n/2, n/2)
    weights = torch.exp(-0.5 * (2 * dist / widths[None, :]) ** 2)
    norms = weights.pow(2).sum(dim=0, keepdim=True).sqrt()
    weights = weights / torch.where(norms < torch.finfo(torch.float64).tiny, torch.ones_like(norms), norms)
    if octave_width:
        weights = weights * torch.exp(-0.5 * ((bins / n_chroma - center_octave) / octave_width) ** 2)[None, :]
    if base_c:
        weights = torch.roll(weights, -3 * (n_chroma // 12), dims=0)
    return weights[:, : 1 + n_fft // 2].contiguous()


def power_spectrogram(wav: Tensor, n_fft: int, hop_length: int) -> Tensor:
    """Waveform float [..., T] → power [..., n_fft // 2 + 1, 1 + T // hop] (centred, window-normalised)."""
    shape = wav.shape[:-1]
    flat = wav.reshape(-1, wav.shape[-1])
    window = torch.hann_window(n_fft, dtype=flat.dtype, device=flat.device)
    spec = torch.stft(flat, n_fft, hop_length, n_fft, window, center=True, pad_mode="reflect", return_complex=True)
    spec = spec / window.pow(2).sum().sqrt()
    power = spec.real.pow(2) + spec.imag.pow(2)
    return power.reshape(*shape, *power.shape[-2:])


def chroma_energy(wav: Tensor, settings: ChromaSettings = ChromaSettings()) -> Tensor:
    """Waveform float [..., T] → chroma float [..., frames, n_chroma], each frame divided by its maximum."""
    wav = torch.as_tensor(wav, dtype=torch.float32)
    if wav.shape[-1] < settings.n_fft:
        pad = settings.n_fft - wav.shape[-1]
        wav = torch.nn.functional.pad(wav, (pad // 2, pad - pad // 2))
    power = power_spectrogram(wav, settings.n_fft, settings.hop_length)
    bank = chroma_filterbank(settings.sample_rate, settings.n_fft, settings.n_chroma).to(power)
    chroma = torch.einsum("cf,...ft->...tc", bank, power)
    return chroma / chroma.abs().amax(dim=-1, keepdim=True).clamp(min=1e-6)


def chroma_features(wav: Tensor, settings: ChromaSettings = ChromaSettings()) -> Tensor:
    """Waveform float [..., T] at ``settings.sample_rate`` → MusicGen-melody's one-hot chroma [..., frames, n_chroma]
    (the dominant pitch class of each frame; ties and silence go to the lowest bin, C)."""
    energy = chroma_energy(wav, settings)
    return torch.nn.functional.one_hot(energy.argmax(dim=-1), settings.n_chroma).to(energy.dtype)


def waveform_chroma(
    wav: np.ndarray, sample_rate: int, settings: ChromaSettings = ChromaSettings(), max_seconds: float = 30.0
) -> Tensor:
    """Audio float32 ``[C, T]`` at ``sample_rate`` Hz → one-hot chroma [frames, n_chroma]: mixed to mono, resampled
    to ``settings.sample_rate`` and cut to ``max_seconds`` (MusicGen-melody reads at most 30 s)."""
    from tunesmith.audio.io import convert_channels, resample

    mono = resample(convert_channels(np.ascontiguousarray(wav), 1), int(sample_rate), settings.sample_rate)
    return chroma_features(
        torch.from_numpy(np.ascontiguousarray(mono[0, : int(max_seconds * settings.sample_rate)])), settings
    )


def melody_chroma(path: str | Path, settings: ChromaSettings = ChromaSettings(), max_seconds: float = 30.0) -> Tensor:
    """A melody audio file → one-hot chroma [frames, n_chroma]: decoded, mixed to mono, resampled to
    ``settings.sample_rate`` and cut to ``max_seconds`` (MusicGen-melody reads at most 30 s)."""
    from tunesmith.audio.io import load_audio

    wav, _ = load_audio(path, sample_rate=settings.sample_rate, channels=1)
    wav = torch.from_numpy(wav[0, : int(max_seconds * settings.sample_rate)].copy())
    return chroma_features(wav, settings)


def chroma_cosine(a: Tensor, b: Tensor) -> float:
    """Mean cosine similarity of two chroma sequences [frames, n_chroma] over their common frames (0 for a
    silent frame); 1 = the same pitch class in every frame."""
    a, b = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
    frames = min(a.shape[0], b.shape[0])
    if frames == 0:
        raise ValueError("chroma_cosine needs at least one frame in each sequence")
    sims = torch.nn.functional.cosine_similarity(a[:frames], b[:frames], dim=-1, eps=1e-8)
    return float(sims.mean())
