"""``xformers.ops`` subset for AudioCraft's torch attention backend (see the package docstring)."""

from __future__ import annotations

import torch


def unbind(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, ...]:
    """Split ``x`` along ``dim`` into views (xformers' version only differs in how backward allocates)."""
    return torch.unbind(x, dim=dim)


class LowerTriangularMask:
    """Causal-attention marker: AudioCraft passes ``is_causal=mask is not None`` to torch SDPA."""


def memory_efficient_attention(*args: object, **kwargs: object) -> torch.Tensor:
    """Not available: only AudioCraft's xformers backend calls it."""
    raise RuntimeError(
        "xformers.ops.memory_efficient_attention is not provided by the tunesmith peer stub "
        "(benchmarks/peers/stubs/xformers); keep AudioCraft's efficient_attention_backend='torch'"
    )
