"""Stereo as MusicGen does it: a mono codec run on each channel, codebooks interleaved.

:class:`InterleavedStereoCodec` wraps any mono :class:`~tunesmith.models.codec.protocol.Codec`. Encoding
``[B, 2, T]`` runs the mono codec on the left and on the right channel and interleaves the codebooks:
codebook ``2q`` is the left channel's level q, ``2q + 1`` the right's (transformers' stereo MusicGen and
AudioCraft's ``InterleaveStereoCompressionModel`` use this layout). ``n_q`` is twice the mono codec's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tunesmith.errors import UserError


def interleave(left: Tensor, right: Tensor) -> Tensor:
    """Codes Long[B, K, F] of each channel → Long[B, 2K, F] (even = left, odd = right)."""
    if left.shape != right.shape:
        raise ValueError(f"left codes {tuple(left.shape)} and right codes {tuple(right.shape)} differ")
    return torch.stack([left, right], dim=2).flatten(1, 2)


def deinterleave(codes: Tensor) -> tuple[Tensor, Tensor]:
    """Codes Long[B, 2K, F] → (left Long[B, K, F], right Long[B, K, F])."""
    if codes.shape[1] % 2:
        raise UserError(f"stereo codes need an even number of codebooks, got {codes.shape[1]}")
    return codes[:, 0::2], codes[:, 1::2]


class InterleavedStereoCodec(nn.Module):
    """A mono codec applied per channel: waveform float[B, 2, T] ⇄ codes Long[B, 2·n_q, F]."""

    def __init__(self, mono: Any) -> None:
        super().__init__()
        if int(mono.channels) != 1:
            raise UserError(f"interleaved stereo needs a mono codec; this one has {mono.channels} channels")
        self.mono = mono
        self.sample_rate = int(mono.sample_rate)
        self.channels = 2
        self.frame_rate = float(mono.frame_rate)
        self.bins = int(mono.bins)

    @property
    def n_q(self) -> int:
        return 2 * int(self.mono.n_q)

    @property
    def supported_bandwidths(self) -> list[float]:
        return list(self.mono.supported_bandwidths)

    @property
    def bandwidth(self) -> float:
        return self.mono.bandwidth

    def num_codebooks_at(self, kbps: float) -> int:
        return 2 * int(self.mono.num_codebooks_at(kbps))

    def set_bandwidth(self, kbps: float) -> None:
        self.mono.set_bandwidth(kbps)

    @property
    def model(self) -> Any:
        """The mono codec's model (a transformers EncodecModel for MusicGen)."""
        return self.mono.model

    @torch.inference_mode()
    def encode(self, wav: Tensor) -> Tensor:
        """Waveform float[B, 2, T] → codes Long[B, 2·n_q, F]."""
        wav = torch.as_tensor(wav)
        if wav.dim() != 3 or wav.shape[1] != 2:
            raise UserError(f"stereo encode expects [batch, 2, samples], got {list(wav.shape)}")
        return interleave(self.mono.encode(wav[:, :1]), self.mono.encode(wav[:, 1:]))

    @torch.inference_mode()
    def decode(self, codes: Tensor) -> Tensor:
        """Codes Long[B, 2K, F] → waveform float[B, 2, T'] (left, right)."""
        left, right = deinterleave(torch.as_tensor(codes))
        return torch.cat([self.mono.decode(left), self.mono.decode(right)], dim=1)

    def config_dict(self) -> dict[str, Any]:
        return {"interleaved_stereo": self.mono.config_dict()}


def as_channels(codec: Any, channels: int) -> Any:
    """``codec`` for an LM over ``channels`` interleaved channels: a mono codec is wrapped for 2."""
    if channels == 1 or int(codec.channels) == channels:
        return codec
    if channels == 2 and int(codec.channels) == 1:
        return InterleavedStereoCodec(codec)
    raise UserError(f"an LM over {channels} channels cannot use a {codec.channels}-channel codec")
