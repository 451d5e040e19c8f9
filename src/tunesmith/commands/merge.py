"""`tunesmith merge RUN_OR_ADAPTER --out DIR [--format tunesmith|hf]`: LoRA adapters merged into their base."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "merge",
        help="merge LoRA adapters into their base model",
        description=(
            "Merge the LoRA adapters of a run (its best checkpoint), a checkpoint folder or an adapter folder "
            "(adapter_config.json + adapter_model.safetensors) into a model directory with plain weights."
        ),
    )
    p.add_argument("source", type=Path, help="LoRA run folder, checkpoint folder or adapter folder")
    p.add_argument("--out", type=Path, required=True, help="directory to write")
    p.add_argument("--which", default="best", help="checkpoint of a run: best (default), last or epoch_NNNN")
    p.add_argument(
        "--force", action="store_true", help="replace --out when it is a model directory tunesmith wrote (never others)"
    )
    p.add_argument("--format", choices=("tunesmith", "hf"), default="tunesmith", help="tunesmith model dir or MusicGen")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tunesmith.models.hf.merge import merge, merge_to_hf

    write = merge if args.format == "tunesmith" else merge_to_hf
    out = write(args.source, args.out, which=args.which, force=args.force)
    print(f"merged {args.source} into {out} ({args.format} format)")
    return 0
