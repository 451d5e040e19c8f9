"""HiggsAudio v2 training loss as sums over targets (for tunesmith's engine), on transformers' model.

transformers' ``HiggsAudioV2ForConditionalGeneration.forward(audio_labels=…)`` returns, per codebook, the
mean next-token cross-entropy over labelled audio positions, summed over codebooks (plus, with
``use_text_head=True`` and ``labels``, the mean text cross-entropy). Every codebook has the same number
of labelled positions (one per audio frame of each trained clip), so

    transformers' audio loss = audio_sum / audio_frames,   audio_sum = Σ_codebooks Σ_positions CE

and ``audio_sum / audio_tokens`` (tokens = frames × codebooks) is the per-token mean the engine divides
by when it accumulates over micro-batches and ranks. The model is called without any label keyword, so
the batch can never carry a name the model rejects (``label_ids``) and no loss is computed twice.

Only the positions that carry a target are projected: the model is called with ``logits_to_keep`` = a
boolean mask [B, L] of the positions whose next audio frame is labelled, so transformers applies
``audio_lm_head`` to those N positions only (logits [N, K·V] instead of [B, L, K·V] — the text prompt
and the voice-reference clip are skipped). With a text loss, the text head is applied, likewise, only at
the positions whose next text token is labelled, from the decoder's final (normed) hidden state, inside
the model's forward (forward hooks on transformers' inner modules), so a DDP wrapper sees the text
logits among its outputs (``find_unused_parameters`` traverses the graph from them). Cross-entropy runs
in float32 on these slices. The result equals transformers' loss on the full logits (same matmuls per
position, rows selected before the head instead of after).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from tunesmith.errors import UserError
from tunesmith.models.higgs.prompt import IGNORE

MODEL_INPUTS = ("input_ids", "attention_mask", "audio_input_ids", "audio_input_ids_mask", "position_ids")
# position_ids: passed when the batch has them (tunesmith.data.datasets.speech_prompts.collate_prompts: counted
# from the first real token, so a left-padded row computes what it computes alone)
TEXT_LOGITS = "text_logits"  # key of the text logits in the model's output while the text loss is computed


@dataclass
class HiggsLoss:
    """Summed losses and their counts: ``audio_sum`` over ``audio_tokens`` (= ``audio_frames`` × codebooks),
    ``text_sum`` over ``text_tokens`` (0 and 0 without a text head)."""

    audio_sum: Tensor
    audio_frames: int
    audio_tokens: int
    text_sum: Tensor | None = None
    text_tokens: int = 0
    audio_per_codebook: Tensor | None = None  # [K] detached: audio_sum split by codebook

    def transformers_loss(self) -> Tensor:
        """The value transformers' forward returns for the same batch (audio mean per codebook, summed, + text mean)."""
        loss = self.audio_sum / max(self.audio_frames, 1)
        if self.text_sum is not None:
            loss = loss + self.text_sum / max(self.text_tokens, 1)
        return loss


def expand_audio_labels(batch: dict[str, Tensor], audio_token_id: int, audio_delay_token_id: int) -> Tensor:
    """``audio_labels [B, N, K]`` placed at the text positions that carry audio → ``[B, L, K]`` (−100 elsewhere)."""
    input_ids = batch["input_ids"]
    labels = batch["audio_labels"]
    mask = batch["audio_input_ids_mask"]
    positions = (input_ids == audio_token_id) | (input_ids == audio_delay_token_id)
    if int(positions.sum()) != int(mask.sum()):
        raise UserError(
            f"batch has {int(positions.sum())} audio positions in the text but {int(mask.sum())} audio frames"
        )
    out = labels.new_full((*input_ids.shape, labels.shape[-1]), IGNORE)
    out[positions] = labels[mask]
    return out


def unwrap(model: Any) -> Any:
    """The transformers model inside DDP/FSDP (``.module``) and peft (``get_base_model()``) wrappers."""
    from tunesmith.models.hf.blocks import base_model

    return base_model(model)


