"""Range-checked argparse types: a bad number is refused at parse time with the flag's allowed range."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from tunesmith.config import INT64_MAX, Range


def number(kind: type[int] | type[float], **bounds: float) -> Callable[[str], int | float]:
    """An argparse ``type=`` that parses ``kind`` and checks ``ge``/``gt``/``le``/``lt`` bounds.

    Floats must be finite and ints must fit in 64 bits; the message names the value and the range."""
    rng = Range(**bounds)

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text}: must be a finite number ({rng.describe()})")
        if not rng.contains(value):
            raise argparse.ArgumentTypeError(f"{text}: must be {rng.describe()}")
        if isinstance(value, int) and abs(value) > INT64_MAX:
            raise argparse.ArgumentTypeError(f"{text}: must fit in 64 bits")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its "invalid ... value" fallback
    return parse


SEED = number(int, ge=0, le=2**62)


def add_lm_loading_arguments(p) -> None:
    """``--checkpoint``, ``--codec``, ``--device`` and ``--precision``: how `generate` and `serve` load an LM."""
    from tunesmith.inference.precision import PRECISIONS

    p.add_argument("--checkpoint", default="best", help="which checkpoint of a run: best | last | epoch_NNNN")
    p.add_argument("--codec", default=None, help="codec run or model dir (default: the one the LM was trained with)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="LM weights and arithmetic: auto (bf16 on GPUs that support it, fp32 on CPU) | bf16 | fp16 | fp32",
    )
