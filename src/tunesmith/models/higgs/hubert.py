"""The semantic half of the HiggsAudio v2 tokenizer's input: a HuBERT (hubert-base layout), inference only.

Parameter names follow transformers' ``HubertModel`` (``feature_extractor.conv_layers.*``,
``feature_projection.*``, ``encoder.*``) so its weights load by name. Only the variant the released
tokenizer uses is built: group-norm feature extractor, post-norm encoder layers, weight-normed
positional conv (the loader folds ``g·v/‖v‖`` into a plain weight). No masking, no dropout.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from tunesmith.errors import UserError
from tunesmith.models.higgs.tokenizer_config import SemanticConfig

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


def activation(name: str) -> Callable[[Tensor], Tensor]:
    """The activation function transformers names ``name``; UserError for one tunesmith does not run."""
    if name not in _ACTIVATIONS:
        raise UserError(f"HuBERT activation {name!r} is not supported (supported: {sorted(_ACTIVATIONS)})")
    return _ACTIVATIONS[name]


class ConvLayer(nn.Module):
    """One feature-extractor conv (+ per-channel GroupNorm on the first), then the activation."""

    def __init__(self, config: SemanticConfig, index: int) -> None:
        super().__init__()
        cin = config.conv_dim[index - 1] if index > 0 else 1
        cout = config.conv_dim[index]
        self.conv = nn.Conv1d(
            cin, cout, config.conv_kernel[index], stride=config.conv_stride[index], bias=config.conv_bias
        )
        self.layer_norm = nn.GroupNorm(cout, cout, affine=True) if index == 0 else None
        self.act = activation(config.feat_extract_activation)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.act(x)


class FeatureExtractor(nn.Module):
    """16 kHz waveform ``[B, T]`` → conv features ``[B, conv_dim[-1], F]`` (stride = product of conv strides)."""

    def __init__(self, config: SemanticConfig) -> None:
        super().__init__()
        self.conv_layers = nn.ModuleList(ConvLayer(config, i) for i in range(len(config.conv_dim)))

    def forward(self, wav: Tensor) -> Tensor:
        x = wav[:, None]
        for layer in self.conv_layers:
            x = layer(x)
        return x


class FeatureProjection(nn.Module):
    """LayerNorm (optional) + Linear ``conv_dim[-1] → hidden_size``."""

    def __init__(self, config: SemanticConfig) -> None:
        super().__init__()
        dim = config.conv_dim[-1]
        self.layer_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps) if config.feat_proj_layer_norm else None
        self.projection = nn.Linear(dim, config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.projection(x)


class PositionalConv(nn.Module):
    """Grouped conv over time (same length; the extra frame of an even kernel dropped), then the activation."""

    def __init__(self, config: SemanticConfig) -> None:
        super().__init__()
        k = config.num_conv_pos_embeddings
        self.conv = nn.Conv1d(
            config.hidden_size, config.hidden_size, k, padding=k // 2, groups=config.num_conv_pos_embedding_groups
        )
        self.trim = 1 if k % 2 == 0 else 0
        self.act = activation(config.feat_extract_activation)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x.transpose(1, 2))
        if self.trim:
            y = y[:, :, : -self.trim]
        return self.act(y).transpose(1, 2)


class Attention(nn.Module):
    """Bidirectional multi-head self-attention with biased q/k/v/out projections."""

    def __init__(self, config: SemanticConfig) -> None:
        super().__init__()
        dim, self.heads = config.hidden_size, config.num_attention_heads
        if dim % self.heads:
            raise UserError(f"HuBERT hidden_size {dim} is not divisible by num_attention_heads {self.heads}")
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape

        def heads(y: Tensor) -> Tensor:
            return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)))
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class FeedForward(nn.Module):
    """Linear → activation → Linear."""

    def __init__(self, config: SemanticConfig) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.output_dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = activation(config.hidden_act)

    def forward(self, x: Tensor) -> Tensor:
        return self.output_dense(self.act(self.intermediate_dense(x)))


class EncoderLayer(nn.Module):
    """Post-norm transformer layer: ``LN(x + attn(x))`` then ``LN(h + ffn(h))``."""

    def __init__(self, config: SemanticConfig) -> None:
        super().__init__()
        self.attention = Attention(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = FeedForward(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        h = self.layer_norm(x + self.attention(x))
        return self.final_layer_norm(h + self.feed_forward(h))


class Encoder(nn.Module):
    """Positional conv + LayerNorm, then the layers; returns every layer's input and the last output."""

    def __init__(self, config: SemanticConfig) -> None:
        super().__init__()
        self.pos_conv_embed = PositionalConv(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.layer_norm(x + self.pos_conv_embed(x))
        states = [x]
        for layer in self.layers:
            x = layer(x)
            states.append(x)
        return states


class Hubert(nn.Module):
    """16 kHz waveform ``[B, T]`` → hidden states, ``num_hidden_layers + 1`` tensors ``[B, F, hidden_size]``.

    The list is what transformers returns as ``hidden_states`` (the first layer's input, then each
    layer's output), F ≈ T / 320 at the released strides.
    """

    def __init__(self, config: SemanticConfig) -> None:
        super().__init__()
        self.feature_extractor = FeatureExtractor(config)
        self.feature_projection = FeatureProjection(config)
        self.encoder = Encoder(config)

    def forward(self, wav: Tensor) -> list[Tensor]:
        features = self.feature_extractor(wav).transpose(1, 2)
        return self.encoder(self.feature_projection(features))
