"""Fine-tuning an imported MusicGen: LoRA trains only adapters and needs less memory, merges exactly,
works with gradient checkpointing and a bf16 base; adapter files; the import / merge / export commands."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch

from support.hf import CARD, NUM_CODEBOOKS, load_hf, make_musicgen_dir
from tunesmith.cli import main
from tunesmith.errors import UserError
from tunesmith.inference.lm import Generator
from tunesmith.models.hf.finetune import FinetuneConfig, enable_gradient_checkpointing, open_init_source, prepare_model
from tunesmith.models.lm.lora import (
    SCALING,
    LoraSettings,
    apply_adapter_to_base,
    merge_lora_state,
    read_adapter,
    write_adapter,
)
from tunesmith.models.lm.model import LMModel

CONDITIONS = [{"description": "a calm piano melody"}, {}, {"description": "slow jazz guitar at night"}]
ALL_TARGETS = ["qkv", "out", "q", "kv", "fc1", "fc2", "embed", "heads"]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return make_musicgen_dir(tmp_path_factory.mktemp("hf") / "musicgen")


@pytest.fixture(scope="module")
def imported(hf_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "model"
    assert main(["import", "hf", str(hf_dir), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def source(imported, tmp_path_factory):
    return open_init_source(str(imported), tmp_path_factory.mktemp("work"))


def _model(source, **finetune):
    return prepare_model(LMModel(source.lm_config), FinetuneConfig(**finetune), source)


def _frames(batch=3, frames=10, seed=0):
    return torch.randint(0, CARD, (batch, NUM_CODEBOOKS, frames), generator=torch.Generator().manual_seed(seed))


def _train(model, steps=3, lr=1e-2):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for step in range(steps):
        loss_sum, _, counts = model(_frames(seed=step), CONDITIONS, return_loss=True)
        (loss_sum / counts.sum()).backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def _logits(model, frames=None):
    frames = _frames(seed=99) if frames is None else frames
    inputs = model.pattern.model_input(model.pattern.build(frames, model.special), model.special)
    with torch.no_grad():
        return model(inputs, CONDITIONS)


# --------------------------------------------------------------------------- LoRA


def test_the_import_source_loads_exactly_and_freezes_what_musicgen_lacks(source):
    model = _model(source)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in source.state.items())
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"conditioner.null"}  # T5 width 32 ≠ 48: the projection is real and trains


def test_lora_trains_only_the_adapters(source):
    model = _model(source, mode="lora", lora=LoraSettings(r=4, alpha=8.0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(trainable) == 2 * 7 * 2  # 2 layers × 7 linears (qkv, 2 × out, q, kv, fc1, fc2) × (A, B)
    _train(model)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= {n for n in trainable}
    assert any(".lora_B." in k for k in changed)


def test_lora_targets_can_include_embeddings_and_heads(source):
    model = _model(source, mode="lora", lora=LoraSettings(r=2, target_modules=ALL_TARGETS))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "heads" in trainable and any(n.startswith("embed.lora_embedding_") for n in trainable)
    with pytest.raises(Exception, match="choose from"):
        LoraSettings(target_modules=["attention"])


def test_merged_weights_equal_the_adapter_applied_model(source):
    model = _train(_model(source, mode="lora", lora=LoraSettings(r=4, target_modules=ALL_TARGETS)))
    merged = LMModel(source.lm_config)
    merged.load_state_dict(merge_lora_state(model.state_dict()))  # strict: plain names only
    assert (_logits(model) - _logits(merged.eval())).abs().max() < 5e-4
    assert (_logits(model) - _logits(_model(source))).abs().max() > 1e-2  # training changed the model


def test_gradient_checkpointing_gives_the_same_gradients(source):
    for finetune in ({"mode": "full"}, {"mode": "lora", "lora": LoraSettings(r=4, dropout=0.1)}):
        plain = _model(source, **finetune).train()
        checkpointed = copy.deepcopy(plain)
        enable_gradient_checkpointing(checkpointed.transformer)
        grads = []
        for model in (plain, checkpointed):
            torch.manual_seed(0)  # the same LoRA dropout masks (recomputation replays the RNG)
            loss_sum, _, counts = model(_frames(), CONDITIONS, return_loss=True)
            (loss_sum / counts.sum()).backward()
            grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
        assert grads[0].keys() == grads[1].keys()
        assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])


def test_bf16_base_with_float32_adapters_trains(source):
    """Seed: "Input type (float) and bias type (c10::Half)" — dtypes are cast where the modules need them."""
    model = _model(source, mode="lora", lora=LoraSettings(r=4, base_dtype="bf16"), gradient_checkpointing=True)
    dtypes = {p.dtype for n, p in model.named_parameters() if p.requires_grad}
    frozen = {p.dtype for n, p in model.named_parameters() if not p.requires_grad}
    assert dtypes == {torch.float32} and frozen == {torch.bfloat16}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _train(model, steps=2)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if ".lora_" not in k)
    assert torch.isfinite(_logits(model)).all()


LORA_MEMORY_SCRIPT = """
import gc, re, sys, torch
from tunesmith.models.lm.model import LMConfig, LMModel
from tunesmith.models.lm.conditioners import ConditionerConfig
from tunesmith.models.transformer import TransformerConfig
from tunesmith.models.hf.finetune import FinetuneConfig, prepare_model

