"""`tunesmith generate MODEL --prompt TEXT | --prompts FILE --out DIR`: text → audio files, resumably.

Each item becomes ``DIR/<id>.wav`` and then one line of ``DIR/results.jsonl``; the audio is written
atomically and its results line is appended (and fsynced) only after, so a killed run leaves only
complete items behind and the same command continues with the rest. An item's id covers its line
and its settings: an edited prompts file regenerates the edited lines only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from tunesmith.inference.prompts import batches, read_prompts, warn_about_attributes
from tunesmith.inference.results import RESULTS, append_result, read_done, repair_tail


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
    p.add_argument("--duration", type=float, default=10.0, help="seconds per item (default 10)")
    p.add_argument("--cfg", type=float, default=3.0, help="classifier-free guidance coefficient (1 = off)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0 = greedy)")
    p.add_argument("--top-k", type=int, default=250, help="sample among the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=0.0, help="nucleus sampling mass (0 = off)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first item; item i without a seed uses seed+i")
    p.add_argument("--batch-size", type=int, default=8, help="items generated together (same settings)")
    p.add_argument("--format", choices=("wav", "flac"), default="wav")
    p.add_argument("--prompt-audio", type=Path, help="audio file every item continues (its start is kept)")
    p.add_argument("--codec", help="codec run or model dir (default: the one the LM was trained with)")
    p.add_argument("--checkpoint", default="best", help="which checkpoint of a run: best | last | epoch_NNNN")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    p.set_defaults(func=run)


# --------------------------------------------------------------------------- items


def run(args: argparse.Namespace) -> int:
    from tunesmith.audio.io import load_audio, save_audio
    from tunesmith.errors import UserError
    from tunesmith.inference.lm import Generator, attribute_values

    if not args.prompt and args.prompts is None:
        raise UserError("nothing to generate: give --prompt TEXT (repeatable) or --prompts FILE")
    if args.batch_size < 1:
        raise UserError(f"--batch-size={args.batch_size}: must be at least 1")
    defaults = {
        "duration": args.duration,
        "cfg": args.cfg,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "seed": args.seed,
    }
    try:
        from tunesmith.inference.lm import parse_item

        parse_item({"prompt": ""}, {k: v for k, v in defaults.items() if k != "seed"})
    except ValueError as err:
        raise UserError(f"bad generation setting: {err}") from err
    jobs, problems = read_prompts(args.prompt, args.prompts, defaults)
    for problem in problems:  # in line order
        print(f"tunesmith: skipped {problem}", file=sys.stderr)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    suffix = f".{args.format}"
    results_path = out / RESULTS
    repair_tail(results_path)
    done = read_done(out, suffix)
    pending = [j for j in jobs if j.id not in done]
    print(f"{len(jobs)} items: {len(jobs) - len(pending)} already done, {len(pending)} to generate", file=sys.stderr)

    summary: dict[str, Any] = {"items": len(jobs), "skipped_lines": len(problems), "generated": 0, "out": str(out)}
    if pending:
        from tunesmith.runtime import pick_device

        device = str(pick_device()) if args.device == "auto" else args.device
        generator = Generator.from_path(args.model, device=device, which=args.checkpoint, codec=args.codec)
        warn_about_attributes(pending, attribute_values(generator.model))
        prompt_wav = None
        if args.prompt_audio is not None:
            channels = int(getattr(generator.codec, "channels", 1))
            prompt_wav, _ = load_audio(args.prompt_audio, generator.sample_rate, channels)
        audio_seconds = 0.0
        start = time.perf_counter()
        for batch in batches(pending, args.batch_size):
            t0 = time.perf_counter()
            items = [j.item for j in batch]
            prompts = [prompt_wav] * len(items) if prompt_wav is not None else None
            results = generator.generate(items, prompt_wavs=prompts)
            for job, result in zip(batch, results, strict=True):
                name = job.id + suffix
                save_audio(out / name, result.wav, result.sample_rate)  # atomic: complete or absent
                record = {
                    "id": job.id,
                    "file": name,
                    "source": job.source,
                    "line": job.line,
                    "prompt": job.item.prompt,
                    "conditions": job.item.conditions,
                    "seed": job.item.seed,
                    "duration": job.item.duration,
                    "cfg": job.item.cfg,
                    "temperature": job.item.temperature,
                    "top_k": job.item.top_k,
                    "top_p": job.item.top_p,
                    "sample_rate": result.sample_rate,
                    "audio_seconds": round(result.wav.shape[-1] / result.sample_rate, 4),
                    "seconds": round(result.stats["seconds"], 4),
                    "real_time_factor": round(result.stats["real_time_factor"], 3),
                    "batch_size": len(batch),
                    "model": str(args.model),
                }
                append_result(results_path, record)
                audio_seconds += result.wav.shape[-1] / result.sample_rate
                summary["generated"] += 1
            batch_seconds = time.perf_counter() - t0
            print(
                f"  {summary['generated']}/{len(pending)} done "
                f"({len(batch)} × {batch[0].item.duration:g} s in {batch_seconds:.1f} s)",
                file=sys.stderr,
            )
        wall_seconds = time.perf_counter() - start
        rtf = audio_seconds / wall_seconds if wall_seconds > 0 else float("nan")
        summary.update(audio_seconds=round(audio_seconds, 3), seconds=round(wall_seconds, 3), real_time_factor=rtf)
        print(
            f"generated {summary['generated']} items, {audio_seconds:.1f} s of audio in {wall_seconds:.1f} s: "
            f"real-time factor {rtf:.2f} (audio seconds per second)",
            file=sys.stderr,
        )
    print(f"results: {results_path}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    return 1 if problems else 0
