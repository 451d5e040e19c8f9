"""SEANet-style convolutional encoder and decoder (the EnCodec auto-encoder).

Encoder: conv → [residual units → strided conv (×2 channels)] per ratio → LSTM → conv to ``dimension``.
Decoder: the mirror image with transposed convolutions. ``ratios`` are given in *decoder* order
(upsampling), as in AudioCraft and transformers' ``upsampling_ratios``; the encoder downsamples by
``reversed(ratios)``. A signal of ``T`` samples becomes ``ceil(T / hop_length)`` latent frames and the
decoder returns ``frames * hop_length`` samples, ``hop_length = prod(ratios)``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

Norm = Literal["weight_norm", "none"]
PadMode = Literal["constant", "reflect"]


def _normed(module: nn.Module, norm: Norm) -> nn.Module:
    if norm == "weight_norm":
        return weight_norm(module)
    if norm != "none":
        raise ValueError(f"norm={norm!r}: expected 'weight_norm' or 'none'")
    return module


class PaddedConv1d(nn.Module):
    """1-d convolution padded so that ``T`` input samples give exactly ``ceil(T / stride)`` outputs.

    Non-causal: the fixed padding ``effective_kernel - stride`` is split evenly (extra sample left), and
    the right side gets the few extra samples that make the last window whole. Causal: all of it left.
    Input ``[B, C_in, T]`` → ``[B, C_out, ceil(T / stride)]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        causal: bool = False,
        pad_mode: PadMode = "constant",
        norm: Norm = "weight_norm",
    ) -> None:
        super().__init__()
        conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation)
        self.conv = _normed(conv, norm)
        self.stride = stride
        self.effective_kernel = (kernel_size - 1) * dilation + 1
        self.causal = causal
        self.pad_mode = pad_mode

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[-1]
        fixed = self.effective_kernel - self.stride
        frames = math.ceil(length / self.stride)
        total = (frames - 1) * self.stride + self.effective_kernel - length  # >= fixed - (stride - 1)
        if self.causal:
            left = fixed
        else:
            left = fixed - fixed // 2
        right = max(total - left, 0)
        if left or right:
            if self.pad_mode == "reflect" and max(left, right) >= length:
                # reflect needs more samples than padding; pad with zeros up to that first
                extra = max(left, right) - length + 1
                x = F.pad(x, (0, extra))
                x = F.pad(x, (left, right), mode="reflect")[..., : length + left + right]
            else:
                x = F.pad(x, (left, right), mode=self.pad_mode)
        return self.conv(x)


