"""The EnCodec-style compression model: SEANet encoder → residual VQ → SEANet decoder."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from tunesmith.errors import UserError
from tunesmith.models.codec.quantizer import ResidualVectorQuantizer
from tunesmith.models.codec.seanet import SEANetDecoder, SEANetEncoder, SEANetShape


@dataclass
class CodecModelConfig:
    """Shape of a :class:`CodecModel` (``model`` section of a codec preset); defaults: MusicGen's 32 kHz EnCodec.

    ``ratios`` are the decoder's upsampling strides; frame rate = ``sample_rate / prod(ratios)``.
    Bandwidth with ``k`` codebooks = ``k * log2(bins) * frame_rate / 1000`` kbps.
    """

    sample_rate: int = 32000
    channels: int = 1
    dimension: int = 128  # latent size per frame
    n_filters: int = 64  # channels of the first conv; doubled at every stride
    ratios: list[int] = field(default_factory=lambda: [8, 5, 4, 4])
    n_residual_layers: int = 1
    kernel_size: int = 7
    residual_kernel_size: int = 3
    last_kernel_size: int = 7
    dilation_base: int = 2
    compress: int = 2  # residual bottleneck: channels // compress
    lstm: int = 2  # LSTM layers at the bottleneck (0 = none)
    causal: bool = False
    pad_mode: Literal["constant", "reflect"] = "constant"
    true_skip: bool = True
    norm: Literal["weight_norm", "none"] = "weight_norm"
    n_q: int = 4  # codebooks
    bins: int = 2048  # entries per codebook
    q_dropout: bool = False  # train with a random number of codebooks (serves every bandwidth)
    ema_decay: float = 0.99
    kmeans_init: bool = True
    kmeans_iters: int = 50
    dead_code_threshold: float = 2.0  # EMA usage below which a code is restarted (0 = never)

    def validate(self) -> None:
        """Raise :class:`UserError` naming the first bad field."""
        checks = [
            (self.sample_rate > 0, "model.sample_rate must be positive"),
            (self.channels >= 1, "model.channels must be at least 1"),
            (bool(self.ratios) and all(r >= 1 for r in self.ratios), "model.ratios must be a list of strides >= 1"),
            (self.n_q >= 1, "model.n_q must be at least 1"),
            (2 <= self.bins <= 2**31 - 1, "model.bins must be at least 2"),
            (self.compress >= 1 and self.n_filters >= self.compress, "model.compress must be in [1, n_filters]"),
            (0 < self.ema_decay < 1, "model.ema_decay must be in (0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)


@dataclass
class CodecOutput:
    """``wav`` reconstruction ``[B, C, T]``, ``codes`` ``[B, n_q, F]`` long, ``commit_loss`` scalar."""

    wav: Tensor
    codes: Tensor
    commit_loss: Tensor
    n_q: int


class CodecModel(nn.Module):
    """Neural audio codec implementing the :class:`~tunesmith.models.codec.protocol.Codec` protocol.

    ``encode``: waveform ``[B, C, T]`` float in [-1, 1] → codes ``[B, n_q, ceil(T / hop_length)]`` long;
    ``decode``: codes ``[B, K, F]`` → waveform ``[B, C, F * hop_length]``.
    """

    def __init__(self, config: CodecModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        seanet = SEANetShape(
            channels=config.channels,
            dimension=config.dimension,
            n_filters=config.n_filters,
            ratios=tuple(config.ratios),
            n_residual_layers=config.n_residual_layers,
            kernel_size=config.kernel_size,
            residual_kernel_size=config.residual_kernel_size,
            last_kernel_size=config.last_kernel_size,
            dilation_base=config.dilation_base,
            compress=config.compress,
            lstm=config.lstm,
            causal=config.causal,
            pad_mode=config.pad_mode,
            true_skip=config.true_skip,
            norm=config.norm,
        )
        self.encoder = SEANetEncoder(seanet)
        self.decoder = SEANetDecoder(seanet)
        self.quantizer = ResidualVectorQuantizer(
            config.dimension,
            n_q=config.n_q,
            bins=config.bins,
            decay=config.ema_decay,
            kmeans_init=config.kmeans_init,
            kmeans_iters=config.kmeans_iters,
            dead_code_threshold=config.dead_code_threshold,
            q_dropout=config.q_dropout,
        )
        self._n_q = config.n_q

    # ------------------------------------------------------------------ Codec protocol
    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def hop_length(self) -> int:
        """Samples per frame."""
        return math.prod(self.config.ratios)

    @property
    def frame_rate(self) -> float:
        """Frames (code vectors) per second."""
        return self.config.sample_rate / self.hop_length

    @property
    def bins(self) -> int:
        return self.config.bins

    @property
    def n_q(self) -> int:
        """Codebooks used at the current bandwidth."""
        return self._n_q

    @property
    def total_codebooks(self) -> int:
        return self.config.n_q

    def bandwidth_of(self, n_q: int) -> float:
        """kbps with ``n_q`` codebooks."""
        return n_q * math.log2(self.config.bins) * self.frame_rate / 1000.0

    @property
    def bandwidth(self) -> float:
        """Current bandwidth in kbps."""
        return self.bandwidth_of(self._n_q)

    @property
    def supported_bandwidths(self) -> list[float]:
        """kbps this model was trained for: every codebook count with quantizer dropout, else all of them only."""
        counts = range(1, self.config.n_q + 1) if self.config.q_dropout else [self.config.n_q]
        return [round(self.bandwidth_of(k), 6) for k in counts]

    def set_bandwidth(self, kbps: float) -> None:
        """Use the number of codebooks giving ``kbps``; :class:`UserError` listing the supported ones otherwise."""
        for k in range(1, self.config.n_q + 1):
            bw = self.bandwidth_of(k)
            if abs(bw - float(kbps)) <= 1e-3 * max(bw, 1e-9) and round(bw, 6) in self.supported_bandwidths:
                self._n_q = k
                return
        listed = ", ".join(f"{b:g}" for b in self.supported_bandwidths)
        raise UserError(f"bandwidth {kbps:g} kbps is not supported by this codec; supported: {listed} kbps")

    def set_num_codebooks(self, n_q: int) -> None:
        """Use the first ``n_q`` codebooks (1..total)."""
        if not 1 <= n_q <= self.config.n_q:
            raise UserError(f"n_q={n_q}: this codec has {self.config.n_q} codebooks")
        self._n_q = n_q

    def _check_wav(self, wav: Tensor) -> None:
        if wav.dim() != 3 or wav.shape[1] != self.channels:
            raise UserError(
                f"codec expects audio [batch, {self.channels} channel(s), samples], got shape {tuple(wav.shape)}; "
                f"load it with channels={self.channels} and sample_rate={self.sample_rate}"
            )

    @torch.no_grad()
    def encode(self, wav: Tensor) -> Tensor:
        """Waveform ``[B, C, T]`` → codes ``[B, n_q, ceil(T / hop_length)]`` long."""
        self._check_wav(wav)
        return self.quantizer.encode(self.encoder(wav), self._n_q)

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """Codes ``[B, K, F]`` (K <= total codebooks) → waveform ``[B, C, F * hop_length]``."""
        return self.decoder(self.quantizer.decode(codes))

    # ------------------------------------------------------------------ training
    def forward(self, wav: Tensor) -> CodecOutput:
        """Round trip for training: waveform ``[B, C, T]`` → :class:`CodecOutput` with ``wav`` ``[B, C, T]``."""
        self._check_wav(wav)
        length = wav.shape[-1]
        latent = self.encoder(wav)
        q = self.quantizer(latent, self._n_q)
        out = self.decoder(q.quantized)[..., :length]
        return CodecOutput(wav=out, codes=q.codes, commit_loss=q.commit_loss, n_q=q.n_q)

    def config_dict(self) -> dict:
        """The plain config (JSON-able) this model was built from."""
        return dataclasses.asdict(self.config)


def build_codec_model(config: CodecModelConfig | dict) -> CodecModel:
    """A fresh :class:`CodecModel` from a config object or its plain dict (unknown keys are an error)."""
    if isinstance(config, dict):
        known = {f.name for f in dataclasses.fields(CodecModelConfig)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise UserError(f"codec config has unknown keys {unknown}; known keys: {sorted(known)}")
        config = CodecModelConfig(**config)
    return CodecModel(config)
