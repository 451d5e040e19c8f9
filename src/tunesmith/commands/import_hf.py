"""`tunesmith import hf DIR --out MODEL_DIR`: a local transformers MusicGen or HiggsAudio v2 directory → a model dir."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import",
        help="import a local Hugging Face MusicGen or HiggsAudio v2 directory into a model directory",
        description=(
            "Import a transformers MusicGen directory (config.json + safetensors + tokenizer files): the decoder "
            "becomes a tunesmith LM, T5 its text conditioner (MODEL_DIR/t5), EnCodec its codec (MODEL_DIR/codec). "
            "A HiggsAudio v2 directory (model_type higgs_audio_v2) is copied (hard links where possible) with its "
            "audio tokenizer inside as MODEL_DIR/audio_tokenizer (found as a sub-folder, next to it, or given with "
            "--audio-tokenizer) and a manifest of every file; it stays a transformers directory. "
            "The directory is verified first. To fine-tune without importing, pass init_from=hf:DIR to "
            "`tunesmith train`."
        ),
    )
    p.add_argument("format", choices=("hf",), help="the source format (hf: a transformers directory)")
    p.add_argument("source", type=Path, help="local transformers MusicGen or HiggsAudio v2 directory")
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    p.add_argument(
        "--force", action="store_true", help="replace --out when it is a model directory tunesmith wrote (never others)"
    )
    p.add_argument(
        "--text-max-len", type=int, default=None, help="T5 tokens kept per text (MusicGen; default: tunesmith's)"
    )
    p.add_argument(
        "--audio-tokenizer",
        type=Path,
        default=None,
        help="HiggsAudio v2: the audio tokenizer directory, when it is not inside or next to the model directory",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tunesmith.models.hf.importer import import_folder

    family, out = import_folder(
        args.source, args.out, text_max_len=args.text_max_len, audio_tokenizer=args.audio_tokenizer, force=args.force
    )
    print(f"imported {family} {args.source} into {out}")
    return 0
