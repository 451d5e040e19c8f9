"""Classifier-free guidance at generation: the mixed logits equal a slow reference (full forward of the
conditioned and the unconditioned sequence per token, mixed, then masked), and on a tiny model trained on
two synthetic "composers" with overlapping pitch ranges, the composer token changes what is generated and
guidance > 1 widens the difference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tunesmith.models.midi.conditioning import Conditioner
from tunesmith.models.midi.generation import SamplingConfig, continue_notes, generate_target, generate_tokens
from tunesmith.models.midi.gpt import MidiGPT, MidiGPTConfig
from tunesmith.models.midi.notes import Notes
from tunesmith.models.midi.task_eval import FreeRunStats, TaskEvalConfig
from tunesmith.models.midi.tasks import TaskRecord
from tunesmith.models.midi.tokenizer import VELOCITY, MidiTokenizerConfig, build_tokenizer

COMPOSERS = ["low", "high"]
MEAN_PITCH = {"low": 56.0, "high": 68.0}
CFG = MidiTokenizerConfig(conditioning=["composer"], composers=COMPOSERS)


def random_model(vocab: int, seed: int, max_len: int = 48) -> MidiGPT:
    """Large random weights, so that the argmax depends on the whole context."""
    torch.manual_seed(seed)
    model = MidiGPT(MidiGPTConfig(dim=32, num_layers=2, num_heads=2, max_seq_len=max_len), vocab)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model.eval()


def reference(model, cond: list[int], uncond: list[int], g: float, allowed_after, n: int) -> list[int]:
    """Greedy guided decoding with full forward passes (no cache); the mask is applied after the mixing."""
    a, b, out = list(cond), list(uncond), []
    for _ in range(n):
        with torch.no_grad():
            lc = model(torch.tensor([a]))[0, -1].double().numpy()
            lu = model(torch.tensor([b]))[0, -1].double().numpy()
        mixed = np.where(allowed_after(a[-1]), lu + g * (lc - lu), -np.inf)
        token = int(np.argmax(mixed))
        out.append(token)
        a.append(token)
        b.append(token)
    return out


@pytest.mark.parametrize("g", [0.0, 1.0, 2.5])
def test_guided_decoding_equals_a_slow_reference(g) -> None:
    tok = build_tokenizer(CFG)
    cond = Conditioner.from_config(tok, CFG)
    model = random_model(tok.vocab_size, seed=3)
    notes = Notes([60, 64, 67], [0.0, 0.25, 0.5], [0.2, 0.45, 0.7], [70, 60, 80])
    body = np.concatenate([[tok.bos_id], tok.encode(notes)])
    c = np.concatenate([cond.prefix("high"), body])
    u = np.concatenate([cond.unconditional(), body])
    grammar = tok.grammar()
    got = generate_tokens(
        model,
        torch.from_numpy(c),
        24,
        SamplingConfig(temperature=0.0, guidance=g),
        grammar=grammar,
        max_extra=0,
        uncond_prompt=torch.from_numpy(u),
    ).tolist()
    want = reference(model, c.tolist(), u.tolist(), g, grammar.allowed_after, 24)
    assert got == want
    if g == 0.0:  # guidance 0 is the unconditional model
        plain = generate_tokens(model, torch.from_numpy(u), 24, SamplingConfig(temperature=0.0), grammar=grammar)
        assert got == plain.tolist()[: len(got)]
    if g == 1.0:  # guidance 1 is the conditional model, without a second pass
        plain = generate_tokens(model, torch.from_numpy(c), 24, SamplingConfig(temperature=0.0), grammar=grammar)
        assert got == plain.tolist()[: len(got)]


def test_guidance_with_allowed_tokens() -> None:
    """A velocity task's decoding (only velocity tokens may be drawn), guided: still the reference."""
    tok = build_tokenizer(CFG)
    cond = Conditioner.from_config(tok, CFG)
    model = random_model(tok.vocab_size, seed=5, max_len=24)
    prompt = np.concatenate([cond.prefix("low"), [tok.bos_id, tok.task_id("velocity")]])
    uncond = np.concatenate([cond.unconditional(), prompt[1:]])
    is_velocity = tok.token_types == VELOCITY
    frame = np.full(10, np.nonzero(is_velocity)[0][0])  # the appended layout: ten velocity slots in a row
    got = generate_target(
        model, tok, "velocity", prompt, SamplingConfig(0.0, guidance=2.0), frame=frame, uncond_prompt=uncond
    )
    assert np.all(is_velocity[got])
    want = reference(model, prompt.tolist(), uncond.tolist(), 2.0, lambda _t: is_velocity, 10)
    assert got.tolist() == want
    with pytest.raises(ValueError, match="unconditional prompt"):
        generate_tokens(model, torch.from_numpy(prompt), 4, SamplingConfig(0.0, guidance=2.0))


