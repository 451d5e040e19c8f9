"""MusicGen-style LM over codec tokens: K summed codebook embeddings → transformer → K heads.

Shapes: codes are ``[B, K, T]`` (K codebooks, T pattern steps), values in ``[0, card]`` where
``card`` (the codebook size) is the special token used for pattern padding and the start step.
Logits are ``[B, K, T, card]``; logits at step t predict the pattern sequence at step t given
the model input up to t (see :mod:`tunesmith.models.lm.patterns`).

Parameter layout (for weight mapping): ``embed.weight`` is ``[K * (card + 1), D]``, codebook k's
table being rows ``k*(card+1) : (k+1)*(card+1)``; ``heads`` is ``[K, card, D]`` (no bias);
``transformer.*`` as in :mod:`tunesmith.models.transformer`; ``conditioner.*`` as in
:mod:`tunesmith.models.lm.conditioners` (T5's own weights excluded).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from tunesmith.models.lm.conditioners import (
    Conditioner,
    ConditionerConfig,
    ConditionTensors,
    vocabularies_from_state,
)
from tunesmith.models.lm.loss import IGNORE, heads_cross_entropy
from tunesmith.models.lm.patterns import Pattern
from tunesmith.models.transformer import KVCache, Transformer, TransformerConfig


@dataclass
class LMConfig:
    """The LM's shape. ``card``/``num_codebooks`` 0 = taken from the codec at training time."""

    card: int = 0  # codebook size (the codec's bins)
    num_codebooks: int = 0  # codebooks modelled (the codec's n_q at the chosen bandwidth)
    pattern: Literal["delay", "parallel"] = "delay"
    channels: int = 1  # audio channels interleaved in the codebooks (2: stereo, even = left, odd = right)
    transformer: TransformerConfig = dataclasses.field(
        default_factory=lambda: TransformerConfig(dim=256, num_layers=4, num_heads=4, positional="sinusoidal")
    )
    conditioner: ConditionerConfig = dataclasses.field(default_factory=ConditionerConfig)
    init_std: float = 0.02


