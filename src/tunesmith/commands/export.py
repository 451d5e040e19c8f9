"""`tunesmith export RUN --format tunesmith|hf --out DIR`: write a model directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="write a model directory (tunesmith or Hugging Face MusicGen format)")
    p.add_argument("run", help="run folder, checkpoint folder or model directory")
    p.add_argument("--format", choices=("tunesmith", "hf"), default="tunesmith")
    p.add_argument("--out", type=Path, required=True, help="directory to write")
    p.add_argument("--which", default="best", help="checkpoint of a run: best (default), last or epoch_NNNN")
    p.add_argument(
        "--force", action="store_true", help="replace --out when it is a model directory tunesmith wrote (never others)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.format == "hf":
        from tunesmith.models.hf.export import export_hf

        out = export_hf(args.run, args.out, which=args.which, force=args.force)
    else:
        from tunesmith.models.export import export_tunesmith

        out = export_tunesmith(args.run, args.out, which=args.which, force=args.force)
    print(f"exported {args.format} model to {out}")
    return 0
