"""Multi-scale STFT discriminator (MS-STFT, as in EnCodec).

Each scale takes the complex STFT of the waveform (real and imaginary parts as channels, layout
``[B, 2C, frames, freqs]``) through a stack of 2-d convolutions dilated along time and strided along
frequency, and returns logits plus every intermediate feature map (for feature matching).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm


def _pad2d(kernel: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    return ((kernel[0] - 1) * dilation[0] // 2, (kernel[1] - 1) * dilation[1] // 2)


class STFTDiscriminator(nn.Module):
    """One scale: waveform ``[B, C, T]`` → (logits ``[B, 1, frames, freqs']``, feature maps)."""

    def __init__(
        self,
        channels: int = 1,
        filters: int = 32,
        n_fft: int = 1024,
        hop_length: int = 256,
        win_length: int = 1024,
        kernel_size: tuple[int, int] = (3, 9),
        stride: tuple[int, int] = (1, 2),
        dilations: tuple[int, ...] = (1, 2, 4),
        negative_slope: float = 0.2,
        normalized: bool = True,
    ) -> None:
        super().__init__()
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.normalized = normalized
        self.negative_slope = negative_slope
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        convs = [weight_norm(nn.Conv2d(2 * channels, filters, kernel_size, padding=_pad2d(kernel_size)))]
        for d in dilations:
            convs.append(
                weight_norm(
                    nn.Conv2d(
                        filters,
                        filters,
                        kernel_size,
                        stride=stride,
                        dilation=(d, 1),
                        padding=_pad2d(kernel_size, (d, 1)),
                    )
                )
            )
        square = (kernel_size[0], kernel_size[0])
        convs.append(weight_norm(nn.Conv2d(filters, filters, square, padding=_pad2d(square))))
        self.convs = nn.ModuleList(convs)
        self.post = weight_norm(nn.Conv2d(filters, 1, square, padding=_pad2d(square)))

    def spectrogram(self, wav: Tensor) -> Tensor:
        """``[B, C, T]`` → ``[B, 2C, frames, n_fft // 2 + 1]`` (real parts, then imaginary parts)."""
        b, c, t = wav.shape
        spec = torch.stft(
            wav.reshape(b * c, t).float(),
            self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=False,
            return_complex=True,
        )
        if self.normalized:
            spec = spec / self.window.pow(2).sum().sqrt()
        ri = torch.view_as_real(spec)  # [B*C, freqs, frames, 2]
        ri = ri.reshape(b, c, *ri.shape[1:]).permute(0, 4, 1, 3, 2)  # [B, 2, C, frames, freqs]
        return ri.reshape(b, 2 * c, ri.shape[-2], ri.shape[-1])

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:
        z = self.spectrogram(wav).to(wav.dtype)
        fmaps = []
        for conv in self.convs:
            z = F.leaky_relu(conv(z), self.negative_slope)
            fmaps.append(z)
        return self.post(z), fmaps


class MultiScaleSTFTDiscriminator(nn.Module):
    """Several :class:`STFTDiscriminator` at different FFT sizes: ``[B, C, T]`` → (logits list, feature-map lists)."""

    def __init__(
        self,
        channels: int = 1,
        filters: int = 32,
        n_ffts: list[int] | tuple[int, ...] = (1024, 2048, 512, 256, 128),
        hop_lengths: list[int] | tuple[int, ...] | None = None,
        win_lengths: list[int] | tuple[int, ...] | None = None,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        hop_lengths = hop_lengths or [n // 4 for n in n_ffts]
        win_lengths = win_lengths or list(n_ffts)
        if not len(n_ffts) == len(hop_lengths) == len(win_lengths):
            raise ValueError("n_ffts, hop_lengths and win_lengths must have the same length")
        self.discriminators = nn.ModuleList(
            STFTDiscriminator(channels, filters, n, h, w, negative_slope=negative_slope)
            for n, h, w in zip(n_ffts, hop_lengths, win_lengths, strict=True)
        )

    @property
    def min_length(self) -> int:
        """Shortest waveform (samples) every scale accepts."""
        return max(d.n_fft for d in self.discriminators)

    def forward(self, wav: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        logits, fmaps = [], []
        for disc in self.discriminators:
            logit, fmap = disc(wav)
            logits.append(logit)
            fmaps.append(fmap)
        return logits, fmaps
