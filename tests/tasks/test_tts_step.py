"""One optimizer update of the tts task equals a plain PyTorch loop over transformers' model (its own forward
loss, ``torch.optim.AdamW``, the same batch): full fine-tuning and LoRA (peft), parameters within 1e-5."""

from __future__ import annotations

import pytest
import torch

from support.tts import make_higgs_dir, make_speech_data
from tunesmith.tasks import build_solver

pytestmark = pytest.mark.usefixtures("one_thread")

LR, EPS, CLIP = 1e-3, 1e-6, 1.0
OVERRIDES = [
    "train.log.progress=false",
    "train.log.tensorboard=false",
    f"optim.lr={LR}",
    f"optim.eps={EPS}",
    "optim.weight_decay=0.0",  # the plain loop puts every parameter in one group
    "optim.warmup_steps=0",
    "optim.schedule=constant",
    f"optim.max_grad_norm={CLIP}",
    "dataset.batch_size=4",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("step")
    return make_speech_data(root), make_higgs_dir(root / "higgs")


def engine_update(root, data, higgs, *overrides):
    solver = build_solver(
        "tts", "tiny", [*OVERRIDES, f"data={data}", f"init_from=hf:{higgs}", *overrides], runs_dir=root
    )
    solver.setup()
    train = solver.datasets["train"]
    batch = solver.collate([train[(i, 0)] for i in range(4)])
    before = {n: p.detach().clone() for n, p in solver.model.named_parameters()}
    solver.metrics = solver.train_update([batch])  # loss and grad_norm of the update
    after = {n: p.detach().clone() for n, p in solver.model.named_parameters()}
    return solver, batch, before, after


def plain_step(model, batch, k):
    """What a user writes: transformers' loss (per-codebook means, summed) / K = the mean over audio tokens."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.95), eps=EPS, weight_decay=0.0)
    inputs = {n: batch[n] for n in ("input_ids", "attention_mask", "audio_input_ids", "audio_input_ids_mask")}
    loss = model(**inputs, audio_labels=batch["audio_labels"]).loss / k
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, CLIP)
    opt.step()
    return loss


def test_full_update_equals_plain_pytorch(setup, tmp_path):
    from transformers import HiggsAudioV2ForConditionalGeneration

    data, higgs = setup
    solver, batch, before, after = engine_update(tmp_path, data, higgs, "finetune.mode=full")
    model = HiggsAudioV2ForConditionalGeneration.from_pretrained(higgs).train()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[name], rtol=0, atol=0)
    plain_step(model, batch, solver.checkpoint.num_codebooks)
    for name, p in model.named_parameters():
        torch.testing.assert_close(after[name], p.detach(), rtol=0, atol=1e-5, msg=name)
        # unchanged in both or moved in both (the last layer's text MLP gets a zero gradient: no text position
        # predicts a scored audio frame)
        assert torch.equal(after[name], before[name]) == torch.equal(p.detach(), before[name]), name
    assert sum(not torch.equal(after[n], before[n]) for n in after) >= len(after) - 4


def test_lora_update_equals_plain_peft(setup, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import HiggsAudioV2ForConditionalGeneration

    data, higgs = setup
    solver, batch, before, after = engine_update(tmp_path, data, higgs, "finetune.mode=lora", "finetune.lora.r=4")
    base = HiggsAudioV2ForConditionalGeneration.from_pretrained(higgs)
    config = LoraConfig(r=4, lora_alpha=8.0, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    model = get_peft_model(base, config).train()
    with torch.no_grad():  # the same starting adapters (B is zero; A is random)
        for name, p in model.named_parameters():
            p.copy_(before[name])
    plain_step(model, batch, solver.checkpoint.num_codebooks)
    for name, p in model.named_parameters():
        torch.testing.assert_close(after[name], p.detach(), rtol=0, atol=1e-5, msg=name)
        if "lora_" not in name:
            assert torch.equal(after[name], before[name]), name
    assert any("lora_B" in n and after[n].abs().max() > 0 for n in after)


def test_accumulation_is_normalised_by_audio_target_tokens(setup, tmp_path):
    """Two micro-batches of different audio lengths = one batch of all four (the engine divides the summed
    loss by the update's audio target tokens, not by micro-batches)."""
    data, higgs = setup
    one, batch, before, after = engine_update(tmp_path / "one", data, higgs, "finetune.mode=full")
    solver = build_solver(
        "tts", "tiny", [*OVERRIDES, f"data={data}", f"init_from=hf:{higgs}", "finetune.mode=full"],
        runs_dir=tmp_path / "two",
    )  # fmt: skip
    solver.setup()
    train = solver.datasets["train"]
    halves = [solver.collate([train[(i, 0)] for i in part]) for part in ((0, 1), (2, 3))]
    counts = [solver.count_targets(b) for b in halves]
    assert sum(counts) == one.count_targets(batch) and counts[0] != counts[1]
    metrics = solver.train_update(halves)
    assert metrics["loss"] == pytest.approx(one.metrics["loss"], rel=1e-6)
    assert metrics["grad_norm"] == pytest.approx(one.metrics["grad_norm"], rel=1e-5)  # before clipping
    for name, p in solver.model.named_parameters():
        torch.testing.assert_close(p.detach(), after[name], rtol=0, atol=1e-5, msg=name)
