"""Source-dataset, key and tempo conditioning end to end: prepare-midi records each piece's dataset
(--dataset @folder), key and tempo; a run conditioned on them trains on those prefixes and stores them;
generate-midi --dataset/--key/--tempo/--guidance uses them, and refuses what the model was not trained with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from symusic import KeySignature, Note, Score, Tempo, Track

from tunesmith.cli import main
from tunesmith.data.datasets.midi import ConditionedWindows
from tunesmith.data.midi_prepare import MidiNotesStore, PrepareSettings, prepare_midi
from tunesmith.errors import UserError
from tunesmith.inference.midi import conditioning_prefix, generate_notes
from tunesmith.models.midi.generation import SamplingConfig
from tunesmith.models.midi.loading import load_midi_model
from tunesmith.models.midi.notes import Notes
from tunesmith.tasks import build_solver

# (subfolder, key signature (sharps, minor?), tempo qpm or None): two source datasets in one preparation
FILES = [
    ("classical", (0, 0), 100.0),
    ("classical", (-3, 1), 60.0),
    ("classical", (2, 0), 140.0),
    ("classical", None, None),
    ("pop", (1, 0), 128.0),
    ("pop", (-1, 1), 90.0),
    ("pop", (0, 1), 170.0),
    ("pop", None, 110.0),
]


def write_piece(path: Path, seed: int, key, qpm) -> None:
    rng = np.random.default_rng(seed)
    score = Score(480)
    if qpm is not None:
        score.tempos.append(Tempo(0, qpm=qpm))
    if key is not None:
        score.key_signatures.append(KeySignature(0, key[0], key[1]))
    track = Track("piano", 0, False)
    for k in range(60):
        track.notes.append(Note(k * 120, 200, int(rng.integers(48, 84)), int(rng.integers(40, 110))))
    score.tracks.append(track)
    path.parent.mkdir(parents=True, exist_ok=True)
    score.dump_midi(str(path))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("conditions")
    for k, (folder, key, qpm) in enumerate(FILES):
        write_piece(root / "src" / folder / f"piece{k}.mid", k, key, qpm)
    settings = PrepareSettings(valid_fraction=0.3, dataset="@folder")
    prepare_midi(root / "src", root / "data", settings=settings)
    return root / "data"


@pytest.fixture(scope="module")
def run_dir(data, tmp_path_factory) -> Path:
    overrides = [
        f"data={data}",
        "tokenizer.conditioning=[dataset,key,tempo]",
        "tokenizer.datasets=[classical,pop]",
        "tokenizer.tempo_bins=[80,120]",
        "model.dim=32",
        "model.max_seq_len=64",
        "dataset.context_size=64",
        "dataset.batch_size=4",
        "train.epochs=1",
        "train.updates_per_epoch=2",
        "eval_splits={}",
        "generate.num_samples=1",
        "generate.tokens=16",
        "generate.guidance=2.0",
    ]
    result = build_solver("midi", "tiny", overrides, runs_dir=tmp_path_factory.mktemp("runs")).fit()
    return Path(result["run_dir"])


def test_prepare_records_dataset_key_and_tempo(data, tmp_path) -> None:
    store = MidiNotesStore(data)
    by_path = {p["path"]: p for p in store.pieces}
    assert len(by_path) == len(FILES)
    expected_keys = {(0, 0): "c major", (-3, 1): "c minor", (2, 0): "d major", (1, 0): "g major", (-1, 1): "d minor"}
    expected_keys[(0, 1)] = "a minor"
    for k, (folder, key, qpm) in enumerate(FILES):
        piece = by_path[f"{folder}/piece{k}.mid"]
        assert piece["dataset"] == folder
        assert piece["key"] == (expected_keys[key] if key else "")
        assert piece["tempo"] == pytest.approx(qpm or 0.0, abs=0.01)
    assert store.select(None, "dataset=pop") == [by_path[f"pop/piece{k}.mid"]["id"] for k in range(4, 8)]
    # a plain folder's pieces are named after it; an old store (no dataset field) gets that name when read
    write_piece(tmp_path / "mine" / "a.mid", 0, None, None)
    prepare_midi(tmp_path / "mine", tmp_path / "prepared")
    assert MidiNotesStore(tmp_path / "prepared").pieces[0]["dataset"] == "mine"
    lines = [json.loads(line) for line in (tmp_path / "prepared" / "pieces.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("dataset")
    (tmp_path / "prepared" / "pieces.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert MidiNotesStore(tmp_path / "prepared").pieces[0]["dataset"] == "mine"


def test_training_windows_carry_each_piece_prefix(data) -> None:
    from tunesmith.models.midi.conditioning import Conditioner
    from tunesmith.models.midi.tokenizer import MidiTokenizerConfig, build_tokenizer

    cfg = MidiTokenizerConfig(
        conditioning=["dataset", "key", "tempo"], datasets=["classical", "pop"], tempo_bins=[80, 120]
    )
    tok = build_tokenizer(cfg)
    cond = Conditioner.from_config(tok, cfg)
    store = MidiNotesStore(data)
    piece = next(p for p in store.pieces if p["path"] == "classical/piece1.mid")
    assert [tok.vocab[i] for i in cond.piece_prefix(piece)] == ["Dataset_classical", "Key_c-minor", "Tempo_0"]
    from tunesmith.data.datasets.midi import token_stream_with_offsets

    ids = [piece["id"]]
    stream, offsets = token_stream_with_offsets(store, ids, tok)
    windows = ConditionedWindows(
        stream, offsets, [cond.piece_prefix(piece)], cond, 32, random_crop=False, pad_id=tok.pad_id, dropout=0.0
    )
    first = windows[(0, 0)]["tokens"][:3].tolist()
    assert [tok.vocab[i] for i in first] == ["Dataset_classical", "Key_c-minor", "Tempo_0"]


def test_generate_with_dataset_key_tempo_and_guidance(run_dir, tmp_path) -> None:
    loaded = load_midi_model(run_dir, which="last")
    assert loaded.conditioner.fields == ["dataset", "key", "tempo"]
    prompt = Notes([60, 64], [0.0, 0.5], [0.4, 0.9], [80, 80])
    prefix = conditioning_prefix(loaded, prompt, dataset="Pop", key="A minor", tempo=150.0)
    assert [loaded.tokenizer.vocab[i] for i in prefix] == ["Dataset_pop", "Key_a-minor", "Tempo_2"]
    prefix = conditioning_prefix(loaded, prompt)
    assert [loaded.tokenizer.vocab[i] for i in prefix] == ["Dataset_unknown", "Key_unknown", "Tempo_unknown"]
    sampling = SamplingConfig(temperature=1.0, seed=1, guidance=3.0)
    notes, repairs = generate_notes(loaded, prompt, "continue", 24, sampling, dataset="classical", key="C major")
    assert repairs == 0 and len(notes) >= 2
    for kwargs, match in (
        ({"dataset": "lakh"}, "the model knows classical, pop"),
        ({"key": "H major"}, "--key"),
        ({"tempo": -5.0}, "--tempo"),
        ({"composer": "Bach"}, "not on the composer"),
    ):
        with pytest.raises(UserError, match=match):
            generate_notes(loaded, prompt, "continue", 8, SamplingConfig(), **kwargs)
    # the generate stage ran with generate.guidance=2 and wrote its sample
    assert list((run_dir / "samples").rglob("*_continue.mid"))

    out = tmp_path / "cli.mid"
    argv = ["generate-midi", str(run_dir), "--which", "last", "--tokens", "12", "--out", str(out)]
    argv += ["--dataset", "pop", "--key", "f# minor", "--tempo", "100", "--guidance", "2", "--json"]
    assert main(argv) == 0 and out.is_file()
    assert main([*argv[:-1], "--guidance", "-1"]) == 2


@pytest.mark.parametrize("section", ["generate", "task_eval"])
def test_guidance_needs_a_conditioned_model(tmp_path, section) -> None:
    from tunesmith.models.midi.synthetic import make_fake_maestro

    make_fake_maestro(tmp_path / "src", pieces_per_composer=2, seconds=3.0, corrupt=False)
    prepare_midi(tmp_path / "src", tmp_path / "data")
    overrides = [f"data={tmp_path / 'data'}", f"{section}.guidance=2", "train.epochs=1", "train.updates_per_epoch=1"]
    with pytest.raises(UserError, match=f"{section}.guidance needs a conditioned model"):
        build_solver("midi", "tiny", overrides, runs_dir=tmp_path / "runs").fit()
