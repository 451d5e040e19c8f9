"""Piano-task records: layout, target masking, loss on target tokens only; the MIDI GPT and generation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tunesmith.data.datasets.midi import PianoTaskRecords, TokenWindows, collate, token_stream
from tunesmith.data.midi_prepare import MidiNotesStore, prepare_midi
from tunesmith.errors import UserError
from tunesmith.models.midi.generation import SamplingConfig, complete_notes, fill_velocities, generate_tokens
from tunesmith.models.midi.gpt import MidiGPT, MidiGPTConfig
from tunesmith.models.midi.synthetic import make_fake_maestro, synth_piece
from tunesmith.models.midi.tasks import (
    PianoTaskConfig,
    assemble,
    build_record,
    check_task_config,
    merge_velocities,
    source_and_target,
    velocity_frame,
)
from tunesmith.models.midi.tokenizer import PITCH, VELOCITY, MidiTokenizerConfig, build_tokenizer
from tunesmith.tasks.midi import lm_loss

TOK = build_tokenizer(MidiTokenizerConfig())
RNG = np.random.default_rng(0)


def piece(n: int = 40):
    return synth_piece("mozart", 8.0, seed=3).take(slice(0, n))


def test_velocity_record_layouts_and_masks() -> None:
    """interleaved: the target is the notes again with their velocities, only velocities (and EOS) trained;
    appended: the velocity tokens alone. Both put back together give the slice's encoding."""
    notes = piece(24)
    full = TOK.encode(notes, float(notes.start.min()))
    for layout in ("interleaved", "appended"):
        cfg = PianoTaskConfig(tasks=["velocity"], velocity_layout=layout)
        rec = build_record(TOK, "velocity", notes, cfg, RNG, max_tokens=1000)
        sep = int(np.nonzero(rec.tokens == TOK.sep_id)[0][0])
        assert rec.tokens[0] == TOK.bos_id and rec.tokens[1] == TOK.task_id("velocity")
        assert rec.prompt_len == sep + 1 and rec.tokens[-1] == TOK.eos_id
        source, target = rec.tokens[2:sep], rec.tokens[sep + 1 : -1]
        assert not np.any(TOK.types_of(source) == VELOCITY)
        velocities = target[TOK.types_of(target) == VELOCITY]
        assert len(velocities) == len(notes)
        assert np.array_equal(merge_velocities(TOK, source, velocities), full)
        if layout == "interleaved":
            assert np.array_equal(target, full)
        else:
            assert np.array_equal(target, velocities)
        trained = [False] * (sep + 1) + (TOK.types_of(target) == VELOCITY).tolist() + [True]
        assert rec.target_mask.tolist() == trained
        frame = velocity_frame(TOK, source, layout)
        slots = TOK.types_of(frame) == VELOCITY
        assert np.array_equal(slots, TOK.types_of(target) == VELOCITY) and np.array_equal(frame[~slots], target[~slots])


def test_denoise_and_partition_tasks() -> None:
    notes = piece(40)
    cfg = PianoTaskConfig(tasks=["velocity_denoise"], noise_std=20.0)
    source, target = source_and_target(TOK, "velocity_denoise", notes, cfg, np.random.default_rng(1))
    assert len(source) == len(TOK.encode(notes, float(notes.start.min())))
    assert np.array_equal(target, TOK.encode(notes, notes.start.min()))  # interleaved: the true notes
    appended = PianoTaskConfig(tasks=["velocity_denoise"], noise_std=20.0, velocity_layout="appended")
    _, velocities = source_and_target(TOK, "velocity_denoise", notes, appended, np.random.default_rng(1))
    assert np.array_equal(velocities, target[TOK.types_of(source) == VELOCITY])
    assert not np.array_equal(source, TOK.encode(notes, notes.start.min()))  # noise changed velocities

    origin = float(notes.start.min())
    median = np.median(notes.velocity)
    source, target = source_and_target(TOK, "loud_from_soft", notes, cfg, RNG)
    soft, loud = TOK.decode(source), TOK.decode(target)
    assert len(soft) + len(loud) == len(notes)
    assert np.all(loud.velocity >= median - 2) and len(loud) == int((notes.velocity > median).sum())
    expected_loud = notes.take(notes.velocity > median)
    np.testing.assert_allclose(np.sort(loud.start), np.sort(expected_loud.start - origin), atol=0.0051)
    source2, target2 = source_and_target(TOK, "soft_from_loud", notes, cfg, RNG)
    assert np.array_equal(source2, target) and np.array_equal(target2, source)
    high = TOK.decode(source_and_target(TOK, "high_from_low", notes, cfg, RNG)[1])
    assert np.all(high.pitch > np.median(notes.pitch))


