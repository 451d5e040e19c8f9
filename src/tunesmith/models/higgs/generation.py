"""Greedy audio generation on transformers' HiggsAudio v2 model, with the delay pattern enforced.

The prompt is a :func:`~tunesmith.models.higgs.prompt.render_chat` generation prompt (ending in
``<|audio_out_bos|>``, optionally with a voice reference). Each step feeds the last frame of ``K`` codes
back through the KV cache and picks, per codebook, the most likely code under these constraints
(as transformers' ``HiggsAudioV2DelayPatternLogitsProcessor`` applies them):

- start: at step ``s`` codebooks ``k ≥ s`` may only emit the stream BOS id (so the first frame is all
  BOS and codebook ``k`` starts ``k`` frames late);
- end: once any codebook emitted the stream EOS id, codebook ``k`` is forced to EOS from ``k + 1``
  steps later on; the row ends at the first all-EOS frame.

This is transformers' ``generate(do_sample=False)`` without its repetition-aware resampling
(``ras_win_len`` / ``ras_win_max_num_repeat`` in the released generation config, which draws a random
code when a code repeats within the window — not greedy).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tunesmith.errors import UserError
from tunesmith.models.higgs.prompt import revert_delay_pattern


@torch.no_grad()
def greedy_audio_frames(model: Any, batch: dict[str, Tensor], max_frames: int) -> Tensor:
    """Generate delayed audio frames ``[B, n, K]`` (n ≤ ``max_frames``; first frame all stream BOS; a finished
    row continues with all-EOS frames) for a batch of generation prompts from ``HiggsPromptBuilder.collate``."""
    cfg = model.config
    k, v = cfg.num_codebooks, cfg.codebook_size
    bos, eos = cfg.audio_stream_bos_id, cfg.audio_stream_eos_id
    input_ids = batch["input_ids"]
    if not bool((input_ids[:, -1] == cfg.audio_bos_token_id).all()):
        raise UserError("a generation prompt must end with <|audio_out_bos|> (render it without target codes)")
    if max_frames < 1:
        raise UserError(f"max_frames must be ≥ 1, got {max_frames}")
    b = input_ids.shape[0]
    inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": batch["attention_mask"], "use_cache": True}
    if "audio_input_ids" in batch and batch["audio_input_ids"].shape[1] > 0:
        inputs["audio_input_ids"] = batch["audio_input_ids"]
        inputs["audio_input_ids_mask"] = batch["audio_input_ids_mask"]
    out = model(**inputs)
    attention = batch["attention_mask"]
    codes_axis = torch.arange(v)
    bos_left = torch.arange(k).repeat(b, 1)  # codebook k forced to BOS while ≥ 0
    eos_left = torch.arange(1, k + 1).repeat(b, 1)  # counts down once the row is ending; ≤ 0 → forced EOS
    ending = torch.zeros(b, dtype=torch.bool)
    finished = torch.zeros(b, dtype=torch.bool)
    frames: list[Tensor] = []
    for _ in range(max_frames):
        scores = out.logits[:, -1].float().reshape(b, k, v).clone()
        force_bos = bos_left >= 0
        scores[force_bos[..., None] & (codes_axis != bos)] = -float("inf")
        bos_left[force_bos] -= 1
        eos_left[ending] -= 1
        force_eos = eos_left <= 0
        scores[force_eos[..., None] & (codes_axis != eos)] = -float("inf")
        step = scores.argmax(dim=-1)  # [B, K]
        step[finished] = eos
        frames.append(step)
        all_eos = (step == eos).all(dim=-1)
        ending = ending | (step == eos).any(dim=-1)
        finished = finished | all_eos
        if bool(finished.all()):
            break
        attention = torch.cat([attention, attention.new_ones(b, 1)], dim=1)
        out = model(
            audio_input_ids=step[:, None, :],
            attention_mask=attention,
            past_key_values=out.past_key_values,
            use_cache=True,
        )
    return torch.stack(frames, dim=1)


def frames_to_codes(frames: Tensor, stream_bos_id: int, stream_eos_id: int) -> Tensor:
    """One row's generated frames ``[n, K]`` (first all-BOS) → codes ``[K, F]`` for the audio tokenizer.

    Drops the first frame and everything from the first all-EOS frame on, reverts the delay pattern,
    and clips stray stream ids into the code range (as transformers' processor does before decoding).
    """
    k = frames.shape[1]
    if not bool((frames[0] == stream_bos_id).all()):
        raise UserError("generated frames must start with an all-BOS frame")
    is_end = (frames == stream_eos_id).all(dim=-1).nonzero()
    end = int(is_end[0, 0]) if len(is_end) else frames.shape[0]
    inner = frames[1:end]
    if inner.shape[0] < k:
        return frames.new_zeros(k, 0)
    return revert_delay_pattern(inner).clamp(0, min(stream_bos_id, stream_eos_id) - 1).t()
