"""`tunesmith import hf DIR --out MODEL_DIR`: a local transformers MusicGen directory → a tunesmith model dir."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import",
        help="convert a local Hugging Face MusicGen directory into a tunesmith model directory",
        description=(
            "Import a transformers MusicGen directory (config.json + safetensors + tokenizer files): the decoder "
            "becomes a tunesmith LM, T5 its text conditioner (MODEL_DIR/t5), EnCodec its codec (MODEL_DIR/codec). "
            "The directory is verified first. To fine-tune without importing, pass init_from=hf:DIR to "
            "`tunesmith train lm`."
        ),
    )
    p.add_argument("format", choices=("hf",), help="the source format (hf: a transformers MusicGen directory)")
    p.add_argument("source", type=Path, help="local transformers MusicGen directory")
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    p.add_argument(
        "--force", action="store_true", help="replace --out when it is a model directory tunesmith wrote (never others)"
    )
    p.add_argument("--text-max-len", type=int, default=None, help="T5 tokens kept per text (default: tunesmith's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tunesmith.models.hf.importer import import_hf

    out = import_hf(args.source, args.out, text_max_len=args.text_max_len, force=args.force)
    print(f"imported {args.source} into {out}")
    return 0