def synthetic_piece(tok, composer: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """n notes a tenth of a second apart, pitches ~ N(MEAN_PITCH[composer], 4) (the ranges overlap)."""
    pitch = np.clip(np.round(rng.normal(MEAN_PITCH[composer], 4.0, n)), 40, 90)
    start = np.arange(n) * 0.1
    return tok.encode(Notes(pitch, start, start + 0.1, np.full(n, 64)))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one torch thread is fastest, and far faster than two on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained():
    """A tiny GPT trained (250 updates) on prefix + BOS + notes, the prefix dropped with probability 0.3."""
    tok = build_tokenizer(CFG)
    cond = Conditioner.from_config(tok, CFG)
    torch.manual_seed(0)
    model = MidiGPT(MidiGPTConfig(dim=48, num_layers=2, num_heads=2, max_seq_len=64, dropout=0.0), tok.vocab_size)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-3)
    rng = np.random.default_rng(0)
    model.train()
    _train(model, opt, tok, cond, rng)
    return model.eval(), tok, cond


def _train(model, opt, tok, cond, rng) -> None:
    for _ in range(250):
        rows = []
        for _b in range(16):
            composer = COMPOSERS[int(rng.integers(2))]
            prefix = cond.drop(cond.prefix(composer), rng, 0.3)
            rows.append(np.concatenate([prefix, [tok.bos_id], synthetic_piece(tok, composer, rng, 15)]))
        batch = torch.from_numpy(np.stack(rows))
        logits = model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()


def mean_pitch(model, tok, cond, composer: str, guidance: float) -> float:
    pitches = []
    for seed in range(6):
        notes, repairs = continue_notes(
            model,
            tok,
            Notes.empty(),
            60,
            SamplingConfig(temperature=1.0, seed=seed, guidance=guidance),
            prefix=cond.prefix(composer),
            uncond_prefix=cond.unconditional(),
        )
        assert repairs == 0
        pitches.append(notes.pitch)
    return float(np.mean(np.concatenate(pitches)))


def test_conditioning_and_guidance_change_generation_measurably(trained) -> None:
    model, tok, cond = trained
    plain = {c: mean_pitch(model, tok, cond, c, 1.0) for c in COMPOSERS}
    guided = {c: mean_pitch(model, tok, cond, c, 3.0) for c in COMPOSERS}
    # the composer token moves the generated pitches the way the training data did (12 semitones apart;
    # this model, trained for seconds, gets about half of it: 6.1 when written)
    assert plain["high"] - plain["low"] > 4.0
    # guidance pushes each composer away from the unconditional mixture: a wider gap (13.3 when written)
    assert guided["high"] - guided["low"] > plain["high"] - plain["low"] + 2.0


def test_free_running_evaluation_uses_the_same_guidance() -> None:
    """task_eval.guidance: the evaluation's generated velocities are generate_target's, guided alike."""
    tok = build_tokenizer(CFG)
    cond = Conditioner.from_config(tok, CFG)
    model = random_model(tok.vocab_size, seed=7)
    notes = Notes([60, 62, 64, 65], [0.0, 0.2, 0.4, 0.6], [0.2, 0.4, 0.6, 0.8], [30, 60, 90, 120])
    full = tok.encode(notes)
    is_velocity = tok.types_of(full) == VELOCITY
    head = np.concatenate(
        [cond.prefix("high"), [tok.bos_id, tok.task_id("velocity")], full[~is_velocity], [tok.sep_id]]
    )
    tokens = np.concatenate([head, full, [tok.eos_id]])  # the interleaved layout: the notes with velocities
    mask = np.concatenate([np.zeros(len(head), bool), is_velocity, [True]])
    record = TaskRecord(tokens, mask, "velocity", len(head))
    uncond = np.concatenate([cond.unconditional(), head[1:]])
    values = np.array([int(n.split("_")[1]) if n.startswith("Velocity_") else 0 for n in tok.vocab], float)
    for g in (1.0, 2.5):
        stats = FreeRunStats(tok, ["velocity"], TaskEvalConfig(guidance=g), 64.0, cond.unconditional())
        stats.add(model, record, record_seed=0)
        sampling = SamplingConfig(temperature=0.0, guidance=g)
        want = generate_target(model, tok, "velocity", head, sampling, frame=full, uncond_prompt=uncond)
        mae = np.abs(values[want] - values[full[is_velocity]]).sum()
        assert stats.sums["velocity/greedy/abs"] == pytest.approx(mae)
    with pytest.raises(ValueError, match="conditioned model"):
        FreeRunStats(tok, ["velocity"], TaskEvalConfig(guidance=2.0), 64.0)
