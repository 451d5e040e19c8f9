"""The interface every codec in tunesmith offers (native models and wrapped third-party ones)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Codec(Protocol):
    """A neural audio codec: waveform ↔ integer codes.

    ``sample_rate`` Hz, ``channels``, ``frame_rate`` code frames per second, ``bins`` entries per
    codebook, ``n_q`` codebooks used at the current bandwidth, ``supported_bandwidths`` in kbps.
    """

    sample_rate: int
    channels: int
    frame_rate: float
    bins: int
    n_q: int
    supported_bandwidths: list[float]

    def set_bandwidth(self, kbps: float) -> None:
        """Select a bandwidth; UserError listing the supported ones for any other value."""
        ...

    def encode(self, wav: Tensor) -> Tensor:
        """Waveform ``[B, C, T]`` float → codes ``[B, K, F]`` long, ``K = n_q``."""
        ...

    def decode(self, codes: Tensor) -> Tensor:
        """Codes ``[B, K, F]`` long → waveform ``[B, C, T']`` float."""
        ...
