"""Stand-in for ``torchaudio``, only for running AudioCraft 1.3.0 as a benchmark peer on CPU.

Real torchaudio builds are locked to one torch version each, and none matches torch 2.13.0 here.
AudioCraft imports torchaudio at module level but its CPU training path only calls
``transforms.Spectrogram`` (MS-STFT discriminator) and ``transforms.MelSpectrogram`` (mel losses),
so this package provides those two (plus ``MelScale`` and the ``functional`` pieces they are made
of), written on ``torch.stft``. Anything else raises a clear AttributeError instead of running
something that only looks like torchaudio.
"""

from __future__ import annotations

from . import functional, transforms

__all__ = ["functional", "transforms"]


def __getattr__(name: str) -> object:
    raise AttributeError(
        f"torchaudio.{name} is not provided by the tunesmith peer stub (benchmarks/peers/stubs/torchaudio): "
        "it only implements transforms.Spectrogram, transforms.MelSpectrogram and transforms.MelScale"
    )
