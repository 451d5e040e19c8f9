"""Sampling codec frames from an LM (:func:`generate_codes`): the decoding loop with KV cache and CFG.

Decoding runs the pattern steps one at a time with a preallocated KV cache; with classifier-free
guidance the conditional and unconditional streams run as one doubled batch and the logits are
mixed as ``uncond + cfg · (cond − uncond)``. Each item draws from its own seeded generator, so an
item's tokens depend on its seed, not on where it sits in a batch (up to float rounding).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from tunesmith.models.lm.conditioners import ConditionTensors
from tunesmith.models.lm.model import LMModel
from tunesmith.models.sampling import check_sampling, sample_next

UNKNOWN = -1


def _generators(generator: torch.Generator | Sequence[torch.Generator] | None, batch: int) -> list:
    """One generator per item: as given, or seeded from a single one (None = torch's global RNG)."""
    if generator is None:
        return [None] * batch
    if isinstance(generator, torch.Generator):
        if batch == 1:
            return [generator]
        seeds = torch.randint(0, 2**62, (batch,), generator=generator).tolist()
        return [torch.Generator().manual_seed(s) for s in seeds]
    gens = list(generator)
    if len(gens) != batch:
        raise ValueError(f"{len(gens)} generators for a batch of {batch}")
    return gens


@torch.inference_mode()
def generate_codes(
    model: LMModel,
    conditions: list[dict] | None,
    num_frames: int,
    cfg_coef: float = 3.0,
    temperature: float = 1.0,
    top_k: int = 250,
    top_p: float = 0.0,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    prompt_codes: Tensor | None = None,
    *,
    batch_size: int | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Sample ``num_frames`` codec frames per item → Long[B, K, num_frames].

    ``conditions``: one dict per item (``{}`` = unconditional), or None (B from ``batch_size`` or the
    prompt). ``cfg_coef`` 1 (or an unconditional model) disables guidance. ``generator``: one per item
    (reproducible per item) or a single one. ``prompt_codes`` Long[B, K, P]: frames to continue (kept
    as the first P output frames). ``on_step(done, total)`` reports progress in pattern steps.
    The model should be in eval mode (dropout off).
    """
    check_sampling(temperature, top_k, top_p)
    device = model.embed.weight.device
    if prompt_codes is not None:
        batch = prompt_codes.shape[0]
    elif conditions is not None:
        batch = len(conditions)
    else:
        batch = batch_size or 1
    if conditions is not None and len(conditions) != batch:
        raise ValueError(f"{len(conditions)} conditions for a batch of {batch}")
    pattern, special, k = model.pattern, model.special, model.num_codebooks
    frames = torch.full((batch, k, num_frames), UNKNOWN, dtype=torch.long, device=device)
    if prompt_codes is not None:
        p = prompt_codes.shape[2]
        if prompt_codes.shape[1] != k or p > num_frames:
            raise ValueError(f"prompt codes {tuple(prompt_codes.shape)} do not fit {k} codebooks × {num_frames} frames")
        frames[:, :, :p] = prompt_codes.to(device)
    seq = pattern.build(frames, special)  # [B, K, S]; UNKNOWN where a code is still to be drawn
    steps = seq.shape[2]
    unknown_cols = (seq == UNKNOWN).any(dim=0).any(dim=0).nonzero()
    if not len(unknown_cols):  # the prompt covers every frame
        return frames
    first = int(unknown_cols[0])
    gens = _generators(generator, batch)

    use_cfg = model.conditioner is not None and cfg_coef != 1.0
    conds = list(conditions) if conditions is not None else [{}] * batch
    cond_tensors: ConditionTensors | None = None
    if model.conditioner is not None:
        cond_tensors = model.prepare_conditions(conds + [{}] * batch if use_cfg else conds)
    rows = 2 * batch if use_cfg else batch
    prefix = cond_tensors.embeddings.shape[1] if cond_tensors is not None and model.fuse == "prefix" else 0
    cache = model.transformer.make_cache(rows, prefix + steps)

    inputs = pattern.model_input(seq, special)  # column s is the input that predicts step s
    # the heads as one contiguous [D, K·card] matrix: a few rows times it is ~5× faster on CPU than
    # against the transposed [K·card, D] view (the heads are the largest matrix a decoding step reads)
    heads_t = model.heads.detach().reshape(-1, model.heads.shape[-1]).t().contiguous()

    def step_logits(cols: Tensor, conditions_in: ConditionTensors | None) -> Tensor:
        """Input columns [B, K, n] → mixed logits of the last column [B, K, card]."""
        x = torch.cat([cols, cols]) if use_cfg else cols
        h = model.hidden(x, conditions_in, cache)[:, -1]  # [rows, D]
        logits = (h @ heads_t).view(h.shape[0], k, model.card).float()  # [rows, K, card]
        if use_cfg:
            cond, uncond = logits.chunk(2)
            logits = uncond + cfg_coef * (cond - uncond)
        return logits

    logits = step_logits(inputs[:, :, : first + 1], cond_tensors)  # prefill: prompt + start
    for s in range(first, steps):
        known = seq[:, :, s]
        if bool((known == UNKNOWN).any()):
            drawn = torch.stack([sample_next(logits[b], temperature, top_k, top_p, gens[b]) for b in range(batch)])
            seq[:, :, s] = torch.where(known == UNKNOWN, drawn, known)
        if on_step is not None:
            on_step(s + 1, steps)
        if s + 1 < steps:
            logits = step_logits(seq[:, :, s : s + 1], None)
    return pattern.revert(seq)


def decoding_bytes(model: LMModel, batch: int, num_frames: int, cfg_coef: float = 3.0) -> int:
    """Bytes :func:`generate_codes` allocates for ``batch`` items of ``num_frames`` frames: the KV cache
    (2 × layers × rows × heads × steps × head_dim, rows doubled under guidance) and the Long code tables."""
    cfg = model.transformer.cfg
    rows = 2 * batch if model.conditioner is not None and cfg_coef != 1.0 else batch
    steps = num_frames + model.num_codebooks + 1  # the delay pattern's extra steps, a bound for every pattern
    element = model.embed.weight.element_size()
    cache = 2 * cfg.num_layers * rows * cfg.num_heads * cfg.head_dim * steps * element
    codes = 3 * batch * model.num_codebooks * steps * 8  # frames, the pattern sequence and its model input
    return cache + codes
