"""Stand-in for ``xformers``, only for running AudioCraft 1.3.0 as a benchmark peer on CPU.

AudioCraft's ``modules/transformer.py`` does ``from xformers import ops`` at import time. With
``efficient_attention_backend='torch'`` (its default) attention runs through
``torch.nn.functional.scaled_dot_product_attention``, and the only xformers names it touches are
``ops.unbind`` (splitting packed q/k/v) and ``ops.LowerTriangularMask`` (a causal marker whose only
use on that path is being non-None). ``ops`` provides those; ``ops.memory_efficient_attention``
exists so AudioCraft's import check passes, and raises if called.
"""

from __future__ import annotations

from . import ops

__all__ = ["ops"]
