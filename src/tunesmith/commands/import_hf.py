"""`tunesmith import hf DIR --out MODEL_DIR` and `tunesmith merge RUN_OR_ADAPTER --out DIR`."""

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
    p.add_argument("--text-max-len", type=int, default=None, help="T5 tokens kept per text (default: tunesmith's)")
    p.set_defaults(func=run_import)

    m = subparsers.add_parser(
        "merge",
        help="merge LoRA adapters into their base model",
        description=(
            "Merge the LoRA adapters of a run (its best checkpoint), a checkpoint folder or an adapter folder "
            "(adapter_config.json + adapter_model.safetensors) into a model directory with plain weights."
        ),
    )
    m.add_argument("source", type=Path, help="LoRA run folder, checkpoint folder or adapter folder")
    m.add_argument("--out", type=Path, required=True, help="directory to write")
    m.add_argument("--which", default="best", help="checkpoint of a run: best (default), last or epoch_NNNN")
    m.add_argument("--format", choices=("tunesmith", "hf"), default="tunesmith", help="tunesmith model dir or MusicGen")
    m.set_defaults(func=run_merge)


def run_import(args: argparse.Namespace) -> int:
    from tunesmith.models.hf.importer import import_hf

    out = import_hf(args.source, args.out, text_max_len=args.text_max_len)
    print(f"imported {args.source} into {out}")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    import tempfile

    from tunesmith.models.hf.merge import merge

    if args.format == "tunesmith":
        out = merge(args.source, args.out, which=args.which)
    else:
        from tunesmith.models.hf.export import export_hf

        with tempfile.TemporaryDirectory(dir=Path(args.out).expanduser().resolve().parent) as tmp:
            merged = merge(args.source, Path(tmp) / "merged", which=args.which)
            out = export_hf(merged, args.out)
    print(f"merged {args.source} into {out} ({args.format} format)")
    return 0
