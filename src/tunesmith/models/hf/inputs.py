"""The one place MusicGen training inputs are built, and checked, correctly.

    audio float [B, C, T] ──encode_audio──▶ codes Long [B, K, F] (at a validated bandwidth)
    codes ──delay_pattern_targets──▶ model input Long [B, K, S] and labels Long [B, S, K]
                                      (S = F + K - 1; pattern padding and frames past each length = -100)
    texts ──tokenize_texts──▶ T5 input_ids / attention_mask for every row (no text → a null row:
                              tokenized "" with its mask zeroed, i.e. zero text states)

:func:`hf_training_batch` combines them into the keyword arguments of
``transformers.MusicgenForConditionalGeneration(**batch)``, which then shifts the labels right
behind the start token itself: a batch never carries ``decoder_input_ids`` equal to the labels
(that teaches the model to copy its input). :func:`check_hf_batch` names each known mistake in a
hand-made batch. tunesmith's own LM task computes the same targets inside
:meth:`~tunesmith.models.lm.model.LMModel.loss`; the tests check both against transformers' loss.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from tunesmith.errors import UserError
from tunesmith.models.lm.patterns import Pattern, PatternKind

IGNORE_INDEX = -100


@dataclasses.dataclass
class PatternTargets:
    """``inputs`` Long [B, K, S]: what the LM reads; ``labels`` Long [B, S, K]: what it must predict."""

    inputs: Tensor
    labels: Tensor

    @property
    def num_targets(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


def require_codes(codes: Any, card: int, name: str = "codes") -> Tensor:
    """``codes`` as Long [B, K, F] in ``[0, card)``; UserError naming the mistake (a waveform, a bad shape)."""
    codes = torch.as_tensor(codes)
    if codes.is_floating_point() or codes.is_complex():
        raise UserError(
            f"{name} must be integer codec codes [batch, codebooks, frames], got a {codes.dtype} tensor of shape "
            f"{list(codes.shape)}: a waveform? Encode audio with the codec first (encode_audio, or the token cache)"
        )
    if codes.dim() != 3:
        raise UserError(f"{name} must have shape [batch, codebooks, frames], got {list(codes.shape)}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= card):
        raise UserError(f"{name} must lie in [0, {card}), got values in [{int(codes.min())}, {int(codes.max())}]")
    return codes.long()


def encode_audio(codec: Any, wav: Any, sample_rate: int | None = None) -> Tensor:
    """Waveform float [B, C, T] (at ``sample_rate`` Hz when given) → codes Long [B, codec.n_q, F].

    Checks the rate and channel count against the codec and casts the audio to the codec's dtype
    and device (a half-precision codec never meets float32 audio).
    """
    wav = torch.as_tensor(wav)
    if not wav.is_floating_point():
        raise UserError(f"audio must be a float waveform in [-1, 1], got {wav.dtype}; convert PCM with wav / 32768")
    if wav.dim() == 2:
        wav = wav[:, None]
    if wav.dim() != 3 or wav.shape[1] != int(codec.channels):
        raise UserError(f"audio must be [batch, {codec.channels} channels, samples], got {list(wav.shape)}")
    if sample_rate is not None and int(sample_rate) != int(codec.sample_rate):
        raise UserError(
            f"audio is at {sample_rate} Hz, the codec works at {codec.sample_rate} Hz: resample it first "
            "(tunesmith.audio.io.load_audio(path, sample_rate=...) does)"
        )
    params = list(codec.parameters()) if hasattr(codec, "parameters") else []
    if params:
        wav = wav.to(device=params[0].device, dtype=params[0].dtype)
    with torch.inference_mode():
        codes = codec.encode(wav)
    return require_codes(codes.clone(), int(codec.bins), "codec output")


def delay_pattern_targets(
    codes: Any, card: int, lengths: Tensor | None = None, pattern: PatternKind = "delay", channels: int = 1
) -> PatternTargets:
    """Codes Long [B, K, F] (frames past ``lengths[b]`` are padding) → model input and labels.

    ``channels=2``: stereo codes, left/right interleaved (both codebooks of a level share its delay).

    Input: the pattern sequence (special token ``card`` where a codebook has no code) shifted right
    behind a start column of ``card``. Labels: the sequence itself, -100 at pattern padding and padding.
    """
    codes = require_codes(codes, card)
    b, k, f = codes.shape
    if lengths is not None:
        lengths = torch.as_tensor(lengths, device=codes.device).long()
        if lengths.shape != (b,) or bool((lengths < 0).any()) or bool((lengths > f).any()):
            raise UserError(f"lengths must be [batch] in [0, {f}], got {lengths.tolist()}")
        codes = codes.masked_fill(torch.arange(f, device=codes.device) >= lengths[:, None, None], card)
    pat = Pattern(pattern, k, channels)
    seq = pat.build(codes, card)
    valid = pat.valid_mask(f, codes.device).expand(b, -1, -1)
    if lengths is not None:
        delays = torch.tensor(pat.delays, device=codes.device)
        steps = torch.arange(seq.shape[2], device=codes.device)
        valid = valid & (steps[None, None, :] < delays[None, :, None] + lengths[:, None, None])
    labels = seq.masked_fill(~valid, IGNORE_INDEX).transpose(1, 2).contiguous()
    return PatternTargets(inputs=Pattern.model_input(seq, card), labels=labels)


def tokenize_texts(tokenizer: Any, texts: list[str | None], max_length: int = 256) -> dict[str, Tensor]:
    """T5 ``input_ids``/``attention_mask`` Long [B, L] for every row; None or "" → a null row (mask all 0)."""
    if isinstance(texts, str):
        raise UserError("texts must be a list of strings (one per item), not one string")
    batch = tokenizer(
        [t or "" for t in texts], return_tensors="pt", padding=True, truncation=True, max_length=max_length
    )
    has_text = torch.tensor([bool(t) for t in texts], dtype=torch.long)[:, None]
    return {"input_ids": batch["input_ids"].long(), "attention_mask": batch["attention_mask"].long() * has_text}


def hf_training_batch(
    codes: Any,
    texts: list[str | None],
    tokenizer: Any,
    card: int,
    lengths: Tensor | None = None,
    max_text_length: int = 256,
) -> dict[str, Tensor]:
    """Keyword arguments for ``MusicgenForConditionalGeneration(**batch)``: input_ids, attention_mask, labels.

    ``labels`` is [B, S, K] with -100 at pattern padding; no ``decoder_input_ids`` (the model shifts the
    labels right behind ``decoder_start_token_id``, which must equal ``card``).
    """
    targets = delay_pattern_targets(codes, card, lengths)
    if len(texts) != targets.labels.shape[0]:
        raise UserError(f"{len(texts)} texts for a batch of {targets.labels.shape[0]} code sequences")
    return {**tokenize_texts(tokenizer, texts, max_text_length), "labels": targets.labels}


def check_hf_batch(batch: dict[str, Any], num_codebooks: int | None = None) -> None:
    """UserError for the known ways a hand-made MusicGen training batch goes wrong; None when sound."""
    if "label_ids" in batch and "labels" not in batch:
        raise UserError("the batch has 'label_ids'; MusicgenForConditionalGeneration takes 'labels' (else no loss)")
    if batch.get("input_ids") is None and batch.get("inputs_embeds") is None and batch.get("encoder_outputs") is None:
        raise UserError(
            "the batch has no text input_ids: the model always runs T5, so unconditional rows need tokenized empty "
            "text with attention_mask 0 (tokenize_texts does this)"
        )
    labels = batch.get("labels")
    if labels is None:
        raise UserError("the batch has no 'labels': the model would return no loss")
    labels = torch.as_tensor(labels)
    if labels.is_floating_point():
        raise UserError(
            f"labels are {labels.dtype}: they must be codec codes (Long), not audio; encode the audio first "
            "(encode_audio), then build labels with delay_pattern_targets"
        )
    if labels.dim() != 3 or (num_codebooks is not None and labels.shape[2] != num_codebooks):
        raise UserError(f"labels must be [batch, steps, codebooks], got {list(labels.shape)}")
    decoder_inputs = batch.get("decoder_input_ids")
    if decoder_inputs is not None:
        flat = torch.as_tensor(decoder_inputs).reshape(labels.shape[0], labels.shape[2], -1).transpose(1, 2)
        if flat.shape == labels.shape and torch.equal(flat, labels):
            raise UserError(
                "decoder_input_ids equal the labels: the model would learn to copy its input. Leave "
                "decoder_input_ids out; the model shifts the labels right behind the start token"
            )
    if not bool((labels == IGNORE_INDEX).any()):
        raise UserError("labels have no -100: the delay pattern's padding must be ignored (delay_pattern_targets)")
