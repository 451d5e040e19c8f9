"""`tunesmith generate MODEL --prompt TEXT | --prompts FILE --out DIR`: text → audio files, resumably.

The work is :func:`tunesmith.inference.batch.generate_jobs`: each item becomes ``DIR/<id>.wav`` and
then one line of ``DIR/results.jsonl``, so the same command continues a killed run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tunesmith.inference.request import DEFAULTS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate audio from text prompts with a trained LM (resumable batch generation)",
        description=(
            "Generate audio with an LM run, checkpoint or exported model dir. Prompts come from --prompt "
            '(repeatable) and/or --prompts FILE: JSON lines ({"prompt": ..., "seed": ..., "duration": ..., '
            '"cfg": ..., "temperature": ..., "top_k": ..., "top_p": ..., plus attributes such as genre or bpm}) '
            "or plain text lines. One audio file per item plus results.jsonl in --out; running the same command "
            "again continues where it stopped."
        ),
    )
    p.add_argument("model", help="LM run folder, checkpoint folder or exported model dir")
    p.add_argument("--prompt", action="append", default=[], help='a text prompt (repeatable; "" = unconditional)')
    p.add_argument("--prompts", type=Path, help="prompts file: JSON lines or plain text lines")
    p.add_argument("--out", type=Path, required=True, help="output folder (audio files + results.jsonl)")
    p.add_argument(
        "--duration", type=float, default=DEFAULTS["duration"], help="seconds per item (default %(default)g)"
    )
    p.add_argument("--cfg", type=float, default=DEFAULTS["cfg"], help="classifier-free guidance coefficient (1 = off)")
    p.add_argument(
        "--temperature", type=float, default=DEFAULTS["temperature"], help="sampling temperature (0 = greedy)"
    )
    p.add_argument(
        "--top-k", type=int, default=DEFAULTS["top_k"], help="sample among the k most likely tokens (0 = off)"
    )
    p.add_argument("--top-p", type=float, default=DEFAULTS["top_p"], help="nucleus sampling mass (0 = off)")
    p.add_argument(
        "--seed", type=int, default=DEFAULTS["seed"], help="seed of the first item; item i without a seed uses seed+i"
    )
    p.add_argument("--batch-size", type=int, default=8, help="items generated together (same settings)")
    p.add_argument("--format", choices=("wav", "flac"), default="wav")
    p.add_argument("--prompt-audio", type=Path, help="audio file every item continues (its start is kept)")
    p.add_argument("--codec", help="codec run or model dir (default: the one the LM was trained with)")
    p.add_argument("--checkpoint", default="best", help="which checkpoint of a run: best | last | epoch_NNNN")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tunesmith.errors import UserError
    from tunesmith.inference.batch import BatchOptions, generate_jobs
    from tunesmith.inference.prompts import read_prompts
    from tunesmith.inference.request import parse_item

    if not args.prompt and args.prompts is None:
        raise UserError("nothing to generate: give --prompt TEXT (repeatable) or --prompts FILE")
    if args.batch_size < 1:
        raise UserError(f"--batch-size={args.batch_size}: must be at least 1")
    defaults = {name: getattr(args, name) for name in ("duration", "cfg", "temperature", "top_k", "top_p", "seed")}
    try:
        parse_item({"prompt": ""}, defaults)
    except ValueError as err:
        raise UserError(f"bad generation setting: {err}") from err
    jobs, problems = read_prompts(args.prompt, args.prompts, defaults)
    for problem in problems:  # in line order
        print(f"tunesmith: skipped {problem}", file=sys.stderr)
    options = BatchOptions(
        batch_size=args.batch_size,
        format=args.format,
        prompt_audio=args.prompt_audio,
        codec=args.codec,
        which=args.checkpoint,
        device=args.device,
    )
    done = generate_jobs(args.model, jobs, args.out, options, report=lambda line: print(line, file=sys.stderr))
    print(f"results: {done.results}", file=sys.stderr)
    if args.json:
        summary: dict[str, Any] = {"items": done.items, "skipped_lines": len(problems), "generated": done.generated,
                                   "out": done.out}  # fmt: skip
        if done.seconds is not None:
            summary.update(audio_seconds=done.audio_seconds, seconds=done.seconds,
                           real_time_factor=done.real_time_factor)  # fmt: skip
        print(json.dumps(summary))
    return 1 if problems else 0
