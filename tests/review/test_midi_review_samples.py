"""`tunesmith review --list-epochs` counts a checkpoint's samples of every kind: audio (.wav), a MIDI run's
generated notes (.mid) and a MIDI sample rendered to audio (x.mid + x.wav) once; stale and hidden files never."""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.artifacts.checkpoint import MANIFEST
from tunesmith.cli import main
from tunesmith.review.checkpoints import SOURCE_FILE, checkpoint_samples, count_samples


def fake_checkpoint(run_dir: Path, name: str, epoch: int, sha: str) -> Path:
    """A checkpoint folder as list_checkpoints reads it and its review folder stamped with the same weights."""
    folder = run_dir / "checkpoints" / name
    folder.mkdir(parents=True)
    files = {"model.safetensors": {"sha256": sha, "size": 1}}
    (folder / MANIFEST).write_text(json.dumps({"files": files, "epoch": epoch, "step": 10 * epoch}))
    review = run_dir / "samples" / "review" / name
    review.mkdir(parents=True)
    (review / SOURCE_FILE).write_text(json.dumps({"checkpoint": name, "weights_sha256": sha}))
    return review


def test_count_samples_counts_wav_and_mid_stems_once(tmp_path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    for name in ["piece3_continuation.mid", "piece3_continuation.wav", "piece7_velocity.mid", "prompt0.wav"]:
        (folder / name).write_bytes(b"x")
    for name in ["pianoroll.json", "source.json", ".piece9_velocity.mid.tmp.1.mid", "notes.txt"]:
        (folder / name).write_bytes(b"x")
    (folder / "sub.mid").mkdir()  # a folder is not a sample
    assert count_samples(folder) == 3


def test_list_epochs_counts_midi_and_audio_samples(tmp_path, capsys) -> None:
    run_dir = tmp_path / "run"
    midi = fake_checkpoint(run_dir, "epoch_0001", 1, "a" * 64)
    for k in range(3):
        (midi / f"piece{k}_continuation.mid").write_bytes(b"MThd")
    (midi / "piece0_continuation.wav").write_bytes(b"RIFF")  # the rendering of piece 0: the same sample
    audio = fake_checkpoint(run_dir, "epoch_0002", 2, "b" * 64)  # an LM/codec-style folder: wav only
    for k in range(2):
        (audio / f"prompt{k}.wav").write_bytes(b"RIFF")
    stale = fake_checkpoint(run_dir, "last", 2, "c" * 64)
    (stale / "piece0_continuation.mid").write_bytes(b"MThd")
    (stale / SOURCE_FILE).write_text(json.dumps({"weights_sha256": "d" * 64}))  # made by other weights

    assert [(r["name"], r["samples"]) for r in checkpoint_samples(run_dir)] == [
        ("epoch_0001", 3),
        ("epoch_0002", 2),
        ("last", 0),
    ]
    assert main(["review", str(run_dir), "--list-epochs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["checkpoint", "epoch", "step", "samples"]
    assert [line.split() for line in lines[1:]] == [
        ["epoch_0001", "1", "10", "3"],
        ["epoch_0002", "2", "20", "2"],
        ["last", "2", "20", "0"],
    ]