def test_task_last_format_and_truncation() -> None:
    notes = piece(40)
    cfg = PianoTaskConfig(tasks=["velocity"], prompt_format="task_last")
    rec = build_record(TOK, "velocity", notes, cfg, RNG, max_tokens=60)
    assert len(rec) <= 60
    task_at = int(np.nonzero(rec.tokens == TOK.task_id("velocity"))[0][0])
    n_notes = int((TOK.types_of(rec.tokens[:task_at]) == PITCH).sum())
    assert 0 < n_notes < 40 and rec.target_mask.sum() == n_notes + 1  # velocities + EOS
    prompt = assemble(TOK, "velocity", rec.tokens[1:task_at], np.zeros(0, np.int64), "task_last", with_target=False)
    assert np.array_equal(prompt.tokens, rec.tokens[: task_at + 1])
    with pytest.raises(Exception, match="unknown task"):
        check_task_config(PianoTaskConfig(tasks=["tempo"]))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    make_fake_maestro(root / "src", pieces_per_composer=2, seconds=8.0, corrupt=False)
    prepare_midi(root / "src", root / "out")
    return MidiNotesStore(root / "out")


def tiny_model(vocab: int, **kw) -> MidiGPT:
    torch.manual_seed(0)
    cfg = MidiGPTConfig(dim=32, num_layers=2, num_heads=2, max_seq_len=kw.pop("max_seq_len", 256), **kw)
    return MidiGPT(cfg, vocab).eval()


def test_loss_counts_target_tokens_only(store) -> None:
    cfg = PianoTaskConfig(tasks=["velocity", "loud_from_soft"], notes_per_record=16)
    ds = PianoTaskRecords(store, store.select("train"), TOK, cfg, 256, train=False)
    n_slices = sum(
        1
        for p in store.pieces
        if p["split"] == "train"
        for s in range(0, p["note_count"], 16)
        if p["note_count"] - s >= 8
    )
    assert len(ds) == 2 * n_slices  # every (slice, task) pair once
    batch = collate([ds[(i, 0)] for i in range(6)], TOK.pad_id)
    model = tiny_model(TOK.vocab_size)
    with torch.no_grad():
        loss_sum, per_target, _ = lm_loss(model, batch["tokens"], batch["mask"])
        logits = model(batch["tokens"][:, :-1])
    ce = F.cross_entropy(logits.transpose(1, 2), batch["tokens"][:, 1:], reduction="none")
    manual = (ce * batch["mask"]).sum()
    torch.testing.assert_close(loss_sum, manual, rtol=1e-5, atol=1e-4)
    records = [ds.record((i, 0)) for i in range(6)]
    assert len(per_target) == sum(int(r.target_mask.sum()) for r in records)
    # changing a padded position changes nothing; changing a source token changes the loss
    tokens = batch["tokens"].clone()
    row = int(batch["mask"].sum(1).argmin())
    pad_at = int((tokens[row] != TOK.pad_id).sum())
    if pad_at < tokens.shape[1]:
        tokens[row, pad_at:] = TOK.bos_id
        with torch.no_grad():
            assert torch.allclose(lm_loss(model, tokens, batch["mask"])[0], loss_sum, rtol=1e-5)
    tokens = batch["tokens"].clone()
    tokens[:, 3] = TOK.id("Pitch_21")
    with torch.no_grad():
        assert not torch.allclose(lm_loss(model, tokens, batch["mask"])[0], loss_sum)


def test_training_records_vary_with_the_seed_only(store) -> None:
    cfg = PianoTaskConfig(tasks=["velocity", "velocity_denoise"], notes_per_record=16)
    ds = PianoTaskRecords(store, store.select("train"), TOK, cfg, 256, train=True)
    a, b, c = ds.record((1, 7)), ds.record((1, 7)), ds.record((1, 8))
    assert np.array_equal(a.tokens, b.tokens) and a.task == b.task
    assert not (np.array_equal(a.tokens, c.tokens) and a.task == c.task)


