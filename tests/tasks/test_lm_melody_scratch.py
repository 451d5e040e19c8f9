"""A melody-conditioned LM trained from scratch on prepared data, and the measured test that it follows a melody.

Pipeline: `prepare` (synthetic songs at 8 kHz) → token cache → each segment's chroma computed once and cached next
to the tokens → `train lm` with model.conditioner.chroma (MusicGen-melody's prefix, chroma CFG dropout) →
generation with a melody file (the Generator's `melody` field) → chroma of the generated audio compared with the
melody's (chroma cosine), against generations given a shuffled melody (the same chroma frames, permuted).

The codec is a toy whose tokens are pitch classes (tests/support/melody.py), so the measurement is about the LM
following the melody, not about codec quality (a random tiny codec's audio has no meaningful chroma).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from support.melody import make_pitch_codec_dir, melody_signal
from tunesmith.audio.chroma import ChromaSettings, chroma_cosine, chroma_features
from tunesmith.data.prepare import prepare_dataset
from tunesmith.inference.lm import Generator
from tunesmith.models.lm.generation import generate_codes
from tunesmith.tasks import build_solver

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = ChromaSettings(sample_rate=8000, n_fft=4096, hop_length=1024)
OVERRIDES = [
    "model.conditioner.text=none",
    "model.conditioner.fuse=prefix",
    "model.conditioner.chroma=true",
    "model.conditioner.chroma_length=16",
    "model.conditioner.chroma_sample_rate=8000",
    "model.conditioner.chroma_n_fft=4096",
    "model.conditioner.chroma_hop=1024",
    "model.conditioner.chroma_dropout=0.2",
    "model.conditioner.cfg_dropout=0.1",
    "model.transformer.dim=64",
    "model.transformer.num_layers=2",
    "model.transformer.num_heads=4",
    "model.transformer.ffn_dim=128",
    "dataset.batch_size=8",
    "dataset.segment_seconds=2.048",  # 16 frames at 7.8 Hz
    "optim.lr=3e-3",
    "optim.warmup_steps=10",
    "train.updates_per_epoch=150",
    "train.epochs=1",
    "train.log.progress=false",
    "train.log.tensorboard=false",
    "generate.num_samples=1",
    "generate.duration=1.0",
    "evaluate.metrics=[chroma]",  # the evaluate stage: each sample follows its reference segment's melody
    "evaluate.num_samples=4",
    "evaluate.duration=2.0",
]
NOTES = [392.0, 261.63, 440.0, 329.63, 493.88, 293.66, 349.23, 415.30]  # G C A E B D F G#: not a training tune


def follow_scores(generator: Generator, melody_path, seeds=range(4)) -> tuple[float, float]:
    """Mean chroma cosine to the melody of generations given it, and given a shuffled copy of it."""
    from tunesmith.audio.chroma import melody_chroma

    melody = melody_chroma(melody_path, SETTINGS)[:16]
    shuffled = melody[torch.randperm(len(melody), generator=torch.Generator().manual_seed(0))]
    scores = {"melody": [], "shuffled": []}
    for name, chroma in (("melody", melody), ("shuffled", shuffled)):
        for seed in seeds:
            codes = generate_codes(
                generator.model, [{"chroma": chroma}], 16, cfg_coef=3.0, temperature=1.0, top_k=3,
                generator=torch.Generator().manual_seed(seed),
            )  # fmt: skip
            audio = generator.codec.decode(codes)[0, 0]
            scores[name].append(chroma_cosine(chroma_features(audio, SETTINGS), melody))
    return float(np.mean(scores["melody"])), float(np.mean(scores["shuffled"]))


def test_melody_lm_from_scratch_follows_the_melody(tmp_path):
    from tunesmith.audio.io import save_audio

    data = tmp_path / "data"
    prepare_dataset(
        [], data, source="synthetic", num_tracks=12, track_duration=6.0, sample_rate=8000, segment=3.0,
        valid_fraction=0.0, progress=False,
    )  # fmt: skip
    codec = make_pitch_codec_dir(tmp_path)
    overrides = [f"data={data}", f"codec={codec}", *OVERRIDES]
    solver = build_solver("lm", "tiny", overrides, runs_dir=tmp_path / "runs")
    result = solver.fit()
    assert len(list((data / "tokens").glob("*/train/chroma-*.npy"))) == 1  # computed once, next to the tokens
    given, shuffled_melody = evaluate_stage_scores(solver)  # an empty valid split: the stage uses train
    print(f"evaluate stage chroma: given each segment's melody {given:.3f}, a shuffled one {shuffled_melody:.3f}")
    assert given > shuffled_melody + 0.15, (given, shuffled_melody)
    generator = Generator.from_path(result["run_dir"], codec=codec)
    melody_path = tmp_path / "melody.wav"
    save_audio(melody_path, melody_signal(8000, 2.2, NOTES)[None], 8000)
    following, shuffled = follow_scores(generator, melody_path)
    print(f"chroma cosine to the melody: given it {following:.3f}, given a shuffled melody {shuffled:.3f}")
    assert following > shuffled + 0.2, (following, shuffled)
    out = generator.generate([{"duration": 1.0, "seed": 0, "melody": str(melody_path)}])[0]
    assert out.wav.shape == (1, 8 * 1024)


def evaluate_stage_scores(solver) -> tuple[float, float]:
    """The evaluate stage's chroma metric as it runs (each reference segment's melody given), and with each
    melody's frames shuffled: the metric must measure melody following, not chance agreement."""
    from tunesmith.tasks.lm_evaluate import EvaluateStage

    stage = EvaluateStage(solver)
    given = stage(solver.model, 90)["chroma"]
    own = stage._melody
    permute = torch.Generator().manual_seed(0)
    stage._melody = lambda clip: (lambda c: c[torch.randperm(len(c), generator=permute)])(own(clip))
    return given, stage(solver.model, 91)["chroma"]
