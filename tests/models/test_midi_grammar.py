"""Grammar-constrained decoding: over random logits (many seeds, both tokenizers, sampled and greedy),
every generated note group is well formed, checked by an independent validator written from the token
names, and the decoder reports 0 repairs; without the grammar the same logits produce malformed groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tunesmith.models.midi.generation import SamplingConfig, continue_notes, generate_tokens
from tunesmith.models.midi.synthetic import synth_piece
from tunesmith.models.midi.tokenizer import MidiTokenizerConfig, build_tokenizer

SEEDS = range(40)


class RandomLogits(nn.Module):
    """Stands in for a MidiGPT: logits are random draws (seeded), so every token type is likely anywhere."""

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


def well_formed(names: list[str], tokens: list[int]) -> tuple[bool, str]:
    """Independent check: every Pitch is followed by exactly one Velocity then one Duration; no Velocity or
    Duration elsewhere; no drum pitch; a time signature only right after a bar; nothing follows EOS."""
    kinds = [names[t].split("_", 1)[0] for t in tokens]
    i = 0
    while i < len(kinds):
        k = kinds[i]
        if k in ("PitchDrum", "PAD", "BOS", "SEP", "Task", "Reserved"):
            return False, f"{names[tokens[i]]} at {i}"
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


@pytest.mark.parametrize("kind", ["seconds", "remi"])
def test_constrained_decoding_never_emits_an_invalid_group(kind) -> None:
    tok = build_tokenizer(MidiTokenizerConfig(kind=kind, pedal_tokens=kind == "seconds"))
    prompt_notes = synth_piece("chopin", 2.0, seed=1).take(slice(0, 5))
    prompts = [np.asarray([tok.bos_id]), np.concatenate([[tok.bos_id], tok.encode(prompt_notes)])]
    for seed in SEEDS:
        model = RandomLogits(tok.vocab_size, seed, max_seq_len=48 if seed % 2 else 512)
        prompt = prompts[seed % 2]
        sampling = SamplingConfig(temperature=0.0 if seed % 5 == 0 else 1.5, top_k=seed % 3 * 7, seed=seed)
        n = 10 + seed * 3  # odd lengths end in the middle of groups: the decoder finishes them
        new = generate_tokens(
            model, torch.from_numpy(prompt), n, sampling, stop_id=tok.eos_id, grammar=tok.grammar()
        ).tolist()
        ok, why = well_formed(tok.vocab, new)
        assert ok, f"seed {seed}: {why}"
        assert len(new) <= n + 2 and (len(new) >= n or new[-1] == tok.eos_id)
        assert tok.grammar().violations(np.asarray(new), after=int(prompt[-1])) == 0
        _, repairs = tok.decode_with_report(np.concatenate([prompt, new]))
        assert repairs == 0, f"seed {seed}"
        # the same through the continuation entry point, which reports the repairs
        notes, repairs = continue_notes(model, tok, prompt_notes, n, sampling)
        assert repairs == 0 and len(notes) >= 1


def test_without_the_grammar_random_logits_do_break_groups() -> None:
    tok = build_tokenizer(MidiTokenizerConfig())
    broken = 0
    for seed in range(10):
        model = RandomLogits(tok.vocab_size, seed)
        new = generate_tokens(model, torch.tensor([tok.bos_id]), 40, SamplingConfig(seed=seed), stop_id=tok.eos_id)
        broken += not well_formed(tok.vocab, new.tolist())[0]
        assert tok.grammar().violations(new.numpy(), after=tok.bos_id) > 0 or well_formed(tok.vocab, new.tolist())[0]
    assert broken >= 8
    _, repairs = continue_notes(
        RandomLogits(tok.vocab_size, 0), tok, synth_piece("bach", 1.0, 0), 60, SamplingConfig(), constrained=False
    )
    assert repairs > 0


def test_grammar_accepts_every_encoded_piece() -> None:
    """What the tokenizers write from real notes is in the grammar (so constraining costs the model nothing)."""
    notes = synth_piece("mozart", 6.0, seed=2)
    notes.pedals = np.array([[0.5, 1.5], [2.0, 3.5]])
    for kind in ("seconds", "remi"):
        tok = build_tokenizer(MidiTokenizerConfig(kind=kind, pedal_tokens=kind == "seconds"))
        tokens = np.concatenate([tok.encode(notes), [tok.eos_id]])
        assert tok.grammar().violations(tokens, after=tok.bos_id) == 0, kind
