"""`tunesmith eval RUN_OR_MODEL --reference DATA_DIR`: generate from the reference set's descriptions and
measure FAD, CLAP score, KLD, chroma cosine and WER/CER (tunesmith.inference.evaluate); a MIDI run is
evaluated by tunesmith.inference.midi_eval when this build has it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tunesmith.commands.argtypes import SEED, number


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="measure what a model makes: FAD, CLAP score, KLD, chroma cosine, WER/CER against a reference set",
        description=(
            "Generate one sample per reference segment from its own description (seed S+i, the model's generation "
            "defaults; resumable like `generate --prompts`), embed both sides and print a table. Metric models are "
            "local folders (flags below, or the run config's evaluate.* keys); nothing is downloaded. FAD without "
            "--embedder-dir uses the model's own codec latents."
        ),
    )
    p.add_argument("target", help="LM run folder (or run name), checkpoint folder or model dir; or a MIDI run")
    p.add_argument("--reference", type=Path, help="prepared dataset folder (tunesmith prepare) to compare against")
    p.add_argument("--split", default="valid", help="split of the reference set (default %(default)s)")
    p.add_argument(
        "--metrics", default="fad,clap,kld", help="comma-separated: fad,clap,kld,chroma,wer (default %(default)s)"
    )
    p.add_argument(
        "--num-samples", type=number(int, ge=1), default=16, help="reference segments / samples (default %(default)s)"
    )
    p.add_argument("--seed", type=SEED, default=0, help="seed of sample 0; sample i uses seed+i (default %(default)s)")
    p.add_argument("--checkpoint", default="best", help="which checkpoint of a run: best | last | epoch_NNNN")
    p.add_argument(
        "--duration", type=number(float, gt=0), default=None, help="seconds per sample (default: the model's)"
    )
    p.add_argument(
        "--out", type=Path, default=None, help="output folder (default RUN/eval/<checkpoint>-<split>-n<N>-s<seed>)"
    )
    p.add_argument(
        "--runs-dir", type=Path, default=None, help="runs folder (run names; the reference statistics cache)"
    )
    p.add_argument(
        "--embedder-dir", default="", help="FAD: audio encoder dir (CLAP/AST/wav2vec2/HuBERT/Whisper) or a codec"
    )
    p.add_argument("--clap-dir", default="", help="CLAP score: transformers ClapModel dir")
    p.add_argument(
        "--classifier-dir", default="", help="KLD: audio classifier dir (e.g. an AST fine-tuned on AudioSet)"
    )
    p.add_argument("--whisper-dir", default="", help="WER/CER: transformers Whisper dir")
    p.add_argument("--batch-size", type=number(int, ge=1), default=8, help="items generated / embedded together")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.set_defaults(func=run)


def _task_of(target: str, runs_dir: Path | None) -> tuple[Path, str | None]:
    """The target as a folder, and the task its run records (None for checkpoint and model dirs)."""
    from tunesmith.artifacts.runs import RUN_FILE, find_run, read_json
    from tunesmith.errors import UserError

    path = Path(target)
    if not path.exists():
        try:
            path = find_run(target, runs_dir)
        except UserError:
            raise UserError(f"{target}: no such run, checkpoint or model dir") from None
    meta = read_json(path / RUN_FILE) if (path / RUN_FILE).is_file() else None
    return path, (meta or {}).get("task")


def run(args: argparse.Namespace) -> int:
    from tunesmith.errors import UserError

    target, task = _task_of(args.target, args.runs_dir)
    if task == "midi":
        try:
            from tunesmith.inference.midi_eval import evaluate_midi_run
        except ModuleNotFoundError as err:
            if err.name and "midi_eval" in err.name:
                raise UserError("MIDI evaluation is not available in this build of tunesmith") from None
            raise
        report = evaluate_midi_run(
            target,
            split=args.split,
            checkpoint=args.checkpoint,
            num_samples=args.num_samples,
            seed=args.seed,
            runs_dir=args.runs_dir,
        )
        print(json.dumps(report.to_dict()) if args.json else report.table())
        return 0
    if args.reference is None:
        raise UserError("--reference DATA_DIR is required: the prepared dataset whose descriptions are generated")
    from tunesmith.eval.suite import MetricModels, parse_metrics
    from tunesmith.inference.evaluate import EvalOptions, evaluate_model
    from tunesmith.runtime import pick_device

    options = EvalOptions(
        reference=args.reference,
        split=args.split,
        metrics=parse_metrics(args.metrics),
        num_samples=args.num_samples,
        seed=args.seed,
        checkpoint=args.checkpoint,
        duration=args.duration,
        out=args.out,
        runs_dir=args.runs_dir,
        models=MetricModels(
            embedder_dir=args.embedder_dir,
            clap_dir=args.clap_dir,
            classifier_dir=args.classifier_dir,
            whisper_dir=args.whisper_dir,
            device=str(pick_device()) if args.device == "auto" else args.device,
            batch_size=args.batch_size,
        ),
        batch_size=args.batch_size,
        device=args.device,
    )
    report, out = evaluate_model(target, options, report=lambda line: print(line, file=sys.stderr))
    print(f"report: {out / 'report.json'}", file=sys.stderr)
    print(json.dumps(report.to_dict()) if args.json else report.table())
    return 0