class PaddedConvTranspose1d(nn.Module):
    """Transposed 1-d convolution trimmed to exactly ``T * stride`` outputs for ``T`` inputs.

    Input ``[B, C_in, T]`` → ``[B, C_out, T * stride]``. The ``kernel_size - stride`` surplus samples are
    trimmed half on each side (non-causal; extra one on the left) or all on the right (causal).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        causal: bool = False,
        norm: Norm = "weight_norm",
    ) -> None:
        super().__init__()
        self.convtr = _normed(nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride=stride), norm)
        surplus = kernel_size - stride
        self.trim_left = 0 if causal else surplus - surplus // 2
        self.trim_right = surplus - self.trim_left

    def forward(self, x: Tensor) -> Tensor:
        y = self.convtr(x)
        end = y.shape[-1] - self.trim_right
        return y[..., self.trim_left : end]


class ResidualUnit(nn.Module):
    """``x + conv1x1(elu(conv_k,dilated(elu(x))))`` with a bottleneck of ``channels // compress``."""

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        dilation: int,
        compress: int,
        causal: bool,
        pad_mode: PadMode,
        norm: Norm,
        true_skip: bool,
    ) -> None:
        super().__init__()
        hidden = channels // compress
        self.block = nn.Sequential(
            nn.ELU(),
            PaddedConv1d(channels, hidden, kernel_size, dilation=dilation, causal=causal, pad_mode=pad_mode, norm=norm),
            nn.ELU(),
            PaddedConv1d(hidden, channels, 1, causal=causal, pad_mode=pad_mode, norm=norm),
        )
        self.shortcut = (
            nn.Identity()
            if true_skip
            else PaddedConv1d(channels, channels, 1, causal=causal, pad_mode=pad_mode, norm=norm)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + self.block(x)


class SkipLSTM(nn.Module):
    """Unidirectional LSTM over frames with a residual connection: ``[B, C, F]`` → ``[B, C, F]``."""

    def __init__(self, channels: int, num_layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(channels, channels, num_layers)

    def forward(self, x: Tensor) -> Tensor:
        seq = x.permute(2, 0, 1)  # [F, B, C]
        out, _ = self.lstm(seq)
        return (out + seq).permute(1, 2, 0)


class SEANetEncoder(nn.Module):
    """Waveform ``[B, channels, T]`` → latent ``[B, dimension, ceil(T / hop_length)]``."""

    def __init__(
        self,
        channels: int = 1,
        dimension: int = 128,
        n_filters: int = 32,
        ratios: list[int] | tuple[int, ...] = (8, 5, 4, 2),
        n_residual_layers: int = 1,
        kernel_size: int = 7,
        residual_kernel_size: int = 3,
        last_kernel_size: int = 7,
        dilation_base: int = 2,
        compress: int = 2,
        lstm: int = 2,
        causal: bool = False,
        pad_mode: PadMode = "constant",
        true_skip: bool = True,
        norm: Norm = "weight_norm",
    ) -> None:
        super().__init__()
        self.hop_length = math.prod(ratios)
        common = {"causal": causal, "pad_mode": pad_mode, "norm": norm}
        layers: list[nn.Module] = [PaddedConv1d(channels, n_filters, kernel_size, **common)]
        width = n_filters
        for ratio in reversed(list(ratios)):
            for j in range(n_residual_layers):
                layers.append(
                    ResidualUnit(width, residual_kernel_size, dilation_base**j, compress, true_skip=true_skip, **common)
                )
            layers += [nn.ELU(), PaddedConv1d(width, width * 2, ratio * 2, stride=ratio, **common)]
            width *= 2
        if lstm:
            layers.append(SkipLSTM(width, lstm))
        layers += [nn.ELU(), PaddedConv1d(width, dimension, last_kernel_size, **common)]
        self.model = nn.Sequential(*layers)

    def forward(self, wav: Tensor) -> Tensor:
        return self.model(wav)


class SEANetDecoder(nn.Module):
    """Latent ``[B, dimension, F]`` → waveform ``[B, channels, F * hop_length]``."""

    def __init__(
        self,
        channels: int = 1,
        dimension: int = 128,
        n_filters: int = 32,
        ratios: list[int] | tuple[int, ...] = (8, 5, 4, 2),
        n_residual_layers: int = 1,
        kernel_size: int = 7,
        residual_kernel_size: int = 3,
        last_kernel_size: int = 7,
        dilation_base: int = 2,
        compress: int = 2,
        lstm: int = 2,
        causal: bool = False,
        pad_mode: PadMode = "constant",
        true_skip: bool = True,
        norm: Norm = "weight_norm",
    ) -> None:
        super().__init__()
        self.hop_length = math.prod(ratios)
        common = {"causal": causal, "pad_mode": pad_mode, "norm": norm}
        width = n_filters * 2 ** len(ratios)
        layers: list[nn.Module] = [PaddedConv1d(dimension, width, kernel_size, **common)]
        if lstm:
            layers.append(SkipLSTM(width, lstm))
        for ratio in ratios:
            layers += [nn.ELU(), PaddedConvTranspose1d(width, width // 2, ratio * 2, ratio, causal=causal, norm=norm)]
            width //= 2
            for j in range(n_residual_layers):
                layers.append(
                    ResidualUnit(width, residual_kernel_size, dilation_base**j, compress, true_skip=true_skip, **common)
                )
        layers += [nn.ELU(), PaddedConv1d(width, channels, last_kernel_size, **common)]
        self.model = nn.Sequential(*layers)

    def forward(self, latent: Tensor) -> Tensor:
        return self.model(latent)
