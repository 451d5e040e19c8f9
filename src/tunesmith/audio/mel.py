"""Mel filterbanks and (log-)mel spectrograms in plain torch (no torchaudio).

Conventions:
- ``mel_scale="htk"``: ``mel = 2595 log10(1 + f / 700)`` (torchaudio's default);
  ``mel_scale="slaney"``: linear below 1 kHz, logarithmic above (librosa's default).
- ``norm=None`` keeps triangle peaks at 1; ``norm="slaney"`` scales each triangle to unit area
  (``2 / (f_hi - f_lo)``), as librosa does by default.
- :class:`MelSpectrogram` pads so that a signal of ``T`` samples yields exactly
  ``ceil(T / hop_length)`` frames: ``(n_fft - hop) // 2`` reflected samples each side, then
  zeros on the right up to a whole number of hops (``center=False`` STFT afterwards).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MelScale = Literal["htk", "slaney"]

_SLANEY_F_SP = 200.0 / 3  # Hz per mel below the break
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP
_SLANEY_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(freq: Tensor, mel_scale: MelScale = "htk") -> Tensor:
    """Frequencies in Hz → mels (same shape)."""
    if mel_scale == "htk":
        return 2595.0 * torch.log10(1.0 + freq / 700.0)
    if mel_scale != "slaney":
        raise ValueError(f"mel_scale={mel_scale!r}: expected 'htk' or 'slaney'")
    linear = freq / _SLANEY_F_SP
    log_part = _SLANEY_MIN_LOG_MEL + torch.log(torch.clamp(freq, min=_SLANEY_MIN_LOG_HZ) / _SLANEY_MIN_LOG_HZ) / (
        _SLANEY_LOGSTEP
    )
    return torch.where(freq >= _SLANEY_MIN_LOG_HZ, log_part, linear)


def mel_to_hz(mel: Tensor, mel_scale: MelScale = "htk") -> Tensor:
    """Mels → frequencies in Hz (inverse of :func:`hz_to_mel`)."""
    if mel_scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    if mel_scale != "slaney":
        raise ValueError(f"mel_scale={mel_scale!r}: expected 'htk' or 'slaney'")
    linear = mel * _SLANEY_F_SP
    log_part = _SLANEY_MIN_LOG_HZ * torch.exp(_SLANEY_LOGSTEP * (mel - _SLANEY_MIN_LOG_MEL))
    return torch.where(mel >= _SLANEY_MIN_LOG_MEL, log_part, linear)


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    mel_scale: MelScale = "htk",
    norm: Literal["slaney"] | None = None,
) -> Tensor:
    """Triangular mel filters, float64 ``[n_mels, n_fft // 2 + 1]`` (multiply a power or magnitude spectrum)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"mel band [{f_min}, {f_max}] Hz must lie within [0, {sample_rate / 2}] Hz")
    fft_freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mel_edges = torch.linspace(
        float(hz_to_mel(torch.tensor(f_min, dtype=torch.float64), mel_scale)),
        float(hz_to_mel(torch.tensor(f_max, dtype=torch.float64), mel_scale)),
        n_mels + 2,
        dtype=torch.float64,
    )
    hz_edges = mel_to_hz(mel_edges, mel_scale)
    widths = hz_edges[1:] - hz_edges[:-1]  # [n_mels + 1]
    slopes = hz_edges[:, None] - fft_freqs[None, :]  # [n_mels + 2, n_freqs]
    rising = -slopes[:-2] / widths[:-1, None]
    falling = slopes[2:] / widths[1:, None]
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
    if norm == "slaney":
        filters = filters * (2.0 / (hz_edges[2:] - hz_edges[:-2]))[:, None]
    elif norm is not None:
        raise ValueError(f"norm={norm!r}: expected None or 'slaney'")
    return filters


class MelSpectrogram(nn.Module):
    """Waveform ``[..., T]`` → mel spectrogram ``[..., n_mels, ceil(T / hop_length)]``.

    ``power=2`` gives a power spectrum (torchaudio's default), ``power=1`` magnitudes. With ``log=True``
    the output is ``log10(floor_level + mel)``. ``normalized=True`` divides the STFT by the window's L2 norm.
    """

    def __init__(
        self,
        sample_rate: int,
        n_fft: int = 1024,
        hop_length: int | None = None,
        win_length: int | None = None,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float | None = None,
        power: float = 2.0,
        normalized: bool = False,
        log: bool = False,
        floor_level: float = 1e-5,
        mel_scale: MelScale = "htk",
        norm: Literal["slaney"] | None = None,
    ) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length or n_fft // 4
        self.win_length = win_length or n_fft
        self.power = power
        self.normalized = normalized
        self.log = log
        self.floor_level = floor_level
        fb = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max, mel_scale, norm)
        self.register_buffer("filters", fb.float(), persistent=False)  # [n_mels, n_freqs]
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)

    def forward(self, wav: Tensor) -> Tensor:
        shape = wav.shape
        x = wav.reshape(-1, shape[-1]).float()
        side = (self.n_fft - self.hop_length) // 2
        if x.shape[-1] <= side:
            raise ValueError(f"signal of {x.shape[-1]} samples is too short for n_fft={self.n_fft}")
        x = F.pad(x.unsqueeze(1), (side, side), mode="reflect").squeeze(1)
        frames = math.ceil(shape[-1] / self.hop_length)
        needed = (frames - 1) * self.hop_length + self.n_fft
        if needed > x.shape[-1]:
            x = F.pad(x, (0, needed - x.shape[-1]))
        spec = torch.stft(
            x,
            self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=False,
            return_complex=True,
        )[..., :frames]
        mag = torch.view_as_real(spec).pow(2).sum(-1)  # |X|^2, [N, n_freqs, frames]
        if self.normalized:
            mag = mag / self.window.pow(2).sum()
        if self.power != 2.0:
            mag = mag.clamp_min(1e-20).pow(self.power / 2.0)
        mel = torch.matmul(self.filters, mag)
        if self.log:
            mel = torch.log10(self.floor_level + mel)
        return mel.reshape(*shape[:-1], mel.shape[-2], mel.shape[-1])
