"""The HiggsAudio v2 audio tokenizer's shape, read from a transformers ``config.json`` (plain data, no transformers).

``model_type: "higgs_audio_v2_tokenizer"`` with two nested configs: ``acoustic_model_config`` (a DAC:
SEANet-like conv encoder/decoder with Snake activations) and ``semantic_model_config`` (a HuBERT).
Missing keys take the values transformers 5.23 would use (its ``HiggsAudioV2TokenizerConfig`` defaults,
its sub-config defaults, then ``DacConfig`` / ``HubertConfig`` defaults).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tunesmith.errors import UserError

MODEL_TYPE = "higgs_audio_v2_tokenizer"

# transformers' HiggsAudioV2TokenizerConfig.sub_configs_defaults, then DacConfig / HubertConfig defaults.
_ACOUSTIC_DEFAULTS: dict[str, Any] = {
    "encoder_hidden_size": 64,
    "downsampling_ratios": [8, 5, 4, 2],
    "decoder_hidden_size": 1024,
    "upsampling_ratios": [8, 5, 4, 2],
    "hidden_size": 256,
}
_SEMANTIC_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "feat_extract_norm": "group",
    "feat_extract_activation": "gelu",
    "feat_proj_layer_norm": True,
    "conv_dim": [512] * 7,
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_bias": False,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "conv_pos_batch_norm": False,
    "do_stable_layer_norm": False,
}


@dataclass(frozen=True)
class AcousticConfig:
    """DAC shape: encoder width doubles per downsampling block; the decoder halves per upsampling block."""

    encoder_hidden_size: int
    downsampling_ratios: tuple[int, ...]
    decoder_hidden_size: int
    upsampling_ratios: tuple[int, ...]
    hidden_size: int


@dataclass(frozen=True)
class SemanticConfig:
    """HuBERT shape (post-norm "group" feature extractor variant, as hubert-base)."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str
    layer_norm_eps: float
    feat_extract_activation: str
    feat_proj_layer_norm: bool
    conv_dim: tuple[int, ...]
    conv_stride: tuple[int, ...]
    conv_kernel: tuple[int, ...]
    conv_bias: bool
    num_conv_pos_embeddings: int
    num_conv_pos_embedding_groups: int