def kib(field):
    return int(re.search(field + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))

torch.manual_seed(0)
cfg = LMConfig(card=64, num_codebooks=4, conditioner=ConditionerConfig(text="none"),
               transformer=TransformerConfig(dim=256, num_layers=4, num_heads=4, ffn_dim=1024))
model = prepare_model(LMModel(cfg), FinetuneConfig(mode=sys.argv[1]), None).train()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
codes = torch.randint(0, 64, (2, 4, 32))
gc.collect()
open("/proc/self/clear_refs", "w").write("5")  # peak RSS := current RSS: measure training only
start = kib("VmRSS")
for _ in range(2):
    loss, _, count = model(codes, return_loss=True)
    (loss / count.sum()).backward()
    opt.step()
    opt.zero_grad()
print(sum(p.numel() for p in model.parameters()), (kib("VmHWM") - start) * 1024)
"""


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc/self/clear_refs")
def test_lora_needs_less_peak_memory_than_full_finetuning():
    """Peak RSS growth during two AdamW steps, each mode in its own process (imports and weights excluded)."""
    peaks = {}
    for mode in ("full", "lora"):
        out = subprocess.run(
            [sys.executable, "-c", LORA_MEMORY_SCRIPT, mode], capture_output=True, text=True, check=True, timeout=300
        )
        params, peaks[mode] = map(int, out.stdout.split())
    # full fine-tuning holds a gradient and two Adam moments per parameter (12 bytes); LoRA only its adapters'
    assert peaks["full"] - peaks["lora"] > 0.5 * 12 * params, (peaks, params)


# --------------------------------------------------------------------------- adapter files and commands


@pytest.fixture(scope="module")
def trained_adapter(source, imported, tmp_path_factory):
    settings = LoraSettings(r=4, target_modules=["qkv", "out", "q", "kv", "fc1", "fc2", "heads"])
    model = _train(_model(source, mode="lora", lora=settings))
    folder = write_adapter(
        tmp_path_factory.mktemp("adapter") / "adapter",
        model.state_dict(),
        settings,
        {"base": str(imported), "model": json.loads((imported / "config.json").read_text())["config"]["model"]},
    )
    return model, folder


def test_adapter_folder_holds_only_the_adapters_and_round_trips(trained_adapter, source):
    model, folder = trained_adapter
    config, tensors = read_adapter(folder)
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["tunesmith"]["scaling"] == 8.0
    assert {p.name for p in folder.iterdir()} == {"adapter_config.json", "adapter_model.safetensors", "manifest.json"}
    adapter_params = sum(v.numel() for k, v in tensors.items() if k != SCALING)
    assert adapter_params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    merged = merge_lora_state(apply_adapter_to_base(source.state, tensors))
    assert all(torch.equal(merged[k], v) for k, v in merge_lora_state(model.state_dict()).items())


def test_merge_command_writes_a_model_that_generates_like_the_adapted_one(trained_adapter, tmp_path):
    model, folder = trained_adapter
    out = tmp_path / "merged"
    assert main(["merge", str(folder), "--out", str(out)]) == 0
    generator = Generator.from_path(out)
    assert (_logits(model) - _logits(generator.model)).abs().max() < 5e-4
    assert main(["verify", str(out)]) == 0


def test_merge_to_hf_loads_in_transformers_with_the_adapted_logits(trained_adapter, tmp_path):
    from transformers import MusicgenForConditionalGeneration

    model, folder = trained_adapter
    out = tmp_path / "merged_hf"
    assert main(["merge", str(folder), "--out", str(out), "--format", "hf"]) == 0
    hf_model = MusicgenForConditionalGeneration.from_pretrained(str(out)).eval()
    _, tokenizer = load_hf(out)
    frames = _frames(seed=5)
    inputs = model.pattern.model_input(model.pattern.build(frames, model.special), model.special)
    texts = [c.get("description", "") for c in CONDITIONS]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    enc["attention_mask"][1] = 0  # the unconditional row
    with torch.no_grad():
        theirs = hf_model(**enc, decoder_input_ids=inputs.reshape(-1, inputs.shape[-1])).logits
        ours = model(inputs, CONDITIONS)
    assert (ours.reshape(theirs.shape) - theirs).abs().max() < 5e-4


def test_merge_refuses_a_model_without_adapters(imported, tmp_path):
    with pytest.raises(UserError, match="no LoRA adapters"):
        from tunesmith.models.hf.merge import merge

        merge(imported, tmp_path / "out")


def test_export_command_and_a_moved_import(imported, tmp_path):
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(imported, moved)  # t5_path still names the old place: resolved to moved/t5 when gone
    config = json.loads((moved / "config.json").read_text())
    config["config"]["model"]["conditioner"]["t5_path"] = str(tmp_path / "gone")
    (moved / "config.json").write_text(json.dumps(config))
    from tunesmith.artifacts.checkpoint import write_manifest

    write_manifest(moved)
    assert main(["export", str(moved), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert main(["verify", str(tmp_path / "hf")]) == 0


def test_frozen_heads_skip_their_gradient_in_the_fused_loss():
    """LoRA freezes the heads: the fused heads + CE gives the same loss and hidden-state gradient, no weight grad."""
    from tunesmith.models.lm.loss import heads_cross_entropy

    h = torch.randn(40, 16, requires_grad=True)
    targets = torch.randint(0, 8, (40, 3))
    targets[::5] = -100
    grads = []
    for trainable in (True, False):
        weight = torch.randn(3, 8, 16, generator=torch.Generator().manual_seed(0)).requires_grad_(trainable)
        h.grad = None
        loss, _ = heads_cross_entropy(h, weight, targets, chunk=16)
        loss.backward()
        grads.append((loss.detach(), h.grad.clone(), weight.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    assert grads[0][2] is not None and grads[1][2] is None


def test_a_fresh_cli_process_generates_from_an_imported_dir(imported, tmp_path):
    """`tunesmith generate` in a new process: the EnCodec codec loader registers itself without any import order."""
    out = tmp_path / "samples"
    proc = subprocess.run(
        [sys.executable, "-m", "tunesmith", "generate", str(imported), "--prompt", "a calm piano melody",
         "--duration", "0.05", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TUNESMITH_NO_PROGRESS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len([json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]) == 1
