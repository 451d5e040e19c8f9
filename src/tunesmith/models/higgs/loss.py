"""HiggsAudio v2 training loss as sums over targets (for tunesmith's engine), on transformers' model.

transformers' ``HiggsAudioV2ForConditionalGeneration.forward(audio_labels=…)`` returns, per codebook, the
mean next-token cross-entropy over labelled audio positions, summed over codebooks (plus, with
``use_text_head=True`` and ``labels``, the mean text cross-entropy). Every codebook has the same number
of labelled positions (one per audio frame of each trained clip), so

    transformers' audio loss = audio_sum / audio_frames,   audio_sum = Σ_codebooks Σ_positions CE

and ``audio_sum / audio_tokens`` (tokens = frames × codebooks) is the per-token mean the engine divides
by when it accumulates over micro-batches and ranks. The model is called without any label keyword, so
the batch can never carry a name the model rejects (``label_ids``) and no loss is computed twice.
(transformers computes the audio logits at every position either way; slicing to labelled positions
before the head would save memory on long prompts — a later optimisation.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tunesmith.errors import UserError
from tunesmith.models.higgs.prompt import IGNORE

MODEL_INPUTS = ("input_ids", "attention_mask", "audio_input_ids", "audio_input_ids_mask")


@dataclass
class HiggsLoss:
    """Summed losses and their counts: ``audio_sum`` over ``audio_tokens`` (= ``audio_frames`` × codebooks),
    ``text_sum`` over ``text_tokens`` (0 and 0 without a text head)."""

    audio_sum: Tensor
    audio_frames: int
    audio_tokens: int
    text_sum: Tensor | None = None
    text_tokens: int = 0

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
    while isinstance(getattr(model, "module", None), torch.nn.Module):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def higgs_loss(model: Any, batch: dict[str, Tensor], text_loss: bool | None = None) -> HiggsLoss:
    """Run transformers' model on ``batch`` (from :class:`~tunesmith.models.higgs.prompt.HiggsPromptBuilder`)
    and return the summed next-token losses.

    ``model`` may be wrapped (DDP, peft LoRA): the forward goes through the outermost wrapper, so DDP's
    hooks and LoRA adapters apply. ``text_loss`` None = when the model has a text head
    (``use_text_head=True``); True without one is a UserError (transformers would only warn and drop the
    text labels).
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
    inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
    out = model(**inputs, use_cache=False, output_hidden_states=bool(text_loss))
    k, v = config.num_codebooks, config.codebook_size
    targets = expand_audio_labels(batch, config.audio_token_id, config.audio_delay_token_id)[:, 1:]  # [B, L-1, K]
    logits = out.logits[:, :-1].float().reshape(*targets.shape[:2], k, v)
    audio_sum = F.cross_entropy(logits.reshape(-1, v), targets.reshape(-1), ignore_index=IGNORE, reduction="sum")
    valid = targets != IGNORE
    tokens = int(valid.sum())
    per_codebook = valid.sum(dim=(0, 1))
    if tokens and not bool((per_codebook == per_codebook[0]).all()):
        raise UserError(
            f"codebooks have different numbers of audio labels {per_codebook.tolist()}: labels are not a delay pattern"
        )
    result = HiggsLoss(audio_sum=audio_sum, audio_frames=tokens // k, audio_tokens=tokens)
    if text_loss:
        hidden = out.hidden_states[-1]  # the final-norm output (transformers ties it to last_hidden_state)
        text_targets = batch["labels"][:, 1:]
        text_logits = inner.text_lm_head(hidden[:, :-1]).float()
        result.text_sum = F.cross_entropy(
            text_logits.reshape(-1, text_logits.shape[-1]),
            text_targets.reshape(-1),
            ignore_index=IGNORE,
            reduction="sum",
        )
        result.text_tokens = int((text_targets != IGNORE).sum())
    return result
