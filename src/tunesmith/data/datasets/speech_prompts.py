"""Speech-prompt datasets of the tts task: whole utterances from the token cache, with their transcript and,
optionally, a voice reference of the same speaker.

``SpeechPrompts(shards, builder, ...)[(index, seed)]`` is a :class:`SpeechItem`: the target codes
``Long[K, F]`` (the whole clip, never cropped: its transcript covers all of it), its transcript and speaker, and
with ``reference="same_speaker"`` a reference clip (codes ``Long[K, Fr]`` + transcript) of another utterance of
the same speaker, drawn from ``torch.Generator().manual_seed(seed)`` — never from global RNG, so resume and
DDP see the same items. :func:`collate_prompts` turns items into the model batch with
:class:`~tunesmith.models.higgs.prompt.HiggsPromptBuilder`.

Items the model cannot train on are left out when the dataset is built, each kind counted in one log line:
no transcript, prompt longer than ``max_tokens`` (the model's context). A reference is only chosen when the
prompt with it still fits; utterances whose speaker has no other fitting clip train without one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from tunesmith.errors import UserError
from tunesmith.models.higgs.prompt import HiggsPromptBuilder, SpeechExample, normalize_text, render_chat

log = logging.getLogger("tunesmith.tts")

REFERENCE_MODES = ("none", "same_speaker")


def transcript_of(info: dict) -> str:
    """The segment's transcript (NFC, whitespace collapsed); ``""`` when unknown."""
    return " ".join(normalize_text(str(info.get("transcript") or "")).split())


def speaker_of(info: dict) -> str:
    """The segment's speaker: the sidecar's ``speaker`` field (or ``extra.speaker``); ``""`` when unknown."""
    speaker = info.get("speaker") or (info.get("extra") or {}).get("speaker") or ""
    return str(speaker).strip()


@dataclass
class SpeechItem:
    """One training utterance (codes ``[K, F]`` int64) and its optional voice reference (``[K, Fr]``)."""

    index: int
    text: str
    codes: Tensor
    speaker: str = ""
    reference_text: str | None = None
    reference_codes: Tensor | None = None

    def example(self) -> SpeechExample:
        return SpeechExample(
            self.text, codes=self.codes, reference_text=self.reference_text, reference_codes=self.reference_codes
        )


def prompt_tokens(builder: HiggsPromptBuilder, text: str, frames: int, reference: tuple[str, int] | None = None) -> int:
    """The exact ``input_ids`` length of a training prompt for a clip of ``frames`` frames (and a reference of
    ``(transcript, frames)``), without encoding audio: each clip of ``F`` frames takes ``F + K + 1`` positions."""
    k = builder.tokens.num_codebooks
    dummy = torch.zeros(k, 1, dtype=torch.long)
    example = SpeechExample(
        text,
        codes=dummy,
        reference_text=reference[0] if reference else None,
        reference_codes=dummy if reference else None,
    )
    chat = render_chat(example, builder.tokens)
    base = len(builder.tokenizer(chat, add_special_tokens=False)["input_ids"])  # one token per placeholder
    clips = frames + (reference[1] if reference else 0)
    return base + clips + k * (2 if reference else 1)


