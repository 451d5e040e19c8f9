"""`tunesmith export RUN --format tunesmith|hf --out DIR [--adapters-only]`: write a model directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="write a model directory (tunesmith, or Hugging Face MusicGen / HiggsAudio v2 format)"
    )
    p.add_argument("run", help="run folder, checkpoint folder or model directory")
    p.add_argument("--format", choices=("tunesmith", "hf"), default="tunesmith")
    p.add_argument("--out", type=Path, required=True, help="directory to write")
    p.add_argument("--which", default="best", help="checkpoint of a run: best (default), last or epoch_NNNN")
    p.add_argument(
        "--adapters-only",
        action="store_true",
        help="HiggsAudio v2 LoRA runs with --format hf: write peft's adapter folder instead of the merged model",
    )
    p.add_argument(
        "--force", action="store_true", help="replace --out when it is a model directory tunesmith wrote (never others)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tunesmith.errors import UserError

    if args.format == "hf":
        from tunesmith.models.higgs.export import export_higgs, higgs_run_checkpoint

        if higgs_run_checkpoint(args.run, args.which) is not None:
            out = export_higgs(args.run, args.out, which=args.which, adapters_only=args.adapters_only, force=args.force)
            what = "HiggsAudio v2 LoRA adapters" if args.adapters_only else "HiggsAudio v2 transformers model"
            print(f"exported {what} to {out}")
            return 0
        if args.adapters_only:
            raise UserError(f"{args.run}: --adapters-only applies to HiggsAudio v2 (tts) LoRA runs only")
        from tunesmith.models.hf.export import export_hf

        out = export_hf(args.run, args.out, which=args.which, force=args.force)
    else:
        if args.adapters_only:
            raise UserError("--adapters-only applies to --format hf (a HiggsAudio v2 LoRA run) only")
        from tunesmith.models.export import export_tunesmith

        out = export_tunesmith(args.run, args.out, which=args.which, force=args.force)
    print(f"exported {args.format} model to {out}")
    return 0