class LMModel(nn.Module):
    """forward(codes Long[B, K, T], conditions) → logits [B, K, T, card]."""

    def __init__(self, cfg: LMConfig, vocabs: dict[str, Any] | None = None) -> None:
        super().__init__()
        if cfg.card <= 0 or cfg.num_codebooks <= 0:
            raise ValueError(f"LMConfig needs card and num_codebooks set (got {cfg.card}, {cfg.num_codebooks})")
        self.cfg = cfg
        self.card = cfg.card
        self.num_codebooks = cfg.num_codebooks
        self.special = cfg.card
        self.pattern = Pattern(cfg.pattern, cfg.num_codebooks, cfg.channels)
        cond = cfg.conditioner
        self.fuse = cond.fuse if cond.enabled else "none"
        tcfg = dataclasses.replace(cfg.transformer, cross_attention=self.fuse == "cross", cross_dim=0)
        dim = tcfg.dim
        self.embed = nn.Embedding(cfg.num_codebooks * (cfg.card + 1), dim)
        self.transformer = Transformer(tcfg)
        self.heads = nn.Parameter(torch.empty(cfg.num_codebooks, cfg.card, dim))
        self.conditioner = Conditioner(cond, dim, vocabs or {}) if cond.enabled else None
        self.register_buffer("offsets", torch.arange(cfg.num_codebooks) * (cfg.card + 1), persistent=False)
        nn.init.normal_(self.embed.weight, std=cfg.init_std)
        nn.init.normal_(self.heads, std=cfg.init_std)
        self.transformer.reset_parameters(cfg.init_std)

    # ------------------------------------------------------------------ conditions

    def prepare_conditions(self, conditions: list[dict] | None, batch: int | None = None) -> ConditionTensors | None:
        """Condition dicts (``{}`` = null, for CFG) → tensors; None when the model is unconditional."""
        if self.conditioner is None:
            return None
        if conditions is None:
            conditions = [{}] * (batch or 1)
        return self.conditioner(conditions, fixed_length=self.fuse == "prefix")

    # ------------------------------------------------------------------ forward

    def embed_codes(self, codes: Tensor) -> Tensor:
        """codes Long[B, K, T] → summed embeddings [B, T, D]."""
        if codes.shape[1] != self.num_codebooks:
            raise ValueError(f"codes have {codes.shape[1]} codebooks; the model has {self.num_codebooks}")
        return self.embed(codes.transpose(1, 2) + self.offsets).sum(dim=2)

    def hidden(
        self, codes: Tensor, conditions: ConditionTensors | list[dict] | None = None, cache: KVCache | None = None
    ) -> Tensor:
        """codes Long[B, K, T] → final hidden states [B, T, D] (prefix positions removed)."""
        if isinstance(conditions, list):
            conditions = self.prepare_conditions(conditions)
        x = self.embed_codes(codes)
        if self.fuse == "prefix" and conditions is not None:
            prefix = conditions.embeddings.to(x.dtype)
            h = self.transformer(torch.cat([prefix, x], dim=1), cache=cache)
            return h[:, prefix.shape[1] :]
        if self.fuse == "cross" and conditions is not None:
            return self.transformer(x, cross=conditions.embeddings, cross_mask=conditions.mask, cache=cache)
        return self.transformer(x, cache=cache)

    def project(self, h: Tensor) -> Tensor:
        """hidden [B, T, D] → logits [B, T, K, card] (one matmul for all heads)."""
        b, t, d = h.shape
        return (h.reshape(b * t, d) @ self.heads.view(-1, d).t()).view(b, t, self.num_codebooks, self.card)

    def forward(
        self,
        codes: Tensor,
        conditions: ConditionTensors | list[dict] | None = None,
        cache: KVCache | None = None,
        *,
        return_loss: bool = False,
        lengths: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """codes Long[B, K, T] (pattern-applied model input) → logits [B, K, T, card].

        With ``return_loss=True`` (the training path, so that DDP sees a forward call), ``codes`` are
        codec frames Long[B, K, F] and the result is :meth:`loss`'s.
        """
        if return_loss:
            return self.loss(codes, conditions, lengths)
        return self.project(self.hidden(codes, conditions, cache)).permute(0, 2, 1, 3)

    # ------------------------------------------------------------------ training

    def loss(
        self,
        frames: Tensor,
        conditions: ConditionTensors | list[dict] | None = None,
        lengths: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Cross-entropy on codec frames Long[B, K, F] through the pattern.

        ``lengths`` Long[B]: real frames per item (the rest is padding, masked like pattern padding).
        Returns (loss_sum over all real codes, ce_sum per codebook [K] (detached), count per codebook
        [K]). Divide ``loss_sum`` by ``count.sum()`` for the mean CE in nats.
        """
        b, k, f = frames.shape
        if lengths is not None:  # padding frames become the special token: no garbage ids in the input
            frames = frames.masked_fill(torch.arange(f, device=frames.device) >= lengths[:, None, None], self.special)
        seq = self.pattern.build(frames, self.special)  # [B, K, S]
        inputs = self.pattern.model_input(seq, self.special)
        h = self.hidden(inputs, conditions)  # [B, S, D]
        valid = self.pattern.valid_mask(f, frames.device).expand(b, -1, -1)  # [B, K, S]
        if lengths is not None:
            delays = torch.tensor(self.pattern.delays, device=frames.device)
            steps = torch.arange(seq.shape[2], device=frames.device)
            valid = valid & (steps[None, None, :] < delays[None, :, None] + lengths[:, None, None])
        targets = seq.masked_fill(~valid, IGNORE).transpose(1, 2)  # [B, S, K]
        loss_sum, per_codebook = heads_cross_entropy(h.reshape(-1, h.shape[-1]), self.heads, targets.reshape(-1, k))
        counts = valid.sum(dim=(0, 2)).to(per_codebook.dtype)
        return loss_sum, per_codebook.detach(), counts

    def flops_per_token(self, seq_len: int, cond_len: int = 0) -> float:
        """Training FLOPs (forward + backward ≈ 3 × forward) per pattern step, matmuls only."""
        t = self.transformer.cfg
        d, f = t.dim, t.hidden_dim * (2 if t.activation == "swiglu" else 1)
        per_layer = 2 * (3 * d * d + d * d) + 2 * 2 * seq_len / 2 * d  # qkv + out, causal attention (average)
        per_layer += 2 * (d * f + t.hidden_dim * d)  # ffn
        if self.fuse == "cross":
            per_layer += 2 * 2 * d * d + 2 * 2 * cond_len * d  # q + out, attention over the condition
        return 3 * (t.num_layers * per_layer + 2 * d * self.num_codebooks * self.card)


def build_lm(cfg: LMConfig, state: dict[str, Tensor] | None = None, vocabs: dict[str, Any] | None = None) -> LMModel:
    """An LM from its config and, when given, its saved weights (vocabularies are read from them).

    ``card``/``num_codebooks`` left at 0 in the config are taken from the weights' ``heads`` shape.
    Weights of a LoRA run (``finetune.mode=lora``) are merged into plain weights first.
    """
    if state is not None:
        from tunesmith.models.lm.lora import has_lora, merge_lora_state

        if has_lora(state):
            state = merge_lora_state(state)
        if "heads" not in state:
            raise ValueError("these weights are not an LM's (no 'heads' tensor)")
        k, card, _ = state["heads"].shape
        cfg = dataclasses.replace(cfg, num_codebooks=cfg.num_codebooks or k, card=cfg.card or card)
        if (cfg.num_codebooks, cfg.card) != (k, card):
            raise ValueError(
                f"config says {cfg.num_codebooks} codebooks × {cfg.card} bins, the weights have {k} × {card}"
            )
        if cfg.conditioner.enabled and vocabs is None:
            vocabs = vocabularies_from_state(state, cfg.conditioner, "conditioner.")
    model = LMModel(cfg, vocabs)
    if state is not None:
        model.load_state_dict(state)
    return model
