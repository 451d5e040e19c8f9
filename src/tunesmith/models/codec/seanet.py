"""SEANet-style convolutional encoder and decoder (the EnCodec auto-encoder).

Encoder: conv → [residual units → strided conv (×2 channels)] per ratio → LSTM → conv to ``dimension``.
Decoder: the mirror image with transposed convolutions. ``ratios`` are given in *decoder* order
(upsampling), as in AudioCraft and transformers' ``upsampling_ratios``; the encoder downsamples by
``reversed(ratios)``. A signal of ``T`` samples becomes ``ceil(T / hop_length)`` latent frames and the
decoder returns ``frames * hop_length`` samples, ``hop_length = prod(ratios)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
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


CHANNELS_LAST = torch.channels_last


def to_frames_layout(x: Tensor) -> Tensor:
    """``[B, C, T]`` → ``[B, C, 1, T]`` in channels-last memory (time-major, channels innermost).

    The SEANet layers run as 1×k 2-d convolutions on this layout: on CPU they are several times faster than
    ``conv1d`` on ``[B, C, T]``, and the LSTM reads it as ``[B, T, C]`` without a copy.
    """
    return x.unsqueeze(2).contiguous(memory_format=CHANNELS_LAST)


class PaddedConv1d(nn.Module):
    """1-d convolution (weights ``[C_out, C_in, k]``) padded so ``T`` inputs give ``ceil(T / stride)`` outputs.

    Works on the ``[B, C, 1, T]`` channels-last layout (see :func:`to_frames_layout`). Non-causal: the fixed
    padding ``effective_kernel - stride`` is split evenly (the extra sample on the left) and the right side
    gets the few extra zeros that make the last window whole; causal: all of it on the left.
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
        self.stride, self.dilation = stride, dilation
        self.effective_kernel = (kernel_size - 1) * dilation + 1
        self.causal = causal
        self.pad_mode = pad_mode

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[-1]
        fixed = self.effective_kernel - self.stride
        frames = math.ceil(length / self.stride)
        total = (frames - 1) * self.stride + self.effective_kernel - length  # >= fixed
        left = fixed if self.causal else fixed - fixed // 2
        right = total - left
        weight = self.conv.weight.unsqueeze(2)
        bias = self.conv.bias
        conv_args = {"stride": (1, self.stride), "dilation": (1, self.dilation)}
        if self.pad_mode == "constant" and not self.causal and right <= left:
            # zero padding inside the convolution (no copy); at most one surplus output to drop
            y = F.conv2d(x, weight, bias, padding=(0, left), **conv_args)
            return y if y.shape[-1] == frames else y[..., :frames]
        if self.pad_mode == "reflect":
            if max(left, right) >= length:  # reflect needs more samples than it pads: zeros first
                x = F.pad(x, (0, max(left, right) - length + 1))
            x = F.pad(x, (left, right, 0, 0), mode="reflect")[..., : length + left + right]
        else:
            x = F.pad(x, (left, right))
        return F.conv2d(x, weight, bias, **conv_args)


