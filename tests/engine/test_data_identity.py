"""Data identity: a run records the fingerprint of its data; resuming or init_from on changed data is
refused with what changed, --force proceeds, and runs without a record still resume (issues 13, 19)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.data.midi_prepare import prepare_midi, store_fingerprint
from tunesmith.data.prepare import prepare_dataset
from tunesmith.data.prepare.fingerprint import audio_fingerprint
from tunesmith.engine.data_identity import DATA_FILE, DataChangedError, changes, check_data_identity
from tunesmith.models.midi.synthetic import make_fake_maestro
from tunesmith.tasks import build_solver

SMALL = [
    "model.dim=32",
    "model.num_heads=2",
    "model.num_layers=2",
    "model.max_seq_len=96",
    "dataset.context_size=32",
    "dataset.batch_size=2",
    "train.updates_per_epoch=1",
    "train.checkpoint.keep_last=0",
    "train.log.tensorboard=false",
    "generate.num_samples=0",
]


def train(runs: Path, data: Path, *overrides: str, force: bool = False, preset: str = "tiny") -> dict:
    solver = build_solver("midi", preset, [*SMALL, f"data={data}", *overrides], runs_dir=runs, force=force)
    return solver.fit()


@pytest.fixture()
def midi(tmp_path) -> dict[str, Path]:
    make_fake_maestro(tmp_path / "big", pieces_per_composer=3, seconds=4.0, corrupt=False)
    make_fake_maestro(tmp_path / "small", pieces_per_composer=2, seconds=4.0, corrupt=False)
    prepare_midi(tmp_path / "big", tmp_path / "data")
    return {"root": tmp_path, "data": tmp_path / "data", "runs": tmp_path / "runs"}


def test_resume_on_re_prepared_midi_data_is_refused_then_forced(midi) -> None:
    data, runs = midi["data"], midi["runs"]
    first = train(runs, data, "train.epochs=1")  # the same command again resumes (here: finds it finished)
    recorded = json.loads((Path(first["run_dir"]) / DATA_FILE).read_text())["fingerprint"]
    assert recorded == store_fingerprint(data) and recorded["kind"] == "midi-store"

    prepare_midi(midi["root"] / "small", data, force=True)  # re-prepared: fewer pieces
    with pytest.raises(DataChangedError) as err:
        train(runs, data, "train.epochs=1")
    message = str(err.value)
    assert "the data changed since run" in message and "--force" in message
    assert "pieces.jsonl:" in message and " rows" in message
    assert "train.epochs" not in message

    second = train(runs, data, "train.epochs=1", force=True)
    assert second["run_dir"] == first["run_dir"] and second["epoch"] == 1
    stored = json.loads((Path(second["run_dir"]) / DATA_FILE).read_text())
    assert stored["fingerprint"] == store_fingerprint(data) and stored["replaced"] == recorded


def test_a_run_without_a_record_resumes_and_records_it(midi) -> None:
    data, runs = midi["data"], midi["runs"]
    run_dir = Path(train(runs, data, "train.epochs=1")["run_dir"])
    (run_dir / DATA_FILE).unlink()  # as written by the previous version
    assert train(runs, data, "train.epochs=1")["run_dir"] == str(run_dir)
    assert json.loads((run_dir / DATA_FILE).read_text())["fingerprint"] == store_fingerprint(data)


def test_init_from_a_run_whose_data_changed_is_refused(midi) -> None:
    data, runs = midi["data"], midi["runs"]
    source = train(runs, data, "train.epochs=1")["run_dir"]
    prepare_midi(midi["root"] / "small", data, force=True)
    with pytest.raises(
        DataChangedError, match=r"(?s)init_from=.*the data changed since run .*pieces\.jsonl: 9 → 6 rows"
    ):
        train(runs, data, "train.epochs=1", f"init_from={source}", "model.max_seq_len=96", preset="velocity-tiny")


def test_audio_fingerprint_names_the_changed_manifest(tmp_path) -> None:
    prepare_dataset(
        [], tmp_path / "d", source="synthetic", sample_rate=8000, segment=1.0, min_segment=0.5,
        num_tracks=6, valid_fraction=0.3, progress=False,
    )  # fmt: skip
    before = audio_fingerprint(tmp_path / "d")
    assert set(before["files"]) == {"dataset.json", "egs/train/data.jsonl", "egs/valid/data.jsonl"}
    train_manifest = tmp_path / "d" / "egs" / "train" / "data.jsonl"
    lines = train_manifest.read_text().splitlines(keepends=True)
    train_manifest.write_text("".join(lines[:-1]))
    after = audio_fingerprint(tmp_path / "d")
    n = before["files"]["egs/train/data.jsonl"]["rows"]
    assert changes(before, after) == [f"egs/train/data.jsonl: {n} → {n - 1} rows"]
    assert changes(before, {**after, "token_cache": "abc"})[-1] == "token_cache: None → abc"

    run = tmp_path / "run"
    run.mkdir()
    check_data_identity(run, before, resuming=False)  # a new run records it
    with pytest.raises(DataChangedError, match=r"egs/train/data\.jsonl: \d+ → \d+ rows"):
        check_data_identity(run, after, resuming=True)
    check_data_identity(run, before, resuming=True)  # the same data: fine


def test_a_moved_copy_of_the_same_data_resumes(tmp_path) -> None:
    """Content, not the folder's path, is the data's identity: a copied dataset is the same data."""
    import shutil

    prepare_dataset(
        [], tmp_path / "d", source="synthetic", sample_rate=8000, segment=1.0, min_segment=0.5,
        num_tracks=4, valid_fraction=0.3, progress=False,
    )  # fmt: skip
    shutil.copytree(tmp_path / "d", tmp_path / "moved")
    here, there = audio_fingerprint(tmp_path / "d"), audio_fingerprint(tmp_path / "moved")
    assert here["source"] != there["source"] and changes(here, there) == []
    run = tmp_path / "run"
    run.mkdir()
    check_data_identity(run, here, resuming=False)
    check_data_identity(run, there, resuming=True)  # no DataChangedError
    assert json.loads((run / DATA_FILE).read_text())["fingerprint"]["source"] == there["source"]
