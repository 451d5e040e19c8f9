"""Helpers for the MIDI decoding tests (no tests here): a stand-in for a MidiGPT whose logits are seeded random
draws (so every token type is likely anywhere: what comes out well formed is the decoder's doing), and an
independent validator of note groups written from the token names."""

from __future__ import annotations

import torch
from torch import nn


class RandomLogits(nn.Module):
    """Stands in for a MidiGPT: ``forward`` returns ``randn([B, T, vocab]) × scale`` from its own seeded
    generator, and counts the tokens it was given in the cache it is passed."""

    class Cache:
        def __init__(self) -> None:
            self.length = 0

        def reset(self) -> None:
            self.length = 0

    def __init__(self, vocab: int, seed: int, max_seq_len: int = 64, scale: float = 4.0) -> None:
        super().__init__()
        self.cfg = type("Cfg", (), {"max_seq_len": max_seq_len})()
        self.weight = nn.Parameter(torch.zeros(1))
        self.vocab, self.scale = vocab, scale
        self.gen = torch.Generator().manual_seed(seed)

    def make_cache(self, batch: int, max_len: int | None = None) -> RandomLogits.Cache:
        return self.Cache()

    def forward(self, tokens: torch.Tensor, cache: RandomLogits.Cache | None = None) -> torch.Tensor:
        if cache is not None:
            cache.length += tokens.shape[1]
        return torch.randn(tokens.shape[0], tokens.shape[1], self.vocab, generator=self.gen) * self.scale


def well_formed(names: list[str]) -> tuple[bool, str]:
    """Independent check on base token names (a generated sequence, in order): every Pitch is followed by
    exactly one Velocity then one Duration; no Velocity or Duration elsewhere; no drum pitch or special inside;
    a time signature only right after a bar; nothing after EOS. (ok, the first problem)."""
    kinds = [n.split("_", 1)[0] for n in names]
    i = 0
    while i < len(kinds):
        k = kinds[i]
        if k in ("PitchDrum", "PAD", "BOS", "SEP", "Task", "Reserved"):
            return False, f"{names[i]} at {i}"
        if k == "TimeSig" and (i == 0 or kinds[i - 1] != "Bar"):
            return False, f"time signature not after a bar at {i}"
        if k == "Pitch":
            if kinds[i + 1 : i + 3] != ["Velocity", "Duration"]:
                return False, f"group at {i}: {kinds[i : i + 3]}"
            i += 3
            continue
        if k in ("Velocity", "Duration"):
            return False, f"stray {k} at {i}"
        if k == "EOS" and i != len(kinds) - 1:
            return False, f"tokens after EOS at {i}"
        i += 1
    return True, ""
