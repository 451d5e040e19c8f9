"""Audio generation on transformers' HiggsAudio v2 model: delay pattern, sampling, repetition-aware sampling.

The prompt is a :func:`~tunesmith.models.higgs.prompt.render_chat` generation prompt (ending in
``<|audio_out_bos|>``, optionally with a voice reference). Each step feeds the last frame of ``K`` codes
back through the KV cache and picks, per codebook, one code under these constraints (as transformers'
``HiggsAudioV2DelayPatternLogitsProcessor`` applies them):

- start: at step ``s`` codebooks ``k ≥ s`` may only emit the stream BOS id (so the first frame is all
  BOS and codebook ``k`` starts ``k`` frames late);
- end: once any codebook emitted the stream EOS id, codebook ``k`` is forced to EOS from ``k + 1``
  steps later on; the row ends at the first all-EOS frame.

Picking (:class:`SamplingSettings`): greedy (``temperature`` 0), or sampling after transformers' warpers in
its order — temperature, top-k, top-p — applied per codebook. Repetition-aware sampling (RAS, transformers'
``ras_win_len`` / ``ras_win_max_num_repeat``): when the picked code of codebook ``k`` already occurs at least
``ras_win_max_num_repeat`` times among the last ``ras_win_len`` frames of that codebook (the prompt's audio,
then the generated frames; stream BOS/EOS never count), it is replaced by a draw from the softmax of the
*raw* logits (no delay mask, no temperature) — :func:`ras_replace`. Random draws use one
``torch.Generator`` per row, so a row's audio depends on its seed only, not on its batch companions
(``None`` draws from torch's global generator, as transformers does).

With one row, the result equals transformers' ``generate`` (greedy: ``do_sample=False``; sampling with
``torch.manual_seed(s)`` before it and ``Generator().manual_seed(s)`` here). In a batch, transformers' RAS
window also spans the batch's right-padding of the prompt audio (stream EOS, never counted, but taking
window slots); here each row's window holds its own frames only.

Speed: after the prompt (transformers' own forward, audio logits of the last position only) the loop runs
its own decode step on the model's modules (:class:`_LeanDecoder`): preallocated KV buffers instead of
transformers' per-step ``torch.cat`` of the cache, rotary tables computed once, no mask building, no text
path, no logits processors or stopping criteria. It computes what transformers' decode computes (audio
norms, attention over the cache, audio MLP) with the same modules; models it does not cover (attention
other than SDPA, dynamic RoPE) go through transformers' forward per step (``decoder="transformers"``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tunesmith.errors import UserError
from tunesmith.models.higgs.loss import unwrap
from tunesmith.models.higgs.prompt import revert_delay_pattern

StepCallback = Callable[[int, int], None]  # (frames done, max frames); may raise to abort


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    """How each code is picked. ``temperature`` 0 = greedy (argmax); ``top_k`` 0 = off; ``top_p`` 0 or 1 =
    off; ``ras_win_len`` 0 = no repetition-aware sampling (else the window in frames)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 0.0
    ras_win_len: int = 0
    ras_win_max_num_repeat: int = 2

    def __post_init__(self) -> None:
        if not self.temperature >= 0 or self.temperature == float("inf"):
            raise UserError(f"temperature={self.temperature}: must be a finite number >= 0 (0 = greedy)")
        if self.top_k < 0:
            raise UserError(f"top_k={self.top_k}: must be >= 0 (0 = off)")
        if not 0.0 <= self.top_p <= 1.0:
            raise UserError(f"top_p={self.top_p}: must be in [0, 1] (0 = off)")
        if self.ras_win_len < 0:
            raise UserError(f"ras_win_len={self.ras_win_len}: must be >= 0 (0 = off)")
        if self.ras_win_max_num_repeat < 1:
            raise UserError(f"ras_win_max_num_repeat={self.ras_win_max_num_repeat}: must be >= 1")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def random(self) -> bool:
        """Whether any draw is random (sampling, or RAS's replacement draws)."""
        return not self.greedy or self.ras_win_len > 0


GREEDY = SamplingSettings()


