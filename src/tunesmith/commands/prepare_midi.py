"""`tunesmith prepare-midi SOURCE --out DIR`: MIDI files (or MAESTRO) → columnar notes with metadata."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tunesmith.commands.argtypes import number


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare-midi",
        help="prepare a folder of MIDI files (or MAESTRO with its CSV) for `tunesmith train midi`",
        description=(
            "Read every .mid/.midi file under SOURCE (or the files a MAESTRO-layout CSV lists, with "
            "composer, title and split) into note arrays under DIR. Unreadable or empty files are listed "
            "in DIR/rejected.jsonl and skipped. Without a CSV, splits are chosen per piece by a stable hash. "
            "Running it again resumes; --force redoes it."
        ),
    )
    p.add_argument("source", type=Path, help="folder of MIDI files, a MAESTRO folder, or its metadata CSV")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--sustain",
        choices=("apply", "events", "ignore"),
        default="apply",
        help="apply: lengthen notes held by the sustain pedal; events: keep the pedal as separate events "
        "(for tokenizer.pedal_tokens=true); ignore: drop it (default: apply)",
    )
    p.add_argument(
        "--valid-fraction", type=number(float, ge=0, lt=1), default=0.1, help="share of pieces in valid without a CSV"
    )
    p.add_argument(
        "--test-fraction", type=number(float, ge=0, lt=1), default=0.0, help="share of pieces in test without a CSV"
    )
    p.add_argument(
        "--filter",
        default="",
        metavar="EXPR",
        help="prepare only the files whose metadata match, e.g. 'composer~Chopin' or 'split=train&year=2018' "
        "(fields: composer, title, split, path, year, dataset; ~ contains, = equals, !~ / != negate, | alternatives)",
    )
    p.add_argument(
        "--dataset",
        default="",
        metavar="NAME",
        help="the pieces' source dataset, for tokenizer.conditioning=[dataset] and filters (default: the source "
        "folder's name; @folder: each file's first folder under SOURCE, to prepare several datasets together)",
    )
    p.add_argument("--force", action="store_true", help="prepare again even if DIR is already prepared")
    p.add_argument("--json", action="store_true", help="print the dataset summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tunesmith.data.midi_prepare import PrepareSettings, prepare_midi

    settings = PrepareSettings(
        sustain=args.sustain,
        valid_fraction=args.valid_fraction,
        test_fraction=args.test_fraction,
        filter=args.filter,
        dataset=args.dataset,
    )
    summary = prepare_midi(args.source, args.out, settings=settings, force=args.force, progress=not args.json)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        splits = ", ".join(f"{k} {v}" for k, v in sorted(summary["splits"].items()))
        print(
            f"{args.out}: {summary['pieces']} pieces ({splits}), {summary['notes']:,} notes, "
            f"{summary['rejected']} rejected"
        )
    return 0
