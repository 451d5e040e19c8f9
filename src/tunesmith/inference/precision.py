"""Inference precision (``--precision auto|bf16|fp16|fp32``): the dtype the LM's weights and activations use.

``auto`` is bf16 on a CUDA GPU that supports it and fp32 everywhere else (CPU, MPS, older GPUs). The
codec always decodes in fp32 and sampling always works on fp32 logits, so half precision changes the
transformer's arithmetic only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunesmith.errors import UserError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # torch is imported lazily: the CLI's --help stays fast


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``auto`` → bf16 on a bf16-capable CUDA device, else fp32; other names are checked and returned."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision={precision}: expected one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def dtype_of(precision: str) -> torch.dtype:
    """bf16 | fp16 | fp32 → the torch dtype."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def inference_dtype(precision: str, device: str | torch.device) -> torch.dtype:
    """The torch dtype of :func:`resolve_precision`."""
    return dtype_of(resolve_precision(precision, device))
