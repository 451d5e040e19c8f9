"""Output heads + cross-entropy fused and chunked: the ``[tokens, K, card]`` logits are never materialised.

For a chunk of rows the logits are computed, turned into the loss and, when gradients are needed,
straight into the gradients of the hidden states and of the head weights (softmax − one-hot), then
dropped. FLOPs equal the plain path (one forward and two backward matmuls); memory traffic does not
grow with ``tokens × K × card``.
"""

from __future__ import annotations

import torch
from torch import Tensor

IGNORE = -100


def _chunk_terms(h: Tensor, weight: Tensor, targets: Tensor, want_grad: bool) -> tuple[Tensor, Tensor | None]:
    """h [n, D], weight [K·card, D], targets [n, K] → per-row-codebook CE [n, K], grad wrt logits [n, K·card]."""
    n, k = targets.shape
    logits = (h @ weight.t()).float().view(n, k, -1)  # [n, K, card]
    valid = targets != IGNORE
    safe = targets.clamp_min(0).unsqueeze(-1)
    peak = logits.amax(dim=-1, keepdim=True)
    picked = logits.gather(-1, safe)
    probs = logits.sub_(peak).exp_()  # in place: one pass of exp serves the loss and the gradient
    total = probs.sum(dim=-1, keepdim=True)
    ce = ((total.log() + peak - picked).squeeze(-1)) * valid  # logsumexp − logit of the target
    if not want_grad:
        return ce, None
    grad = probs.div_(total)  # softmax
    grad.scatter_add_(-1, safe, -valid.unsqueeze(-1).to(grad.dtype))  # − one-hot
    grad.mul_(valid.unsqueeze(-1))
    return ce, grad.view(n, -1)


def _chunked(
    h: Tensor, weight: Tensor, targets: Tensor, chunk: int, want_grad: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Chunk by chunk over the rows of h [N, D]: per-codebook CE sums [K] (float32) and, with ``want_grad``,
    the gradients of h [N, D] (float32) and of the flat head weights [K·card, D] (float32; None when frozen).

    The matmuls run in the autocast dtype when autocast is on (as the plain path's would), sums in float32.
    """
    device = h.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else h.dtype
    flat_w = weight.reshape(-1, weight.shape[-1]).to(dtype)
    per_codebook = torch.zeros(targets.shape[1], dtype=torch.float32, device=h.device)
    grad_h = torch.empty(h.shape, dtype=torch.float32, device=h.device) if want_grad else None
    grad_w = None  # frozen heads (LoRA) need no weight gradient: skip its matmul
    if want_grad and weight.requires_grad:
        grad_w = torch.zeros(flat_w.shape, dtype=torch.float32, device=h.device)
    with torch.autocast(device, enabled=False):
        for start in range(0, h.shape[0], chunk):
            hc = h[start : start + chunk].to(dtype)
            ce, g = _chunk_terms(hc, flat_w, targets[start : start + chunk], want_grad)
            per_codebook += ce.sum(dim=0)
            if grad_h is None:
                continue
            g = g.to(dtype)
            grad_h[start : start + chunk] = g @ flat_w
            if grad_w is None:
                continue
            if dtype == torch.float32:
                grad_w.addmm_(g.t(), hc)
            else:
                grad_w += g.t() @ hc
    return per_codebook, grad_h, grad_w


class _HeadsCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, targets: Tensor, chunk: int) -> tuple[Tensor, Tensor]:  # noqa: ANN001
        per_codebook, grad_h, grad_w = _chunked(h, weight, targets, chunk, want_grad=True)
        ctx.save_for_backward(grad_h.to(h.dtype), grad_w)
        ctx.weight_shape, ctx.weight_dtype = weight.shape, weight.dtype
        ctx.mark_non_differentiable(per_codebook)
        return per_codebook.sum(), per_codebook

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _grad_per_codebook: Tensor):  # noqa: ANN001
        grad_h, grad_w = ctx.saved_tensors
        return (
            grad_h * grad_loss.to(grad_h.dtype),
            None if grad_w is None else (grad_w * grad_loss).view(ctx.weight_shape).to(ctx.weight_dtype),
            None,
            None,
        )


def heads_cross_entropy(h: Tensor, weight: Tensor, targets: Tensor, chunk: int | None = None) -> tuple[Tensor, Tensor]:
    """Summed CE of ``h @ weight[k].T`` against ``targets``; ignores ``-100``.

    h [N, D] hidden states, weight [K, card, D] (one head per codebook), targets Long[N, K].
    ``chunk``: rows per step (default 512 on CPU, where it keeps the logits in cache; 8192 elsewhere).
    Returns (loss_sum: scalar with grad, per_codebook_sum: [K] detached).
    """
    chunk = chunk or (512 if h.device.type == "cpu" else 8192)
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return _HeadsCrossEntropy.apply(h, weight, targets, chunk)
    per_codebook, _, _ = _chunked(h, weight, targets, chunk, want_grad=False)
    return per_codebook.sum(), per_codebook
