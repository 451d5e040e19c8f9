"""Codec training losses: waveform L1, multi-scale mel, SI-SNR, adversarial hinge and feature matching.

All take the target ``x`` and the reconstruction ``y`` as ``[B, C, T]`` and return a scalar mean over the
batch (the solver multiplies by the batch size where the engine expects sums).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tunesmith.audio.mel import MelSpectrogram


class MultiScaleMelLoss(nn.Module):
    """Sum over FFT sizes ``2**i`` (``range_start <= i < range_end``, hop = size / 4) of
    ``L1(mel_x, mel_y) + alpha_i * MSE(log10(floor + mel_x), log10(floor + mel_y))``.

    ``alphas=True`` weights scale ``i`` by ``sqrt(2**i - 1)``, else 1; ``normalized=True`` normalises the
    STFT by the window norm and divides the total by ``sum(alpha_i + 1)``. Each mel spectrogram is
    computed once per scale for ``x`` and ``y`` together.
    """

    def __init__(
        self,
        sample_rate: int,
        range_start: int = 6,
        range_end: int = 11,
        n_mels: int = 64,
        f_min: float = 64.0,
        f_max: float | None = None,
        normalized: bool = True,
        alphas: bool = False,
        floor_level: float = 1e-5,
    ) -> None:
        super().__init__()
        if range_end <= range_start:
            raise ValueError(f"mel loss: range_end ({range_end}) must be larger than range_start ({range_start})")
        self.floor_level = floor_level
        self.normalized = normalized
        self.mels = nn.ModuleList(
            MelSpectrogram(
                sample_rate,
                n_fft=2**i,
                hop_length=2**i // 4,
                n_mels=n_mels,
                f_min=f_min,
                f_max=f_max,
                normalized=normalized,
            )
            for i in range(range_start, range_end)
        )
        self.alphas = [math.sqrt(2**i - 1) if alphas else 1.0 for i in range(range_start, range_end)]
        self.total = sum(a + 1 for a in self.alphas)

    @staticmethod
    def largest_fft(range_end: int) -> int:
        """The largest FFT size of scales ``range_start <= i < range_end``: the shortest input (samples)."""
        return 2 ** (range_end - 1)

    @property
    def min_length(self) -> int:
        return max(m.n_fft for m in self.mels)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        both = torch.cat([x, y], dim=0).float()
        loss = both.new_zeros(())
        for mel, alpha in zip(self.mels, self.alphas, strict=True):
            spec = mel(both)
            sx, sy = spec.chunk(2, dim=0)
            loss = loss + F.l1_loss(sy, sx)
            log_spec = torch.log10(self.floor_level + spec)
            lx, ly = log_spec.chunk(2, dim=0)
            loss = loss + alpha * F.mse_loss(ly, lx)
        return loss / self.total if self.normalized else loss


def sisnr_loss(x: Tensor, y: Tensor, eps: float = 1e-8) -> Tensor:
    """Negated SI-SNR in dB averaged over the batch (lower is better), differentiable in ``y``."""
    xf = x.reshape(x.shape[0], -1).float()
    yf = y.reshape(y.shape[0], -1).float()
    xf = xf - xf.mean(1, keepdim=True)
    yf = yf - yf.mean(1, keepdim=True)
    target = (yf * xf).sum(1, keepdim=True) / (xf.pow(2).sum(1, keepdim=True) + eps) * xf
    noise = yf - target
    return -(10 * torch.log10((target.pow(2).sum(1) + eps) / (noise.pow(2).sum(1) + eps))).mean()


def generator_adversarial_loss(logits_fake: list[Tensor], kind: str = "hinge") -> Tensor:
    """Generator's adversarial loss, averaged over discriminators.

    ``hinge``: ``-mean(D(y))`` (AudioCraft's generator hinge); ``hinge2``: ``mean(relu(1 - D(y)))``
    (the EnCodec paper's form); ``mse``: ``mean((1 - D(y))^2)``.
    """
    terms = []
    for logits in logits_fake:
        if kind == "hinge":
            terms.append(-logits.mean())
        elif kind == "hinge2":
            terms.append(F.relu(1 - logits).mean())
        elif kind == "mse":
            terms.append((1 - logits).pow(2).mean())
        else:
            raise ValueError(f"adversarial loss {kind!r}: expected 'hinge', 'hinge2' or 'mse'")
    return torch.stack(terms).mean()


def discriminator_loss(logits_fake: list[Tensor], logits_real: list[Tensor], kind: str = "hinge") -> Tensor:
    """Discriminator loss averaged over discriminators: hinge ``relu(1 + D(y)) + relu(1 - D(x))`` or LSGAN mse."""
    terms = []
    for fake, real in zip(logits_fake, logits_real, strict=True):
        if kind in ("hinge", "hinge2"):
            terms.append(F.relu(1 + fake).mean() + F.relu(1 - real).mean())
        elif kind == "mse":
            terms.append(fake.pow(2).mean() + (1 - real).pow(2).mean())
        else:
            raise ValueError(f"adversarial loss {kind!r}: expected 'hinge', 'hinge2' or 'mse'")
    return torch.stack(terms).mean()


def feature_matching_loss(fmaps_fake: list[list[Tensor]], fmaps_real: list[list[Tensor]]) -> Tensor:
    """L1 between feature maps of reconstruction and target, averaged over layers, then over discriminators."""
    per_disc = []
    for fake_maps, real_maps in zip(fmaps_fake, fmaps_real, strict=True):
        layer_losses = [F.l1_loss(f, r.detach()) for f, r in zip(fake_maps, real_maps, strict=True)]
        per_disc.append(torch.stack(layer_losses).mean())
    return torch.stack(per_disc).mean()
