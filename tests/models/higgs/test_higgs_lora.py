"""``higgs_loss`` through a peft LoRA wrapper: equals peft's own forward loss, trains only the adapters, and
gives the same loss and adapter gradients with gradient checkpointing on (the issue's users switched
checkpointing off because it "broke the model")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from support.higgs import NUM_CODEBOOKS, STREAM_BOS, STREAM_EOS, TOKENIZER_DIR, make_text_tokenizer, save_tiny_lm
from tunesmith.models.higgs.loss import higgs_loss, unwrap
from tunesmith.models.higgs.prompt import HiggsPromptBuilder, HiggsTokens, SpeechExample
from tunesmith.models.higgs.tokenizer import load_higgs_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
TOKENS = HiggsTokens(num_codebooks=NUM_CODEBOOKS, stream_bos_id=STREAM_BOS, stream_eos_id=STREAM_EOS)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    codec = load_higgs_tokenizer(TOKENIZER_DIR)
    g = torch.Generator().manual_seed(5)
    codes = codec.encode(0.3 * torch.randn(2, 1, 4000, generator=g))
    builder = HiggsPromptBuilder(make_text_tokenizer(), TOKENS)
    batch = builder.collate(
        [
            builder.encode(SpeechExample("She sells sea shells.", codes=codes[0])),
            builder.encode(SpeechExample("Hi.", codes=codes[1], reference_text="Hello.", reference_codes=codes[0])),
        ]
    )
    return save_tiny_lm(tmp_path_factory.mktemp("lm") / "lm"), batch


def lora_model(directory, checkpointing: bool):
    from peft import LoraConfig, get_peft_model
    from transformers import HiggsAudioV2ForConditionalGeneration

    base = HiggsAudioV2ForConditionalGeneration.from_pretrained(directory)
    torch.manual_seed(11)
    model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return model.train()


def loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    out = higgs_loss(model, batch)
    (out.audio_sum / out.audio_tokens).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def test_lora_loss_equals_peft_forward_and_only_adapters_train(setup):
    directory, batch = setup
    model = lora_model(directory, checkpointing=False)
    assert unwrap(model).__class__.__name__ == "HiggsAudioV2ForConditionalGeneration"
    out, grads = loss_and_grads(model, batch)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "audio_input_ids", "audio_input_ids_mask")}
    with torch.no_grad():
        reference = model(**inputs, audio_labels=batch["audio_labels"]).loss
    np.testing.assert_allclose(out.transformers_loss().item(), reference.item(), rtol=0, atol=1e-5)
    assert grads and all("lora_" in name for name in grads)
    assert all(g.abs().sum() > 0 for g in grads.values())


def test_gradient_checkpointing_with_lora_gives_the_same_loss_and_gradients(setup):
    directory, batch = setup
    plain, plain_grads = loss_and_grads(lora_model(directory, checkpointing=False), batch)
    ckpt_model = lora_model(directory, checkpointing=True)
    assert unwrap(ckpt_model).is_activation_checkpointing
    ckpt, ckpt_grads = loss_and_grads(ckpt_model, batch)
    assert abs(plain.audio_sum.item() - ckpt.audio_sum.item()) <= 1e-4
    assert plain_grads.keys() == ckpt_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(ckpt_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)
