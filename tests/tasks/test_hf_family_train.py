"""LoRA fine-tuning of a stereo MusicGen and of a MusicGen-melody through `tunesmith train lm ... init_from=hf:DIR`
(the existing fine-tune path), then export back to transformers and compare logits; the melody run caches
each segment's chroma next to its tokens once and trains on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from support.hf import CARD
from support.hf_family import make_melody_dir, make_stereo_dir
from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.cli import main
from tunesmith.data.prepare import prepare_dataset
from tunesmith.inference.lm import Generator

COMMON = [
    "dataset.batch_size=2",
    "dataset.segment_seconds=0.1",
    "optim.warmup_steps=1",
    "optim.lr=1e-2",
    "train.epochs=1",
    "train.updates_per_epoch=2",
    "train.log.progress=false",
    "train.log.tensorboard=false",
    "generate.num_samples=1",
    "generate.duration=0.05",
    "finetune.mode=lora",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data") / "data"
    prepare_dataset(
        [], folder, source="synthetic", num_tracks=4, track_duration=1.0, sample_rate=8000, segment=0.5,
        valid_fraction=0.25, progress=False,
    )  # fmt: skip
    return folder


def train(runs: Path, *overrides: str, capsys) -> Path:
    assert main(["train", "lm", "tiny", *COMMON, *overrides, "--runs-dir", str(runs), "--json"]) == 0
    return Path(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"])


def _compare_export(run: Path, out: Path, model_cls, k: int, extra: dict) -> None:
    assert main(["export", str(run), "--format", "hf", "--out", str(out)]) == 0
    assert main(["verify", str(out)]) == 0
    from transformers import AutoTokenizer

    hf_model = model_cls.from_pretrained(str(out)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    lm = Generator.from_path(run).model
    frames = torch.randint(0, CARD, (1, k, 6), generator=torch.Generator().manual_seed(0))
    inputs = lm.pattern.model_input(lm.pattern.build(frames, lm.special), lm.special)
    enc = tokenizer(["a calm piano melody"], return_tensors="pt")
    with torch.no_grad():
        ours = lm(inputs, [{"description": "a calm piano melody", **extra.get("condition", {})}])
        theirs = hf_model(**enc, **extra.get("hf", {}), decoder_input_ids=inputs.reshape(k, -1)).logits
    theirs = theirs.view(1, k, -1, CARD)[:, :, -inputs.shape[-1] :]
    assert (ours - theirs).abs().max() < 1e-4


def test_lora_finetune_of_a_stereo_musicgen(data, tmp_path, capsys):
    from transformers import MusicgenForConditionalGeneration

    source = make_stereo_dir(tmp_path / "stereo")
    run = train(tmp_path / "runs", f"data={data}", f"init_from=hf:{source}", capsys=capsys)
    config = ckpt.read_config(run / "checkpoints" / "last")["config"]
    assert (config["model"]["channels"], config["model"]["num_codebooks"]) == (2, 8)
    codec = json.loads(next((data / "tokens").glob("*/codec.json")).read_text())
    assert (codec["channels"], codec["n_q"]) == (2, 8)  # tokens of both channels, interleaved
    _compare_export(run, tmp_path / "exported", MusicgenForConditionalGeneration, 8, {})


def test_lora_finetune_of_a_musicgen_melody_caches_chroma(data, tmp_path, capsys):
    from transformers import MusicgenMelodyForConditionalGeneration

    source = make_melody_dir(tmp_path / "melody")
    run = train(tmp_path / "runs", f"data={data}", f"init_from=hf:{source}", capsys=capsys)
    config = ckpt.read_config(run / "checkpoints" / "last")["config"]
    assert config["model"]["conditioner"]["chroma"] is True
    cached = sorted(p.name for p in (data / "tokens").glob("*/train/chroma-*"))
    assert len(cached) == 2  # the array and its index, next to the tokens
    chroma = torch.nn.functional.one_hot(torch.arange(12) % 12, 12).float()[None]
    extra = {"condition": {"chroma": chroma[0]}, "hf": {"input_features": chroma}}
    _compare_export(run, tmp_path / "exported", MusicgenMelodyForConditionalGeneration, 4, extra)
