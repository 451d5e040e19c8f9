"""Conditioning tokens: prefix mapping, CFG-style dropout, conditioned windows and records, and a trained
model whose generation measurably follows the composer token; generate-midi --composer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tunesmith.data.datasets.midi import ConditionedWindows, PianoTaskRecords, token_stream_with_offsets
from tunesmith.data.midi_prepare import MidiNotesStore, prepare_midi
from tunesmith.errors import UserError
from tunesmith.inference.midi import generate_notes
from tunesmith.models.midi.conditioning import Conditioner
from tunesmith.models.midi.generation import SamplingConfig
from tunesmith.models.midi.loading import load_midi_model
from tunesmith.models.midi.notes import Notes
from tunesmith.models.midi.synthetic import make_fake_maestro
from tunesmith.models.midi.tasks import PianoTaskConfig
from tunesmith.models.midi.tokenizer import MidiTokenizerConfig, build_tokenizer
from tunesmith.tasks import build_solver

COND = MidiTokenizerConfig(conditioning=["composer", "density"], composers=["Bach", "Chopin", "Mozart"])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("midi_cond")
    make_fake_maestro(root / "src", pieces_per_composer=3, seconds=6.0, corrupt=False)
    prepare_midi(root / "src", root / "data")
    return root / "data"


def test_prefix_mapping_and_dropout() -> None:
    tok = build_tokenizer(COND)
    cond = Conditioner(tok, COND.conditioning, COND.composers, COND.density_bins)
    names = lambda ids: [tok.vocab[i] for i in ids]  # noqa: E731
    assert names(cond.prefix("Johann Sebastian Bach", 3.0)) == ["Composer_bach", "Density_1"]
    assert names(cond.prefix("Frédéric CHOPIN", 20.0)) == ["Composer_chopin", "Density_4"]
    assert names(cond.prefix("Franz Liszt", 0.5)) == ["Composer_other", "Density_0"]
    assert names(cond.prefix(None, None)) == ["Composer_unknown", "Density_unknown"]
    piece = {"composer": "Wolfgang Amadeus Mozart", "note_count": 50, "duration": 10.0}
    assert names(cond.piece_prefix(piece)) == ["Composer_mozart", "Density_2"]
    prefix = cond.prefix("Bach", 3.0)
    draws = np.stack([cond.drop(prefix, np.random.default_rng(s), 0.3) for s in range(2000)])
    assert np.mean(draws == cond.unknown) == pytest.approx(0.3, abs=0.03)
    assert np.array_equal(
        cond.drop(prefix, np.random.default_rng(5), 0.3), cond.drop(prefix, np.random.default_rng(5), 0.3)
    )
    assert np.array_equal(cond.drop(prefix, np.random.default_rng(5), 0.0), prefix)


def test_conditioned_windows_and_records(data) -> None:
    store, tok = MidiNotesStore(data), build_tokenizer(COND)
    cond = Conditioner(tok, COND.conditioning, COND.composers, COND.density_bins)
    ids = store.select("valid")
    stream, offsets = token_stream_with_offsets(store, ids, tok)
    prefixes = [cond.piece_prefix(store.pieces[i]) for i in ids]
    windows = ConditionedWindows(stream, offsets, prefixes, cond, 40, random_crop=False, pad_id=tok.pad_id)
    targets = []
    for i in range(len(windows)):
        item = windows[(i, 0)]
        start = i * windows.body
        piece = int(np.searchsorted(offsets, start, side="right")) - 1
        assert item["tokens"][:2].tolist() == prefixes[piece].tolist()
        targets.append(item["tokens"][1:][item["mask"]])
    assert torch.equal(torch.cat(targets), torch.from_numpy(stream.astype(np.int64)))  # every token once
    cfg = PianoTaskConfig(tasks=["velocity"], notes_per_record=12)
    plain = PianoTaskRecords(store, ids, tok, cfg, 128, train=False)
    conditioned = PianoTaskRecords(store, ids, tok, cfg, 128, train=False, conditioner=cond)
    a, b = plain.record((0, 0)), conditioned.record((0, 0))
    assert b.tokens[:2].tolist() == prefixes[0].tolist() and np.array_equal(b.tokens[2:], a.tokens)
    assert not b.target_mask[:2].any() and np.array_equal(b.target_mask[2:], a.target_mask)


def first_token_loss(model, tok, cond, store, ids, composer_of) -> float:
    """Mean loss of the first token of every 40-token window of the pieces, predicted from the conditioning
    prefix alone (the composer token naming composer_of(piece's composer)): what the prefix tells the model."""
    losses = []
    for i in ids:
        piece = store.pieces[i]
        stream = np.concatenate([[tok.bos_id], tok.encode(store.notes(i)), [tok.eos_id]])
        prefix = cond.piece_prefix(piece)
        prefix[0] = cond.composer_token(composer_of(piece["composer"]))
        for start in range(0, len(stream) - 1, 40):
            tokens = torch.from_numpy(np.concatenate([prefix, stream[start : start + 1]]))[None]
            with torch.no_grad():
                logits = model(tokens[:, :-1])[0, -1]
            losses.append(torch.nn.functional.cross_entropy(logits, tokens[0, -1]).item())
    return float(np.mean(losses))


def test_a_trained_model_follows_the_composer_token(data, tmp_path, capsys) -> None:
    overrides = [
        f"data={data}",
        "tokenizer.conditioning=[composer,density]",
        "tokenizer.composers=[Bach,Chopin,Mozart]",
        "model.dim=48",
        "model.max_seq_len=96",
        "dataset.context_size=64",
        "dataset.batch_size=8",
        "optim.lr=0.004",
        "optim.warmup_steps=5",
        "train.epochs=1",
        "train.updates_per_epoch=60",
        "eval_splits={}",
        "generate.num_samples=1",
    ]
    run = build_solver("midi", "tiny", overrides, runs_dir=tmp_path).fit()
    loaded = load_midi_model(run["run_dir"])
    tok, cond, model = loaded.tokenizer, loaded.conditioner, loaded.model
    assert cond is not None and cond.fields == ["composer", "density"]
    store = MidiNotesStore(data)
    ids = store.select("valid") + store.select("train")
    right = first_token_loss(model, tok, cond, store, ids, lambda c: c)
    swap = {"Johann Sebastian Bach": "Chopin", "Frédéric Chopin": "Mozart", "Wolfgang Amadeus Mozart": "Bach"}
    wrong = first_token_loss(model, tok, cond, store, ids, lambda c: swap[c])
    unknown = first_token_loss(model, tok, cond, store, ids, lambda c: None)
    assert right < wrong - 0.05, (right, wrong, unknown)  # the token carries the composer's texture
    assert right <= unknown + 0.02  # and unconditional generation (dropout) still works nearly as well
    # generation: the composer changes what is generated; unknown names and unconditioned models refuse
    sampling = SamplingConfig(temperature=1.0, seed=3)  # the same random draws under both composers
    bach, repairs = generate_notes(loaded, Notes.empty(), "continue", 120, sampling, composer="Bach")
    chopin, _ = generate_notes(loaded, Notes.empty(), "continue", 120, sampling, composer="Chopin")
    assert repairs == 0 and len(bach) and len(chopin)
    assert len(bach) != len(chopin) or not np.array_equal(bach.pitch, chopin.pitch)
    with pytest.raises(UserError, match="the model knows Bach, Chopin, Mozart"):
        generate_notes(loaded, Notes.empty(), "continue", 10, sampling, composer="Liszt")
    unconditioned = load_midi_model(run["run_dir"])
    unconditioned.conditioner = None
    with pytest.raises(UserError, match="without conditioning tokens"):
        generate_notes(unconditioned, Notes.empty(), "continue", 10, sampling, composer="Bach")
    # eval-only builds the same conditioned windows as training's evaluation
    import json

    from tunesmith.inference.midi_eval import evaluate_midi_run

    history = [json.loads(x) for x in (Path(run["run_dir"]) / "history.jsonl").read_text().splitlines()]
    trained = [h for h in history if h["stage"] == "evaluate"][-1]["valid/loss"]
    report = evaluate_midi_run(
        run["run_dir"], split="valid", checkpoint="last", num_samples=None, seed=0, runs_dir=None
    )
    assert report.splits["valid"]["loss"] == pytest.approx(trained, rel=1e-6)
    from tunesmith.cli import main

    out = tmp_path / "bach.mid"
    assert main(["generate-midi", run["run_dir"], "--composer", "Bach", "--tokens", "30", "--out", str(out)]) == 0
    assert out.is_file() and "0 malformed note groups repaired" in capsys.readouterr().out
