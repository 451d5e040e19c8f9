"""Codebook interleaving patterns: codes [B, K, F] ⇄ one token sequence per codebook [B, K, S].

A pattern is a delay per codebook: codebook k's frame f sits at step ``f + delays[k]``. ``delay``
(MusicGen's default) uses delays 0, 1, ..., K-1 so codebook k is predicted after codebook k-1 of the
same frame; ``parallel`` uses 0 for all. With ``channels=2`` (stereo MusicGen) the K codebooks interleave
the channels (even = left, odd = right, K/2 per channel) and both codebooks of a level share its delay:
0, 0, 1, 1, ..., K/2-1, K/2-1 (transformers' ``build_delay_pattern_mask`` with ``audio_channels=2``).
Steps with no code of a codebook hold the special token (``card``). The model input is the sequence shifted
right by one step behind a column of special tokens (the start), so the logits at step s predict the sequence at
step s.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

PatternKind = Literal["delay", "parallel"]


class Pattern:
    """A delay pattern over ``num_codebooks`` codebooks."""

    def __init__(self, kind: PatternKind, num_codebooks: int, channels: int = 1) -> None:
        if channels < 1 or num_codebooks % channels:
            raise ValueError(f"{num_codebooks} codebooks cannot be interleaved over {channels} channels")
        if kind == "delay":
            self.delays = [k // channels for k in range(num_codebooks)]
        elif kind == "parallel":
            self.delays = [0] * num_codebooks
        else:
            raise ValueError(f"pattern {kind!r}: expected 'delay' or 'parallel'")
        self.kind = kind
        self.num_codebooks = num_codebooks
        self.channels = channels
        self.max_delay = max(self.delays)

    def num_steps(self, num_frames: int) -> int:
        """Sequence length S for F frames: F + max delay."""
        return num_frames + self.max_delay

    def num_frames(self, num_steps: int) -> int:
        return num_steps - self.max_delay

    def valid_mask(self, num_frames: int, device=None) -> Tensor:
        """Bool [K, S]: True where step s holds a real code of codebook k."""
        steps = torch.arange(self.num_steps(num_frames), device=device)
        delays = torch.tensor(self.delays, device=device)[:, None]
        return (steps[None, :] >= delays) & (steps[None, :] < delays + num_frames)

    def build(self, codes: Tensor, special: int) -> Tensor:
        """codes [B, K, F] → sequence [B, K, F + max_delay] with ``special`` at pattern padding."""
        b, k, f = codes.shape
        if k != self.num_codebooks:
            raise ValueError(f"codes have {k} codebooks; the pattern was built for {self.num_codebooks}")
        seq = codes.new_full((b, k, self.num_steps(f)), special)
        for i, d in enumerate(self.delays):
            seq[:, i, d : d + f] = codes[:, i]
        return seq

    def revert(self, seq: Tensor) -> Tensor:
        """sequence [B, K, S, ...] → codes [B, K, S - max_delay, ...] (exact inverse of :meth:`build`).

        Works for token sequences and for per-step logits alike (trailing dims are kept).
        """
        f = self.num_frames(seq.shape[2])
        if f < 0:
            raise ValueError(f"a sequence of {seq.shape[2]} steps is shorter than the pattern's delay {self.max_delay}")
        return torch.stack([seq[:, i, d : d + f] for i, d in enumerate(self.delays)], dim=1)

    @staticmethod
    def model_input(seq: Tensor, special: int) -> Tensor:
        """Shift right by one step behind a start column: seq [B, K, S] → input [B, K, S]."""
        start = seq.new_full((*seq.shape[:2], 1), special)
        return torch.cat([start, seq[:, :, :-1]], dim=2)