def row_generators(seeds: Sequence[int], device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One ``torch.Generator`` per row, seeded with ``seeds[i]``, on ``device``."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def warp_scores(scores: Tensor, settings: SamplingSettings) -> Tensor:
    """Transformers' temperature → top-k → top-p warpers on ``scores [..., V]`` (float): filtered entries -inf.

    top-k keeps scores ≥ the k-th largest; top-p sorts ascending and drops entries whose cumulative
    probability is ≤ 1 − top_p, always keeping the most likely one.
    """
    scores = scores / settings.temperature
    v = scores.shape[-1]
    if settings.top_k > 0:
        kth = torch.topk(scores, min(settings.top_k, v), dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if 0.0 < settings.top_p < 1.0:
        ordered, order = torch.sort(scores, dim=-1, descending=False)
        cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative <= (1 - settings.top_p)
        drop[..., -1:] = False
        scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return scores


def pick_codes(scores: Tensor, settings: SamplingSettings, generators: Sequence[torch.Generator | None]) -> Tensor:
    """One code per row and codebook: ``scores [B, K, V]`` (delay masks applied) → Long ``[B, K]``."""
    if settings.greedy:
        return scores.argmax(dim=-1)
    probs = warp_scores(scores, settings).softmax(dim=-1)
    return torch.stack([torch.multinomial(probs[i], 1, generator=g).squeeze(-1) for i, g in enumerate(generators)])


def ras_replace(
    window: Tensor,
    picked: Tensor,
    raw_logits: Tensor,
    max_repeat: int,
    excluded: tuple[int, int],
    generators: Sequence[torch.Generator | None],
) -> Tensor:
    """Repetition-aware resampling of one step (transformers' rule), in place on ``picked`` and returned.

    ``window [B, W, K]``: each row's last W frames (prompt audio then generated; stream BOS/EOS fillers
    never count); ``picked [B, K]``: this step's codes; ``raw_logits [B, K, V]``: the model's logits before any
    mask or temperature. A code that occurs ≥ ``max_repeat`` times in its codebook's window (occurrences equal
    to an ``excluded`` id — stream BOS/EOS — are not counted) is replaced by a draw from ``softmax(raw_logits)``.
    Draws happen row by row, only for rows with a replacement.
    """
    counted = (window == picked[:, None, :]) & (window != excluded[0]) & (window != excluded[1])
    replace = counted.sum(dim=1) >= max_repeat  # [B, K]
    if bool(replace.any()):
        for i, g in enumerate(generators):
            if bool(replace[i].any()):
                probs = raw_logits[i][replace[i]].float().softmax(dim=-1)
                picked[i, replace[i]] = torch.multinomial(probs, 1, replacement=True, generator=g).view(-1)
    return picked


# ----------------------------------------------------------------------------------------------- decoders


class _TransformersDecoder:
    """transformers' forward per step with its DynamicCache (the reference path)."""

    def __init__(self, model: Any, attention: Tensor) -> None:
        self.model = model
        self.attention = attention  # [B, P + max_frames] long, ones after the prompt
        self.cache: Any = None
        self.length = 0

    def prefill(self, inputs: dict[str, Any]) -> Tensor:
        out = self.model(**inputs, use_cache=True, logits_to_keep=1)
        self.cache = out.past_key_values
        self.length = inputs["input_ids"].shape[1]
        return out.logits[:, -1]

    def step(self, frame: Tensor) -> Tensor:
        self.length += 1
        out = self.model(
            audio_input_ids=frame[:, None, :],
            attention_mask=self.attention[:, : self.length],
            past_key_values=self.cache,
            use_cache=True,
        )
        self.cache = out.past_key_values
        return out.logits[:, -1]


def lean_decoder_supported(model: Any) -> bool:
    """Whether :class:`_LeanDecoder` computes what transformers' decode step computes for ``model``."""
    cfg = model.config
    rope = (getattr(cfg, "rope_parameters", None) or {}).get("rope_type", "default")
    return getattr(cfg, "_attn_implementation", "sdpa") == "sdpa" and "dynamic" not in str(rope)


class _LeanDecoder:
    """The decode step on the model's own modules with preallocated KV buffers ``[B, kv_heads, P + n, head_dim]``.

    Prefill goes through transformers' model (its cache is then copied into the buffers once). A step:
    audio embedding of the frame → per layer: audio input norm, q/k/v, RoPE at position ``P + s``, write k/v,
    SDPA over the filled part, o_proj, residual, audio post-attention norm, audio MLP, residual → final norm
    → ``audio_lm_head`` → ``[B, K·V]``.
    """

    def __init__(self, model: Any, attention: Tensor, max_frames: int) -> None:
        self.model = model
        self.lm = model.model
        cfg = model.config
        self.layers = list(self.lm.layers[: cfg.num_hidden_layers])
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.groups = attn.num_key_value_groups
        self.scaling = attn.scaling
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.attention = attention.bool()  # [B, total]
        self.padded = not bool(self.attention.all())
        self.total = attention.shape[1]
        self.max_frames = max_frames
        self.position = 0

    def prefill(self, inputs: dict[str, Any]) -> Tensor:
        out = self.lm(**inputs, use_cache=True)
        hidden = out.last_hidden_state[:, -1:]
        b, p = inputs["input_ids"].shape
        dtype, device = hidden.dtype, hidden.device
        shape = (b, self.kv_heads, self.total, self.head_dim)
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in self.layers]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in self.layers]
        for i, layer in enumerate(out.past_key_values.layers[: len(self.layers)]):
            self.keys[i][:, :, :p] = layer.keys
            self.values[i][:, :, :p] = layer.values
        positions = torch.arange(self.total, device=device)[None]
        cos, sin = self.lm.rotary_emb(hidden, positions)  # [1, total, head_dim], transformers' own tables
        self.cos, self.sin = cos[0], sin[0]
        self.position = p
        return self.model.audio_lm_head(hidden)[:, -1]

    def _rope(self, x: Tensor, pos: int) -> Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return (x * self.cos[pos]) + (rotated * self.sin[pos])

    def step(self, frame: Tensor) -> Tensor:
        pos = self.position
        self.position += 1
        b = frame.shape[0]
        x = self.lm.embed_audio_tokens(frame[:, None, :])  # [B, 1, H]
        mask = self.attention[:, None, None, : pos + 1] if self.padded else None
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = layer.audio_input_layernorm(x)
            q = self._rope(attn.q_proj(h).view(b, 1, self.heads, self.head_dim).transpose(1, 2), pos)
            k = self._rope(attn.k_proj(h).view(b, 1, self.kv_heads, self.head_dim).transpose(1, 2), pos)
            v = attn.v_proj(h).view(b, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            self.keys[i][:, :, pos] = k[:, :, 0]
            self.values[i][:, :, pos] = v[:, :, 0]
            keys, values = self.keys[i][:, :, : pos + 1], self.values[i][:, :, : pos + 1]
            if mask is None:
                out = F.scaled_dot_product_attention(
                    q, keys, values, scale=self.scaling, enable_gqa=self.groups > 1
                )  # [B, heads, 1, hd]
            else:  # one query: the query heads of a kv head become its rows (transformers' pack_gqa)
                packed = q.reshape(b, self.kv_heads, self.groups, self.head_dim)
                out = F.scaled_dot_product_attention(packed, keys, values, attn_mask=mask, scale=self.scaling)
            out = out.reshape(b, 1, self.heads * self.head_dim)
            x = x + attn.o_proj(out)
            x = x + layer.audio_mlp(layer.audio_post_attention_layernorm(x))
        return self.model.audio_lm_head(self.lm.norm(x))[:, -1]


# ----------------------------------------------------------------------------------------------- the loop


@torch.no_grad()
def generate_audio_frames(
    model: Any,
    batch: dict[str, Tensor],
    max_frames: int,
    sampling: SamplingSettings = GREEDY,
    generators: Sequence[torch.Generator | None] | None = None,
    on_step: StepCallback | None = None,
    decoder: str = "auto",
) -> Tensor:
    """Generate delayed audio frames ``[B, n, K]`` (n ≤ ``max_frames``; first frame all stream BOS; a finished
    row continues with all-EOS frames) for a batch of generation prompts from ``HiggsPromptBuilder.collate``.

    ``generators``: one per row for the random draws (``None`` entries or no list: torch's global generator).
    ``on_step(done, max_frames)`` is called after each frame (it may raise to stop). ``decoder``: ``"auto"``
    (the lean decode step where supported), ``"lean"`` or ``"transformers"``. ``model`` may be wrapped (peft LoRA,
    unmerged; DDP): decoding runs on the transformers model inside, whose layers carry the adapters.
    """
    model = unwrap(model)
    cfg = model.config
    k, v = cfg.num_codebooks, cfg.codebook_size
    bos, eos = cfg.audio_stream_bos_id, cfg.audio_stream_eos_id
    input_ids = batch["input_ids"]
    if not bool((input_ids[:, -1] == cfg.audio_bos_token_id).all()):
        raise UserError("a generation prompt must end with <|audio_out_bos|> (render it without target codes)")
    if max_frames < 1:
        raise UserError(f"max_frames must be ≥ 1, got {max_frames}")
    b, p = input_ids.shape
    gens: list[torch.Generator | None] = list(generators) if generators is not None else [None] * b
    if len(gens) != b:
        raise UserError(f"{len(gens)} generators for a batch of {b} rows (give one per row)")
    device = input_ids.device
    inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": batch["attention_mask"]}
    prompt_audio = batch.get("audio_input_ids")
    if prompt_audio is not None and prompt_audio.shape[1] > 0:
        inputs["audio_input_ids"] = prompt_audio
        inputs["audio_input_ids_mask"] = batch["audio_input_ids_mask"]
    attention = torch.ones(b, p + max_frames, dtype=batch["attention_mask"].dtype, device=device)
    attention[:, :p] = batch["attention_mask"]
    if decoder == "auto":
        decoder = "lean" if lean_decoder_supported(model) else "transformers"
    if decoder == "lean":
        runner: Any = _LeanDecoder(model, attention, max_frames)
    elif decoder == "transformers":
        runner = _TransformersDecoder(model, attention)
    else:
        raise UserError(f"decoder={decoder!r}: expected auto, lean or transformers")

    win = sampling.ras_win_len
    history = None
    if win > 0:  # each row's last `win` prompt frames, right-aligned at `win`; generated frame s at win + s
        history = torch.full((b, win + max_frames, k), eos, dtype=torch.long, device=device)
        if "audio_input_ids" in inputs:
            for i in range(b):
                own = prompt_audio[i][batch["audio_input_ids_mask"][i]][-win:]
                history[i, win - own.shape[0] : win] = own
    frames = torch.full((b, max_frames, k), eos, dtype=torch.long, device=device)
    codes_axis = torch.arange(v, device=device)
    not_bos, not_eos = codes_axis != bos, codes_axis != eos
    bos_left = torch.arange(k, device=device).repeat(b, 1)  # codebook k forced to BOS while ≥ 0
    eos_left = torch.arange(1, k + 1, device=device).repeat(b, 1)  # counts down once ending; ≤ 0 → forced EOS
    ending = torch.zeros(b, dtype=torch.bool, device=device)
    finished = torch.zeros(b, dtype=torch.bool, device=device)
    logits = runner.prefill(inputs)
    n = 0
    for s in range(max_frames):
        raw = logits.float().reshape(b, k, v)
        force_bos = bos_left >= 0
        bos_left[force_bos] -= 1
        eos_left[ending] -= 1
        force_eos = eos_left <= 0
        scores = raw.masked_fill((force_bos[..., None] & not_bos) | (force_eos[..., None] & not_eos), -float("inf"))
        step = pick_codes(scores, sampling, gens)  # [B, K]
        if history is not None:
            step = ras_replace(history[:, s : s + win], step, raw, sampling.ras_win_max_num_repeat, (bos, eos), gens)
        step[finished] = eos
        frames[:, s] = step
        if history is not None:
            history[:, win + s] = step
        n = s + 1
        is_eos = step == eos
        ending |= is_eos.any(dim=-1)
        finished |= is_eos.all(dim=-1)
        if on_step is not None:
            on_step(n, max_frames)
        if bool(finished.all()) or n == max_frames:
            break
        logits = runner.step(step)
    return frames[:, :n]


def greedy_audio_frames(model: Any, batch: dict[str, Tensor], max_frames: int, decoder: str = "auto") -> Tensor:
    """Greedy :func:`generate_audio_frames` (= transformers' ``generate(do_sample=False)`` without RAS)."""
    return generate_audio_frames(model, batch, max_frames, GREEDY, decoder=decoder)


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
