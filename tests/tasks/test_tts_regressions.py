"""One regression test per failure users hit when fine-tuning HiggsAudio v2, each asserting the clear behaviour:

(a) the label keys of a batch (``label_ids``/``labels``/``audio_labels``) never reach the model's forward;
(b) fp16 with frozen parameters and the loss scaler never raises "No inf checks were recorded";
(c) bf16 requested on a GPU without it stops before anything is built, saying what to use instead;
(d) gradient checkpointing with LoRA: trains, equal loss and gradients, no use_cache warning, generation after it.
(The DDP unused-parameters case runs real processes: tests/tasks/test_tts_ddp.py.)
"""

from __future__ import annotations

import logging

import pytest
import torch

from support.tts import make_higgs_dir, make_speech_data
from tunesmith.engine.preflight import PreflightError
from tunesmith.errors import UserError
from tunesmith.models.higgs.loss import unwrap
from tunesmith.tasks import build_solver

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = ["train.log.progress=false", "train.log.tensorboard=false", "dataset.batch_size=2", "train.epochs=1"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("regress")
    return make_speech_data(root), make_higgs_dir(root / "higgs", use_text_head=True)


def solver_for(root, setup, *overrides):
    data, higgs = setup
    solver = build_solver("tts", "tiny", [*BASE, f"data={data}", f"init_from=hf:{higgs}", *overrides], runs_dir=root)
    solver.setup()
    return solver


def first_batch(solver, n=2):
    return solver.collate([solver.datasets["train"][(i, 0)] for i in range(n)])


class StrictForward(torch.nn.Module):
    """A wrapper whose forward takes the model inputs only (as strict forwards did when users hit
    ``forward() got an unexpected keyword argument 'labels'``); ``.module`` is the wrapped model."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, input_ids, attention_mask, audio_input_ids, audio_input_ids_mask, position_ids=None, *,
                use_cache=None, logits_to_keep=0):  # fmt: skip
        return self.module(
            input_ids=input_ids, attention_mask=attention_mask, audio_input_ids=audio_input_ids,
            audio_input_ids_mask=audio_input_ids_mask, position_ids=position_ids, use_cache=use_cache,
            logits_to_keep=logits_to_keep,
        )  # fmt: skip


def test_a_label_keys_never_reach_the_model(setup, tmp_path):
    """Users saw ``forward() got an unexpected keyword argument 'labels'`` (or ``'label_ids'``) when a batch's
    label keys were splatted into the model. The tts loss passes the model inputs only."""
    solver = solver_for(tmp_path, setup, "finetune.mode=full")
    batch = first_batch(solver)
    batch["label_ids"] = batch["labels"].clone()  # what a Trainer-style collator adds
    strict = StrictForward(unwrap(solver.model))
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        strict(**batch)  # the failure: the whole batch splatted into a strict forward
    out = solver.loss(strict, batch)  # tunesmith's loss through the same strict forward
    assert torch.isfinite(out.loss_sum)
    # and transformers' own (lenient) forward never sees a label key either: it would compute its own loss
    # from audio_labels a second time, and silently take label_ids into its attention kwargs
    inner = unwrap(solver.model)
    seen: list[set[str]] = []
    handle = inner.register_forward_pre_hook(lambda m, a, kw: seen.append(set(kw)), with_kwargs=True)
    try:
        metrics = solver.train_update([batch])
    finally:
        handle.remove()
    assert seen and not any(keys & {"labels", "label_ids", "audio_labels"} for keys in seen)
    assert torch.isfinite(torch.tensor(metrics["loss"]))


def test_b_fp16_with_frozen_parameters_never_raises_no_inf_checks(setup, tmp_path):
    """LoRA (frozen base, frozen unused text head) under fp16 autocast and the GradScaler trains; a step
    whose optimizer got no gradient at all is skipped, where torch's scaler would raise."""
    data, higgs = setup
    overrides = [*BASE, f"data={data}", f"init_from=hf:{higgs}", "train.precision=fp16", "train.updates_per_epoch=2"]
    solver = build_solver("tts", "tiny", overrides, runs_dir=tmp_path)
    solver.fit()
    assert solver.precision == "fp16" and solver.scalers["model"].enabled
    assert not unwrap(solver.model).text_lm_head.weight.requires_grad
    lora_b = [p for n, p in solver.model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().max() > 0 for p in lora_b)  # B starts at zero: the steps were taken
    assert all(torch.isfinite(p).all() for p in solver.model.parameters())
    # an update where no trainable parameter received a gradient: skipped, not a crash
    solver.optimizers["model"].zero_grad(set_to_none=True)
    info = solver.step_optimizer("model")
    assert info.skipped and info.reason == "no gradients"
    plain = torch.amp.GradScaler("cpu")
    plain.scale(torch.ones(()))  # a (gradient-free) backward pass happened
    adamw = torch.optim.AdamW([p for p in solver.model.parameters() if p.requires_grad], fused=False)
    with pytest.raises(AssertionError, match="No inf checks were recorded"):
        plain.step(adamw)  # what torch does without tunesmith's guard


def test_c_bf16_where_unsupported_is_a_clear_preflight_error(setup, tmp_path, monkeypatch):
    from tunesmith.engine.precision import precision_problems

    assert precision_problems("bf16", torch.device("cpu")) == []  # CPU autocast runs bf16
    monkeypatch.setattr("tunesmith.engine.precision.bf16_supported", lambda device: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (problem,) = precision_problems("bf16", torch.device("cuda:0"))
    assert "does not support bfloat16" in problem and "train.precision=fp16" in problem
    data, higgs = setup
    solver = build_solver(
        "tts", "tiny", [*BASE, f"data={data}", f"init_from=hf:{higgs}", "train.precision=bf16"], runs_dir=tmp_path
    )
    solver.device = torch.device("cuda:0")  # as on a GPU without bf16 (e.g. a T4)
    with pytest.raises(PreflightError, match="does not support bfloat16"):
        solver.fit()
    assert isinstance(PreflightError("x"), UserError)  # the CLI prints it without a traceback, exit 2
    assert not (solver.run.dir / "checkpoints").exists()


def test_d_gradient_checkpointing_with_lora_and_the_cache(setup, tmp_path, caplog):
    from transformers.utils import logging as hf_logging

    from tunesmith.models.higgs.generation import greedy_audio_frames
    from tunesmith.models.higgs.prompt import SpeechExample

    lora = ["finetune.mode=lora", "finetune.lora.dropout=0"]
    plain = solver_for(tmp_path / "plain", setup, *lora)
    ckpt = solver_for(tmp_path / "ckpt", setup, *lora, "finetune.gradient_checkpointing=true")
    inner = unwrap(ckpt.model)
    assert inner.is_activation_checkpointing and not unwrap(plain.model).is_activation_checkpointing
    assert all(layer.gradient_checkpointing for layer in inner.model.layers)
    with torch.no_grad():  # the same adapters in both
        for (_, p), (_, q) in zip(plain.model.named_parameters(), ckpt.model.named_parameters(), strict=True):
            q.copy_(p)
    batch = first_batch(plain)
    grads = []
    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            for solver in (plain, ckpt):
                solver.model.train()
                out = solver.loss(solver.model, batch)
                (out.loss_sum / solver.count_targets(batch)).backward()
                grads.append({n: p.grad.clone() for n, p in solver.model.named_parameters() if p.grad is not None})
    finally:
        hf_logging.disable_propagation()
    assert "use_cache" not in caplog.text
    assert grads[0].keys() == grads[1].keys() and grads[0] and all("lora_" in n for n in grads[0])
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-7, msg=name)
    # generation afterwards uses the KV cache (eval mode) and equals the model without checkpointing
    prompt = plain.builder.collate([plain.builder.encode(SpeechExample("She sells sea shells."))])
    frames = []
    for solver in (plain, ckpt):
        solver.model.eval()
        frames.append(greedy_audio_frames(unwrap(solver.model), prompt, 6))
    assert torch.equal(frames[0], frames[1]) and frames[0].shape[1] >= 2
