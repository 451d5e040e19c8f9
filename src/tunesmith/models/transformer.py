"""The one decoder transformer shared by the audio LM and the MIDI GPT.

Pre-norm blocks: ``x + SelfAttn(norm(x))``, optionally ``x + CrossAttn(norm(x), cross)``, then
``x + FFN(norm(x))``, and an optional final norm. Attention runs through
``torch.nn.functional.scaled_dot_product_attention``; the self-attention q/k/v projection is one
fused linear, the cross-attention k/v projection another. A :class:`KVCache` preallocates
``[B, H, max_len, Dh]`` buffers once per generation and also keeps the cross-attention K/V, which are
computed on the first cached call and reused afterwards.

With ``positional="sinusoidal"``, ``bias=False``, ``norm="layernorm"``, ``norm_bias=True``,
``activation="gelu"``, ``cross_attention=True`` this is exactly Hugging Face's ``MusicgenDecoder``
(and AudioCraft's LM transformer): the sinusoid layout is ``[cos(p·f_i), sin(p·f_i)]`` with
``f_i = max_period^(-i/(D/2-1))``, positions start at ``position_offset`` (0 for MusicGen).
Parameter names, for weight mapping (layer ``i``):

    layers.i.norm_self, layers.i.self_attn.qkv (weight [3D, D] = cat(q, k, v)), layers.i.self_attn.out
    layers.i.norm_cross, layers.i.cross_attn.q, layers.i.cross_attn.kv (weight [2D, Dc] = cat(k, v)),
    layers.i.cross_attn.out, layers.i.norm_ffn, layers.i.ffn.fc1, layers.i.ffn.fc2, norm (final)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tunesmith.config import ConfigError


@dataclass
class TransformerConfig:
    """Shape and flavour of a :class:`Transformer`."""

    dim: int = 256
    num_layers: int = 4
    num_heads: int = 4
    ffn_dim: int = 0  # 0 → 4 * dim (for swiglu: the hidden width of each of the two branches)
    dropout: float = 0.0  # residual, embedding and attention-probability dropout
    positional: Literal["sinusoidal", "rope", "none"] = "sinusoidal"  # "none": the caller adds its own
    max_seq_len: int = 4096  # length of the precomputed position tables (longer still works, computed on the fly)
    position_offset: int = 0  # position of the first token (MusicGen: 0)
    max_period: float = 10000.0  # sinusoid / RoPE base
    cross_attention: bool = False
    cross_dim: int = 0  # 0 → dim
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = 1e-5
    bias: bool = False  # biases of the linear layers
    norm_bias: bool = True  # bias of LayerNorm (ignored for rmsnorm)
    activation: Literal["gelu", "gelu_tanh", "relu", "swiglu"] = "gelu"
    final_norm: bool = True

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ConfigError(f"transformer dim={self.dim} is not divisible by num_heads={self.num_heads}")
        if self.positional == "rope" and (self.dim // self.num_heads) % 2:
            raise ConfigError(f"rope needs an even head dim; dim/num_heads = {self.dim // self.num_heads}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def hidden_dim(self) -> int:
        return self.ffn_dim or 4 * self.dim

    @property
    def kv_dim(self) -> int:
        return self.cross_dim or self.dim


def sinusoidal_embedding(positions: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """MusicGen/AudioCraft sinusoids: positions [T] (float or int) → [T, dim] = [cos(p·f), sin(p·f)]."""
    half = dim // 2
    freqs = torch.exp(
        torch.arange(half, dtype=torch.float32, device=positions.device) * (-math.log(max_period) / max(half - 1, 1))
    )
    phase = positions.to(torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(phase), torch.sin(phase)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def rope_tables(positions: Tensor, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """Rotary tables (rotate-half layout): positions [T] → cos, sin [T, head_dim]."""
    inv = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    phase = positions.to(torch.float32)[:, None] * inv[None, :]
    phase = torch.cat([phase, phase], dim=1)
    return torch.cos(phase), torch.sin(phase)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x [B, H, T, Dh] by tables [T, Dh]: pairs (i, i + Dh/2) rotate by the same angle."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class KVCache:
    """Preallocated self-attention keys/values [B, H, max_len, Dh] per layer, plus cross-attention K/V.

    ``length`` is the number of positions already written; the transformer advances it after each
    forward. Cross-attention K/V (and its mask) are filled on the first call that passes ``cross``.
    """

    def __init__(self, num_layers: int, batch: int, num_heads: int, head_dim: int, max_len: int, device, dtype) -> None:
        shape = (batch, num_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.cross: list[tuple[Tensor, Tensor] | None] = [None] * num_layers
        self.cross_mask: Tensor | None = None  # [B, 1, 1, S] bool, or None (attend everywhere)
        self.cross_gate: Tensor | None = None  # [B, 1, 1] 0/1: rows with nothing to attend to give 0
        self.max_len = max_len
        self.batch = batch
        self.length = 0

    def reset(self) -> None:
        self.length = 0
        self.cross = [None] * len(self.cross)
        self.cross_mask = self.cross_gate = None


def _cross_mask_and_gate(cross_mask: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
    """[B, S] bool (True = attend) → SDPA mask [B, 1, 1, S] and a [B, 1, 1] gate.

    A row with nothing to attend to would give NaN in softmax; it attends everywhere instead and its
    output is multiplied by the gate (0), i.e. "attend to nothing" = zero update.
    """
    if cross_mask is None:
        return None, None
    cross_mask = cross_mask.bool()
    has_any = cross_mask.any(dim=1)
    if bool(has_any.all()):
        return cross_mask[:, None, None, :], None
    safe = cross_mask | ~has_any[:, None]
    return safe[:, None, None, :], has_any[:, None, None]


class SelfAttention(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=cfg.bias)
        self.out = nn.Linear(cfg.dim, cfg.dim, bias=cfg.bias)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None, cache: KVCache | None, layer: int) -> Tensor:
        """x [B, T, D] → [B, T, D]; causal; with a cache, attends to the cached positions too."""
        b, t, _ = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, H, T, Dh]
        if rope is not None:
            q = apply_rope(q, *rope)
            k = apply_rope(k, *rope)
        dropout = self.dropout if self.training else 0.0
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            start, end = cache.length, cache.length + t
            if end > cache.max_len:
                raise ValueError(f"KV cache holds {cache.max_len} positions; asked to write up to {end}")
            cache.keys[layer][:, :, start:end] = k
            cache.values[layer][:, :, start:end] = v
            k_all = cache.keys[layer][:, :, :end].to(q.dtype)
            v_all = cache.values[layer][:, :, :end].to(q.dtype)
            if start == 0:
                y = F.scaled_dot_product_attention(q, k_all, v_all, dropout_p=dropout, is_causal=True)
            elif t == 1:
                y = F.scaled_dot_product_attention(q, k_all, v_all, dropout_p=dropout)
            else:  # query i sits at position start + i and sees keys 0..start + i
                mask = torch.ones(t, end, dtype=torch.bool, device=x.device).tril(diagonal=start)
                y = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask, dropout_p=dropout)
        return self.out(y.transpose(1, 2).reshape(b, t, -1))


class CrossAttention(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.dropout = cfg.dropout
        self.q = nn.Linear(cfg.dim, cfg.dim, bias=cfg.bias)
        self.kv = nn.Linear(cfg.kv_dim, 2 * cfg.dim, bias=cfg.bias)
        self.out = nn.Linear(cfg.dim, cfg.dim, bias=cfg.bias)

    def project_kv(self, cross: Tensor) -> tuple[Tensor, Tensor]:
        """cross [B, S, Dc] → k, v [B, H, S, Dh]."""
        b, s, _ = cross.shape
        kv = self.kv(cross).view(b, s, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return kv[0], kv[1]

    def forward(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, gate: Tensor | None) -> Tensor:
        """x [B, T, D], k/v [B, H, S, Dh], mask [B, 1, 1, S] bool, gate [B, 1, 1] → [B, T, D]."""
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask, dropout_p=dropout)
        y = self.out(y.transpose(1, 2).reshape(b, t, -1))
        return y if gate is None else y * gate.to(y.dtype)


class FeedForward(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.activation = cfg.activation
        hidden = cfg.hidden_dim
        self.fc1 = nn.Linear(cfg.dim, 2 * hidden if cfg.activation == "swiglu" else hidden, bias=cfg.bias)
        self.fc2 = nn.Linear(hidden, cfg.dim, bias=cfg.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x)
        if self.activation == "gelu":
            h = F.gelu(h)
        elif self.activation == "gelu_tanh":
            h = F.gelu(h, approximate="tanh")
        elif self.activation == "relu":
            h = F.relu(h)
        else:  # swiglu: silu(gate) * up, gate = first half of fc1's output
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        return self.fc2(h)


def make_norm(cfg: TransformerConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.dim, eps=cfg.norm_eps, bias=cfg.norm_bias)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.norm_self = make_norm(cfg)
        self.self_attn = SelfAttention(cfg)
        if cfg.cross_attention:
            self.norm_cross = make_norm(cfg)
            self.cross_attn = CrossAttention(cfg)
        self.norm_ffn = make_norm(cfg)
        self.ffn = FeedForward(cfg)
        self.p = cfg.dropout

    def _drop(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, True) if self.p > 0 and self.training else x

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor] | None,
        cross_kv: tuple[Tensor, Tensor] | None,
        cross_mask: Tensor | None,
        cross_gate: Tensor | None,
        cache: KVCache | None,
        layer: int,
    ) -> Tensor:
        x = x + self._drop(self.self_attn(self.norm_self(x), rope, cache, layer))
        if cross_kv is not None:
            x = x + self._drop(self.cross_attn(self.norm_cross(x), *cross_kv, cross_mask, cross_gate))
        return x + self._drop(self.ffn(self.norm_ffn(x)))


class Transformer(nn.Module):
    """Pre-norm causal decoder: x [B, T, D] (already embedded) → hidden states [B, T, D]."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList([Block(cfg) for _ in range(cfg.num_layers)])
        self.norm = make_norm(cfg) if cfg.final_norm else nn.Identity()
        positions = torch.arange(cfg.max_seq_len) + cfg.position_offset
        if cfg.positional == "sinusoidal":
            self.register_buffer(
                "sin_table", sinusoidal_embedding(positions, cfg.dim, cfg.max_period), persistent=False
            )
        elif cfg.positional == "rope":
            cos, sin = rope_tables(positions, cfg.head_dim, cfg.max_period)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        """Normal(0, std) linears, output projections scaled by 1/sqrt(2·layers); norms to 1/0."""
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                scale = 1.0 / math.sqrt(2 * self.cfg.num_layers) if name.endswith((".out", ".fc2")) else 1.0
                nn.init.normal_(module.weight, std=std * scale)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
                module.reset_parameters()

    def make_cache(self, batch: int, max_len: int, device=None, dtype=None) -> KVCache:
        """A cache for ``batch`` sequences of up to ``max_len`` positions (dtype/device of the weights by default)."""
        param = next(self.parameters())
        return KVCache(
            self.cfg.num_layers,
            batch,
            self.cfg.num_heads,
            self.cfg.head_dim,
            max_len,
            device or param.device,
            dtype or param.dtype,
        )

    def _positions(self, start: int, t: int, device) -> Tensor:
        return torch.arange(start, start + t, device=device) + self.cfg.position_offset

    def forward(
        self,
        x: Tensor,
        *,
        cross: Tensor | None = None,
        cross_mask: Tensor | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        """x [B, T, D]; cross [B, S, Dc] with cross_mask [B, S] bool (True = attend) → [B, T, D].

        With a cache, x holds the next T positions (positions continue from ``cache.length``); the
        cross K/V are taken from the cache once filled, so later calls may pass ``cross=None``.
        """
        cfg = self.cfg
        b, t, _ = x.shape
        start = cache.length if cache is not None else 0
        end = start + t
        rope = None
        if cfg.positional == "sinusoidal":
            if end <= cfg.max_seq_len:
                pos = self.sin_table[start:end]
            else:
                pos = sinusoidal_embedding(self._positions(start, t, x.device), cfg.dim, cfg.max_period)
            x = x + pos.to(x.dtype)
        elif cfg.positional == "rope":
            if end <= cfg.max_seq_len:
                rope = (self.rope_cos[start:end], self.rope_sin[start:end])
            else:
                rope = rope_tables(self._positions(start, t, x.device), cfg.head_dim, cfg.max_period)
        if cfg.dropout > 0 and self.training:
            x = F.dropout(x, cfg.dropout, True)

        use_cross = cfg.cross_attention and (cross is not None or (cache is not None and cache.cross[0] is not None))
        if cross is not None and not cfg.cross_attention:
            raise ValueError("cross states given to a transformer built with cross_attention=False")
        if use_cross:
            if cache is not None and cache.cross[0] is not None:
                mask, gate = cache.cross_mask, cache.cross_gate
            else:
                mask, gate = _cross_mask_and_gate(cross_mask)
                if cache is not None:
                    cache.cross_mask, cache.cross_gate = mask, gate
        for i, layer in enumerate(self.layers):
            cross_kv = None
            if use_cross:
                if cache is not None and cache.cross[i] is not None:
                    cross_kv = cache.cross[i]
                else:
                    cross_kv = layer.cross_attn.project_kv(cross)
                    if cache is not None:
                        cache.cross[i] = cross_kv
            x = layer(x, rope, cross_kv, mask if use_cross else None, gate if use_cross else None, cache, i)
        if cache is not None:
            cache.length = end
        return self.norm(x)
