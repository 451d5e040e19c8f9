"""``higgs_loss`` projects only the scored positions (audio head at labelled audio positions, text head at
labelled text positions) and still gives transformers' loss and gradients (full forward with
``audio_labels``/``labels``, ≤ 1e-5), bare, through peft LoRA, and through a real (1-process, gloo)
DistributedDataParallel with ``find_unused_parameters`` — the text head runs inside DDP's forward."""

from __future__ import annotations

import pytest
import torch

from support.higgs import NUM_CODEBOOKS, STREAM_BOS, STREAM_EOS, make_lm_config, make_text_tokenizer
from tunesmith.models.higgs.loss import higgs_loss
from tunesmith.models.higgs.prompt import HiggsPromptBuilder, HiggsTokens, SpeechExample

pytestmark = pytest.mark.usefixtures("one_thread")
TOKENS = HiggsTokens(num_codebooks=NUM_CODEBOOKS, stream_bos_id=STREAM_BOS, stream_eos_id=STREAM_EOS)
MODEL_KEYS = ("input_ids", "attention_mask", "audio_input_ids", "audio_input_ids_mask")


@pytest.fixture(scope="module")
def text_tokenizer():
    return make_text_tokenizer()


@pytest.fixture(scope="module")
def batch(text_tokenizer):
    """Two left-padded rows: a plain one, and one with a voice reference (whose audio is not labelled)."""
    g = torch.Generator().manual_seed(3)
    codes = [torch.randint(0, STREAM_BOS, (NUM_CODEBOOKS, n), generator=g) for n in (9, 6, 7)]
    builder = HiggsPromptBuilder(text_tokenizer, TOKENS)
    return builder.collate(
        [
            builder.encode(SpeechExample("The quick brown fox jumps over the lazy dog.", codes=codes[0])),
            builder.encode(
                SpeechExample("Hi.", codes=codes[1], reference_text="She sells sea shells.", reference_codes=codes[2])
            ),
        ]
    )


def make_model(text_tokenizer, use_text_head: bool):
    from transformers import HiggsAudioV2ForConditionalGeneration

    torch.manual_seed(0)
    return HiggsAudioV2ForConditionalGeneration(make_lm_config(text_tokenizer), use_text_head=use_text_head).train()


def grads_of(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def reference_loss_and_grads(model, batch, use_text_head: bool):
    """transformers' own loss (logits at every position) and its gradients."""
    model.zero_grad(set_to_none=True)
    inputs = {k: batch[k] for k in MODEL_KEYS}
    labels = batch["labels"] if use_text_head else None
    loss = model(**inputs, audio_labels=batch["audio_labels"], labels=labels, use_cache=False).loss
    loss.backward()
    return loss.detach(), grads_of(model)


def ours_loss_and_grads(model, batch, grads_from=None):
    model.zero_grad(set_to_none=True)
    out = higgs_loss(model, batch)
    out.transformers_loss().backward()
    return out, grads_of(grads_from if grads_from is not None else model)


def assert_same_grads(ours: dict, reference: dict) -> None:
    assert ours.keys() == reference.keys() and ours
    for name, grad in reference.items():
        torch.testing.assert_close(ours[name], grad, rtol=0, atol=1e-5, msg=name)


@pytest.mark.parametrize("use_text_head", [False, True])
def test_sliced_loss_has_transformers_gradients_and_projects_only_scored_positions(
    text_tokenizer, batch, use_text_head
):
    model = make_model(text_tokenizer, use_text_head)
    reference, reference_grads = reference_loss_and_grads(model, batch, use_text_head)
    rows = {}
    heads = [("audio", model.audio_lm_head)] + ([("text", model.text_lm_head)] if use_text_head else [])

    def record(name):
        def hook(module, args, output):
            rows[name] = tuple(args[0].shape)  # returns None: the output is left alone

        return hook

    hooks = [head.register_forward_hook(record(name)) for name, head in heads]
    out, grads = ours_loss_and_grads(model, batch)
    for hook in hooks:
        hook.remove()
    torch.testing.assert_close(out.transformers_loss().detach(), reference, rtol=0, atol=1e-5)
    assert_same_grads(grads, reference_grads)
    for name in ("audio_lm_head.weight", "model.layers.0.self_attn.q_proj.weight"):
        assert grads[name].abs().sum() > 0, name
    # the audio head saw 21 rows, those predicting a frame of the two target streams (9 and 6 frames, each
    # delayed over K - 1 = 3 more), out of 37 audio positions (+ stream BOS and EOS per clip, and the
    # unlabelled reference clip) and far more text positions
    assert out.audio_frames == 9 + 6
    assert rows["audio"] == ((9 + 3) + (6 + 3), model.config.hidden_size)
    assert int(batch["audio_input_ids_mask"].sum()) == (9 + 5) + (6 + 5) + (7 + 5)
    if use_text_head:
        assert rows["text"] == (out.text_tokens, model.config.hidden_size)
        assert out.text_tokens == int((batch["labels"][:, 1:] != -100).sum())


def test_lora_gradients_equal_transformers(text_tokenizer, batch):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    model = get_peft_model(
        make_model(text_tokenizer, False),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    reference, reference_grads = reference_loss_and_grads(model, batch, False)
    out, grads = ours_loss_and_grads(model, batch)
    torch.testing.assert_close(out.transformers_loss().detach(), reference, rtol=0, atol=1e-5)
    assert_same_grads(grads, reference_grads)
    assert all("lora_" in name for name in grads)


@pytest.fixture
def process_group(tmp_path):
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this test process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("lora", [False, True])
def test_ddp_with_find_unused_parameters_and_text_loss(text_tokenizer, batch, process_group, lora):
    """The text head is called inside DDP's forward, so DDP's unused-parameter search sees it: two updates
    run without "marked ready twice" / "unused parameters" errors and the gradients are transformers'."""
    from torch.nn.parallel import DistributedDataParallel

    model = make_model(text_tokenizer, True)
    if lora:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(1)
        model = get_peft_model(
            model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "o_proj"], init_lora_weights=False)
        )
    reference, reference_grads = reference_loss_and_grads(model, batch, True)
    ddp = DistributedDataParallel(model, find_unused_parameters=True)
    for _ in range(2):
        out, grads = ours_loss_and_grads(ddp, batch, grads_from=model)
        torch.testing.assert_close(out.transformers_loss().detach(), reference, rtol=0, atol=1e-5)
        assert_same_grads(grads, reference_grads)