def test_token_windows_cover_every_token_once(store) -> None:
    stream = token_stream(store, store.select("valid"), TOK)
    windows = TokenWindows(stream, 50, random_crop=False, pad_id=TOK.pad_id)
    items = [windows[(i, 0)] for i in range(len(windows))]
    predicted = torch.cat([it["tokens"][1:][it["mask"]] for it in items])
    assert torch.equal(predicted, torch.from_numpy(stream[1:].astype(np.int64)))
    train = TokenWindows(stream, 50, random_crop=True, pad_id=TOK.pad_id)
    assert torch.equal(train[(0, 5)]["tokens"], train[(3, 5)]["tokens"])  # the crop comes from the seed
    assert bool(train[(0, 5)]["mask"].all())


def test_gpt_cache_and_select_match_full_forward() -> None:
    for positional in ("learned", "rope"):
        model = tiny_model(TOK.vocab_size, positional=positional, max_seq_len=64)
        tokens = torch.randint(0, TOK.vocab_size, (2, 40))
        with torch.no_grad():
            full = model(tokens)
            cache = model.make_cache(2)
            parts = [model(tokens[:, :25], cache=cache)] + [
                model(tokens[:, t : t + 1], cache=cache) for t in range(25, 40)
            ]
            torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-4, atol=1e-4)
            select = torch.rand(2, 40) < 0.3
            torch.testing.assert_close(model(tokens, select=select), full[select], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 65, dtype=torch.long))
    n = model.num_params()
    assert model.flops_per_token(64) == 6 * n + 12 * 2 * 32 * 64


def test_generation_constraints_and_sliding_window() -> None:
    model = tiny_model(TOK.vocab_size, max_seq_len=32)
    allowed = torch.from_numpy(TOK.token_types == VELOCITY)
    out = generate_tokens(model, torch.tensor([TOK.bos_id]), 70, SamplingConfig(seed=1), allowed=allowed)
    assert len(out) == 70 and bool(allowed[out].all())  # 70 > the 32-token context: it slid
    again = generate_tokens(model, torch.tensor([TOK.bos_id]), 70, SamplingConfig(seed=1), allowed=allowed)
    assert torch.equal(out, again)
    notes = piece(20)
    filled = fill_velocities(model, TOK, notes, PianoTaskConfig(notes_per_record=8), SamplingConfig(seed=0))
    assert np.array_equal(filled.pitch, notes.sorted().pitch) and np.array_equal(filled.start, notes.sorted().start)
    values = {int(n.split("_")[1]) for n in TOK.vocab if n.startswith("Velocity_")}
    assert set(filled.velocity.tolist()) <= values


def test_a_note_that_cannot_fit_the_context_is_a_clear_error() -> None:
    notes = piece(4)
    with pytest.raises(UserError, match="a single note of task 'velocity' takes .* raise model.max_seq_len"):
        build_record(TOK, "velocity", notes, PianoTaskConfig(), RNG, max_tokens=6)
    model = tiny_model(TOK.vocab_size, max_seq_len=6)  # BOS Task SEP + a note twice (interleaved) > 6
    with pytest.raises(UserError, match="one note needs .* tokens, more than the model's context \\(6\\)"):
        fill_velocities(model, TOK, notes, PianoTaskConfig(notes_per_record=4), SamplingConfig(seed=0))


def test_denoise_and_partition_generation_keep_the_given_notes() -> None:
    model = tiny_model(TOK.vocab_size, max_seq_len=128)
    notes = piece(20)
    cfg = PianoTaskConfig(notes_per_record=8)
    denoised = fill_velocities(model, TOK, notes, cfg, SamplingConfig(seed=0), task="velocity_denoise")
    assert np.array_equal(denoised.pitch, notes.sorted().pitch) and np.array_equal(denoised.end, notes.sorted().end)
    soft = notes.take(notes.velocity <= np.median(notes.velocity))
    both, repairs = complete_notes(model, TOK, "loud_from_soft", soft, cfg, SamplingConfig(seed=0))
    assert len(both) >= len(soft) and repairs == 0
    kept = {(int(p), round(float(s), 6)) for p, s in zip(soft.pitch, soft.start, strict=True)}
    assert kept <= {(int(p), round(float(s), 6)) for p, s in zip(both.pitch, both.start, strict=True)}
    with pytest.raises(ValueError, match="partition"):
        complete_notes(model, TOK, "velocity", soft, cfg, SamplingConfig())
