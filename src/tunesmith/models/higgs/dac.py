"""The acoustic half of the HiggsAudio v2 tokenizer: a DAC conv encoder/decoder with Snake activations.

Parameter names follow transformers' ``acoustic_encoder`` / ``acoustic_decoder`` (a ``DacModel``'s
encoder and decoder), so its weights load by name. Two HiggsAudio-specific changes to plain DAC: every
transposed conv in the decoder has ``output_padding = stride % 2`` and the decoder ends without tanh.
All tensors are ``[batch, channels, time]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tunesmith.models.higgs.tokenizer_config import AcousticConfig


class Snake(nn.Module):
    """``x + sin²(αx)/α`` per channel; ``alpha [1, C, 1]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)


class ResidualUnit(nn.Module):
    """Snake → dilated conv (k=7, same length) → Snake → 1×1 conv, plus the input."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.snake1 = Snake(channels)
        self.conv1 = nn.Conv1d(channels, channels, kernel_size=7, dilation=dilation, padding=3 * dilation)
        self.snake2 = Snake(channels)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(self.snake2(self.conv1(self.snake1(x))))
        trim = (x.shape[-1] - y.shape[-1]) // 2
        if trim > 0:
            x = x[..., trim:-trim]
        return x + y


class EncoderBlock(nn.Module):
    """Three residual units at ``channels // 2``, Snake, then a strided conv to ``channels`` (÷ ``stride`` in time)."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        half = channels // 2
        self.res_unit1 = ResidualUnit(half, 1)
        self.res_unit2 = ResidualUnit(half, 3)
        self.res_unit3 = ResidualUnit(half, 9)
        self.snake1 = Snake(half)
        self.conv1 = nn.Conv1d(half, channels, kernel_size=2 * stride, stride=stride, padding=math.ceil(stride / 2))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv1(self.snake1(self.res_unit3(self.res_unit2(self.res_unit1(x)))))


class AcousticEncoder(nn.Module):
    """Waveform ``[B, 1, T]`` → latents ``[B, hidden_size, ≈T / hop]``."""

    def __init__(self, config: AcousticConfig) -> None:
        super().__init__()
        width = config.encoder_hidden_size
        self.conv1 = nn.Conv1d(1, width, kernel_size=7, padding=3)
        self.block = nn.ModuleList(
            EncoderBlock(width * 2 ** (i + 1), stride) for i, stride in enumerate(config.downsampling_ratios)
        )
        top = width * 2 ** len(config.downsampling_ratios)
        self.snake1 = Snake(top)
        self.conv2 = nn.Conv1d(top, config.hidden_size, kernel_size=3, padding=1)

    def forward(self, wav: Tensor) -> Tensor:
        x = self.conv1(wav)
        for block in self.block:
            x = block(x)
        return self.conv2(self.snake1(x))

    def output_length(self, length: int) -> int:
        """Frames the convs produce for ``length`` samples (every Conv1d in order, as transformers counts them)."""
        for conv in self.modules():
            if isinstance(conv, nn.Conv1d):
                pad, dil = conv.padding[0], conv.dilation[0]
                length = (length + 2 * pad - dil * (conv.kernel_size[0] - 1) - 1) // conv.stride[0] + 1
        return length


class DecoderBlock(nn.Module):
    """Snake, transposed conv (× ``stride`` in time, ``in_ch → out_ch``), three residual units."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.snake1 = Snake(in_channels)
        self.conv_t1 = nn.ConvTranspose1d(
            in_channels,
            out_channels,
            kernel_size=2 * stride,
            stride=stride,
            padding=math.ceil(stride / 2),
            output_padding=stride % 2,
        )
        self.res_unit1 = ResidualUnit(out_channels, 1)
        self.res_unit2 = ResidualUnit(out_channels, 3)
        self.res_unit3 = ResidualUnit(out_channels, 9)

    def forward(self, x: Tensor) -> Tensor:
        return self.res_unit3(self.res_unit2(self.res_unit1(self.conv_t1(self.snake1(x)))))


class AcousticDecoder(nn.Module):
    """Latents ``[B, hidden_size, F]`` → waveform ``[B, 1, F · hop]`` (no final tanh)."""

    def __init__(self, config: AcousticConfig) -> None:
        super().__init__()
        width = config.decoder_hidden_size
        self.conv1 = nn.Conv1d(config.hidden_size, width, kernel_size=7, padding=3)
        self.block = nn.ModuleList(
            DecoderBlock(width // 2**i, width // 2 ** (i + 1), stride)
            for i, stride in enumerate(config.upsampling_ratios)
        )
        out = width // 2 ** len(config.upsampling_ratios)
        self.snake1 = Snake(out)
        self.conv2 = nn.Conv1d(out, 1, kernel_size=7, padding=3)

    def forward(self, latents: Tensor) -> Tensor:
        x = self.conv1(latents)
        for block in self.block:
            x = block(x)
        return self.conv2(self.snake1(x))
