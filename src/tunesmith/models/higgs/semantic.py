"""The conv stack that maps HuBERT features into the HiggsAudio v2 tokenizer's fused embedding.

``encoder_semantic`` in transformers: a conv, then per block ELU residual units and a (possibly strided)
conv. Its mirror ``decoder_semantic`` only serves the tokenizer's training loss and is not built here.
Tensors are ``[B, channels, frames]``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from tunesmith.models.higgs.tokenizer_config import HiggsTokenizerConfig


class ResidualUnit(nn.Module):
    """ELU → dilated conv (no bias) → ELU → 1×1 conv (no bias), plus the input."""

    def __init__(self, channels: int, kernel: int, dilation: int) -> None:
        super().__init__()
        pad = ((kernel - 1) // 2) * dilation
        self.conv1 = nn.Conv1d(channels, channels, kernel, padding=pad, dilation=dilation, bias=False)
        self.conv2 = nn.Conv1d(channels, channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.elu(self.conv1(F.elu(x))))


class EncoderBlock(nn.Module):
    """Residual units (one per dilation), then a conv (kernel 3 at stride 1, else 2·stride)."""

    def __init__(self, config: HiggsTokenizerConfig, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.res_units = nn.ModuleList(ResidualUnit(cin, config.unit_kernel_size, d) for d in config.block_dilations)
        kernel = 3 if stride == 1 else 2 * stride
        self.conv = nn.Conv1d(cin, cout, kernel, stride=stride, padding=(kernel - 1) // 2)

    def forward(self, x: Tensor) -> Tensor:
        for unit in self.res_units:
            x = unit(x)
        return self.conv(x)


class SemanticEncoder(nn.Module):
    """HuBERT features ``[B, H, F]`` → ``[B, H · channel_ratios[-1], F / prod(strides)]``."""

    def __init__(self, config: HiggsTokenizerConfig) -> None:
        super().__init__()
        hidden = config.semantic.hidden_size
        k = config.kernel_size
        self.conv = nn.Conv1d(hidden, hidden, k, padding=k // 2, bias=False)
        blocks, cin = [], hidden
        for ratio, stride in zip(config.channel_ratios, config.strides, strict=True):
            cout = int(hidden * ratio)
            blocks.append(EncoderBlock(config, cin, cout, stride))
            cin = cout
        self.conv_blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        for block in self.conv_blocks:
            x = block(x)
        return x
