"""Grammar-constrained decoding: over random logits (many seeds, both tokenizers, sampled and greedy),
every generated note group is well formed, checked by an independent validator written from the token
names, and the decoder reports 0 repairs; without the grammar the same logits produce malformed groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from support.midi_decoding import RandomLogits, well_formed
from tunesmith.models.midi.generation import SamplingConfig, continue_notes, generate_tokens
from tunesmith.models.midi.synthetic import synth_piece
from tunesmith.models.midi.tokenizer import MidiTokenizerConfig, build_tokenizer

SEEDS = range(40)


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
        ok, why = well_formed([tok.vocab[t] for t in new])
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
        broken += not well_formed([tok.vocab[t] for t in new.tolist()])[0]
        assert (
            tok.grammar().violations(new.numpy(), after=tok.bos_id) > 0
            or well_formed([tok.vocab[t] for t in new.tolist()])[0]
        )
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
