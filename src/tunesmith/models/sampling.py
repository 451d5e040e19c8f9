"""Next-token sampling shared by audio and MIDI generation: temperature, top-k, top-p (nucleus).

All functions take logits ``[..., V]`` and draw with an explicit ``torch.Generator`` so that the
same seed gives the same tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    """Raise ValueError naming the parameter when a sampling setting is out of range."""
    if not temperature >= 0:
        raise ValueError(f"temperature={temperature}: must be >= 0 (0 = greedy)")
    if top_k < 0:
        raise ValueError(f"top_k={top_k}: must be >= 0 (0 = off)")
    if not 0.0 <= top_p <= 1.0:
        raise ValueError(f"top_p={top_p}: must be in [0, 1] (0 = off)")


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 0.0) -> Tensor:
    """Set logits outside the top-k / nucleus to -inf. logits [..., V] → [..., V] (float)."""
    logits = logits.float()
    vocab = logits.shape[-1]
    if 0 < top_k < vocab:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens ranked above it already cover top_p (the first token always stays)
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw one token per row: logits [..., V] → Long[...]. temperature 0 (or top_k 1) is greedy."""
    if temperature == 0 or top_k == 1:
        return logits.argmax(dim=-1)
    shape = logits.shape[:-1]
    flat = logits.reshape(-1, logits.shape[-1]).float() / temperature
    if 0 < top_k < flat.shape[-1] and top_p == 0.0:
        # sample among the k best only: cheaper than a softmax over the whole vocabulary
        values, indices = torch.topk(flat, top_k, dim=-1)
        choice = torch.multinomial(torch.softmax(values, dim=-1), 1, generator=generator)
        return indices.gather(-1, choice).view(shape)
    probs = torch.softmax(filter_logits(flat, top_k, top_p), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).view(shape)
