"""HiggsAudio v2 prompts: the chat format the model was trained with, the delay pattern, and training labels.

The text (what transformers' chat template for the released checkpoint renders; ``H(role)`` stands for
``<|start_header_id|>{role}<|end_header_id|>\\n\\n``, ``CLIP`` for
``<|audio_out_bos|><|AUDIO_OUT|><|audio_eos|>``)::

    <bos>H(system){system}[\\n\\n<|scene_desc_start|>\\n{scene}\\n<|scene_desc_end|>]<|eot_id|>
    [H(user){reference transcript}<|eot_id|>H(assistant)CLIP<|eot_id|>]
    H(user){text}<|eot_id|>
    H(assistant)CLIP<|eot_id|>                      (training)
    H(assistant)<|audio_out_bos|>                   (generation)

(no newlines between turns; texts are NFC-normalised and stripped). A voice reference is an earlier
user/assistant exchange: its transcript, then its audio.

Each ``<|AUDIO_OUT|>`` stands for one audio clip of ``F`` frames × ``K`` codebooks: stream BOS and EOS
frames are added (``F + 2``), then the delay pattern shifts codebook ``k`` right by ``k`` frames (BOS
before, EOS after), giving ``N = F + K + 1`` frames; the placeholder becomes ``N − (K − 1)``
``<|AUDIO_OUT|>`` tokens followed by ``K − 1`` delay tokens, and the model reads the ``N`` code frames
at those positions. Exactly as transformers' ``HiggsAudioV2Processor`` builds it, except that audio labels
are kept only on the clip being trained (the assistant's answer), never on a voice reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tunesmith.audio.transcript import normalize_text  # the one NFC normalisation (importable from here)
from tunesmith.errors import UserError

DEFAULT_SYSTEM_PROMPT = "Generate audio following instruction."
IGNORE = -100


@dataclass(frozen=True)
class HiggsTokens:
    """The special tokens and audio stream ids of one checkpoint (defaults: the released model's)."""

    num_codebooks: int
    stream_bos_id: int = 1024
    stream_eos_id: int = 1025
    bos_token: str = "<|begin_of_text|>"
    audio_token: str = "<|AUDIO_OUT|>"
    audio_bos_token: str = "<|audio_out_bos|>"
    audio_eos_token: str = "<|audio_eos|>"
    audio_delay_token: str = "<|reserved_special_token_6|>"


@dataclass
class SpeechExample:
    """One utterance to train on (or, with ``codes=None``, to generate).

    ``codes [K, F]`` are the assistant audio's codes (0 ≤ code < stream BOS id); ``reference_codes
    [K, Fr]`` with ``reference_text`` put a voice reference before the request.
    """

    text: str
    codes: Tensor | None = None
    reference_text: str | None = None
    reference_codes: Tensor | None = None
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    scene: str | None = None


@dataclass
class EncodedExample:
    """One tokenised example: ``input_ids [L]``, ``labels [L]`` (text), ``audio_input_ids [N, K]``,
    ``audio_labels [N, K]``."""

    input_ids: Tensor
    labels: Tensor
    audio_input_ids: Tensor
    audio_labels: Tensor
    meta: dict[str, Any] = field(default_factory=dict)


def render_chat(example: SpeechExample, tokens: HiggsTokens, add_generation_prompt: bool | None = None) -> str:
    """The chat text with one ``<|AUDIO_OUT|>`` placeholder per clip (reference first, then the target).

    ``add_generation_prompt`` defaults to "no target codes": the text then ends with the assistant
    header and ``<|audio_out_bos|>``, ready for generation.
    """
    if add_generation_prompt is None:
        add_generation_prompt = example.codes is None
    if (example.reference_text is None) != (example.reference_codes is None):
        raise UserError("a voice reference needs both its audio codes and its transcript")
    clip = tokens.audio_bos_token + tokens.audio_token + tokens.audio_eos_token

    def turn(role: str, body: str) -> str:
        return f"<|start_header_id|>{role}<|end_header_id|>\n\n{body}<|eot_id|>"

    system = normalize_text(example.system_prompt).strip()
    if example.scene is not None:
        system += f"\n\n<|scene_desc_start|>\n{normalize_text(example.scene).strip()}\n<|scene_desc_end|>"
    text = normalize_text(example.text).strip()
    if not text:
        raise UserError("empty transcript: every example needs the text it speaks")
    parts = [tokens.bos_token, turn("system", system)]
    if example.reference_codes is not None:
        reference = normalize_text(example.reference_text or "").strip()
        if not reference:
            raise UserError("empty voice-reference transcript: a reference clip needs the text it speaks")
        parts += [turn("user", reference), turn("assistant", clip)]
    parts.append(turn("user", text))
    if add_generation_prompt:
        parts.append(f"<|start_header_id|>assistant<|end_header_id|>\n\n{tokens.audio_bos_token}")
    else:
        if example.codes is None:
            raise UserError("a training example needs the assistant audio codes")
        parts.append(turn("assistant", clip))
    return "".join(parts)


def delay_pattern(codes: Tensor, stream_bos_id: int, stream_eos_id: int) -> Tensor:
    """Codes ``[K, F]`` → stream ``[K, F + K + 1]``: BOS and EOS frames added, codebook ``k`` delayed by ``k``.

    Row ``k`` reads ``k + 1`` × BOS, the ``F`` codes, then ``K − k`` × EOS.
    """
    k, f = codes.shape
    out = torch.full((k, f + k + 1), stream_eos_id, dtype=torch.long)
    for row in range(k):
        out[row, : row + 1] = stream_bos_id
        out[row, row + 1 : row + 1 + f] = codes[row]
    return out


def revert_delay_pattern(stream: Tensor) -> Tensor:
    """Delayed frames ``[N, K]`` → aligned ``[N − K + 1, K]``; given a clip without its first (all-BOS) and
    last (all-EOS) frame, that is its ``F`` code frames (what the processor decodes)."""
    n, k = stream.shape
    return torch.stack([stream[row : n - k + 1 + row, row] for row in range(k)], dim=1)


class HiggsPromptBuilder:
    """Turns :class:`SpeechExample` into model inputs with a checkpoint's text tokenizer.

    ``tokenizer`` is a transformers tokenizer (called with ``add_special_tokens=False``: the format
    carries its own BOS). ``label_reference_audio=True`` also puts audio labels on a voice reference
    (what transformers' processor does with ``output_labels=True``); tunesmith's default trains on the
    assistant answer only.
    """

    def __init__(self, tokenizer: Any, tokens: HiggsTokens, label_reference_audio: bool = False) -> None:
        self.tokenizer = tokenizer
        self.tokens = tokens
        self.label_reference_audio = label_reference_audio
        ids = {}
        for name in ("bos_token", "audio_token", "audio_bos_token", "audio_eos_token", "audio_delay_token"):
            token = getattr(tokens, name)
            tid = tokenizer.convert_tokens_to_ids(token)
            if tid is None or tid == getattr(tokenizer, "unk_token_id", None):
                raise UserError(
                    f"the text tokenizer has no special token {token!r} ({name}); not a HiggsAudio tokenizer?"
                )
            ids[name] = int(tid)
        self.audio_token_id = ids["audio_token"]
        self.audio_bos_token_id = ids["audio_bos_token"]
        self.audio_delay_token_id = ids["audio_delay_token"]
        if tokenizer.pad_token_id is None:
            raise UserError("the text tokenizer has no pad token")
        self.pad_token_id = int(tokenizer.pad_token_id)

    def _clip(self, codes: Tensor, what: str) -> Tensor:
        k = self.tokens.num_codebooks
        if codes.dim() != 2 or codes.shape[0] != k or codes.shape[1] < 1:
            raise UserError(f"{what} codes must be [{k} codebooks, frames ≥ 1]; got {tuple(codes.shape)}")
        if int(codes.min()) < 0 or int(codes.max()) >= min(self.tokens.stream_bos_id, self.tokens.stream_eos_id):
            raise UserError(f"{what} codes must lie below the stream BOS/EOS ids; got max {int(codes.max())}")
        return delay_pattern(codes.long().cpu(), self.tokens.stream_bos_id, self.tokens.stream_eos_id).t()

    def encode(self, example: SpeechExample) -> EncodedExample:
        """Tokenise one example (see the module docstring for the layout)."""
        k = self.tokens.num_codebooks
        text = render_chat(example, self.tokens)
        clips: list[tuple[Tensor, bool]] = []
        if example.reference_codes is not None:
            clips.append((self._clip(example.reference_codes, "reference"), self.label_reference_audio))
        if example.codes is not None:
            clips.append((self._clip(example.codes, "target"), True))
        pieces = text.split(self.tokens.audio_token)
        if len(pieces) != len(clips) + 1:
            raise UserError(f"a text contains the reserved token {self.tokens.audio_token!r}")
        expanded = pieces[0]
        for (stream, _), piece in zip(clips, pieces[1:], strict=True):
            n = stream.shape[0]
            expanded += self.tokens.audio_token * (n - (k - 1)) + self.tokens.audio_delay_token * (k - 1) + piece
        input_ids = torch.tensor(self.tokenizer(expanded, add_special_tokens=False)["input_ids"], dtype=torch.long)
        if clips:
            audio = torch.cat([stream for stream, _ in clips])
            audio_labels = torch.cat(
                [stream if labelled else torch.full_like(stream, IGNORE) for stream, labelled in clips]
            )
        else:
            audio = torch.zeros(0, k, dtype=torch.long)
            audio_labels = audio.clone()
        boundary = (audio_labels == self.tokens.stream_bos_id) | (audio_labels == self.tokens.stream_eos_id)
        audio_labels = audio_labels.masked_fill(boundary, IGNORE)
        n_audio = int(((input_ids == self.audio_token_id) | (input_ids == self.audio_delay_token_id)).sum())
        if n_audio != audio.shape[0]:
            raise UserError(
                f"text tokenizer split the audio placeholders: {n_audio} audio positions for {audio.shape[0]} frames"
            )
        labels = input_ids.clone()
        labels[
            (input_ids == self.audio_token_id)
            | (input_ids == self.pad_token_id)
            | (input_ids == self.audio_bos_token_id)
        ] = IGNORE
        return EncodedExample(input_ids, labels, audio, audio_labels, {"text": text})

    def collate(self, items: list[EncodedExample]) -> dict[str, Tensor]:
        """Batch: text left-padded (``input_ids``, ``attention_mask``, ``labels`` ``[B, L]``); audio right-padded
        (``audio_input_ids`` with stream EOS, ``audio_input_ids_mask``, ``audio_labels`` with −100, ``[B, N(, K)]``)."""
        if not items:
            raise UserError("cannot collate an empty batch")
        k = self.tokens.num_codebooks
        length = max(len(it.input_ids) for it in items)
        frames = max(it.audio_input_ids.shape[0] for it in items)
        b = len(items)
        input_ids = torch.full((b, length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((b, length), IGNORE, dtype=torch.long)
        attention = torch.zeros(b, length, dtype=torch.long)
        audio = torch.full((b, frames, k), self.tokens.stream_eos_id, dtype=torch.long)
        audio_labels = torch.full((b, frames, k), IGNORE, dtype=torch.long)
        audio_mask = torch.zeros(b, frames, dtype=torch.bool)
        for i, it in enumerate(items):
            n, m = len(it.input_ids), it.audio_input_ids.shape[0]
            input_ids[i, length - n :] = it.input_ids
            labels[i, length - n :] = it.labels
            attention[i, length - n :] = 1
            audio[i, :m] = it.audio_input_ids
            audio_labels[i, :m] = it.audio_labels
            audio_mask[i, :m] = True
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "labels": labels,
            "audio_input_ids": audio,
            "audio_input_ids_mask": audio_mask,
            "audio_labels": audio_labels,
        }