class PaddedConvTranspose1d(nn.Module):
    """Transposed 1-d convolution (weights ``[C_in, C_out, k]``) giving exactly ``T * stride`` outputs.

    ``[B, C_in, 1, T]`` → ``[B, C_out, 1, T * stride]`` (channels-last layout). The ``kernel_size - stride``
    surplus samples are trimmed half on each side (non-causal; the extra one on the left) or all on the
    right (causal).
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
        self.stride = stride
        surplus = kernel_size - stride
        self.trim_left = 0 if causal else surplus - surplus // 2
        self.trim_right = surplus - self.trim_left
        # trim inside the op: `padding` drops trim_left on both sides, `output_padding` gives one back on the right
        self.output_padding = self.trim_left - self.trim_right
        self.trim_inside = 0 <= self.output_padding < stride

    def forward(self, x: Tensor) -> Tensor:
        weight = self.convtr.weight.unsqueeze(2)
        if self.trim_inside:
            return F.conv_transpose2d(
                x,
                weight,
                self.convtr.bias,
                stride=(1, self.stride),
                padding=(0, self.trim_left),
                output_padding=(0, self.output_padding),
            )
        y = F.conv_transpose2d(x, weight, self.convtr.bias, stride=(1, self.stride))
        return y[..., self.trim_left : y.shape[-1] - self.trim_right]


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
    """Unidirectional LSTM over frames with a residual connection: ``[B, C, 1, F]`` → ``[B, C, 1, F]``."""

    def __init__(self, channels: int, num_layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(channels, channels, num_layers)  # sequence-first: faster than batch_first on CPU

    def forward(self, x: Tensor) -> Tensor:
        seq = x.squeeze(2).permute(2, 0, 1).contiguous()  # [F, B, C]
        out, _ = self.lstm(seq)
        return (out + seq).permute(1, 2, 0).unsqueeze(2)


@dataclass(frozen=True)
class SEANetShape:
    """What both halves of a SEANet share: the encoder mirrors the decoder layer for layer."""

    channels: int = 1  # audio channels
    dimension: int = 128  # latent width
    n_filters: int = 32  # width of the first (encoder) / last (decoder) convolution; doubles per stride
    ratios: tuple[int, ...] = (8, 5, 4, 2)  # decoder order; hop length = their product
    n_residual_layers: int = 1
    kernel_size: int = 7
    residual_kernel_size: int = 3
    last_kernel_size: int = 7
    dilation_base: int = 2
    compress: int = 2  # residual units' bottleneck factor
    lstm: int = 2  # LSTM layers at the latent end (0 = none)
    causal: bool = False
    pad_mode: PadMode = "constant"
    true_skip: bool = True
    norm: Norm = "weight_norm"

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)

    def conv_options(self) -> dict:
        return {"causal": self.causal, "pad_mode": self.pad_mode, "norm": self.norm}


def _residual_units(width: int, shape: SEANetShape) -> list[nn.Module]:
    """``n_residual_layers`` residual units at one resolution, dilations 1, base, base², …"""
    return [
        ResidualUnit(
            width,
            shape.residual_kernel_size,
            shape.dilation_base**j,
            shape.compress,
            true_skip=shape.true_skip,
            **shape.conv_options(),
        )
        for j in range(shape.n_residual_layers)
    ]


class SEANetEncoder(nn.Module):
    """Waveform ``[B, channels, T]`` → latent ``[B, dimension, ceil(T / hop_length)]``.

    The input is zero-padded on the right to a whole number of hops first.
    """

    def __init__(self, shape: SEANetShape) -> None:
        super().__init__()
        self.hop_length = shape.hop_length
        common = shape.conv_options()
        layers: list[nn.Module] = [PaddedConv1d(shape.channels, shape.n_filters, shape.kernel_size, **common)]
        width = shape.n_filters
        for ratio in reversed(shape.ratios):
            layers += _residual_units(width, shape)
            layers += [nn.ELU(), PaddedConv1d(width, width * 2, ratio * 2, stride=ratio, **common)]
            width *= 2
        if shape.lstm:
            layers.append(SkipLSTM(width, shape.lstm))
        layers += [nn.ELU(), PaddedConv1d(width, shape.dimension, shape.last_kernel_size, **common)]
        self.model = nn.Sequential(*layers)

    def forward(self, wav: Tensor) -> Tensor:
        length = wav.shape[-1]
        padded = math.ceil(length / self.hop_length) * self.hop_length
        if padded != length:  # every strided layer then sees a whole number of strides
            wav = F.pad(wav, (0, padded - length))
        return self.model(to_frames_layout(wav)).squeeze(2)


class SEANetDecoder(nn.Module):
    """Latent ``[B, dimension, F]`` → waveform ``[B, channels, F * hop_length]``."""

    def __init__(self, shape: SEANetShape) -> None:
        super().__init__()
        self.hop_length = shape.hop_length
        common = shape.conv_options()
        width = shape.n_filters * 2 ** len(shape.ratios)
        layers: list[nn.Module] = [PaddedConv1d(shape.dimension, width, shape.kernel_size, **common)]
        if shape.lstm:
            layers.append(SkipLSTM(width, shape.lstm))
        for ratio in shape.ratios:
            transpose = PaddedConvTranspose1d(width, width // 2, ratio * 2, ratio, causal=shape.causal, norm=shape.norm)
            layers += [nn.ELU(), transpose]
            width //= 2
            layers += _residual_units(width, shape)
        layers += [nn.ELU(), PaddedConv1d(width, shape.channels, shape.last_kernel_size, **common)]
        self.model = nn.Sequential(*layers)

    def forward(self, latent: Tensor) -> Tensor:
        return self.model(to_frames_layout(latent)).squeeze(2)
