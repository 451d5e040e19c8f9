"""The MIDI GPT: token embedding (+ learned positions) → the shared :class:`Transformer` → LM head.

GPT-2 layout by default (learned absolute positions, LayerNorm, GELU, biases, tied input/output
embeddings); the positional scheme can instead be the transformer's sinusoids or RoPE.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import Tensor, nn

from tunesmith.models.transformer import KVCache, Transformer, TransformerConfig


@dataclasses.dataclass
class MidiGPTConfig:
    """The ``model:`` section of a midi config (the vocabulary size comes from the tokenizer)."""

    dim: int = 256
    num_layers: int = 4
    num_heads: int = 4
    ffn_dim: int = 0  # 0 → 4 * dim
    dropout: float = 0.0
    positional: Literal["learned", "sinusoidal", "rope"] = "learned"
    max_seq_len: int = 1024  # longest sequence (context) the model accepts
    bias: bool = True
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    activation: Literal["gelu", "gelu_tanh", "relu", "swiglu"] = "gelu"
    tie_embeddings: bool = True


class MidiGPT(nn.Module):
    """tokens ``[B, T]`` (int64) → logits ``[B, T, vocab_size]``; ``hidden`` + ``head`` separately for
    losses that need the logits of a few positions only."""

    def __init__(self, cfg: MidiGPTConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, cfg.dim)
        self.pos_embed = nn.Embedding(cfg.max_seq_len, cfg.dim) if cfg.positional == "learned" else None
        self.transformer = Transformer(
            TransformerConfig(
                dim=cfg.dim,
                num_layers=cfg.num_layers,
                num_heads=cfg.num_heads,
                ffn_dim=cfg.ffn_dim,
                dropout=cfg.dropout,
                positional="none" if cfg.positional == "learned" else cfg.positional,
                max_seq_len=cfg.max_seq_len,
                norm=cfg.norm,
                bias=cfg.bias,
                norm_bias=cfg.bias,
                activation=cfg.activation,
                final_norm=True,
            )
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.dim, vocab_size, bias=False)
        nn.init.normal_(self.embed.weight, std=0.02)
        if self.pos_embed is not None:
            nn.init.normal_(self.pos_embed.weight, std=0.02)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        else:
            nn.init.normal_(self.head.weight, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count. ``non_embedding`` leaves out the lookup tables (positions, and the token
        table when it is not shared with the head): what the FLOPs estimate counts."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            if not self.cfg.tie_embeddings:
                n -= self.embed.weight.numel()
            if self.pos_embed is not None:
                n -= self.pos_embed.weight.numel()
        return n

    def hidden(self, tokens: Tensor, cache: KVCache | None = None) -> Tensor:
        """tokens ``[B, T]`` → final hidden states ``[B, T, D]`` (positions continue a cache)."""
        b, t = tokens.shape
        start = cache.length if cache is not None else 0
        if start + t > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {start + t} tokens is longer than model.max_seq_len={self.cfg.max_seq_len}")
        x = self.embed(tokens)
        if self.pos_embed is not None:
            x = x + self.pos_embed(torch.arange(start, start + t, device=tokens.device))
        return self.transformer(self.drop(x), cache=cache)

    def forward(self, tokens: Tensor, cache: KVCache | None = None, select: Tensor | None = None) -> Tensor:
        """tokens ``[B, T]`` → logits ``[B, T, V]``; with ``select`` (Bool ``[B, T]``) only the selected
        positions' logits, ``[M, V]`` in row-major order (the LM head runs on those alone)."""
        hidden = self.hidden(tokens, cache)
        if select is not None:
            hidden = hidden[select]
        return self.head(hidden)

    def make_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        return self.transformer.make_cache(batch, max_len or self.cfg.max_seq_len)

    def flops_per_token(self, context: int) -> float:
        """Training FLOPs per token at ``context`` tokens: 6·N (matmuls, forward + backward, the LM head
        included) + 12·L·D·T (attention scores and values), as in the PaLM paper's appendix B."""
        return 6.0 * self.num_params(non_embedding=True) + 12.0 * self.cfg.num_layers * self.cfg.dim * context
