"""Fine-tuning a transformers MusicGen through `tunesmith train lm ... init_from=hf:DIR` (full and LoRA), on a
prepared dataset whose token cache the MusicGen's own EnCodec builds; then merge, export, resume, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from support.hf import CARD, NUM_CODEBOOKS, load_hf, make_musicgen_dir
from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.cli import main
from tunesmith.data.prepare import prepare_dataset
from tunesmith.inference.lm import Generator

COMMON = [
    "dataset.batch_size=2",
    "dataset.segment_seconds=0.1",  # 20 frames at 200 Hz
    "optim.warmup_steps=1",
    "optim.lr=1e-2",
    "train.epochs=2",
    "train.updates_per_epoch=3",
    "train.log.progress=false",
    "train.log.tensorboard=false",
    "generate.num_samples=1",
    "generate.duration=0.05",
]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return make_musicgen_dir(tmp_path_factory.mktemp("hf") / "musicgen")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data") / "data"
    prepare_dataset(
        [], folder, source="synthetic", num_tracks=6, track_duration=1.0, sample_rate=8000, segment=0.5,
        valid_fraction=0.34, progress=False,
    )  # fmt: skip
    return folder


def train(runs, *overrides, capsys=None) -> Path:
    code = main(["train", "lm", "tiny", *COMMON, *overrides, "--runs-dir", str(runs), "--json"])
    assert code == 0
    if capsys is not None:
        return Path(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"])
    return max((Path(runs) / "lm").iterdir(), key=lambda p: p.stat().st_mtime)


def _logits(model, seed=3):
    frames = torch.randint(0, CARD, (2, NUM_CODEBOOKS, 8), generator=torch.Generator().manual_seed(seed))
    inputs = model.pattern.model_input(model.pattern.build(frames, model.special), model.special)
    with torch.no_grad():
        return inputs, model(inputs, [{"description": "a calm piano melody"}, {}])


def test_lora_finetune_from_a_transformers_dir(hf_dir, data, tmp_path, capsys):
    run = train(tmp_path / "runs", f"data={data}", f"init_from=hf:{hf_dir}", "finetune.mode=lora", capsys=capsys)
    assert {"hf_init", "adapter", "checkpoints"} <= {p.name for p in run.iterdir()}
    config = ckpt.read_config(run / "checkpoints" / "last")["config"]
    assert config["model"]["transformer"]["dim"] == 48 and config["model"]["conditioner"]["text"] == "t5"
    assert Path(config["codec"]) == (run / "hf_init" / "codec").resolve()
    assert (data / "tokens").is_dir()  # the token cache was built with the MusicGen's EnCodec
    shared = next((tmp_path / "runs" / ".hf_imports").iterdir())  # one import per source, hard-linked into runs
    weights = run / "hf_init" / "model.safetensors"
    assert weights.stat().st_ino == (shared / "model.safetensors").stat().st_ino
    assert Path(config["model"]["conditioner"]["t5_path"]) == (run / "hf_init" / "t5").resolve()
    # only the adapters moved: every base weight is still the imported one
    imported = ckpt.load_weights(run / "hf_init")
    trained = ckpt.load_weights(run / "checkpoints" / "last")
    for name, value in trained.items():
        plain = name.replace(".base_layer.", ".")
        if ".lora_" not in name and plain in imported:
            assert torch.equal(value, imported[plain]), name
    assert any(".lora_B." in n and n.endswith("weight") and trained[n].abs().sum() > 0 for n in trained)
    # merge → a model directory that generates; export → transformers loads the same model
    assert main(["merge", str(run), "--out", str(tmp_path / "merged")]) == 0
    merged = Generator.from_path(tmp_path / "merged").model
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "exported")]) == 0
    assert main(["verify", str(tmp_path / "exported")]) == 0
    hf_model, tokenizer = load_hf(tmp_path / "exported")
    inputs, ours = _logits(merged)
    enc = tokenizer(["a calm piano melody", ""], padding=True, return_tensors="pt")
    enc["attention_mask"][1] = 0
    with torch.no_grad():
        theirs = hf_model(**enc, decoder_input_ids=inputs.reshape(-1, inputs.shape[-1])).logits
    assert (ours.reshape(theirs.shape) - theirs).abs().max() < 1e-4
    # the run itself loads for generation (LoRA merged on load), as does its tunesmith export
    assert (_logits(Generator.from_path(run).model)[1] - ours).abs().max() < 1e-5
    assert main(["export", str(run), "--out", str(tmp_path / "exported_ts")]) == 0
    assert (_logits(Generator.from_path(tmp_path / "exported_ts").model)[1] - ours).abs().max() < 1e-5
    # the same command again resumes (nothing left to do) and reuses the import
    stamp = (run / "hf_init" / "manifest.json").stat().st_mtime
    again = train(tmp_path / "runs", f"data={data}", f"init_from=hf:{hf_dir}", "finetune.mode=lora", capsys=capsys)
    assert again == run
    assert (run / "hf_init" / "manifest.json").stat().st_mtime == stamp


def test_full_finetune_from_an_imported_dir_with_ema_and_accumulation(hf_dir, data, tmp_path, capsys):
    model_dir = tmp_path / "model"
    assert main(["import", "hf", str(hf_dir), "--out", str(model_dir)]) == 0
    run = train(
        tmp_path / "runs", f"data={data}", f"init_from={model_dir}", "train.ema.enabled=true", "train.ema.decay=0.5",
        "train.grad_accum=2", capsys=capsys,
    )  # fmt: skip
    weights = ckpt.load_weights(run / "checkpoints" / "last")
    source = ckpt.load_weights(model_dir)
    assert torch.equal(weights["conditioner.null"], source["conditioner.null"])  # MusicGen has no learned null
    assert not torch.equal(weights["heads"], source["heads"])
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "exported")]) == 0


def test_lora_with_a_bf16_base_bf16_autocast_and_gradient_checkpointing(hf_dir, data, tmp_path, capsys):
    run = train(
        tmp_path / "runs", f"data={data}", f"init_from=hf:{hf_dir}", "finetune.mode=lora",
        "finetune.lora.base_dtype=bf16", "finetune.gradient_checkpointing=true", "finetune.lora.r=4",
        "train.precision=bf16", capsys=capsys,
    )  # fmt: skip
    weights = ckpt.load_weights(run / "checkpoints" / "last")
    assert weights["transformer.layers.0.ffn.fc1.base_layer.weight"].dtype == torch.bfloat16
    assert weights["transformer.layers.0.ffn.fc1.lora_A.default.weight"].dtype == torch.float32
    assert all(torch.isfinite(v.float()).all() for v in weights.values())


def test_seed_unsupported_bandwidth_through_train(hf_dir, data, tmp_path, capsys):
    """Seed: "This model doesn't support the bandwidth 6.0" — the CLI names the valid ones."""
    code = main(
        ["train", "lm", "tiny", f"data={data}", f"init_from=hf:{hf_dir}", "codec_bandwidth=6.0", *COMMON,
         "--runs-dir", str(tmp_path / "runs")]
    )  # fmt: skip
    assert code == 2
    assert "valid bandwidths: [2.0, 4.0]" in capsys.readouterr().err


def test_bad_init_from_is_a_clear_error(hf_dir, data, tmp_path, capsys):
    code = main(["train", "lm", "tiny", f"data={data}", f"init_from=hf:{tmp_path / 'nope'}", *COMMON,
                 "--runs-dir", str(tmp_path / "runs")])  # fmt: skip
    assert code == 2 and "is not a directory" in capsys.readouterr().err


@pytest.mark.slow
def test_lora_ddp_two_processes_equal_one_process(hf_dir, data, tmp_path):
    """A real 2-process gloo run of a LoRA fine-tune equals one process with the same global batch."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TUNESMITH_NO_PROGRESS": "1"}
    # Adam's eps raised: an update of a near-zero gradient would otherwise turn a last-bit reduction difference
    # between one and two processes into a ±lr step
    common = [f"data={data}", f"init_from=hf:{hf_dir}", "finetune.mode=lora", "finetune.lora.dropout=0", *COMMON]
    common.append("optim.eps=1e-4")
    single = train(tmp_path / "single", *[o for o in common if not o.startswith("dataset.batch_size")],
                   "dataset.batch_size=4")  # fmt: skip
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29547"]
    command = ["-m", "tunesmith", "train", "lm", "tiny", *common, "--runs-dir", str(tmp_path / "ddp"), "--json"]
    proc = subprocess.run([*launch, *command], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = Path(json.loads(proc.stdout.strip().splitlines()[-1])["run_dir"])
    a = ckpt.load_weights(single / "checkpoints" / "last")
    b = ckpt.load_weights(run / "checkpoints" / "last")
    for name in a:  # float reduction order differs across ranks: a few ulps, amplified by lr=1e-2
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)
    assert any(".lora_B." in n and a[n].abs().max() > 1e-3 for n in a)  # the adapters did train
