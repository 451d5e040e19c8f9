"""``torchaudio.functional`` subset: STFT spectrogram and HTK mel filterbank (see the package docstring)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _normalization(normalized: bool | str) -> tuple[bool, bool]:
    """Map torchaudio's ``normalized`` argument to (divide by sqrt(frame length), divide by window energy)."""
    if normalized is True or normalized == "window":
        return False, True
    if normalized == "frame_length":
        return True, False
    if normalized is False:
        return False, False
    raise ValueError(f"normalized must be a bool, 'window' or 'frame_length', got {normalized!r}")


def spectrogram(
    waveform: torch.Tensor,
    pad: int,
    window: torch.Tensor,
    n_fft: int,
    hop_length: int,
    win_length: int,
    power: float | None,
    normalized: bool | str,
    center: bool = True,
    pad_mode: str | None = "reflect",
    onesided: bool = True,
) -> torch.Tensor:
    """Short-time Fourier transform of ``waveform`` [..., time] (samples).

    Returns [..., freq, frames] with freq = n_fft // 2 + 1 when onesided: complex when ``power`` is
    None, else ``|STFT| ** power``. ``normalized=True`` (or "window") divides by sqrt(sum(window**2));
    "frame_length" divides by sqrt(n_fft). ``pad`` zero-pads both ends before the transform.
    """
    if pad > 0:
        waveform = F.pad(waveform, (pad, pad), mode="constant")
    if center and pad_mode is None:
        raise ValueError("pad_mode must be set when center=True")
    by_frame_length, by_window = _normalization(normalized)
    leading = waveform.shape[:-1]
    spec = torch.stft(
        waveform.reshape(-1, waveform.shape[-1]),
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=win_length,
        window=window,
        center=center,
        pad_mode=pad_mode or "reflect",
        normalized=by_frame_length,
        onesided=onesided,
        return_complex=True,
    )
    spec = spec.reshape(*leading, *spec.shape[-2:])
    if by_window:
        spec = spec / window.pow(2.0).sum().sqrt()
    if power is None:
        return spec
    magnitude = spec.abs()
    return magnitude if power == 1.0 else magnitude.pow(power)


def _hz_to_mel_htk(freq: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + freq / 700.0)


def _mel_to_hz_htk(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def melscale_fbanks(
    n_freqs: int,
    f_min: float,
    f_max: float,
    n_mels: int,
    sample_rate: int,
    norm: str | None = None,
    mel_scale: str = "htk",
) -> torch.Tensor:
    """Triangular HTK mel filterbank, [n_freqs, n_mels], for STFT bins spaced evenly over [0, sample_rate // 2] Hz.

    Filter m rises linearly from mel point m to m + 1 and falls to m + 2 (n_mels + 2 points evenly
    spaced on the HTK mel scale between f_min and f_max, in Hz); unnormalised (peak 1).
    """
    if mel_scale != "htk" or norm is not None:
        raise ValueError(
            "the torchaudio stub implements mel_scale='htk', norm=None only "
            f"(got mel_scale={mel_scale!r}, norm={norm!r})"
        )
    if not 0.0 <= f_min < f_max:
        raise ValueError(f"need 0 <= f_min < f_max, got f_min={f_min}, f_max={f_max}")
    bin_freqs = torch.linspace(0.0, float(sample_rate // 2), n_freqs)  # [n_freqs] Hz
    mel_edges = torch.linspace(
        float(_hz_to_mel_htk(torch.tensor(float(f_min)))), float(_hz_to_mel_htk(torch.tensor(float(f_max)))), n_mels + 2
    )
    hz_edges = _mel_to_hz_htk(mel_edges)  # [n_mels + 2] Hz
    left, centre, right = hz_edges[:-2], hz_edges[1:-1], hz_edges[2:]
    rising = (bin_freqs[:, None] - left) / (centre - left)  # [n_freqs, n_mels]
    falling = (right - bin_freqs[:, None]) / (right - centre)
    return torch.minimum(rising, falling).clamp(min=0.0)
