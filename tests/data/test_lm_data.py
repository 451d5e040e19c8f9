"""The LM on real prepared datasets and the real token cache: synthetic music, and espeak-ng speech (tts-tiny)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess

import pytest

from support.lm import make_codec_dir
from tunesmith.data.prepare import prepare_dataset
from tunesmith.tasks import build_solver

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread

SMALL = [
    "model.transformer.dim=32",
    "model.transformer.num_layers=2",
    "model.transformer.ffn_dim=64",
    "model.conditioner.text_dim=32",
    "model.conditioner.text_layers=1",
    "dataset.batch_size=4",
    "optim.lr=3e-3",
    "optim.warmup_steps=2",
    "train.log.progress=false",
    "train.log.tensorboard=false",
    "generate.num_samples=2",
    "generate.duration=0.1",
]


def test_music_lm_trains_from_prepared_dataset_and_token_cache(tmp_path):
    data = tmp_path / "data"
    prepare_dataset(
        [], data, source="synthetic", num_tracks=5, track_duration=2.0, sample_rate=8000, segment=1.0, progress=False
    )
    codec = make_codec_dir(tmp_path)
    overrides = [f"data={data}", f"codec={codec}", *SMALL, "dataset.segment_seconds=0.5"]
    overrides += ["model.conditioner.attributes=[genre,bpm,key]", "train.epochs=2", "train.updates_per_epoch=10"]
    solver = build_solver("lm", "tiny", overrides, runs_dir=tmp_path / "runs")
    result = solver.fit()
    assert (data / "tokens").is_dir()  # the cache was built on first use
    history = result["history"]
    assert history[-1]["valid"]["loss"] < history[0]["train"]["loss"]
    genre_vocab = solver.model.conditioner.attributes["genre"].vocab.get()["vocab"]
    assert len(genre_vocab) > 2  # genres read from the sidecars
    samples = json.loads((solver.run.samples_dir / "epoch_0002" / "samples.json").read_text())
    assert len(samples["samples"]) == 2
    assert all(s["condition"].get("description") for s in samples["samples"])


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (Debian package espeak-ng)")
def test_tts_tiny_trains_on_ljspeech_layout(tmp_path):
    src = tmp_path / "lj"
    (src / "wavs").mkdir(parents=True)
    sentences = [
        "the cat sat on the mat",
        "a quick brown fox",
        "printing in the only sense",
        "hello world again",
        "speech from text",
        "one two three four",
    ]
    rows = []
    for i, text in enumerate(sentences):
        uid = f"LJ001-{i:04d}"
        subprocess.run(["espeak-ng", "-w", str(src / "wavs" / f"{uid}.wav"), text], check=True, capture_output=True)
        rows.append([uid, text, text])
    with open(src / "metadata.csv", "w", newline="") as f:
        csv.writer(f, delimiter="|").writerows(rows)
    data = tmp_path / "data"
    prepare_dataset([src], data, source="ljspeech", sample_rate=8000, segment=3.0, min_segment=0.5, progress=False)
    codec = make_codec_dir(tmp_path)
    overrides = [f"data={data}", f"codec={codec}", *SMALL, "dataset.segment_seconds=1.0"]
    overrides += ["train.epochs=2", "train.updates_per_epoch=8", "generate.prompts=[hello there]"]
    solver = build_solver("lm", "tts-tiny", overrides, runs_dir=tmp_path / "runs")
    result = solver.fit()
    tokenizer = solver.model.conditioner.text.tokenizer
    assert tokenizer.kind == "char" and {"a", "e", "t"} <= set(tokenizer.vocab)
    history = result["history"]
    assert history[-1]["train"]["loss"] < history[0]["train"]["loss"]
    assert (solver.run.samples_dir / "epoch_0002" / "00.wav").is_file()