class SpeechPrompts(Dataset):
    """Keyed by ``(index, seed)``: a :class:`SpeechItem` (see the module docstring).

    ``shards``: a token-cache split (``codes(i) [K', F]``, ``num_frames(i)``, ``info(i)``); ``num_codebooks``
    the model's ``K`` (≤ the cache's). ``max_tokens`` > 0 drops prompts longer than it.
    ``reference_probability``: the share of items that get a reference when one is available.
    """

    def __init__(
        self,
        shards: Any,
        builder: HiggsPromptBuilder,
        *,
        reference: str = "none",
        reference_probability: float = 1.0,
        max_tokens: int = 0,
        split: str = "train",
    ) -> None:
        if reference not in REFERENCE_MODES:
            raise UserError(f"dataset.reference={reference!r}: choose from {', '.join(REFERENCE_MODES)}")
        if not 0.0 <= reference_probability <= 1.0:
            raise UserError(f"dataset.reference_probability={reference_probability}: must be in [0, 1]")
        self.shards, self.builder = shards, builder
        self.reference, self.reference_probability = reference, reference_probability
        self.max_tokens = int(max_tokens)
        self.num_codebooks = builder.tokens.num_codebooks
        if len(shards) and int(np.asarray(shards.codes(0)).shape[0]) < self.num_codebooks:
            raise UserError(
                f"the token cache has {np.asarray(shards.codes(0)).shape[0]} codebooks, the model needs "
                f"{self.num_codebooks}: encode the dataset with the model's own audio tokenizer"
            )
        self.texts: dict[int, str] = {}
        self.speakers: dict[int, str] = {}
        self.lengths: dict[int, int] = {}  # prompt tokens without a reference
        skipped = {"no transcript": 0, "too long for the model": 0, "no audio frames": 0}
        for i in range(len(shards)):
            info = shards.info(i) or {}
            text, frames = transcript_of(info), int(shards.num_frames(i))
            if not text:
                skipped["no transcript"] += 1
                continue
            if frames < 1:
                skipped["no audio frames"] += 1
                continue
            length = prompt_tokens(builder, text, frames)
            if self.max_tokens and length > self.max_tokens:
                skipped["too long for the model"] += 1
                continue
            self.texts[i], self.speakers[i], self.lengths[i] = text, speaker_of(info), length
        self.indices = sorted(self.texts)
        if any(skipped.values()):
            log.warning(
                "%s split: left out %s of %d utterances (max_tokens=%d)",
                split,
                ", ".join(f"{n} ({why})" for why, n in skipped.items() if n),
                len(shards),
                self.max_tokens,
            )
        if not self.indices:
            raise UserError(
                f"{split} split: no utterance to train on (of {len(shards)}: "
                + ", ".join(f"{n} {why}" for why, n in skipped.items() if n)
                + "); prepare speech with transcripts (metadata.csv, or .json sidecars with 'transcript')"
            )
        self.by_speaker: dict[str, list[int]] = {}
        for i in self.indices:
            if self.speakers[i]:
                self.by_speaker.setdefault(self.speakers[i], []).append(i)
        self.reference_cost: dict[int, int] = {}  # tokens a clip adds to a prompt as its voice reference
        if reference == "same_speaker":
            plain = prompt_tokens(builder, "x", 1)
            for i in self.indices:
                frames = int(shards.num_frames(i))
                self.reference_cost[i] = prompt_tokens(builder, "x", 1, (self.texts[i], frames)) - plain
            alone = sum(1 for i in self.indices if len(self.by_speaker.get(self.speakers[i], [])) < 2)
            if alone:
                log.warning(
                    "%s split: %d of %d utterances have no other clip of their speaker (or no speaker): "
                    "trained without a voice reference",
                    split,
                    alone,
                    len(self.indices),
                )

    def __len__(self) -> int:
        return len(self.indices)

    def _codes(self, index: int) -> Tensor:
        codes = np.asarray(self.shards.codes(index))[: self.num_codebooks]
        return torch.from_numpy(codes.astype(np.int64))

    def _reference_for(self, index: int, gen: torch.Generator) -> int | None:
        """Another clip of ``index``'s speaker whose prompt still fits, chosen by ``gen``; None when none."""
        if self.reference != "same_speaker" or not self.speakers[index]:
            return None
        if self.reference_probability < 1.0 and float(torch.rand((), generator=gen)) >= self.reference_probability:
            return None
        room = self.max_tokens - self.lengths[index] if self.max_tokens else None
        candidates = [
            j
            for j in self.by_speaker.get(self.speakers[index], [])
            if j != index and (room is None or self.reference_cost[j] <= room)
        ]
        if not candidates:
            return None
        return candidates[int(torch.randint(len(candidates), (), generator=gen))]

    def __getitem__(self, key: tuple[int, int]) -> SpeechItem:
        position, seed = key
        index = self.indices[position]
        gen = torch.Generator().manual_seed(int(seed))
        item = SpeechItem(index, self.texts[index], self._codes(index), self.speakers[index])
        ref = self._reference_for(index, gen)
        if ref is not None:
            item.reference_text, item.reference_codes = self.texts[ref], self._codes(ref)
        return item


def padding_free_positions(attention_mask: Tensor) -> Tensor:
    """Position ids ``[B, L]`` counted from each row's first real token (0 on the left padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def collate_prompts(builder: HiggsPromptBuilder, items: list[SpeechItem]) -> dict[str, Tensor]:
    """The model batch of ``items``: ``HiggsPromptBuilder.collate`` (``input_ids``/``attention_mask``/``labels``
    ``[B, L]`` left-padded, ``audio_input_ids``/``audio_labels`` ``[B, N, K]`` and ``audio_input_ids_mask``
    ``[B, N]`` right-padded) plus ``position_ids [B, L]`` counted from each row's first real token.

    Without them transformers numbers positions ``0..L-1`` whatever the padding, so a row's loss would
    depend on how long its batch companions are — and accumulation or DDP would not equal one big batch.
    """
    batch = builder.collate([builder.encode(item.example()) for item in items])
    batch["position_ids"] = padding_free_positions(batch["attention_mask"])
    return batch