@dataclass(frozen=True)
class HiggsTokenizerConfig:
    """The whole tokenizer. ``sample_rate`` Hz in/out; HuBERT runs at ``semantic_sample_rate`` Hz."""

    acoustic: AcousticConfig
    semantic: SemanticConfig
    sample_rate: int = 24000
    semantic_sample_rate: int = 16000
    downsample_factor: int = 320
    target_bandwidths: tuple[float, ...] = (0.5, 1, 1.5, 2, 4)
    kernel_size: int = 3
    channel_ratios: tuple[float, ...] = (1, 1)
    strides: tuple[int, ...] = (1, 1)
    block_dilations: tuple[int, ...] = (1, 1)
    unit_kernel_size: int = 3
    codebook_size: int = 1024
    codebook_dim: int = 64

    @property
    def hop_length(self) -> int:
        """24 kHz samples per code frame (product of the DAC downsampling ratios)."""
        return int(math.prod(self.acoustic.downsampling_ratios))

    @property
    def frame_rate(self) -> int:
        """Code frames per second (rounded up, as transformers does)."""
        return math.ceil(self.sample_rate / self.hop_length)

    @property
    def hidden_size(self) -> int:
        """Width of the fused (acoustic ++ semantic) embedding the RVQ quantizes."""
        return self.acoustic.hidden_size + self.semantic.hidden_size

    @property
    def semantic_stride(self) -> int:
        """Every how many HuBERT frames one is kept so both paths run at ``frame_rate``."""
        return int(self.hop_length / (self.sample_rate / self.semantic_sample_rate) / self.downsample_factor)

    @property
    def num_quantizers(self) -> int:
        """Codebooks at the highest bandwidth."""
        bits = math.ceil(math.log2(self.codebook_size))
        return int(1000 * self.target_bandwidths[-1] // (self.frame_rate * bits))

    def quantizers_for_bandwidth(self, kbps: float) -> int:
        """Codebooks used at ``kbps`` (one of ``target_bandwidths``)."""
        per_q = math.log2(self.codebook_size) * self.frame_rate / 1000
        return int(max(1, math.floor(kbps / per_q)))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config.json") -> HiggsTokenizerConfig:
        """Parse a transformers tokenizer ``config.json``; UserError for another model type or unsupported variant."""
        found = data.get("model_type")
        if found != MODEL_TYPE:
            raise UserError(
                f"{source}: model_type is {found!r}, expected {MODEL_TYPE!r} (a HiggsAudio v2 audio tokenizer)"
            )
        ac = {**_ACOUSTIC_DEFAULTS, **(data.get("acoustic_model_config") or {})}
        se = {**_SEMANTIC_DEFAULTS, "mask_time_prob": 0.0, **(data.get("semantic_model_config") or {})}
        if ac.get("model_type", "dac") != "dac" or se.get("model_type", "hubert") != "hubert":
            raise UserError(
                f"{source}: acoustic/semantic models are {ac.get('model_type')!r}/{se.get('model_type')!r}; "
                "tunesmith runs the released layout dac/hubert"
            )
        if se["feat_extract_norm"] != "group" or se["do_stable_layer_norm"] or se["conv_pos_batch_norm"]:
            raise UserError(
                f"{source}: HuBERT variant feat_extract_norm={se['feat_extract_norm']!r}, "
                f"do_stable_layer_norm={se['do_stable_layer_norm']}, conv_pos_batch_norm={se['conv_pos_batch_norm']} "
                "is not supported (the released tokenizer uses hubert-base: group, False, False)"
            )
        acoustic = AcousticConfig(
            encoder_hidden_size=int(ac["encoder_hidden_size"]),
            downsampling_ratios=tuple(int(r) for r in ac["downsampling_ratios"]),
            decoder_hidden_size=int(ac["decoder_hidden_size"]),
            upsampling_ratios=tuple(int(r) for r in ac["upsampling_ratios"]),
            hidden_size=int(ac["hidden_size"]),
        )
        semantic = SemanticConfig(
            hidden_size=int(se["hidden_size"]),
            num_hidden_layers=int(se["num_hidden_layers"]),
            num_attention_heads=int(se["num_attention_heads"]),
            intermediate_size=int(se["intermediate_size"]),
            hidden_act=str(se["hidden_act"]),
            layer_norm_eps=float(se["layer_norm_eps"]),
            feat_extract_activation=str(se["feat_extract_activation"]),
            feat_proj_layer_norm=bool(se["feat_proj_layer_norm"]),
            conv_dim=tuple(int(c) for c in se["conv_dim"]),
            conv_stride=tuple(int(c) for c in se["conv_stride"]),
            conv_kernel=tuple(int(c) for c in se["conv_kernel"]),
            conv_bias=bool(se["conv_bias"]),
            num_conv_pos_embeddings=int(se["num_conv_pos_embeddings"]),
            num_conv_pos_embedding_groups=int(se["num_conv_pos_embedding_groups"]),
        )
        top = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k not in ("acoustic", "semantic")}
        for key in ("target_bandwidths", "channel_ratios", "strides", "block_dilations"):
            if key in top:
                top[key] = tuple(top[key])
        config = cls(acoustic=acoustic, semantic=semantic, **top)
        if config.codebook_dim is None:  # transformers: None means the fused width
            config = cls(**{**config.__dict__, "codebook_dim": config.hidden_size})
        if len(config.strides) != len(config.channel_ratios):
            raise UserError(f"{source}: strides and channel_ratios must have the same length")
        if config.num_quantizers < 1:
            raise UserError(f"{source}: target_bandwidths {list(config.target_bandwidths)} give no codebook")
        return config
