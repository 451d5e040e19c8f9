"""Band-limited (windowed-sinc) resampling in torch, inside the autograd/device graph.

This is the polyphase FIR resampler that torchaudio's ``functional.resample`` uses by default (Hann
window, ``lowpass_filter_width`` zero crossings, ``rolloff`` of the lower Nyquist), written here so
that models trained with it — the HiggsAudio v2 tokenizer feeds HuBERT a 16 kHz copy of its 24 kHz
input — give the same numbers without torchaudio. For offline file resampling use
:func:`tunesmith.audio.io.resample` (soxr) instead.

Ratios are reduced by their gcd (24 kHz → 16 kHz = 3 → 2), so one ``conv1d`` with ``new`` output
channels and stride ``orig`` produces ``new`` output samples per ``orig`` input samples.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def sinc_kernel(
    orig_freq: int,
    new_freq: int,
    lowpass_filter_width: int = 6,
    rolloff: float = 0.99,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, int]:
    """The polyphase filter bank ``[new, 1, 2·width + orig]`` and its half width ``width`` (input samples).

    Phase ``j`` (output sample ``n·new + j``) samples a Hann-windowed sinc of cut-off
    ``rolloff · min(orig, new) / 2`` cycles per reduced sample at the input positions around
    ``n·orig + j·orig/new``. ``orig_freq``/``new_freq`` are integers in Hz (reduced by their gcd).
    """
    if int(orig_freq) != orig_freq or int(new_freq) != new_freq or orig_freq <= 0 or new_freq <= 0:
        raise ValueError(f"sample rates must be positive integers, got {orig_freq} and {new_freq}")
    if lowpass_filter_width <= 0:
        raise ValueError("lowpass_filter_width must be positive")
    g = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // g, int(new_freq) // g
    cutoff = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / cutoff)
    taps = torch.arange(-width, width + orig, dtype=dtype, device=device)[None, :] / orig
    phases = torch.arange(0, -new, -1, dtype=dtype, device=device)[:, None] / new
    t = ((phases + taps) * cutoff).clamp(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones((), dtype=dtype, device=device), torch.sin(t) / t)
    kernel = sinc * (window * (cutoff / orig))
    return kernel[:, None, :], width


def sinc_resample(
    wav: Tensor,
    orig_freq: int,
    new_freq: int,
    lowpass_filter_width: int = 6,
    rolloff: float = 0.99,
) -> Tensor:
    """Resample ``wav [..., T]`` (float, ``orig_freq`` Hz) to ``[..., ceil(T · new / orig)]`` at ``new_freq`` Hz.

    The signal is zero-padded (``width`` samples before, ``width + orig`` after), so the first and
    last outputs see silence beyond the edges — exactly as torchaudio does.
    """
    if not wav.is_floating_point():
        raise TypeError(f"sinc_resample needs a floating-point waveform, got {wav.dtype}")
    if orig_freq == new_freq:
        return wav
    kernel, width = sinc_kernel(orig_freq, new_freq, lowpass_filter_width, rolloff, wav.dtype, wav.device)
    g = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // g, int(new_freq) // g
    shape = wav.shape
    flat = wav.reshape(-1, shape[-1])
    padded = F.pad(flat, (width, width + orig))
    out = F.conv1d(padded[:, None, :], kernel, stride=orig)  # [N, new, blocks]
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    length = math.ceil(new * shape[-1] / orig)
    return out[:, :length].reshape(*shape[:-1], length)
