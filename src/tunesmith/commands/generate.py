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

from tunesmith.commands.argtypes import add_lm_loading_arguments


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
    p.add_argument(
        "model",
        help="LM run folder, checkpoint folder, exported model dir or transformers MusicGen dir "
        "(imported once into <runs>/.hf_imports)",
    )
    p.add_argument(
        "--prompt",
        "--text",
        dest="prompt",
        action="append",
        default=[],
        help='a text prompt (repeatable; "" = unconditional); for a speech model (HiggsAudio v2) the text to say',
    )
    p.add_argument("--prompts", type=Path, help="prompts file: JSON lines or plain text lines")
    p.add_argument("--out", type=Path, required=True, help="output folder (audio files + results.jsonl)")
    model_default = "default: the run's generate settings, else the family's"
    p.add_argument("--duration", type=float, default=None, help=f"seconds per item ({model_default})")
    p.add_argument("--cfg", type=float, default=None, help=f"classifier-free guidance, 1 = off ({model_default})")
    p.add_argument("--temperature", type=float, default=None, help=f"0 = greedy ({model_default})")
    p.add_argument("--top-k", type=int, default=None, help=f"sample among the k most likely, 0 = off ({model_default})")
    p.add_argument("--top-p", type=float, default=None, help=f"nucleus sampling mass, 0 = off ({model_default})")
    p.add_argument(
        "--seed", type=int, default=None, help=f"seed of item 0; item i without a seed uses seed+i ({model_default})"
    )
    p.add_argument(
        "--max-duration",
        type=float,
        default=600.0,
        help="longest item accepted, in seconds (default %(default)s; a longer one is skipped with its line named)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="items generated together (same settings)")
    p.add_argument("--format", choices=("wav", "flac"), default="wav")
    p.add_argument("--prompt-audio", type=Path, help="audio file every item continues (its start is kept)")
    p.add_argument(
        "--melody",
        type=Path,
        help="melody-conditioned models (e.g. MusicGen-melody): audio whose chroma every item follows, "
        "unless its prompts-file line gives its own melody",
    )
    p.add_argument(
        "--reference", type=Path, help="speech models: a voice reference clip (any rate; items without their own)"
    )
    p.add_argument("--reference-text", help="speech models: the transcript of --reference")
    add_lm_loading_arguments(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tunesmith.errors import UserError
    from tunesmith.inference.batch import BatchOptions, generate_jobs
    from tunesmith.inference.defaults import SAMPLING, describe, model_generation_defaults
    from tunesmith.inference.prompts import read_prompts
    from tunesmith.inference.request import FileLimits, parse_item
    from tunesmith.inference.sources import resolve_model_source

    if not args.prompt and args.prompts is None:
        raise UserError("nothing to generate: give --prompt TEXT (repeatable) or --prompts FILE")
    if args.batch_size < 1:
        raise UserError(f"--batch-size={args.batch_size}: must be at least 1")
    if not 0 < args.max_duration < float("inf"):
        raise UserError(f"--max-duration={args.max_duration}: must be a positive number of seconds")
    limits = FileLimits(max_duration=args.max_duration)
    given = {name: getattr(args, name) for name in SAMPLING if getattr(args, name) is not None}
    try:
        parse_item({"prompt": ""}, given, limits)
    except ValueError as err:
        hint = " (raise --max-duration to allow longer items)" if "duration=" in str(err) else ""
        raise UserError(f"bad generation setting: {err}{hint}") from err
    source = resolve_model_source(args.model)
    from tunesmith.inference.higgs import check_jobs, is_higgs_model, model_speech_defaults, with_references

    speech = is_higgs_model(source, args.checkpoint)  # HiggsAudio v2: text (+ voice reference) → speech
    if speech:
        if args.prompt_audio is not None or args.melody is not None:
            raise UserError("--prompt-audio/--melody do not apply to speech models; use --reference/--reference-text")
        defaults, _, origin = model_speech_defaults(source, args.checkpoint)
    elif args.reference is not None or args.reference_text is not None:
        raise UserError("--reference/--reference-text are for speech models (HiggsAudio v2)")
    else:
        defaults, origin = model_generation_defaults(source, args.checkpoint)
    defaults.update(given)
    flags = f"; flags: {', '.join(sorted(given))}" if given else ""
    print(f"settings: {describe(defaults)} (from {origin}{flags})", file=sys.stderr)
    jobs, problems = read_prompts(args.prompt, args.prompts, defaults, limits)
    if speech:
        jobs, more = check_jobs(with_references(jobs, args.reference, args.reference_text))
        problems = sorted(problems + more)
    if args.melody is not None:
        from tunesmith.inference.prompts import with_melody

        if not args.melody.is_file():
            raise UserError(f"--melody {args.melody}: no such audio file")
        jobs = with_melody(jobs, args.melody)
    for problem in problems:  # in line order
        print(f"tunesmith: skipped {problem}", file=sys.stderr)
    options = BatchOptions(
        batch_size=args.batch_size,
        format=args.format,
        prompt_audio=args.prompt_audio,
        codec=args.codec,
        which=args.checkpoint,
        device=args.device,
        precision=args.precision,
        name=str(args.model),
    )
    done = generate_jobs(source, jobs, args.out, options, report=lambda line: print(line, file=sys.stderr))
    print(f"results: {done.results}", file=sys.stderr)
    if args.json:
        summary: dict[str, Any] = {"items": done.items, "skipped_lines": len(problems), "generated": done.generated,
                                   "out": done.out}  # fmt: skip
        if done.seconds is not None:
            summary.update(audio_seconds=done.audio_seconds, seconds=done.seconds,
                           real_time_factor=done.real_time_factor)  # fmt: skip
        print(json.dumps(summary))
    return 1 if problems else 0