def predicting_positions(targets: Tensor) -> Tensor:
    """Next-token targets ``[B, L-1(, K)]`` (−100 = none) → bool ``[B, L]``: the positions whose output is
    scored (position t predicts target t; the last position predicts nothing)."""
    scored = targets != IGNORE
    if scored.dim() == 3:
        scored = scored.any(dim=-1)
    return F.pad(scored, (0, 1), value=False)


@contextlib.contextmanager
def text_logits_hook(inner: Any, keep: Tensor) -> Iterator[None]:
    """While active, every forward of transformers' model ``inner`` returns a plain dict: ``"logits"`` (its
    audio logits) and :data:`TEXT_LOGITS` = ``text_lm_head(h[keep])`` (``[N_text, vocab]``, h = the decoder's
    final normed hidden state ``[B, L, H]``). Both hooks run inside the outermost wrapper's forward (DDP,
    peft); a dict, because DDP rebuilds a transformers output from its declared fields only."""
    seen: dict[str, Tensor] = {}

    def grab_hidden(module: Any, args: Any, output: Any) -> None:
        seen["hidden"] = output.last_hidden_state

    def add_text_logits(module: Any, args: Any, output: Any) -> dict[str, Tensor]:
        hidden = seen.pop("hidden")
        return {"logits": output.logits, TEXT_LOGITS: module.text_lm_head(hidden[keep.to(hidden.device)])}

    handles = [inner.model.register_forward_hook(grab_hidden), inner.register_forward_hook(add_text_logits)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def higgs_loss(model: Any, batch: dict[str, Tensor], text_loss: bool | None = None) -> HiggsLoss:
    """Run transformers' model on ``batch`` (from :class:`~tunesmith.models.higgs.prompt.HiggsPromptBuilder`)
    and return the summed next-token losses.

    ``model`` may be wrapped (DDP, peft LoRA): the forward goes through the outermost wrapper, so DDP's
    hooks and LoRA adapters apply. ``text_loss`` None = when the model has a text head
    (``use_text_head=True``); True without one is a UserError (transformers would only warn and drop the
    text labels). Logits are computed only where a target is scored (see the module docstring).
    """
    inner = unwrap(model)
    config = inner.config
    has_head = getattr(inner, "text_lm_head", None) is not None
    if text_loss is None:
        text_loss = has_head
    if text_loss and not has_head:
        raise UserError(
            "text loss requested but the model has no text head: build it with use_text_head=True "
            "(transformers ignores text labels without one)"
        )
    k, v = config.num_codebooks, config.codebook_size
    targets = expand_audio_labels(batch, config.audio_token_id, config.audio_delay_token_id)[:, 1:]  # [B, L-1, K]
    valid = targets != IGNORE
    tokens = int(valid.sum())
    per_codebook = valid.sum(dim=(0, 1))
    if tokens and not bool((per_codebook == per_codebook[0]).all()):
        raise UserError(
            f"codebooks have different numbers of audio labels {per_codebook.tolist()}: labels are not a delay pattern"
        )
    audio_keep = predicting_positions(targets)  # [B, L]
    inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
    text_targets = batch["labels"][:, 1:] if text_loss else None
    hook = text_logits_hook(inner, predicting_positions(text_targets)) if text_loss else contextlib.nullcontext()
    with hook:
        out = model(**inputs, use_cache=False, logits_to_keep=audio_keep.to(batch["input_ids"].device))
    logits = out["logits"].float().reshape(-1, v)  # [N·K, V]: the N scored positions only
    audio_targets = targets[audio_keep[:, :-1]].reshape(-1)  # [N·K], same (row, position) order
    per_token = F.cross_entropy(logits, audio_targets, ignore_index=IGNORE, reduction="none")  # [N·K]
    audio_sum = per_token.sum()
    per_codebook_sum = per_token.detach().reshape(-1, k).sum(dim=0)  # [K]
    result = HiggsLoss(
        audio_sum=audio_sum, audio_frames=tokens // k, audio_tokens=tokens, audio_per_codebook=per_codebook_sum
    )
    if text_loss:
        text_targets = text_targets[text_targets != IGNORE]  # [N_text]
        text_logits = out[TEXT_LOGITS].float()  # [N_text, vocab]
        result.text_sum = F.cross_entropy(text_logits, text_targets, reduction="sum")
        result.text_tokens = int(text_targets.numel())
    return result
